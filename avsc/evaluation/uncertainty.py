"""Uncertainty of the DCASE figures: 95 % confidence intervals by bootstrap over evaluation
**clips**, stratified by class (``scipy.stats.bootstrap`` with one sample per class, so every
resample keeps each class's clip count). The segments of a clip are not independent, so clips,
not segments, are resampled. A paired difference between two systems resamples the same clips
for both."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from avsc.evaluation.metrics import clip_probabilities, probability_columns, segment_log_loss

N_RESAMPLES = 2000
LEVEL = 0.95


def clip_table(
    proba: pd.DataFrame, labels: Sequence[str] | None = None, level: str = "segment"
) -> pd.DataFrame:
    """Per evaluation clip of a result's ``proba`` (one row per segment; ``labels`` its
    probability columns, default all but the segment's own): its class, and the sums and
    count of its segments' log loss and correctness (``level="segment"``, DCASE's figures),
    or the log loss and correctness of the clip's own decision, the mean of its segments'
    probabilities, with a count of 1 (``level="clip"``); sorted by clip."""
    labels = probability_columns(proba) if labels is None else list(labels)
    if level == "clip":
        clips = clip_probabilities(proba, labels)
        y = clips["label"].to_numpy()
        p = clips[labels].to_numpy()
        return pd.DataFrame(
            {
                "clip": clips["clip"].to_numpy(),
                "label": y,
                "logloss": segment_log_loss(y, p),
                "correct": (p.argmax(axis=1) == y).astype(float),
                "n": np.ones(len(clips), dtype=np.int64),
            }
        )
    y = proba["label"].to_numpy()
    p = proba[list(labels)].to_numpy()
    seg = pd.DataFrame(
        {
            "clip": proba["clip"].to_numpy(),
            "label": y,
            "logloss": segment_log_loss(y, p),
            "correct": (p.argmax(axis=1) == y).astype(float),
        }
    )
    return (
        seg.groupby("clip", sort=True)
        .agg(
            label=("label", "first"),
            logloss=("logloss", "sum"),
            correct=("correct", "sum"),
            n=("label", "size"),
        )
        .reset_index()
    )


def _classwise(sums: Sequence[np.ndarray], counts: Sequence[np.ndarray], axis: int = -1):
    """Mean over classes of each class's segment mean (DCASE's class-wise figure)."""
    return np.mean(
        [s.sum(axis=axis) / c.sum(axis=axis) for s, c in zip(sums, counts, strict=True)], axis=0
    )


def _samples(tables: Sequence[pd.DataFrame], column: str) -> list[np.ndarray]:
    """One sample per class: rows ``[sum_1, n_1, sum_2, n_2, ...]`` (one pair per table, the
    tables' clips aligned), columns the class's clips. A class with a single clip contributes
    a constant (resampling one clip always gives that clip)."""
    base = tables[0]
    for t in tables[1:]:
        if not np.array_equal(t["clip"].to_numpy(), base["clip"].to_numpy()):
            raise ValueError("paired results must cover the same evaluation clips")
    out = []
    for k in sorted(base["label"].unique()):
        rows = base["label"].to_numpy() == k
        sample = np.stack(
            [v for t in tables for v in (t[column].to_numpy()[rows], t["n"].to_numpy()[rows])]
        )
        if sample.shape[1] == 1:  # one clip: every resample is that clip (scipy wants two)
            sample = np.repeat(sample, 2, axis=1)
        out.append(sample)
    return out


def _bootstrap(samples: list[np.ndarray], statistic, seed: int, n_resamples: int):
    from scipy.stats import bootstrap

    res = bootstrap(
        samples,
        statistic,
        n_resamples=n_resamples,
        confidence_level=LEVEL,
        method="percentile",
        vectorized=True,
        axis=-1,
        random_state=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def interval(
    proba: pd.DataFrame,
    metric: str = "logloss",
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    level: str = "segment",
) -> tuple[float, float]:
    """95 % interval of a result's class-wise ``metric`` ("logloss" or "accuracy", a
    fraction) at ``level`` ("segment": DCASE's 1-s figures; "clip": the clips' decisions),
    by stratified bootstrap over evaluation clips."""
    column = "logloss" if metric == "logloss" else "correct"
    samples = _samples([clip_table(proba, level=level)], column)

    def stat(*groups, axis=-1):
        return _classwise([g[0] for g in groups], [g[1] for g in groups])

    return _bootstrap(samples, stat, seed, n_resamples)


def paired_interval(
    proba_a: pd.DataFrame,
    proba_b: pd.DataFrame,
    metric: str = "logloss",
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> tuple[float, float, float]:
    """``(difference, low, high)``: system A minus system B in class-wise ``metric``, and its
    95 % interval from resampling the same clips for both (stratified by class)."""
    column = "logloss" if metric == "logloss" else "correct"
    ta, tb = clip_table(proba_a), clip_table(proba_b)
    samples = _samples([ta, tb], column)

    def stat(*groups, axis=-1):
        a = _classwise([g[0] for g in groups], [g[1] for g in groups])
        b = _classwise([g[2] for g in groups], [g[3] for g in groups])
        return a - b

    full = stat(*samples)
    low, high = _bootstrap(samples, stat, seed, n_resamples)
    return float(full), low, high


def per_class_intervals(
    proba: pd.DataFrame, seed: int = 0, n_resamples: int = N_RESAMPLES, level: str = "segment"
) -> pd.DataFrame:
    """Per class: 95 % intervals of its log loss and accuracy (a fraction) at ``level``
    (segments, or the clips' decisions), by bootstrap over its evaluation clips. Columns
    ``label``, ``logloss_low``, ``logloss_high``, ``accuracy_low``, ``accuracy_high``."""
    t = clip_table(proba, level=level)
    rows = []
    for k, g in t.groupby("label", sort=True):
        row: dict[str, float] = {"label": int(k)}
        for metric, column in (("logloss", "logloss"), ("accuracy", "correct")):
            sample = [np.stack([g[column].to_numpy(), g["n"].to_numpy()])]

            def stat(x, axis=-1):
                return x[0].sum(axis=axis) / x[1].sum(axis=axis)

            if len(g) < 2:  # one clip: nothing to resample
                low = high = float(stat(sample[0]))
            else:
                low, high = _bootstrap(sample, stat, seed, n_resamples)
            row[f"{metric}_low"], row[f"{metric}_high"] = low, high
        rows.append(row)
    return pd.DataFrame(rows)
