"""A collection's statistics (notebook 01's tables), from its clip manifest."""

from __future__ import annotations

import pandas as pd

from avsc.data.manifest import Manifest


def subset_column(manifest: Manifest) -> pd.Series:
    """Each clip's place in the collection's own division: its split (``train``, ``val``,
    ``evaluate`` for ``test``), its fold (``fold K``), or ``clips`` where it has neither;
    empty for a clip in none."""
    if manifest.has_splits:
        return manifest.column("split").replace({"test": "evaluate"})
    if manifest.has_folds:
        fold = manifest.column("fold")
        return fold.where(fold == "", "fold " + fold)
    return pd.Series(["clips"] * len(manifest.clips), index=manifest.clips.index)


def dataset_statistics(manifest: Manifest) -> dict[str, pd.DataFrame]:
    """Tables named by what they count: ``clips_per_fold_and_class`` (clips per class in each
    split or fold, and the total), then, for a TAU manifest (with its ``city`` column),
    ``clips_per_city`` and ``locations_per_class``; for any other, ``groups_per_class``."""
    df = manifest.clips.assign(subset=subset_column(manifest).to_numpy())
    df = df[df["subset"] != ""]
    order = list(dict.fromkeys(df["subset"]))
    if manifest.has_splits:
        order = [s for s in ("train", "val", "evaluate") if s in order]
    per_class = (
        df.groupby(["label", "subset"]).size().unstack("subset").reindex(columns=order)
        if len(df)
        else pd.DataFrame()
    )
    per_class = per_class.fillna(0).astype(int)
    per_class.loc["total"] = per_class.sum()
    per_class.columns.name = None
    out = {"clips_per_fold_and_class": per_class.reset_index(names="scene_label")}
    clips = manifest.clips
    groups = manifest.groups()
    if "city" in clips.columns:  # TAU: cities and recording locations
        meta = clips.assign(identifier=groups.to_numpy())
        out["clips_per_city"] = (
            meta.groupby("city")
            .agg(
                clips=("clip", "size"),
                locations=("identifier", "nunique"),
                classes=("label", "nunique"),
            )
            .reset_index()
        )
        out["locations_per_class"] = (
            meta.groupby("label")
            .agg(
                clips=("clip", "size"),
                locations=("identifier", "nunique"),
                cities=("city", "nunique"),
            )
            .reset_index()
            .rename(columns={"label": "scene_label"})
        )
    else:
        out["groups_per_class"] = (
            clips.assign(group=groups.to_numpy())
            .groupby("label")
            .agg(clips=("clip", "size"), groups=("group", "nunique"))
            .reset_index()
            .rename(columns={"label": "scene_label"})
        )
    return out
