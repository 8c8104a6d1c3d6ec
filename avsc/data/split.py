"""Splits of a clip manifest into train / val / evaluate, method.md section 1 generalised.

Which clips are held out for evaluation comes from the manifest:

* a ``split`` column (TAU: fold1_train is ``train``, fold1_evaluate ``test``): as given;
* a ``fold`` column: fold ``data.test_fold`` (default: the first) is held out, the other
  folds train (cross-validation trains one model per held-out fold);
* neither: a seeded split, group-disjoint and class-stratified, holds out
  ``data.test_fraction`` of the clips.

Validation comes from the training clips unless the manifest names ``val`` clips: 10 %
(``data.val_fraction``) of them, group-disjoint (``data.split: group``, the default: no group,
TAU's recording location, on both sides) and class-stratified, as the DCASE 2021 Task 1B
baseline does; ``data.split: random`` draws a class-stratified random share of clips, as the
paper did (``sklearn.model_selection.train_test_split``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from avsc.data.manifest import DatasetError, Manifest, Problem

#: the subsets of a split: train, validation, held-out evaluation, and clips not used
SUBSETS = ("train", "val", "evaluate", "unused")


def validation_split(
    train: pd.DataFrame, fraction: float = 0.1, method: str = "location", seed: int = 0
) -> np.ndarray:
    """Boolean mask over the rows of a TAU fold1_train table (True = validation): columns
    ``scene_label`` and ``identifier`` (as from :class:`avsc.data.tau.TAUDataset`). See
    :func:`holdout_mask`."""
    return holdout_mask(
        train["scene_label"].to_numpy(),
        train["identifier"].to_numpy(),
        fraction,
        method,
        seed,
        noun="location",
        where="fold1_train",
    )


def holdout_mask(
    labels: np.ndarray,
    groups: np.ndarray,
    fraction: float,
    method: str = "group",
    seed: int = 0,
    noun: str = "group",
    where: str = "the training clips",
) -> np.ndarray:
    """Boolean mask (True = held out) of about ``fraction`` of the rows, class-stratified.

    ``group`` (also ``location``): for each class, its groups are shuffled with ``seed`` and
    taken one by one while that brings the class's held-out share closer to ``fraction``,
    keeping at least one group of every class on each side. Groups shared by several classes
    (never the case in TAU) fall back to ``StratifiedGroupKFold``. ``random``: a stratified
    random share of rows. A class with fewer than two groups is a :class:`DatasetError`."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if method == "random":
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(labels))
        _, val_idx = train_test_split(
            idx, test_size=fraction, random_state=seed, stratify=labels, shuffle=True
        )
        mask = np.zeros(len(labels), dtype=bool)
        mask[val_idx] = True
        return mask
    if method not in ("group", "location"):
        raise ValueError(f"unknown split method {method!r}; expected 'group' or 'random'")

    classes_per_group = pd.Series(labels).groupby(groups).nunique()
    if (classes_per_group > 1).any():
        return _stratified_group_kfold(labels, groups, fraction, seed)

    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in sorted(set(labels)):
        in_class = labels == label
        sizes = pd.Series(groups[in_class]).value_counts().sort_index()
        if len(sizes) < 2:
            raise DatasetError(
                f"class {label!r} has {len(sizes)} {noun}(s) in {where}; a {noun}-disjoint "
                "split needs at least 2 (use split: random)"
            )
        order = rng.permutation(len(sizes))
        total = int(sizes.sum())
        target = fraction * total
        chosen: list[str] = []
        taken = 0
        for i in order:
            name, size = sizes.index[i], int(sizes.iloc[i])
            if len(chosen) == len(sizes) - 1:
                break  # keep at least one group on the training side
            if not chosen or abs(taken + size - target) < abs(taken - target):
                chosen.append(name)
                taken += size
        mask |= in_class & np.isin(groups, chosen)
    return mask


