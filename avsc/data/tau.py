"""TAU Urban Audio-Visual Scenes 2021: labels, file names, metadata and fold files.

Implements method.md section 1. A dataset root holds ``audio/`` and ``video/``; the metadata
(``meta.csv`` and ``evaluation_setup/fold1_{train,evaluate,test}.csv``, all tab-separated)
sits either at the root or in a sibling folder ``<root name>.meta/``.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import pandas as pd

from avsc.data.manifest import DatasetError, Manifest, Problem, raise_problems
from avsc.utils import read_names_csv

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


TAU_CLIP_SECONDS = 10.0  # every clip of the development set lasts 10 s
TAU_AUDIO_FORMAT = (48000, 2)  # 48 kHz, 2 channels (binaural)

GET_DATASET = (
    "Fetch the development set (Zenodo 4477542, 108 GB) with `avsc download --dataset dev "
    "--out DIR`, then set AVSC_DATA_ROOT=DIR or pass -p data_dir=DIR"
)  # what a missing data root's message tells the user to do


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
        df = read_names_csv(path, sep="\t", dtype=str, keep_default_na=False)
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


@dataclass
class MetadataCheck:
    """What :func:`check_metadata` found: every problem, and the tables it could read."""

    root: Path
    meta_dir: Path | None = None
    meta: pd.DataFrame | None = None  # meta.csv as read (official columns), None if unreadable
    folds: dict[str, pd.DataFrame] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    bad_paths: set[str] = field(default_factory=set)  # filenames not confined to the root

    def add(self, file: str | os.PathLike, problem: str, severity: str = "error") -> None:
        self.problems.append(Problem(str(file), problem, severity))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def raise_errors(self, limit: int = 20) -> None:
        """A :class:`DatasetError` listing every error (one per line), if there is any."""
        raise_problems(self.root, self.errors, limit)


def path_problem(filename: str, folder: str) -> str | None:
    """Why a metadata ``filename`` is not a file of the dataset root's ``folder`` (``audio``
    or ``video``), or None: absolute paths, ``..`` steps and other folders are refused."""
    if not filename:
        return "empty file name"
    if PurePosixPath(filename).is_absolute() or PureWindowsPath(filename).is_absolute():
        return f"absolute path {filename}; paths are relative to the dataset root"
    parts = PurePosixPath(filename.replace("\\", "/")).parts
    if ".." in parts:
        return f"path {filename} leaves the dataset root ('..')"
    if len(parts) < 2 or parts[0] != folder:
        return f"{filename} is not under {folder}/"
    return None


def check_metadata(root: str | os.PathLike, require_folds: bool = True) -> MetadataCheck:
    """Every metadata problem of a TAU root at once, before any work: missing or malformed
    files, empty lists, clip names ``<scene>-<city>-<location>-<segment>``, unknown labels,
    labels that disagree with the file name or between files, identifiers, paths that are
    absolute or leave the root, audio and video naming different clips, duplicate rows, fold
    rows absent from meta.csv, clips in both fold1_train and fold1_evaluate; and (warnings)
    locations in both. A missing fold file is an error only with ``require_folds``. Shared by
    ``avsc validate``, :class:`TAUDataset` and ``avsc preprocess``."""
    check = MetadataCheck(Path(root))
    try:
        check.meta_dir = find_meta_dir(root)
    except DatasetError as exc:
        check.add(root, str(exc).split(": ", 1)[-1])
        return check
    meta_path = check.meta_dir / "meta.csv"
    try:
        check.meta = read_tsv(meta_path, META_COLUMNS)
    except DatasetError as exc:
        check.add(meta_path, str(exc).split(": ", 1)[-1])
        return check
    labels_by_clip = _check_rows(check, check.meta, meta_path, has_identifier=True)

    fold_clips: dict[str, set[str]] = {}
    for fold in FOLDS:
        path = check.meta_dir / "evaluation_setup" / f"fold1_{fold}.csv"
        cols = TEST_COLUMNS if fold == "test" else FOLD_COLUMNS
        if not path.is_file():
            if require_folds:
                check.add(path, "metadata file is missing")
            continue
        try:
            df = read_tsv(path, cols)
        except DatasetError as exc:
            check.add(path, str(exc).split(": ", 1)[-1])
            continue
        check.folds[fold] = df
        fold_labels = _check_rows(check, df, path, has_identifier=False)
        fold_clips[fold] = set(fold_labels)
        for clip, label in fold_labels.items():
            if clip not in labels_by_clip:
                check.add(path, f"{clip} is not listed in meta.csv")
            elif label is not None and labels_by_clip[clip] not in (None, label):
                check.add(
                    path, f"{clip} labelled {label!r} here, {labels_by_clip[clip]!r} in meta.csv"
                )
    if "train" in fold_clips and "evaluate" in fold_clips:
        setup = check.meta_dir / "evaluation_setup"
        for clip in sorted(fold_clips["train"] & fold_clips["evaluate"]):
            check.add(setup, f"{clip} is in both fold1_train and fold1_evaluate")
        both = _locations(fold_clips["train"]) & _locations(fold_clips["evaluate"])
        for loc in sorted(both):
            check.add(
                setup, f"location {loc} appears in both fold1_train and fold1_evaluate", "warning"
            )
    return check


def _locations(clips: set[str]) -> set[str]:
    out = set()
    for c in clips:
        try:
            out.add(parse_clip_name(c).identifier)
        except DatasetError:
            pass
    return out


def _check_rows(
    check: MetadataCheck, df: pd.DataFrame, path: Path, has_identifier: bool
) -> dict[str, str | None]:
    """Row-level checks of one metadata file; returns clip -> label (None when unlabelled)."""
    out: dict[str, str | None] = {}
    if not len(df):
        check.add(path, "lists no clips (only a header)")
        return out
    counts = Counter(df["filename_audio"])
    for name, n in sorted(counts.items()):
        if n > 1:
            check.add(path, f"duplicate rows: {name} listed {n} times")
    for i, row in enumerate(df.itertuples(index=False), start=2):  # line 1 is the header
        where = f"{path}:{i}"
        bad_path = False
        for name, folder in ((row.filename_audio, "audio"), (row.filename_video, "video")):
            why = path_problem(name, folder)
            if why is not None:
                check.add(where, why)
                check.bad_paths.add(name)
                bad_path = True
        try:
            a = parse_clip_name(row.filename_audio)
            v = parse_clip_name(row.filename_video)
        except DatasetError as exc:
            check.add(where, str(exc))
            continue
        if a.clip != v.clip:
            check.add(
                where,
                f"audio {row.filename_audio} and video {row.filename_video} name different clips",
            )
        label = getattr(row, "scene_label", None)
        if label is not None:
            if label not in LABELS:
                check.add(where, f"unknown label {label!r} for {a.clip}")
            elif label != a.scene:
                check.add(where, f"label {label!r} but the file name says {a.scene!r}")
        elif a.scene not in LABELS:
            check.add(where, f"unknown scene {a.scene!r} in the name {a.clip}")
        if has_identifier and row.identifier != a.identifier:
            check.add(
                where, f"identifier {row.identifier!r} but the file name says {a.identifier!r}"
            )
        if not bad_path:
            out[a.clip] = label
        else:
            out.setdefault(a.clip, label)
    return out


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
    Loading runs :func:`check_metadata` and refuses a root with any metadata error, listing
    them all (a missing fold file is allowed: :meth:`fold` names it when asked);
    :func:`avsc.data.validate.validate_dataset` also checks the files themselves.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        check = check_metadata(self.root, require_folds=False)
        check.raise_errors()
        assert check.meta_dir is not None and check.meta is not None
        self.meta_dir = check.meta_dir
        self.meta_path = self.meta_dir / "meta.csv"
        self.meta = annotate(check.meta.drop(columns=["identifier"]))
        self.folds: dict[str, pd.DataFrame] = {k: annotate(v) for k, v in check.folds.items()}

    def fold_path(self, fold: str) -> Path:
        return self.meta_dir / "evaluation_setup" / f"fold1_{fold}.csv"

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


def tau_manifest(
    root: str | os.PathLike, clip_seconds: float | None = TAU_CLIP_SECONDS
) -> Manifest:
    """The clip manifest of a TAU root (the ``tau2021av`` recipe): every clip of ``meta.csv``
    with ``audio`` and ``video`` as listed, ``label`` its scene, ``group`` its recording
    location (``identifier``), ``split`` ``train`` for fold1_train and ``test`` for
    fold1_evaluate (empty for a clip in neither); extra columns ``city`` and ``location`` for
    the dataset's tables. Rows come in fold1_train's order, then fold1_evaluate's, then the
    rest of meta.csv's, so that a split drawn from the training clips sees them as listed.
    Every problem of :func:`check_metadata` is in ``problems``, with (warnings) files on disk
    that meta.csv does not list; rows whose paths leave the root are left out."""
    root = Path(root)
    check = check_metadata(root, require_folds=False)
    problems = list(check.problems)
    if check.meta_dir is not None and check.meta is not None:
        for fold in ("train", "evaluate"):
            if (
                fold not in check.folds
                and not (check.meta_dir / "evaluation_setup" / f"fold1_{fold}.csv").is_file()
            ):
                problems.append(
                    Problem(
                        str(check.meta_dir / "evaluation_setup" / f"fold1_{fold}.csv"),
                        "metadata file is missing: the clips get a seeded split instead "
                        "(data.test_fraction, data.val_fraction)",
                        "warning",
                    )
                )
    cols = ["clip", "audio", "video", "label", "group", "split", "city", "location"]
    source = root
    if check.meta is None:
        return Manifest(pd.DataFrame(columns=cols), root, LABELS, "tau2021av", source, problems,
                        clip_seconds=clip_seconds, audio_format=TAU_AUDIO_FORMAT)  # fmt: skip
    meta = check.meta.drop_duplicates("filename_audio")
    meta = meta[
        ~meta["filename_audio"].isin(check.bad_paths)
        & ~meta["filename_video"].isin(check.bad_paths)
    ]
    split: dict[str, str] = {}
    order: list[str] = []
    for fold, value in (("train", "train"), ("evaluate", "test")):
        if fold in check.folds:
            for name in check.folds[fold]["filename_audio"]:
                c = clip_id(name)
                if c not in split:
                    split[c] = value
                    order.append(c)
    rows = []
    for r in meta.itertuples(index=False):
        c = clip_id(r.filename_audio)
        try:
            parsed = parse_clip_name(r.filename_audio)
            city, location = parsed.city, parsed.location
        except DatasetError:
            city = location = ""
        rows.append((c, r.filename_audio, r.filename_video, r.scene_label, r.identifier,
                     split.get(c, ""), city, location))  # fmt: skip
    df = pd.DataFrame(rows, columns=cols)
    rank = {c: i for i, c in enumerate(order)}
    df["_order"] = [rank.get(c, len(rank) + i) for i, c in enumerate(df["clip"])]
    df = df.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    listed = {
        "audio": {root / a for a in meta["filename_audio"]},
        "video": {root / v for v in meta["filename_video"]},
    }
    for sub in ("audio", "video"):
        folder = root / sub
        if not folder.is_dir():
            problems.append(Problem(str(folder), f"{sub}/ folder is missing"))
            continue
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.startswith(".") and p not in listed[sub]:
                problems.append(
                    Problem(str(p), "file on disk is not listed in meta.csv", "warning")
                )
    return Manifest(df, root, LABELS, "tau2021av", source, problems, clip_seconds=clip_seconds,
                    audio_format=TAU_AUDIO_FORMAT)  # fmt: skip


def _write_tsv(path: Path, header: Iterable[str], rows: Iterable[Iterable[str]]) -> None:
    from avsc.utils import TEXT_OUT, atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", **TEXT_OUT) as fh:
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


def evaluation_files(root: str | os.PathLike) -> pd.DataFrame:
    """The files of a DCASE evaluation set (1-s clips, no labels): ``filename_audio`` and
    ``filename_video`` of ``evaluation_setup/fold1_test.csv`` (also under a sibling
    ``<name>.meta/`` folder), else every ``audio/*.wav`` with its ``video/<name>.mp4``."""
    root = Path(root)
    try:
        listing = find_meta_dir(root) / "evaluation_setup" / "fold1_test.csv"
    except DatasetError:
        listing = root / "evaluation_setup" / "fold1_test.csv"
    if listing.is_file():
        return read_tsv(listing, ("filename_audio", "filename_video"))
    wavs = sorted((root / "audio").glob("*.wav"))
    if not wavs:
        raise FileNotFoundError(
            f"{root}: no evaluation_setup/fold1_test.csv and no audio/*.wav: not an evaluation "
            "set root"
        )
    return pd.DataFrame(
        {
            "filename_audio": [f"audio/{w.name}" for w in wavs],
            "filename_video": [f"video/{w.stem}.mp4" for w in wavs],
        }
    )
