"""``avsc predict``: classify a user's clip with a trained checkpoint, second by second.

The checkpoint is self-contained: it holds the system's weights (frozen visual encoder
included), its config, its feature kind and the training-split normalisation statistics.
A clip is either a TAU WAV + MP4 pair or one MP4 with its own audio track.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from avsc.config import ExperimentConfig
from avsc.data.tau import LABELS
from avsc.models.acoustic import AcousticEncoder
from avsc.models.classifier import SceneClassifier
from avsc.models.systems import AVSystem
from avsc.models.visual import VisualEncoder
from avsc.training.checkpoint import CheckpointError, load_checkpoint


def system_from_checkpoint(
    checkpoint: str | os.PathLike | dict,
) -> tuple[AVSystem, dict, ExperimentConfig]:
    """Rebuild the trained system of a checkpoint written by the strategies (eval mode)."""
    ck = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    where = "checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
    extra = ck.get("extra") or {}
    if "system" not in extra:
        raise CheckpointError(
            f"{where}: not a scene-classification system checkpoint (no 'extra.system')"
        )
    cfg = ExperimentConfig.from_dict(ck.get("config") or {})
    m = cfg.model
    ae = None
    if extra.get("feature"):
        n_bins = int(extra["norm_mean"].shape[-1])
        ae = AcousticEncoder(
            n_bins, 2, m.ae_channels, m.ae_hidden, m.embedding_dim, m.ae_dropout, m.multiscale
        )
    ve = None
    if extra.get("visual"):
        v = extra["visual"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ve = VisualEncoder(v["name"], weights=None, image_size=int(v["image_size"]))
    in_dim = (ae.embedding_dim if ae else 0) + (
        ve.num_features if (ve and extra.get("visual_input")) else 0
    )
    sc = SceneClassifier(in_dim, len(extra.get("labels", LABELS)), m.sc_hidden, m.sc_dropout)
    model = AVSystem(
        ae,
        sc,
        ve=ve,
        visual_input=extra.get("visual_input"),
        ae_trainable=bool(extra.get("ae_trainable", True)),
    )
    model.load_state_dict(ck["model"])
    return model.eval(), extra, cfg


def predict_clip(
    clip: str | os.PathLike,
    checkpoint: str | os.PathLike,
    audio: str | os.PathLike | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Per-second scene probabilities of ``clip``.

    ``clip`` is an MP4 (its own audio track is used unless ``audio`` names a WAV), or a WAV
    for an audio-only checkpoint. Returns one row per 1-s segment: ``segment``, ``start_s``,
    ``end_s``, ``scene_label`` (the most probable class) and one probability column per class.
    """
    from avsc.features.audio import extract_audio_features
    from avsc.features.datasets import eval_transform
    from avsc.features.video import extract_frames

    model, extra, cfg = system_from_checkpoint(checkpoint)
    labels = list(extra.get("labels", LABELS))
    clip = Path(clip)
    is_video = clip.suffix.lower() in (".mp4", ".mov", ".mkv", ".avi", ".webm")
    inputs: dict[str, torch.Tensor] = {}
    n_seg = None
    if model.ae is not None:
        source = Path(audio) if audio is not None else clip
        feats = extract_audio_features(source, extra["feature"], cfg.audio)
        mean, std = extra["norm_mean"].numpy(), extra["norm_std"].numpy()
        inputs["audio"] = torch.from_numpy(((feats - mean) / std).astype(np.float32))
        n_seg = feats.shape[0]
    if model.visual_input is not None:
        if not is_video:
            raise ValueError(f"{clip}: this checkpoint's system needs video; pass the MP4")
        frames = extract_frames(
            clip, cfg.frames.short_side, segments=n_seg, segment_seconds=cfg.audio.segment_seconds
        )
        n_seg = frames.shape[0]
        tf = eval_transform(model.ve.input_size[-1], model.ve.crop_pct)
        inputs["image"] = torch.stack(
            [tf(torch.from_numpy(f).permute(2, 0, 1).contiguous()) for f in frames]
        )
    model.to(device)
    with torch.no_grad():
        out = model.segment_outputs(**{k: v.to(device) for k, v in inputs.items()})
    proba = out["proba"].float().cpu().numpy()
    seg = cfg.audio.segment_seconds
    df = pd.DataFrame(
        {
            "segment": np.arange(len(proba)),
            "start_s": np.arange(len(proba)) * seg,
            "end_s": (np.arange(len(proba)) + 1) * seg,
            "scene_label": [labels[i] for i in proba.argmax(axis=1)],
        }
    )
    for k, name in enumerate(labels):
        df[name] = proba[:, k]
    return df