def _stratified_group_kfold(
    labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    from sklearn.model_selection import StratifiedGroupKFold

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


def split_settings(manifest: Manifest, data) -> dict:
    """What decides the split of ``manifest`` under ``data`` (a :class:`DataConfig`), in
    plain values: its kind (``split``, ``fold``, ``seeded``) and the settings that kind uses.
    Two configs with equal settings give the same split."""
    method = "group" if data.split == "location" else data.split
    if data.test_fold is not None and not manifest.has_folds:  # asked for, and nothing to hold
        how = "its split column" if manifest.has_splits else "a seeded split (data.test_fraction)"
        raise DatasetError(
            f"data.test_fold {data.test_fold!r}: {manifest.source} has no folds (no fold column; "
            f"its clips are held out by {how}); leave data.test_fold unset"
        )
    out: dict = {"method": method, "val_fraction": data.val_fraction, "seed": data.seed}
    if manifest.has_splits:
        out["kind"] = "split"
        if (manifest.column("split") == "val").any():
            out = {"kind": "split"}  # the manifest names its validation clips
    elif manifest.has_folds:
        out["kind"] = "fold"
        out["test_fold"] = test_fold(manifest, data)
    else:
        out["kind"] = "seeded"
        out["test_fraction"] = data.test_fraction
    return out


def test_fold(manifest: Manifest, data) -> str:
    """The held-out fold: ``data.test_fold`` (an error naming the folds when it is not one of
    them), else the first fold."""
    folds = manifest.folds
    if data.test_fold is None:
        return folds[0]
    asked = str(data.test_fold)
    if asked not in folds:
        raise DatasetError(
            f"data.test_fold {data.test_fold!r}: {manifest.source} has folds {', '.join(folds)}"
        )
    return asked


def assign_subsets(manifest: Manifest, data) -> pd.DataFrame:
    """One row per clip of ``manifest``: ``clip, subset`` with subset ``train``, ``val``,
    ``evaluate`` or ``unused`` (see the module docstring; ``data`` is a :class:`DataConfig`).
    A class that cannot be split as asked is a :class:`DatasetError` naming it."""
    s = split_settings(manifest, data)
    clips = manifest.clips["clip"].to_numpy()
    labels = manifest.clips["label"].to_numpy()
    groups = manifest.groups().to_numpy()
    subset = np.full(len(clips), "unused", dtype=object)
    if s["kind"] == "split":
        given = manifest.column("split").to_numpy()
        subset[given == "train"] = "train"
        subset[given == "val"] = "val"
        subset[given == "test"] = "evaluate"
        pool = given == "train"
        draw_val = not (given == "val").any()
    elif s["kind"] == "fold":
        fold = manifest.column("fold").to_numpy()
        subset[fold == s["test_fold"]] = "evaluate"
        pool = (fold != s["test_fold"]) & (fold != "")
        subset[pool] = "train"
        draw_val = True
    else:
        test = holdout_mask(labels, groups, s["test_fraction"], s["method"],
                            int(np.random.default_rng([s["seed"], 1]).integers(2**31)))  # fmt: skip
        subset[test] = "evaluate"
        pool = ~test
        subset[pool] = "train"
        draw_val = True
    if draw_val and pool.any():
        fraction = s["val_fraction"]
        if s["kind"] == "seeded":  # fractions of the whole collection
            fraction = min(0.9, fraction / max(1e-9, 1 - s["test_fraction"]))
        where = "the training folds" if s["kind"] == "fold" else "the training clips"
        val = holdout_mask(labels[pool], groups[pool], fraction, s["method"], s["seed"],
                           where=where)  # fmt: skip
        idx = np.flatnonzero(pool)
        subset[idx[val]] = "val"
    return pd.DataFrame({"clip": clips, "subset": subset})


def split_problems(manifest: Manifest, data, all_folds: bool = True) -> list[Problem]:
    """Why ``manifest`` cannot be split as ``data`` asks, one problem per label or fold:
    labels with too few clips or groups for a group-disjoint split, no clip to train or
    evaluate on. With ``all_folds`` every fold is tried as the held-out one (cross-validation
    holds out each), else only ``data.test_fold``."""
    where = str(manifest.source)
    out: list[Problem] = []
    if not len(manifest.clips):
        return out
    s = split_settings(manifest, data)
    labels = manifest.clips["label"]
    groups = manifest.groups()
    need = {"seeded": 3, "fold": 2, "split": 2}[s["kind"]]
    fix = {
        "seeded": "give the manifest a split or fold column, add clips, or -p data.split=random",
        "fold": "move clips between folds, or -p data.split=random",
        "split": "name val clips in the split column, or -p data.split=random",
    }[s["kind"]]
    if s["kind"] == "seeded":
        what = "a seeded split into train, val and test"
        counted = {lab: (int((labels == lab).sum()), groups[labels == lab].nunique())
                   for lab in sorted(set(labels))}  # fmt: skip
        for lab, (clips, n) in counted.items():
            if (n if s["method"] == "group" else clips) < need:
                unit = "group(s)" if s["method"] == "group" else "clip(s)"
                out.append(
                    Problem(
                        where,
                        f"label {lab!r} has {clips} clip(s) in {n} group(s); {what} needs at "
                        f"least {need} {unit} per label ({fix})",
                    )
                )
        if out:
            return out
    tries = [data]
    if manifest.has_folds and all_folds:
        tries = [data.replace(test_fold=f) for f in manifest.folds]
    for d in tries:
        fold = f" with fold {d.test_fold} held out" if manifest.has_folds else ""
        try:
            sub = assign_subsets(manifest, d)
        except (DatasetError, ValueError) as exc:
            out.append(Problem(where, f"{exc}{fold} ({fix})"))
            continue
        counts = sub["subset"].value_counts()
        for name, verb in (
            ("train", "train on"),
            ("val", "validate on"),
            ("evaluate", "evaluate on"),
        ):
            if not counts.get(name, 0):
                out.append(Problem(where, f"no clip to {verb}{fold}"))
        train_labels = set(manifest.clips.loc[sub["subset"] == "train", "label"])
        eval_labels = set(manifest.clips.loc[sub["subset"] == "evaluate", "label"])
        for label in sorted(eval_labels - train_labels):
            out.append(
                Problem(where, f"label {label!r} has evaluation clips but no training clip{fold}")
            )
    return out
