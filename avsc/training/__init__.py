"""Training: checkpoints, the one fit loop, visual-encoder fine-tuning (the strategies that
use them are in avsc.experiments)."""

from avsc.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]
