"""Results tables: one row per trained system beside the paper's figures (method.md section
9), per-class tables and confusion matrices of results. A result is anything with the
attributes of :class:`avsc.experiments.StrategyResult` (``system``, ``feature``,
``backbone``, ``metrics``, ``proba``, ``seconds``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from avsc.data.tau import LABELS
from avsc.evaluation.metrics import confusion, per_class_table

#: The paper's numbers (method.md section 9): class-wise log loss and accuracy (%).
PAPER = pd.DataFrame(
    [
        ("audio_only", "fbank", None, 0.6968, 76.08),
        ("audio_only", "scalogram", None, 0.6325, 77.98),
        ("video_only", None, "resnet50", 0.3939, 87.03),
        ("video_only", None, "tf_efficientnetv2_s", 0.2731, 90.91),
        ("pipeline", "fbank", "resnet50", 0.3808, 88.87),
        ("pipeline", "fbank", "tf_efficientnetv2_s", 0.2146, 92.84),
        ("pipeline", "scalogram", "resnet50", 0.3506, 89.29),
        ("pipeline", "scalogram", "tf_efficientnetv2_s", 0.2055, 93.14),
        ("joint", "fbank", "resnet50", 0.2664, 91.13),
        ("joint", "fbank", "tf_efficientnetv2_s", 0.1788, 93.45),
        ("joint", "scalogram", "resnet50", 0.2495, 91.55),
        ("joint", "scalogram", "tf_efficientnetv2_s", 0.1517, 94.59),
        ("ablation_I", "scalogram", "tf_efficientnetv2_s", 0.2055, 93.14),
        ("ablation_II", "scalogram", "tf_efficientnetv2_s", 0.2144, 92.39),
        ("ablation_III", "scalogram", "tf_efficientnetv2_s", 0.1591, 94.31),
        ("ablation_IV", "scalogram", "tf_efficientnetv2_s", 0.1517, 94.59),
    ],
    columns=["system", "feature", "backbone", "paper_logloss", "paper_accuracy"],
)

#: Prior work on the same task (the paper's Table 5, evaluation-set figures where given).
PRIOR_WORK = pd.DataFrame(
    [
        ("DCASE 2021 Task 1B baseline (OpenL3 + MLP)", 0.658, 77.0),
        ("Best DCASE 2021 Task 1B system (evaluation set)", 0.195, 93.8),
        ("Chen, Wang, Zhang 2022 (joint, scalogram + EffNetV2-S)", 0.1517, 94.59),
    ],
    columns=["system", "logloss", "accuracy"],
)


def results_table(results, paper: bool = True) -> pd.DataFrame:
    """One row per result: system, feature, backbone, class-wise log loss and accuracy (%),
    training wall time, and the paper's figures beside them where the paper has that row."""
    rows = []
    for r in results:
        rows.append(
            {
                "system": r.system,
                "feature": r.feature,
                "backbone": r.backbone,
                "logloss": r.metrics["logloss_classwise"],
                "accuracy": 100 * r.metrics["accuracy_classwise"],
                "logloss_overall": r.metrics["logloss_overall"],
                "accuracy_overall": 100 * r.metrics["accuracy_overall"],
                "train_seconds": round(r.seconds, 1),
            }
        )
    df = pd.DataFrame(rows)
    if paper and len(df):
        df["paper_backbone"], df["paper_logloss"], df["paper_accuracy"] = zip(
            *[_paper_row(r.system, r.feature, r.backbone) for r in df.itertuples()], strict=True
        )
    return df


def _paper_row(system: str, feature: str | None, backbone: str | None):
    """The paper's figures for the same system and feature: with the same backbone when the
    paper used it, else with its main backbone (EfficientNetV2-S), named in paper_backbone."""
    feature = None if pd.isna(feature) else feature
    backbone = None if pd.isna(backbone) else backbone
    ref = PAPER[(PAPER.system == system) & (PAPER.feature.fillna("") == (feature or ""))]
    if backbone is None:
        ref = ref[ref.backbone.isna()]
    else:
        same = ref[ref.backbone == backbone]
        ref = same if len(same) else ref[ref.backbone == "tf_efficientnetv2_s"]
    if not len(ref):
        return None, float("nan"), float("nan")
    row = ref.iloc[0]
    return row.backbone, row.paper_logloss, row.paper_accuracy


def confusion_of(result) -> np.ndarray:
    """The confusion matrix of a result's evaluate-subset segments."""
    p = result.proba[list(LABELS)].to_numpy()
    return confusion(result.proba["label"].to_numpy(), p)


def per_class_of(results) -> pd.DataFrame:
    """Per-class log loss and accuracy (%) of each result, one block of rows per system."""
    frames = []
    for r in results:
        t = per_class_table(r.proba["label"].to_numpy(), r.proba[list(LABELS)].to_numpy())
        t["accuracy"] *= 100  # %, like every table
        t.insert(0, "system", r.name)
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


