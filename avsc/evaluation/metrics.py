"""DCASE 2021 Task 1B metrics on 1-s segments (method.md section 8), and the same figures at
clip level (a clip's probabilities: the mean of its segments')."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

EPS = 1e-15

#: the columns of a result's per-segment table (``proba``) before its probability columns,
#: one per label
SEGMENT_COLUMNS = ("clip", "segment", "label", "identifier", "filename")


def probability_columns(proba: pd.DataFrame) -> list[str]:
    """The labels of a per-segment probability table: every column but the segment's own."""
    return [str(c) for c in proba.columns if c not in SEGMENT_COLUMNS]


def clip_and_renormalise(proba: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Clip probabilities to ``[eps, 1 - eps]`` and renormalise each row to sum to 1."""
    p = np.clip(np.asarray(proba, dtype=np.float64), eps, 1.0 - eps)
    return p / p.sum(axis=1, keepdims=True)


def segment_log_loss(y_true: np.ndarray, proba: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Per-segment ``-log p(true class)`` after clipping and renormalising."""
    y = np.asarray(y_true, dtype=int)
    p = clip_and_renormalise(proba, eps)
    return -np.log(p[np.arange(len(y)), y])


def dcase_metrics(
    y_true: Sequence[int] | np.ndarray,
    proba: np.ndarray,
    n_classes: int | None = None,
    eps: float = EPS,
) -> dict[str, float]:
    """DCASE 2021 Task 1B figures of segment probabilities ``(N, C)`` against labels ``(N,)``.

    Returns ``logloss_classwise`` (mean over classes of the per-class mean log loss, the
    paper's figure), ``logloss_overall`` (mean over segments), ``accuracy_classwise`` (macro
    recall, DCASE's official accuracy) and ``accuracy_overall``. Accuracies are fractions.
    Classes absent from ``y_true`` are left out of the class-wise means.
    """
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"proba must be (N, C) with N = len(y_true) = {len(y)}, got {p.shape}")
    if len(y) == 0:
        raise ValueError("no segments to evaluate")
    c = n_classes or p.shape[1]
    if y.min() < 0 or y.max() >= c:
        raise ValueError(f"labels must lie in [0, {c}), got {y.min()}..{y.max()}")
    ll = segment_log_loss(y, p, eps)
    correct = p.argmax(axis=1) == y
    present = [k for k in range(c) if np.any(y == k)]
    return {
        "logloss_classwise": float(np.mean([ll[y == k].mean() for k in present])),
        "logloss_overall": float(ll.mean()),
        "accuracy_classwise": float(np.mean([correct[y == k].mean() for k in present])),
        "accuracy_overall": float(correct.mean()),
    }


def clip_probabilities(proba: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """One row per clip of a result's ``proba`` (one row per segment): ``clip``, ``label``
    and the mean of its segments' probabilities per class (the clip's decision), sorted by
    clip."""
    cols = list(labels)
    g = proba.groupby("clip", sort=True)
    out = g[cols].mean()
    out.insert(0, "label", g["label"].first())
    out.insert(1, "segments", g.size())
    return out.reset_index()


def clip_metrics(proba: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
    """:func:`dcase_metrics` of the clips' decisions (:func:`clip_probabilities`), as
    ``clip_logloss_classwise``, ``clip_logloss_overall``, ``clip_accuracy_classwise`` and
    ``clip_accuracy_overall``."""
    clips = clip_probabilities(proba, labels)
    m = dcase_metrics(clips["label"], clips[list(labels)].to_numpy(), n_classes=len(labels))
    return {f"clip_{k}": v for k, v in m.items()}


def per_class_table(y_true: np.ndarray, proba: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """One row per class: segments, log loss and accuracy (the DCASE per-class table)."""
    y = np.asarray(y_true, dtype=int)
    ll = segment_log_loss(y, proba)
    correct = np.asarray(proba).argmax(axis=1) == y
    rows = []
    for k, name in enumerate(labels):
        m = y == k
        rows.append(
            {
                "scene_label": name,
                "segments": int(m.sum()),
                "logloss": float(ll[m].mean()) if m.any() else float("nan"),
                "accuracy": float(correct[m].mean()) if m.any() else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def confusion(
    y_true: np.ndarray,
    proba: np.ndarray,
    n_classes: int | None = None,
    normalize: str | None = None,
) -> np.ndarray:
    """Confusion matrix (rows: true class, columns: predicted) via sklearn."""
    from sklearn.metrics import confusion_matrix

    n_classes = np.asarray(proba).shape[1] if n_classes is None else n_classes
    return confusion_matrix(
        np.asarray(y_true, dtype=int),
        np.asarray(proba).argmax(axis=1),
        labels=list(range(n_classes)),
        normalize=normalize,
    )


def submission_frame(
    filenames: Sequence[str], proba: np.ndarray, labels: Sequence[str]
) -> pd.DataFrame:
    """The DCASE submission table: ``filename  scene_label  <label> ...`` (TAU: ``airport
    bus ... tram``), one row per 1-s segment; ``scene_label`` is the most probable class."""
    p = np.asarray(proba, dtype=np.float64)
    df = pd.DataFrame(
        {"filename": list(filenames), "scene_label": [labels[i] for i in p.argmax(axis=1)]}
    )
    return pd.concat([df, pd.DataFrame(p, columns=list(labels))], axis=1)


def write_submission(
    path, filenames: Sequence[str], proba: np.ndarray, labels: Sequence[str]
) -> str:
    """Write the DCASE submission TSV atomically; returns a short preview to print: where it
    is, how many rows, and its header and first rows, whole."""
    from pathlib import Path

    from avsc.utils import NAMES_IN, TEXT_OUT, atomic_path

    with atomic_path(path) as tmp:
        submission_frame(filenames, proba, labels).to_csv(
            tmp, sep="\t", index=False, float_format="%.6f", **TEXT_OUT
        )
    lines = Path(path).read_text(**NAMES_IN).splitlines()
    return "\n".join([f"{path}: {len(lines) - 1} rows; the first 3:", *lines[:4]])
