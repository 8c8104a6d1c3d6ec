"""TAU Urban Audio-Visual Scenes 2021: labels, file names, metadata and fold files.

Implements method.md section 1. A dataset root holds ``audio/`` and ``video/``; the metadata
(``meta.csv`` and ``evaluation_setup/fold1_{train,evaluate,test}.csv``, all tab-separated)
sits either at the root or in a sibling folder ``<root name>.meta/``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

#: Scene labels in class-index order (method.md section 1).
LABELS: tuple[str, ...] = (
    "airport",
    "bus",
    "metro",
    "metro_station",
    "park",
    "public_square",
    "shopping_mall",
    "street_pedestrian",
    "street_traffic",
    "tram",
)
LABEL_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(LABELS)}

FOLDS: tuple[str, ...] = ("train", "evaluate", "test")
META_COLUMNS: tuple[str, ...] = ("filename_audio", "filename_video", "scene_label", "identifier")
FOLD_COLUMNS: tuple[str, ...] = ("filename_audio", "filename_video", "scene_label")
TEST_COLUMNS: tuple[str, ...] = ("filename_audio", "filename_video")


class DatasetError(ValueError):
    """A dataset root or metadata file that cannot be read; the message names the file."""


@dataclass(frozen=True)
class ClipName:
    """The parts of a TAU clip name ``<scene>-<city>-<location>-<segment>``."""

    scene: str
    city: str
    location: str
    segment: str

    @property
    def clip(self) -> str:
        return f"{self.scene}-{self.city}-{self.location}-{self.segment}"

    @property
    def identifier(self) -> str:
        """The recording location ``<city>-<location>``: the unit a split must not straddle."""
        return f"{self.city}-{self.location}"


def clip_id(filename: str) -> str:
    """``audio/airport-london-6-257.wav`` -> ``airport-london-6-257``."""
    return os.path.splitext(os.path.basename(str(filename)))[0]


def parse_clip_name(filename: str) -> ClipName:
    """Parse scene, city, location and segment from a TAU file name or clip id.

    Scene labels contain underscores but never hyphens, so the name splits into exactly four
    hyphen-separated parts. Raises :class:`DatasetError` naming the file otherwise.
    """
    stem = clip_id(filename)
    parts = stem.split("-")
    if len(parts) != 4 or not all(parts):
        raise DatasetError(
            f"{filename}: not a TAU clip name; expected <scene>-<city>-<location>-<segment>"
        )
    return ClipName(*parts)


def find_meta_dir(root: str | os.PathLike) -> Path:
    """Return the folder holding ``meta.csv``: the root itself or a sibling ``<name>.meta/``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root does not exist or is not a folder")
    candidates = [root, root.parent / f"{root.name}.meta", root / f"{root.name}.meta"]
    for cand in candidates:
        if (cand / "meta.csv").is_file():
            return cand
    raise DatasetError(
        f"{root}: no meta.csv found at the root or in a sibling {root.name}.meta/ folder"
    )


def read_tsv(path: str | os.PathLike, columns: Iterable[str]) -> pd.DataFrame:
    """Read one tab-separated TAU metadata file and check its header.

    Returns a DataFrame of strings with exactly ``columns``; raises :class:`DatasetError`
    naming the file when it is missing, empty or lacks a column.
    """
    path = Path(path)
    columns = list(columns)
    if not path.is_file():
        raise DatasetError(f"{path}: metadata file is missing")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises several types for malformed files
        raise DatasetError(f"{path}: cannot be parsed as tab-separated text ({exc})") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        hint = (
            " (is it comma-separated? TAU metadata is tab-separated)"
            if len(df.columns) == 1
            else ""
        )
        raise DatasetError(
            f"{path}: missing column(s) {', '.join(missing)}; found {list(df.columns)}{hint}"
        )
    return df[columns].copy()


