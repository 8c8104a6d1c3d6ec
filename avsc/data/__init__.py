"""Dataset layer: TAU Urban Audio-Visual Scenes 2021 layout, splits, validation, synthetic data."""

from avsc.data.tau import (
    LABEL_TO_INDEX,
    LABELS,
    ClipName,
    DatasetError,
    TAUDataset,
    clip_id,
    parse_clip_name,
    write_metadata,
)

__all__ = [
    "LABELS",
    "LABEL_TO_INDEX",
    "ClipName",
    "DatasetError",
    "TAUDataset",
    "clip_id",
    "parse_clip_name",
    "write_metadata",
]
