"""Evaluation: segment-level inference, DCASE metrics, tables, submission files, prediction."""

from avsc.evaluation.metrics import (
    confusion,
    dcase_metrics,
    per_class_table,
    submission_frame,
    write_submission,
)

__all__ = ["confusion", "dcase_metrics", "per_class_table", "submission_frame", "write_submission"]
