"""Segment-level inference: the probabilities of a 1-s segment are the mean of the softmax
outputs of its acoustic frames, all paired with that segment's image (method.md section 4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from avsc.evaluation.metrics import dcase_metrics
from avsc.features.datasets import batches


class NonFiniteOutput(ValueError):
    """A segment whose inputs or probabilities are NaN or infinite (the message names the clip
    and says what to do); no metric is computed from it."""


def _check_finite(
    segments: Dataset, batch: dict[str, torch.Tensor], proba: torch.Tensor, index: torch.Tensor
) -> None:
    """A :class:`NonFiniteOutput` naming the first segment of the batch whose probabilities
    are not finite, and whether its stored inputs already were."""
    bad = ~torch.isfinite(proba).all(dim=1)
    if not bool(bad.any()):
        return
    k = int(bad.nonzero()[0, 0])
    row = int(index[k])
    table = getattr(segments, "table", None)
    where = f"segment row {row}"
    if table is not None:
        clip = table.clips[int(table.clip_of[row])]
        where = f"clip {clip} (segment {int(table.segment_of[row])})"
    inputs = [
        n
        for n, x in batch.items()
        if x.is_floating_point() and not bool(torch.isfinite(x[k]).all())
    ]
    if inputs:
        store = getattr(getattr(table, "store", None), "path", "the feature store")
        raise NonFiniteOutput(
            f"{where}: its stored {' and '.join(inputs)} input holds NaN or infinite values (a "
            f"damaged entry of {store}?); avsc preprocess --verify rebuilds the entries whose "
            "checksum is wrong"
        )
    raise NonFiniteOutput(
        f"{where}: the model's probabilities are NaN or infinite though its inputs are finite "
        "(a diverged model?)"
    )


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
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches(segments, batch_size, num_workers):
        label = batch.pop("label")
        index = batch.pop("index")
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model.segment_outputs(**batch)
        _check_finite(segments, batch, out["proba"], index)  # never a NaN metric
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


@dataclass
class Encoded:
    """The branch outputs of every segment of a set (:meth:`AVSystem.encode`), kept in the
    evaluation batches they were computed in, so that :func:`decide_segments` without masks
    repeats :func:`predict_segments` operation for operation."""

    batches: list[dict[str, torch.Tensor | None]]
    label: np.ndarray
    index: np.ndarray

    def modality(self, key: str) -> torch.Tensor | None:
        """One branch's outputs of all segments, concatenated (None: the system has none)."""
        parts = [b[key] for b in self.batches]
        return None if parts[0] is None else torch.cat(parts)


@torch.no_grad()
def encode_segments(
    model: nn.Module, segments: Dataset, batch_size: int = 64, device="cpu", num_workers: int = 0
) -> Encoded:
    """``model.encode`` over every segment of ``segments`` (branch outputs, on the CPU)."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    out, labels, index = [], [], []
    for batch in batches(segments, batch_size, num_workers):
        labels.append(batch.pop("label").numpy())
        index.append(batch.pop("index").numpy())
        enc = model.encode(**{k: v.to(device) for k, v in batch.items()})
        out.append({k: None if v is None else v.cpu() for k, v in enc.items()})
    model.train(was_training)
    return Encoded(out, np.concatenate(labels), np.concatenate(index))


@torch.no_grad()
def decide_segments(
    model: nn.Module,
    encoded: Encoded,
    audio_missing: np.ndarray | None = None,
    video_missing: np.ndarray | None = None,
    video_order: np.ndarray | None = None,
    device="cpu",
) -> np.ndarray:
    """Segment probabilities ``(N, C)`` from :func:`encode_segments`' outputs, with the
    segments marked in ``audio_missing`` / ``video_missing`` (bool ``(N,)``) lacking that
    modality and, with ``video_order``, segment ``i``'s acoustic frames paired with the video
    of segment ``video_order[i]`` (asynchrony). Without any of these it gives exactly what
    :func:`predict_segments` gives."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    video = None
    if video_order is not None and encoded.batches[0].get("video") is not None:
        video = encoded.modality("video")[torch.as_tensor(video_order)]
    out, start = [], 0
    for batch in encoded.batches:
        n = next(v for v in batch.values() if v is not None).shape[0]
        rows = slice(start, start + n)
        enc = dict(batch)
        if video is not None:
            enc["video"] = video[rows].clone()
        enc = {k: None if v is None else v.to(device) for k, v in enc.items()}
        masks = {}
        for key, m in (("audio_missing", audio_missing), ("video_missing", video_missing)):
            if m is not None:
                masks[key] = torch.as_tensor(np.asarray(m[rows], dtype=bool), device=device)
        out.append(model.decide(enc, **masks)["proba"].float().cpu().numpy())
        start += n
    model.train(was_training)
    return np.concatenate(out)
