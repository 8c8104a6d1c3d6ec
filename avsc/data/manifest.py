"""A dataset as a clip manifest: one row per clip, whatever the collection's layout.

Columns (method.md section 1 generalised; the recipes of :mod:`avsc.data.recipes` write them):

* ``clip``: a unique id;
* ``audio`` and/or ``video``: paths relative to the manifest's ``root`` (absolute paths and
  ``..`` steps are allowed in a user's own manifest file);
* ``label``: the class, any text without tabs or line breaks;
* ``group`` (optional): the recording location or source; clips of one group never land on
  two sides of a split;
* ``fold`` (optional, predefined cross-validation folds) or ``split`` (optional, ``train`` /
  ``val`` / ``test``; empty: not used).

The label set is the sorted unique labels unless a labels file (one label per line) fixes the
order. A recipe may add columns of its own (TAU's ``city``), kept in memory for its tables.
Every problem a recipe finds is collected in :attr:`Manifest.problems` (``avsc validate``
lists them all; ``avsc preprocess`` refuses a manifest with errors before any work).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from avsc.utils import TEXT_OUT, fs_str, text_bytes

#: the manifest's columns, in the order a manifest file lists them
COLUMNS: tuple[str, ...] = ("clip", "audio", "video", "label", "group", "fold", "split")
MODALITIES: tuple[str, ...] = ("audio", "video")
SPLIT_VALUES: tuple[str, ...] = ("train", "val", "test")
#: file name extensions (lower case, no dot) the ``folders`` recipe takes as audio or video
AUDIO_EXTENSIONS: tuple[str, ...] = ("wav", "flac", "ogg", "mp3", "m4a")
VIDEO_EXTENSIONS: tuple[str, ...] = ("mp4", "mov", "mkv", "webm", "avi")
#: column names of the tables avsc writes beside one probability column per label
#: (per-segment probabilities, predictions, submissions): a label may not take one of them
RESERVED_LABELS: frozenset[str] = frozenset(
    {"clip", "segment", "label", "identifier", "filename", "start_s", "end_s", "scene_label"}
)


class DatasetError(ValueError):
    """A dataset root, manifest or metadata file that cannot be read; names the file."""


@dataclass(frozen=True)
class Problem:
    """One finding: the file it concerns, what is wrong, and ``error`` or ``warning``."""

    file: str
    problem: str
    severity: str = "error"


@dataclass
class Manifest:
    """A collection of labelled clips (see the module docstring).

    ``clips``: one row per clip (strings; absent optional columns are absent or empty);
    ``root``: the folder the paths are relative to; ``labels``: the class names in class-index
    order; ``recipe``: the recipe that made it; ``source``: the folder or file it was made
    from; ``problems``: what the recipe found; ``unknown``: files it did not take (an unknown
    extension), relative to ``root``; ``clip_seconds``: the length every clip has in the
    collection's own format (TAU: 10 s), None where lengths vary."""

    clips: pd.DataFrame
    root: Path
    labels: tuple[str, ...]
    recipe: str
    source: Path
    problems: list[Problem] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    clip_seconds: float | None = None
    #: the audio format the collection promises (TAU: 48 kHz stereo): validate warns otherwise
    audio_format: tuple[int, int] | None = None

    # ------------------------------------------------------------------ what it holds
    @property
    def modalities(self) -> tuple[str, ...]:
        """``("audio",)``, ``("video",)`` or ``("audio", "video")``: the media its clips have."""
        return tuple(m for m in MODALITIES if self._has(m))

    def _has(self, column: str) -> bool:
        return column in self.clips.columns and bool((self.clips[column] != "").any())

    @property
    def has_folds(self) -> bool:
        return self._has("fold")

    @property
    def has_splits(self) -> bool:
        return self._has("split")

    @property
    def folds(self) -> list[str]:
        """The predefined folds, in natural order (``2`` before ``10``)."""
        if not self.has_folds:
            return []
        return sorted(set(self.clips["fold"]) - {""}, key=natural_key)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def label_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    def __len__(self) -> int:
        return len(self.clips)

    def __repr__(self) -> str:
        return (
            f"Manifest({self.recipe}, {str(self.source)!r}, clips={len(self)}, "
            f"labels={len(self.labels)}, modalities={'+'.join(self.modalities) or 'none'})"
        )

    def column(self, name: str) -> pd.Series:
        """A column of :attr:`clips`, empty strings where the manifest has none."""
        if name in self.clips.columns:
            return self.clips[name]
        return pd.Series([""] * len(self.clips), index=self.clips.index, dtype=object)

    def groups(self) -> pd.Series:
        """Each clip's group: its ``group``, or the clip itself where none is given."""
        g = self.column("group")
        return g.where(g != "", self.clips["clip"])

    def row(self, clip: str) -> pd.Series:
        rows = self.clips[self.clips["clip"] == clip]
        if not len(rows):
            raise KeyError(f"clip {clip!r} is not in the manifest {self.source}")
        return rows.iloc[0]

    def path(self, relative: str) -> Path:
        """An ``audio`` / ``video`` entry as a path (relative to :attr:`root`)."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    def audio_path(self, clip: str) -> Path | None:
        value = self.row(clip).get("audio", "")
        return self.path(value) if value else None

    def video_path(self, clip: str) -> Path | None:
        value = self.row(clip).get("video", "")
        return self.path(value) if value else None

    def describe(self) -> str:
        """``400 clips, 10 labels, audio (recipe folders)``."""
        return (
            f"{len(self)} clips, {len(self.labels)} labels, "
            f"{' + '.join(self.modalities) or 'no media'} (recipe {self.recipe})"
        )

    # ------------------------------------------------------------------ identity
    def standard(self) -> pd.DataFrame:
        """The standard columns only (absent ones left out), in :data:`COLUMNS` order."""
        cols = [c for c in COLUMNS if c in self.clips.columns]
        return self.clips[cols].copy()

    def sha1(self) -> str:
        """A digest of the labels and the standard columns of every clip (sorted by clip):
        the same collection gives the same digest wherever its root lies."""
        df = self.standard().sort_values("clip")
        h = hashlib.sha1()
        h.update(text_bytes("\x1f".join(self.labels)))
        h.update(b"\x1e")
        h.update(text_bytes(df.to_csv(index=False, lineterminator="\n")))
        return h.hexdigest()

    def raise_errors(self, limit: int = 20) -> None:
        """A :class:`DatasetError` listing every error (one per line), if there is any."""
        raise_problems(self.source, self.errors, limit)


def raise_problems(source, errors: list[Problem], limit: int = 20) -> None:
    """A :class:`DatasetError` listing ``errors`` of the collection at ``source``, one per
    line (at most ``limit``), saying that nothing was done; nothing when there are none."""
    if not errors:
        return
    lines = [
        f"{source}: {len(errors)} metadata problem(s); nothing was done "
        f"(avsc validate {source} lists every problem):"
    ]
    lines += [f"  {p.file}: {p.problem}" for p in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"  ... and {len(errors) - limit} more")
    raise DatasetError("\n".join(lines))


# --------------------------------------------------------------------------------------
# checks shared by every recipe


def natural_key(text: str) -> tuple:
    """Sort key: digits compare as numbers (``fold2`` before ``fold10``)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text))


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot be a class name, or None: empty, tabs, line breaks or other
    control characters (they break the tab-separated files avsc writes), surrounding
    spaces, or a column name of avsc's probability tables."""
    if label == "":
        return "empty label"
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in label):
        return (
            f"label {label!r} holds a tab, line break or other control character; avsc writes "
            "labels into tab-separated files: rename it"
        )
    if label != label.strip():
        return f"label {label!r} starts or ends with a space: rename it (the name is kept exactly)"
    if label in RESERVED_LABELS:
        return (
            f"label {label!r} is a column name of avsc's probability tables "
            f"({', '.join(sorted(RESERVED_LABELS))}): rename it"
        )
    return None


