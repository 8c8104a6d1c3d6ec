"""Confidence intervals: stratified bootstrap over evaluation clips (scipy.stats.bootstrap),
checked against an independent resampling written here, and paired differences."""

import numpy as np
import pandas as pd
import pytest

from avsc.data.tau import LABELS
from avsc.evaluation import dcase_metrics
from avsc.evaluation.metrics import segment_log_loss
from avsc.evaluation.uncertainty import clip_table, interval, paired_interval


def _result(seed: int, clips_per_class=(4, 6, 5), noise: float = 1.0) -> pd.DataFrame:
    """Segment probabilities of 3 classes with unequal clip counts and segments per clip."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, n_clips in enumerate(clips_per_class):
        for c in range(n_clips):
            quality = rng.normal(0, 1)  # a clip-level effect shared by its segments
            for s in range(int(rng.integers(2, 5))):
                logits = rng.normal(0, noise, len(LABELS))
                logits[k] += 1.5 + quality
                p = np.exp(logits) / np.exp(logits).sum()
                rows.append(
                    {
                        "clip": f"{LABELS[k]}-{c}",
                        "segment": s,
                        "label": k,
                        **dict(zip(LABELS, p, strict=True)),
                    }
                )
    return pd.DataFrame(rows)


def _independent(proba: pd.DataFrame, metric: str, n: int, seed: int) -> tuple[float, float]:
    """Stratified bootstrap by hand: resample clips with replacement within each class, and
    recompute the class-wise figure from their segments."""
    rng = np.random.default_rng(seed)
    y = proba["label"].to_numpy()
    p = proba[list(LABELS)].to_numpy()
    value = segment_log_loss(y, p) if metric == "logloss" else (p.argmax(1) == y).astype(float)
    seg = pd.DataFrame({"clip": proba["clip"], "label": y, "v": value})
    per_clip = seg.groupby("clip").agg(label=("label", "first"), s=("v", "sum"), n=("v", "size"))
    groups = [g[["s", "n"]].to_numpy() for _, g in per_clip.groupby("label")]
    stats = np.empty(n)
    for i in range(n):
        means = []
        for g in groups:
            pick = g[rng.integers(0, len(g), len(g))]
            means.append(pick[:, 0].sum() / pick[:, 1].sum())
        stats[i] = np.mean(means)
    return tuple(np.percentile(stats, [2.5, 97.5]))


@pytest.mark.parametrize("metric", ["logloss", "accuracy"])
def test_interval_matches_an_independent_stratified_bootstrap(metric):
    proba = _result(0)
    low, high = interval(proba, metric, seed=1, n_resamples=20000)
    ref_low, ref_high = _independent(proba, metric, 20000, seed=2)
    scale = ref_high - ref_low
    assert abs(low - ref_low) < 0.05 * scale and abs(high - ref_high) < 0.05 * scale
    # the interval surrounds the figure DCASE's metric gives on all clips
    m = dcase_metrics(proba["label"], proba[list(LABELS)].to_numpy())
    key = "logloss_classwise" if metric == "logloss" else "accuracy_classwise"
    assert low < m[key] < high


def test_clips_not_segments_are_resampled():
    proba = _result(0)
    t = clip_table(proba)
    assert len(t) == 15 and t["n"].sum() == len(proba)
    # segments of a clip share its quality: resampling them as independent would be narrower
    low, high = interval(proba, "logloss", n_resamples=4000)
    y = proba["label"].to_numpy()
    ll = segment_log_loss(y, proba[list(LABELS)].to_numpy())
    rng = np.random.default_rng(0)
    seg_stats = [
        np.mean(
            [ll[y == k][rng.integers(0, (y == k).sum(), (y == k).sum())].mean() for k in range(3)]
        )
        for _ in range(4000)
    ]
    seg_low, seg_high = np.percentile(seg_stats, [2.5, 97.5])
    assert (high - low) > 1.2 * (seg_high - seg_low)


def test_paired_difference_resamples_the_same_clips():
    a = _result(0)
    same = paired_interval(a, a.copy())
    assert same == (0.0, 0.0, 0.0)
    # B: A with a little noise; pairing cancels the clip effects both share
    b = a.copy()
    rng = np.random.default_rng(5)
    noisy = b[list(LABELS)].to_numpy() * np.exp(rng.normal(0, 0.1, (len(b), len(LABELS))))
    b[list(LABELS)] = noisy / noisy.sum(1, keepdims=True)
    diff, low, high = paired_interval(a, b)
    ma = dcase_metrics(a["label"], a[list(LABELS)].to_numpy())["logloss_classwise"]
    mb = dcase_metrics(b["label"], b[list(LABELS)].to_numpy())["logloss_classwise"]
    assert diff == pytest.approx(ma - mb) and low <= diff <= high
    la, ha = interval(a)
    assert (high - low) < 0.5 * (ha - la)
    with pytest.raises(ValueError, match="same evaluation clips"):
        paired_interval(a, a[a["clip"] != a["clip"].iloc[0]])


def test_claims_table_verdicts():
    from types import SimpleNamespace

    from avsc.evaluation.tables import claims_table

    def result(system, proba):
        m = dcase_metrics(proba["label"], proba[list(LABELS)].to_numpy())
        name = f"{system}_scalogram_b"
        return SimpleNamespace(
            name=name, system=system, feature="scalogram", backbone="b", metrics=m, proba=proba
        )

    good, bad = _result(0, noise=0.3), _result(0, noise=3.0)
    table = claims_table([result("joint", good), result("pipeline", bad)])
    row = table.set_index("claim").loc["joint vs pipeline"]
    assert row["verdict"] == "holds" and row["diff_high"] < 0 and row["paper_diff"] < 0
    table = claims_table([result("joint", bad), result("pipeline", good)])
    assert table.set_index("claim").loc["joint vs pipeline", "verdict"] == "reversed"
    table = claims_table([result("joint", good), result("pipeline", good.copy())])
    assert table.set_index("claim").loc["joint vs pipeline", "verdict"] == "undecided"


def test_a_class_with_one_clip_is_a_constant_not_an_error():
    proba = _result(3, clips_per_class=(1, 5, 1))
    low, high = interval(proba)
    m = dcase_metrics(proba["label"], proba[list(LABELS)].to_numpy())["logloss_classwise"]
    assert low <= m <= high
    single = _result(3, clips_per_class=(1, 1, 1))
    low, high = interval(single)
    m = dcase_metrics(single["label"], single[list(LABELS)].to_numpy())["logloss_classwise"]
    assert low == pytest.approx(m) and high == pytest.approx(m)
