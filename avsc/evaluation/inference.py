"""Segment-level inference: the probabilities of a 1-s segment are the mean of the softmax
outputs of its acoustic frames, all paired with that segment's image (method.md section 4)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from avsc.evaluation.metrics import dcase_metrics


@torch.no_grad()
def predict_segments(
    model: nn.Module,
    segments: Dataset,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    embeddings: bool = False,
    num_workers: int = 0,
) -> dict[str, np.ndarray]:
    """Run ``model.segment_outputs`` over every segment of ``segments`` (a
    :class:`avsc.features.datasets.SegmentSamples`). Returns ``proba`` ``(N, C)``, ``label``
    ``(N,)``, ``index`` ``(N,)`` and, with ``embeddings``, ``acoustic`` / ``audio_visual``."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    loader = DataLoader(segments, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    parts: dict[str, list[np.ndarray]] = {}
    for batch in loader:
        label = batch.pop("label")
        index = batch.pop("index")
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model.segment_outputs(**batch)
        parts.setdefault("proba", []).append(out["proba"].float().cpu().numpy())
        parts.setdefault("label", []).append(label.numpy())
        parts.setdefault("index", []).append(index.numpy())
        if embeddings:
            for k in ("acoustic", "audio_visual"):
                if k in out:
                    parts.setdefault(k, []).append(out[k].float().cpu().numpy())
    model.train(was_training)
    return {k: np.concatenate(v) for k, v in parts.items()}


def validation_metrics(
    model: nn.Module, segments: Dataset, batch_size: int = 64, device="cpu"
) -> dict[str, float]:
    """``val_logloss`` (mean over segments: the checkpoint criterion), ``val_logloss_classwise``,
    ``val_accuracy`` (overall) and ``val_accuracy_classwise`` of ``model`` on ``segments``."""
    out = predict_segments(model, segments, batch_size, device)
    m = dcase_metrics(out["label"], out["proba"])
    return {
        "val_logloss": m["logloss_overall"],
        "val_logloss_classwise": m["logloss_classwise"],
        "val_accuracy": m["accuracy_overall"],
        "val_accuracy_classwise": m["accuracy_classwise"],
    }