def clip_problem(clip: str) -> str | None:
    """Why ``clip`` cannot be a clip id, or None."""
    if clip == "":
        return "empty clip id"
    if any(unicodedata.category(ch) == "Cc" for ch in clip):
        return f"clip id {clip!r} holds a control character"
    return None


def check_clips(
    df: pd.DataFrame,
    where: str,
    lines: Sequence[int | None] | None = None,
    labels: Sequence[str] | None = None,
) -> list[Problem]:
    """The problems every manifest is checked for: ids (empty, duplicate), labels (empty,
    unusable, not in a fixed label list), clips with no media, clips with only one modality in
    a collection that has both (the stems do not pair), split values, and groups that span
    two folds. ``where`` names the file; ``lines`` the line of each row there (for messages)."""
    out: list[Problem] = []
    n = len(df)
    lines = list(lines) if lines is not None else [None] * n

    def at(i: int) -> str:
        return f"{where}:{lines[i]}" if lines[i] is not None else where

    col = {c: (df[c].tolist() if c in df.columns else [""] * n) for c in COLUMNS}
    seen: dict[str, int] = {}
    for i, clip in enumerate(col["clip"]):
        why = clip_problem(clip)
        if why:
            out.append(Problem(at(i), why))
        elif clip in seen:
            first = lines[seen[clip]]
            also = f" (also line {first})" if first is not None else ""
            out.append(Problem(at(i), f"duplicate clip id {clip!r}{also}"))
        else:
            seen[clip] = i
    known = set(labels) if labels is not None else None
    bad_labels: set[str] = set()
    for i, label in enumerate(col["label"]):
        why = label_problem(label)
        if why and label not in bad_labels:
            bad_labels.add(label)
            out.append(Problem(at(i), f"clip {col['clip'][i]!r}: {why}"))
        elif not why and known is not None and label not in known:
            out.append(
                Problem(at(i), f"clip {col['clip'][i]!r}: label {label!r} is not in the label list")
            )
    has = {m: any(col[m]) for m in MODALITIES}
    for i in range(n):
        a, v = col["audio"][i], col["video"][i]
        if not a and not v:
            out.append(Problem(at(i), f"clip {col['clip'][i]!r} has neither audio nor video"))
        elif has["audio"] and has["video"] and not (a and v):
            have, lack = ("audio", "video") if a else ("video", "audio")
            out.append(
                Problem(
                    at(i),
                    f"{have} {a or v} has no {lack} to pair with (other clips have both; "
                    f"pair them by name, or keep one modality with -p data.modalities=[{have}])",
                )
            )
        s = col["split"][i]
        if s and s not in SPLIT_VALUES:
            out.append(
                Problem(
                    at(i),
                    f"clip {col['clip'][i]!r}: split {s!r}; expected one of "
                    f"{', '.join(SPLIT_VALUES)} (or empty: not used)",
                )
            )
    if any(col["fold"]) and any(col["split"]):
        out.append(Problem(where, "has both a fold and a split column: give one of them"))
    if any(col["fold"]):
        missing = [i for i in range(n) if not col["fold"][i]]
        if missing:
            out.append(
                Problem(
                    at(missing[0]),
                    f"{len(missing)} clip(s) have no fold (e.g. {col['clip'][missing[0]]!r}); "
                    "every clip of a manifest with folds needs one",
                )
            )
        folds_of: dict[str, set[str]] = {}
        for g, f in zip(col["group"], col["fold"], strict=True):
            if g and f:
                folds_of.setdefault(g, set()).add(f)
        for g, fs in sorted(folds_of.items()):
            if len(fs) > 1:
                out.append(
                    Problem(
                        where,
                        f"group {g!r} spans folds {', '.join(sorted(fs, key=natural_key))}: "
                        "clips of one group must stay in one fold",
                    )
                )
    return out


