"""Dataset statistics of a TAU-layout dataset (notebook 01's tables)."""

from __future__ import annotations

import pandas as pd


def dataset_statistics(dataset) -> dict[str, pd.DataFrame]:
    """Clips per fold and class, per city, and locations per class."""
    rows = []
    for fold, df in dataset.folds.items():
        if "scene_label" not in df:
            continue
        rows.append(df.groupby("scene_label").size().rename(fold))
    per_class = pd.concat(rows, axis=1).fillna(0).astype(int) if rows else pd.DataFrame()
    per_class.loc["total"] = per_class.sum()
    meta = dataset.meta
    per_city = (
        meta.groupby("city")
        .agg(
            clips=("clip", "size"),
            locations=("identifier", "nunique"),
            classes=("scene_label", "nunique"),
        )
        .reset_index()
    )
    per_loc = (
        meta.groupby("scene_label")
        .agg(
            clips=("clip", "size"), locations=("identifier", "nunique"), cities=("city", "nunique")
        )
        .reset_index()
    )
    return {
        "per_class": per_class.reset_index(names="scene_label"),
        "per_city": per_city,
        "per_location": per_loc,
    }