def annotate(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``clip, scene, city, location, identifier, segment`` (and ``label`` when a
    ``scene_label`` column exists) parsed from ``filename_audio``."""
    out = df.copy()
    parsed = [parse_clip_name(f) for f in out["filename_audio"]]
    out.insert(0, "clip", [p.clip for p in parsed])
    out["scene"] = [p.scene for p in parsed]
    out["city"] = [p.city for p in parsed]
    out["location"] = [p.location for p in parsed]
    out["identifier"] = [p.identifier for p in parsed]
    out["segment"] = [p.segment for p in parsed]
    if "scene_label" in out.columns:
        out["label"] = [LABEL_TO_INDEX.get(s, -1) for s in out["scene_label"]]
    return out


class TAUDataset:
    """A TAU Urban Audio-Visual Scenes 2021 root: ``meta``, the three fold1 lists, file paths.

    ``meta`` and ``folds[name]`` are DataFrames with the official columns plus ``clip``,
    ``city``, ``location``, ``identifier``, ``segment`` and (where labelled) ``label``.
    Loading checks headers and label names only; :func:`avsc.data.validate.validate_dataset`
    checks the files themselves.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.meta_dir = find_meta_dir(self.root)
        self.meta_path = self.meta_dir / "meta.csv"
        meta = read_tsv(self.meta_path, META_COLUMNS)
        self._check_labels(meta, self.meta_path)
        self.meta = annotate(meta.drop(columns=["identifier"]))
        self.folds: dict[str, pd.DataFrame] = {}
        for fold in FOLDS:
            path = self.fold_path(fold)
            if not path.is_file():
                continue
            cols = TEST_COLUMNS if fold == "test" else FOLD_COLUMNS
            df = read_tsv(path, cols)
            if fold != "test":
                self._check_labels(df, path)
            self.folds[fold] = annotate(df)

    def fold_path(self, fold: str) -> Path:
        return self.meta_dir / "evaluation_setup" / f"fold1_{fold}.csv"

    @staticmethod
    def _check_labels(df: pd.DataFrame, path: Path) -> None:
        unknown = sorted(set(df["scene_label"]) - set(LABELS))
        if unknown:
            raise DatasetError(
                f"{path}: unknown scene label(s) {unknown}; expected one of {list(LABELS)}"
            )

    def fold(self, name: str) -> pd.DataFrame:
        """One of ``train``, ``evaluate``, ``test``; a clear error when its file is absent."""
        if name not in FOLDS:
            raise ValueError(f"unknown fold {name!r}; expected one of {FOLDS}")
        if name not in self.folds:
            raise DatasetError(f"{self.fold_path(name)}: fold file is missing")
        return self.folds[name]

    def audio_path(self, filename_audio: str) -> Path:
        return self.root / filename_audio

    def video_path(self, filename_video: str) -> Path:
        return self.root / filename_video

    def __len__(self) -> int:
        return len(self.meta)

    def __repr__(self) -> str:
        folds = ", ".join(f"{k}={len(v)}" for k, v in self.folds.items())
        return f"TAUDataset({str(self.root)!r}, clips={len(self.meta)}, {folds})"


def _write_tsv(path: Path, header: Iterable[str], rows: Iterable[Iterable[str]]) -> None:
    from avsc.utils import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(list(header))
        for row in rows:
            writer.writerow(list(row))


def write_metadata(
    meta_dir: str | os.PathLike,
    clips: pd.DataFrame,
    evaluate_identifiers: Iterable[str],
) -> None:
    """Write ``meta.csv`` and the three fold1 files in the official tab-separated format.

    ``clips`` needs columns ``filename_audio, filename_video, scene_label``; clips whose
    location identifier is in ``evaluate_identifiers`` form fold1_evaluate (and, without
    labels, fold1_test), the rest fold1_train.
    """
    meta_dir = Path(meta_dir)
    df = annotate(clips[list(FOLD_COLUMNS)])
    eval_ids = set(evaluate_identifiers)
    _write_tsv(
        meta_dir / "meta.csv",
        META_COLUMNS,
        df[["filename_audio", "filename_video", "scene_label", "identifier"]].itertuples(
            index=False
        ),
    )
    is_eval = df["identifier"].isin(eval_ids)
    setup = meta_dir / "evaluation_setup"
    _write_tsv(
        setup / "fold1_train.csv",
        FOLD_COLUMNS,
        df.loc[~is_eval, list(FOLD_COLUMNS)].itertuples(index=False),
    )
    _write_tsv(
        setup / "fold1_evaluate.csv",
        FOLD_COLUMNS,
        df.loc[is_eval, list(FOLD_COLUMNS)].itertuples(index=False),
    )
    _write_tsv(
        setup / "fold1_test.csv",
        TEST_COLUMNS,
        df.loc[is_eval, list(TEST_COLUMNS)].itertuples(index=False),
    )
