"""Evaluation: segment-level inference, DCASE metrics, results tables, submission files."""

from avsc.evaluation.metrics import (
    confusion,
    dcase_metrics,
    per_class_table,
    submission_frame,
    write_submission,
)
from avsc.evaluation.tables import (
    PAPER,
    PRIOR_WORK,
    confusion_of,
    per_class_of,
    results_table,
)

__all__ = [
    "PAPER",
    "PRIOR_WORK",
    "confusion",
    "confusion_of",
    "dcase_metrics",
    "per_class_of",
    "per_class_table",
    "results_table",
    "submission_frame",
    "write_submission",
]