#: how each known column reads in a table a person looks at (CSV files keep the raw names)
_NAMES = {
    "logloss_overall": "log loss (overall)",
    "accuracy_overall": "accuracy % (overall)",
    "paper_logloss": "paper log loss",
    "paper_accuracy": "paper accuracy %",
    "paper_backbone": "paper backbone",
    "train_seconds": "training s",
    "seconds": "s",
    "top1_before_ncm": "top-1 % before (nearest class mean)",
    "top1_after": "top-1 % after",
    "top1_after_ncm": "top-1 % after (nearest class mean)",
}
OFFICIAL_LOGLOSS = "log loss (class-wise, official)"
OFFICIAL_ACCURACY = "accuracy % (class-wise, official)"


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """A table as a person reads it: log losses to 3 decimals, percentages to 1, absent
    values blank; in a results table the DCASE official figures (class-wise log loss and
    accuracy) named as such and first, each beside the paper's figure and the difference
    to it (``Δ``, this run minus the paper). The data itself (CSV) keeps every digit."""
    out = df.copy()
    if isinstance(out.columns, pd.MultiIndex):  # ("clips", "train") -> "clips: train"
        out.columns = [
            ": ".join(str(p) for p in c if str(p) and not str(p).startswith("Unnamed"))
            for c in out.columns
        ]
    results = "logloss_overall" in out.columns
    names = dict(_NAMES)
    names["logloss"] = OFFICIAL_LOGLOSS if results else "log loss"
    names["accuracy"] = OFFICIAL_ACCURACY if results else "accuracy %"
    if {"logloss", "paper_logloss"} <= set(out.columns):
        out["Δ log loss"] = out["logloss"] - out["paper_logloss"]
    if {"accuracy", "paper_accuracy"} <= set(out.columns):
        out["Δ accuracy (points)"] = out["accuracy"] - out["paper_accuracy"]
    out = out.rename(columns=names)
    first = [
        OFFICIAL_LOGLOSS,
        "paper log loss",
        "Δ log loss",
        OFFICIAL_ACCURACY,
        "paper accuracy %",
        "Δ accuracy (points)",
    ]
    if results:
        ident = [
            c for c in out.columns if c not in first and not pd.api.types.is_numeric_dtype(out[c])
        ]
        ident = [c for c in ident if c != "paper backbone"]
        rest = [c for c in out.columns if c not in ident and c not in first]
        out = out[ident + [c for c in first if c in out.columns] + rest]
    shown = out.astype(object)
    for col in out.columns:
        if not pd.api.types.is_float_dtype(out[col]):
            continue
        signed = col.startswith("Δ")
        if "log loss" in col:
            fmt = "{:+.3f}" if signed else "{:.3f}"
        elif "%" in col or "accuracy" in col or col == "training s" or col == "s":
            fmt = "{:+.1f}" if signed else "{:.1f}"
        else:
            fmt = "{:.3g}"
        shown[col] = [fmt.format(v) if pd.notna(v) else "" for v in out[col]]
    return shown.where(out.notna(), "")


def compare(results, a: str, b: str) -> list[str]:
    """One line per pair of results of systems ``a`` and ``b`` trained on the same feature and
    backbone: both official figures and the difference, as measured on this run (a single
    training each: the difference carries no confidence interval)."""
    by_key: dict[tuple, dict[str, object]] = {}
    for r in results:
        by_key.setdefault((r.feature, r.backbone), {})[r.system] = r
    lines = []
    for (feature, backbone), pair in by_key.items():
        if a not in pair or b not in pair:
            continue
        ra, rb = pair[a], pair[b]
        la, lb = ra.metrics["logloss_classwise"], rb.metrics["logloss_classwise"]
        aa, ab = 100 * ra.metrics["accuracy_classwise"], 100 * rb.metrics["accuracy_classwise"]
        what = " + ".join(v for v in (feature, backbone) if v)
        lower = a if la < lb else b
        lines.append(
            f"{a} vs {b} ({what}): log loss {la:.3f} vs {lb:.3f} ({lower} lower by "
            f"{abs(la - lb):.3f}), accuracy {aa:.1f} % vs {ab:.1f} %"
        )
    return lines


def compare_features(results, a: str = "scalogram", b: str = "fbank") -> list[str]:
    """One line per system trained on both acoustic features ``a`` and ``b`` (same backbone):
    both official figures and which feature has the lower log loss on this run."""
    groups: dict[tuple, dict[str, object]] = {}
    for r in results:
        groups.setdefault((r.system, r.backbone), {})[r.feature] = r
    lines = []
    for (system, backbone), pair in groups.items():
        if a not in pair or b not in pair:
            continue
        la = pair[a].metrics["logloss_classwise"]
        lb = pair[b].metrics["logloss_classwise"]
        aa = 100 * pair[a].metrics["accuracy_classwise"]
        ab = 100 * pair[b].metrics["accuracy_classwise"]
        where = f"{system}" + (f" ({backbone})" if backbone else "")
        lower = a if la < lb else b
        lines.append(
            f"{where}: {a} log loss {la:.3f} vs {b} {lb:.3f} ({lower} lower by "
            f"{abs(la - lb):.3f}), accuracy {aa:.1f} % vs {ab:.1f} %"
        )
    return lines
