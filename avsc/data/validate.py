"""``avsc validate ROOT``: every problem of a TAU-layout dataset in one report.

Checks the metadata (headers, names, labels, duplicates, fold consistency) and the files
(missing, unreadable, wrong format or length). Nothing stops at the first problem: each one
is collected with the file it concerns. ``deep`` decodes every file completely, which also
catches truncated data behind an intact header.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from avsc.data.tau import (
    FOLD_COLUMNS,
    FOLDS,
    LABELS,
    META_COLUMNS,
    TEST_COLUMNS,
    DatasetError,
    find_meta_dir,
    parse_clip_name,
    read_tsv,
)


@dataclass(frozen=True)
class Problem:
    """One finding: the file it concerns, what is wrong, and ``error`` or ``warning``."""

    file: str
    problem: str
    severity: str = "error"


@dataclass
class ValidationReport:
    """All findings for one dataset root."""

    root: Path
    clips: int = 0
    problems: list[Problem] = field(default_factory=list)

    def add(self, file: str | os.PathLike, problem: str, severity: str = "error") -> None:
        self.problems.append(Problem(str(file), problem, severity))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [(p.severity, p.file, p.problem) for p in self.problems],
            columns=["severity", "file", "problem"],
        )

    def format(self, limit: int | None = None) -> str:
        head = (
            f"{self.root}: {self.clips} clips checked, {len(self.errors)} error(s), "
            f"{len(self.warnings)} warning(s)"
        )
        lines = [head]
        shown = self.problems if limit is None else self.problems[:limit]
        for p in shown:
            lines.append(f"  {p.severity.upper():7s} {p.file}: {p.problem}")
        if limit is not None and len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def validate_dataset(
    root: str | os.PathLike,
    deep: bool = False,
    clip_seconds: float = 10.0,
    length_tolerance: float = 0.02,
    workers: int = 4,
) -> ValidationReport:
    """Check a TAU Urban Audio-Visual Scenes 2021 root; return a :class:`ValidationReport`.

    Metadata: headers, clip names ``<scene>-<city>-<location>-<segment>``, labels (known and
    matching the name), identifiers, duplicate rows, fold rows absent from meta.csv, labels
    that disagree between files, locations in both fold1_train and fold1_evaluate. Files:
    missing audio or video, unreadable files, audio that is not 48 kHz stereo, audio or video
    whose length differs from ``clip_seconds`` by more than ``length_tolerance``, files on
    disk that meta.csv does not list (warnings).
    """
    root = Path(root)
    report = ValidationReport(root)
    try:
        meta_dir = find_meta_dir(root)
    except DatasetError as exc:
        report.add(root, str(exc).split(": ", 1)[-1])
        return report
    meta_path = meta_dir / "meta.csv"
    try:
        meta = read_tsv(meta_path, META_COLUMNS)
    except DatasetError as exc:
        report.add(meta_path, str(exc).split(": ", 1)[-1])
        return report

    labels_by_clip = _check_rows(report, meta, meta_path, has_identifier=True)
    report.clips = len(labels_by_clip)

    fold_clips: dict[str, set[str]] = {}
    for fold in FOLDS:
        path = meta_dir / "evaluation_setup" / f"fold1_{fold}.csv"
        cols = TEST_COLUMNS if fold == "test" else FOLD_COLUMNS
        try:
            df = read_tsv(path, cols)
        except DatasetError as exc:
            report.add(path, str(exc).split(": ", 1)[-1])
            continue
        fold_labels = _check_rows(report, df, path, has_identifier=False)
        fold_clips[fold] = set(fold_labels)
        for clip, label in fold_labels.items():
            if clip not in labels_by_clip:
                report.add(path, f"{clip} is not listed in meta.csv")
            elif label is not None and labels_by_clip[clip] not in (None, label):
                report.add(
                    path, f"{clip} labelled {label!r} here, {labels_by_clip[clip]!r} in meta.csv"
                )
    if "train" in fold_clips and "evaluate" in fold_clips:
        both = fold_clips["train"] & fold_clips["evaluate"]
        for clip in sorted(both):
            report.add(
                meta_dir / "evaluation_setup", f"{clip} is in both fold1_train and fold1_evaluate"
            )
        locs = _locations(fold_clips["train"]) & _locations(fold_clips["evaluate"])
        for loc in sorted(locs):
            report.add(
                meta_dir / "evaluation_setup",
                f"location {loc} appears in both fold1_train and fold1_evaluate",
                "warning",
            )

    rows = meta.drop_duplicates("filename_audio")
    jobs = [
        (root / a, root / v)
        for a, v in zip(rows["filename_audio"], rows["filename_video"], strict=True)
    ]
    with cf.ThreadPoolExecutor(max(1, workers)) as ex:
        for found in ex.map(lambda j: _check_files(*j, deep, clip_seconds, length_tolerance), jobs):
            report.problems.extend(found)

    listed_audio = {root / a for a in meta["filename_audio"]}
    listed_video = {root / v for v in meta["filename_video"]}
    for sub, listed in (("audio", listed_audio), ("video", listed_video)):
        folder = root / sub
        if not folder.is_dir():
            report.add(folder, f"{sub}/ folder is missing")
            continue
        for p in sorted(folder.iterdir()):
            if p.is_file() and p not in listed and not p.name.startswith("."):
                report.add(p, "file on disk is not listed in meta.csv", "warning")
    return report


def _locations(clips: set[str]) -> set[str]:
    out = set()
    for c in clips:
        try:
            out.add(parse_clip_name(c).identifier)
        except DatasetError:
            pass
    return out


def _check_rows(
    report: ValidationReport, df: pd.DataFrame, path: Path, has_identifier: bool
) -> dict[str, str | None]:
    """Row-level checks of one metadata file; returns clip -> label (None when unlabelled)."""
    out: dict[str, str | None] = {}
    counts = Counter(df["filename_audio"])
    for name, n in sorted(counts.items()):
        if n > 1:
            report.add(path, f"duplicate rows: {name} listed {n} times")
    for i, row in enumerate(df.itertuples(index=False), start=2):  # line 1 is the header
        where = f"{path}:{i}"
        try:
            a = parse_clip_name(row.filename_audio)
            v = parse_clip_name(row.filename_video)
        except DatasetError as exc:
            report.add(where, str(exc))
            continue
        if not row.filename_audio.startswith("audio/") or not row.filename_video.startswith(
            "video/"
        ):
            report.add(
                where,
                "files should be under audio/ and video/: "
                f"{row.filename_audio}, {row.filename_video}",
            )
        if a.clip != v.clip:
            report.add(
                where,
                f"audio {row.filename_audio} and video {row.filename_video} name different clips",
            )
        label = getattr(row, "scene_label", None)
        if label is not None:
            if label not in LABELS:
                report.add(where, f"unknown label {label!r} for {a.clip}")
            elif label != a.scene:
                report.add(where, f"label {label!r} but the file name says {a.scene!r}")
        elif a.scene not in LABELS:
            report.add(where, f"unknown scene {a.scene!r} in the name {a.clip}")
        if has_identifier and row.identifier != a.identifier:
            report.add(
                where, f"identifier {row.identifier!r} but the file name says {a.identifier!r}"
            )
        out[a.clip] = label
    return out


def _check_files(
    audio: Path, video: Path, deep: bool, clip_seconds: float, tol: float
) -> list[Problem]:
    import soundfile as sf

    from avsc.features.video import VideoError, video_info

    found: list[Problem] = []
    if not audio.is_file():
        found.append(Problem(str(audio), "audio file missing"))
    else:
        try:
            info = sf.info(str(audio))
            seconds = info.frames / info.samplerate
            if info.samplerate != 48000 or info.channels != 2:
                found.append(
                    Problem(
                        str(audio),
                        f"{info.samplerate} Hz, {info.channels} channel(s); TAU is 48 kHz stereo",
                        "warning",
                    )
                )
            if deep:
                data, sr = sf.read(str(audio), dtype="float32", always_2d=True)
                seconds = len(data) / sr
            if abs(seconds - clip_seconds) > tol:
                found.append(
                    Problem(
                        str(audio), f"wrong length: {seconds:.3f} s, expected {clip_seconds:g} s"
                    )
                )
        except Exception as exc:
            found.append(Problem(str(audio), f"unreadable audio ({type(exc).__name__}: {exc})"))
    if not video.is_file():
        found.append(Problem(str(video), "video file missing"))
    else:
        try:
            vi = video_info(video)
            seconds = vi.duration
            if deep:
                seconds = _decoded_duration(video, vi.fps)
            if not math.isfinite(seconds) or abs(seconds - clip_seconds) > tol:
                found.append(
                    Problem(
                        str(video), f"wrong length: {seconds:.3f} s, expected {clip_seconds:g} s"
                    )
                )
        except VideoError as exc:
            found.append(Problem(str(video), str(exc).split(": ", 1)[-1]))
        except Exception as exc:
            found.append(Problem(str(video), f"unreadable video ({type(exc).__name__}: {exc})"))
    return found


def _decoded_duration(path: Path, fps: float) -> float:
    """Decode every frame; the stream's real length is the last timestamp plus one frame."""
    import av

    last = None
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        start = float((s.start_time or 0) * s.time_base)
        for frame in c.decode(s):
            if frame.time is not None:
                last = frame.time
    if last is None:
        raise ValueError("no frame decodes")
    return last - start + (1.0 / fps if fps else 0.0)