def sorted_labels(values: Iterable[str]) -> tuple[str, ...]:
    """The label set of a collection: its distinct usable labels, sorted."""
    return tuple(sorted({v for v in values if not label_problem(v)}))


def read_labels_file(path: str | os.PathLike) -> tuple[str, ...]:
    """A labels file: one label per line, in class-index order (blank lines ignored). A
    missing file, a duplicate or an unusable label is a :class:`DatasetError` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the labels file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: the labels file is not UTF-8 text ({exc.reason})") from exc
    labels: list[str] = []
    for i, line in enumerate(fs_str(text).splitlines(), start=1):
        if not line.strip():
            continue
        why = label_problem(line)
        if why:
            raise DatasetError(f"{path}:{i}: {why}")
        if line in labels:
            raise DatasetError(f"{path}:{i}: label {line!r} is listed twice")
        labels.append(line)
    if not labels:
        raise DatasetError(f"{path}: the labels file lists no label")
    return tuple(labels)


def with_labels(manifest: Manifest, labels_file: str | os.PathLike | None) -> Manifest:
    """``manifest`` with its label order fixed by ``labels_file`` (when given): every label of
    a clip must be listed there (else an error naming the clip); listed labels without clips
    are kept (a model then has an output for them)."""
    if not labels_file:
        return manifest
    labels = read_labels_file(labels_file)
    known = set(labels)
    for clip, label in zip(manifest.clips["clip"], manifest.clips["label"], strict=True):
        if label not in known and not label_problem(label):
            manifest.problems.append(
                Problem(str(labels_file), f"clip {clip!r}: label {label!r} is not listed here")
            )
    manifest.labels = labels
    return manifest


# --------------------------------------------------------------------------------------
# manifest files


def _relative(path: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive (Windows): keep it absolute
        return path.as_posix()


def write_manifest(manifest: Manifest, path: str | os.PathLike) -> Path:
    """Write the manifest's standard columns as CSV (``.csv``) or TSV (``.tsv``) with paths
    relative to the file's folder, so that the ``csv`` recipe reads it back as the same
    collection; where the label order is not the sorted one, ``<name>.labels.txt`` beside it
    fixes it. Written atomically, UTF-8. Returns the path."""
    from avsc.utils import atomic_path

    path = Path(path)
    df = manifest.standard()
    folder = path.resolve().parent
    for m in MODALITIES:
        if m in df.columns:
            df[m] = [_relative(manifest.path(v), folder) if v else "" for v in df[m]]
    for c in ("group", "fold", "split"):
        if c in df.columns and not (df[c] != "").any():
            df = df.drop(columns=c)
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, sep=sep, lineterminator="\n", **TEXT_OUT)
    labels_path = labels_file_for(path)
    if tuple(manifest.labels) != tuple(sorted(manifest.labels)):
        with atomic_path(labels_path) as tmp:
            tmp.write_text("".join(f"{name}\n" for name in manifest.labels), **TEXT_OUT)
    return path


def labels_file_for(manifest_file: str | os.PathLike) -> Path:
    """``manifest.csv`` -> ``manifest.labels.txt``: the labels file the csv recipe reads."""
    p = Path(manifest_file)
    return p.with_name(f"{p.stem}.labels.txt")


def read_table(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """A user's CSV or TSV manifest as strings, with the file line of each row. The delimiter
    is the suffix's (``.tsv``: tab) or, for other files, whichever of comma, tab and semicolon
    splits the header. Quoted fields may hold commas, quotes and line breaks. Malformed text
    is a :class:`DatasetError` naming the file and line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text ({exc.reason})") from exc
    text = fs_str(text)  # its names as the file system names them, whatever the locale
    if not text.strip():
        raise DatasetError(f"{path}: the manifest is empty (no header)")
    header = text.splitlines()[0]
    if path.suffix.lower() == ".tsv":
        sep = "\t"
    else:
        sep = max((",", "\t", ";"), key=lambda s: header.count(s))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    rows, lines = [], []
    try:
        head = [h.strip() for h in next(reader)]
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(head):
                raise DatasetError(
                    f"{path}:{reader.line_num}: {len(row)} field(s), the header has {len(head)} "
                    f"({', '.join(head)}); a value holding the delimiter {sep!r} must be quoted"
                )
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DatasetError(
            f"{path}:{reader.line_num}: malformed {sep!r}-separated text ({exc})"
        ) from exc
    dupes = sorted({h for h in head if head.count(h) > 1})
    if dupes:
        raise DatasetError(f"{path}: column(s) {', '.join(dupes)} appear more than once")
    df = pd.DataFrame(rows, columns=head, dtype=object)
    return df, lines
