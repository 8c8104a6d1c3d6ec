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
    """Per-class accuracy and log loss of each result, one block of rows per system."""
    frames = []
    for r in results:
        t = per_class_table(r.proba["label"].to_numpy(), r.proba[list(LABELS)].to_numpy())
        t.insert(0, "system", r.name)
        frames.append(t)
    return pd.concat(frames, ignore_index=True)
