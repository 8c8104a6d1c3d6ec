"""The validation split: 10 % of fold1_train, method.md section 1.

Default ``location``: location-disjoint (no ``city-location`` on both sides) and
class-stratified, as the DCASE 2021 Task 1B baseline does. ``random``: a class-stratified
random 10 % of clips, as the paper did (``sklearn.model_selection.train_test_split``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from avsc.data.tau import DatasetError


def validation_split(
    train: pd.DataFrame, fraction: float = 0.1, method: str = "location", seed: int = 0
) -> np.ndarray:
    """Boolean mask over the rows of ``train`` (True = validation).

    ``train`` needs ``scene_label`` and ``identifier`` columns (as from
    :class:`avsc.data.tau.TAUDataset`). ``location``: for each class, its recording locations
    are shuffled with ``seed`` and taken into validation one by one while that brings the
    class's validation share closer to ``fraction``, keeping at least one location of every
    class on each side. Locations shared by several classes (never the case in TAU) fall back
    to ``StratifiedGroupKFold``. Raises :class:`DatasetError` when a class has too few
    locations for a location-disjoint split.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    labels = train["scene_label"].to_numpy()
    if method == "random":
        idx = np.arange(len(train))
        _, val_idx = train_test_split(
            idx, test_size=fraction, random_state=seed, stratify=labels, shuffle=True
        )
        mask = np.zeros(len(train), dtype=bool)
        mask[val_idx] = True
        return mask
    if method != "location":
        raise ValueError(f"unknown split method {method!r}; expected 'location' or 'random'")

    groups = train["identifier"].to_numpy()
    classes_per_group = train.groupby("identifier")["scene_label"].nunique()
    if (classes_per_group > 1).any():
        return _stratified_group_kfold(labels, groups, fraction, seed)

    rng = np.random.default_rng(seed)
    mask = np.zeros(len(train), dtype=bool)
    for label in sorted(set(labels)):
        in_class = labels == label
        sizes = pd.Series(groups[in_class]).value_counts().sort_index()
        if len(sizes) < 2:
            raise DatasetError(
                f"class {label!r} has {len(sizes)} location(s) in fold1_train; a "
                "location-disjoint validation split needs at least 2 (use split: random)"
            )
        order = rng.permutation(len(sizes))
        total = int(sizes.sum())
        target = fraction * total
        chosen: list[str] = []
        taken = 0
        for i in order:
            name, size = sizes.index[i], int(sizes.iloc[i])
            if len(chosen) == len(sizes) - 1:
                break  # keep at least one location on the training side
            if not chosen or abs(taken + size - target) < abs(taken - target):
                chosen.append(name)
                taken += size
        mask |= in_class & np.isin(groups, chosen)
    return mask


def _stratified_group_kfold(
    labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    n_splits = max(2, round(1 / fraction))
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    best = None
    for _, val_idx in cv.split(np.zeros(len(labels)), labels, groups):
        mask = np.zeros(len(labels), dtype=bool)
        mask[val_idx] = True
        both = set(labels[mask]) == set(labels) == set(labels[~mask])
        score = (not both, abs(mask.mean() - fraction))
        if best is None or score < best[0]:
            best = (score, mask)
    assert best is not None
    return best[1]


def assign_subsets(
    dataset, fraction: float = 0.1, method: str = "location", seed: int = 0
) -> pd.DataFrame:
    """One row per clip of ``dataset.meta``: ``clip, subset`` with subset ``train``, ``val``,
    ``evaluate`` or ``unused`` (clips in meta.csv but in no labelled fold)."""
    train = dataset.fold("train")
    val_mask = validation_split(train, fraction, method, seed)
    subset = pd.Series("unused", index=dataset.meta["clip"].to_numpy(), dtype=object)
    subset[train["clip"].to_numpy()] = np.where(val_mask, "val", "train")
    if "evaluate" in dataset.folds:
        subset[dataset.fold("evaluate")["clip"].to_numpy()] = "evaluate"
    return pd.DataFrame({"clip": subset.index, "subset": subset.to_numpy()})
