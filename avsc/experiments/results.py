"""A trained system on disk: :class:`StrategyResult` (one trained, evaluated system: its
saving, loading and naming). A folder of them is :class:`avsc.experiments.Results`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avsc.experiments.registry import get_system
from avsc.utils import TEXT_OUT, atomic_path, atomic_write_json, read_names_csv

METRIC_KEYS = (
    "logloss_classwise",
    "logloss_overall",
    "accuracy_classwise",
    "accuracy_overall",
    "clip_logloss_classwise",
    "clip_logloss_overall",
    "clip_accuracy_classwise",
    "clip_accuracy_overall",
    "best_epoch",
    "best_val_logloss",
    "fusion_weight_audio",
)


class MissingArtifact(FileNotFoundError):
    """An artifact a step needs is absent; names what makes it (a notebook or a command)."""


class NotebookSkipped(RuntimeError):
    """The collection lacks what a notebook works on (video, audio, folds): the notebook has
    nothing to do. ``avsc run`` skips such a notebook, saying so in its executed copy."""


def skip_reason(missing: list[str], needed, store) -> str:
    """Why a notebook that needs ``needed`` has nothing to do with ``store``'s collection."""
    have = " + ".join(store.modalities) + (", folds" if store.folds else "")
    if missing == ["folds"]:
        return (
            f"this collection has no folds (no fold column in its manifest; it holds {have}): "
            "nothing to cross-validate"
        )
    return (
        f"this collection has no {' and no '.join(missing)} (it holds {have}); this notebook's "
        f"systems need {' and '.join(needed)}"
    )


@dataclass
class StrategyResult:
    """One trained system, evaluated on the evaluate subset at segment level."""

    name: str
    system: str
    feature: str | None
    backbone: str | None
    metrics: dict[str, float]
    checkpoint: Path
    proba: pd.DataFrame  # one row per segment: filename, clip, segment, label, <class>...
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    seconds: float = 0.0
    #: the metrics of every trained seed (this result's own first), when trained with
    #: ``train.seeds`` (see :meth:`avsc.experiments.Results.load`)
    seed_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    #: the class names, in the order of the model's outputs (the feature store's labels)
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.labels:
            self.labels = labels_of(self.proba)

    @staticmethod
    def name_for(system: str, feature: str | None = None, backbone: str | None = None) -> str:
        """The name (and folder name) of ``system`` trained on ``feature`` / ``backbone``."""
        return get_system(system).result_name(feature, backbone)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "system": self.system,
            "feature": self.feature,
            "backbone": self.backbone,
            **self.metrics,
            "seconds": round(self.seconds, 1),
            "checkpoint": str(self.checkpoint),
            "labels": list(self.labels),
        }

    def save(self, folder: str | os.PathLike) -> None:
        """``metrics.json``, ``proba.csv`` and ``embeddings.npz`` in ``folder`` (the
        checkpoints and ``history.csv`` are the fit loop's), each written atomically."""
        out = Path(folder)
        atomic_write_json(out / "metrics.json", self.summary())
        with atomic_path(out / "proba.csv") as tmp:
            self.proba.to_csv(tmp, index=False, float_format="%.6g", **TEXT_OUT)
        if self.embeddings:
            with atomic_path(out / "embeddings.npz") as tmp, open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    **{k: v.astype(np.float32) for k, v in self.embeddings.items()},
                    label=self.proba["label"].to_numpy(),
                )

    @staticmethod
    def load_metrics(folder: str | os.PathLike) -> dict[str, float]:
        """Only the metrics of the result saved in ``folder`` (its ``metrics.json``)."""
        meta = json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))
        return {k: meta[k] for k in METRIC_KEYS if k in meta}

    @classmethod
    def load(cls, folder: str | os.PathLike) -> StrategyResult:
        """The result saved in ``folder`` (by :meth:`save` and the fit loop)."""
        d = Path(folder)
        meta = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        emb = {}
        if (d / "embeddings.npz").is_file():
            with np.load(d / "embeddings.npz", allow_pickle=False) as z:
                emb = {k: z[k] for k in z.files if k != "label"}
        history = d / "history.csv"
        return cls(
            name=meta["name"],
            system=meta["system"],
            feature=meta["feature"],
            backbone=meta["backbone"],
            metrics={k: meta[k] for k in METRIC_KEYS if k in meta},
            checkpoint=Path(meta["checkpoint"]),
            proba=_read_proba(d / "proba.csv", meta.get("labels")),
            embeddings=emb,
            history=pd.read_csv(history) if history.is_file() else pd.DataFrame(),
            seconds=float(meta.get("seconds", 0.0)),
            labels=tuple(meta.get("labels") or ()),
        )


def labels_of(proba: pd.DataFrame) -> tuple[str, ...]:
    """The probability columns of a ``proba`` table (every column but the segment's own)."""
    from avsc.evaluation.metrics import probability_columns

    return tuple(probability_columns(proba))


def _read_proba(path: Path, labels) -> pd.DataFrame:
    """``proba.csv`` with the segment columns as written (clip ids and groups stay text,
    whatever they look like) and each probability column as a number."""
    text = {c: str for c in ("clip", "identifier", "filename")}
    df = read_names_csv(path, dtype=text, keep_default_na=False)
    if labels:  # the header holds the labels as written; pandas may mangle duplicates only
        df.columns = [*df.columns[: len(df.columns) - len(labels)], *labels]
    return df
