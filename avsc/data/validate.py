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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from avsc.data.tau import Problem, check_metadata


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
    check = check_metadata(root)
    report.problems.extend(check.problems)
    if check.meta is None:
        return report
    meta = check.meta
    report.clips = meta["filename_audio"].nunique()

    # files: never outside the root (a refused path is not even looked at)
    rows = meta.drop_duplicates("filename_audio")
    jobs = [
        (root / a, root / v)
        for a, v in zip(rows["filename_audio"], rows["filename_video"], strict=True)
        if a not in check.bad_paths and v not in check.bad_paths
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


def _check_files(
    audio: Path, video: Path, deep: bool, clip_seconds: float, tol: float
) -> list[Problem]:
    import soundfile as sf

    from avsc.data.media import VideoError, video_info

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
                bad = int(np.count_nonzero(~np.isfinite(data)))
                if bad:
                    found.append(
                        Problem(str(audio), f"audio holds {bad} NaN or infinite sample(s)")
                    )
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
