"""``avsc validate ROOT``: every problem of a collection in one report, whatever its recipe.

Checks the manifest (what the recipe found: headers, names, labels, duplicate ids, audio and
video that do not pair, groups spanning folds, files of unknown type), whether it can be
split as asked (labels with too few clips or groups), and the files (missing, unreadable,
empty, shorter than one segment, of the wrong length where a length is asked). Nothing stops
at the first problem: each one is collected with the file it concerns. ``deep`` decodes every
file completely, which also catches truncated data behind an intact header.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from avsc.data.manifest import Manifest, Problem


@dataclass
class ValidationReport:
    """All findings for one collection."""

    root: Path
    clips: int = 0
    problems: list[Problem] = field(default_factory=list)
    manifest: Manifest | None = None

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
        m = self.manifest
        if m is not None:
            split = "folds " + ", ".join(m.folds) if m.has_folds else (
                "given splits" if m.has_splits else "no folds or splits (a seeded split)"
            )  # fmt: skip
            lines.append(
                f"  recipe {m.recipe}: {len(m.labels)} labels, "
                f"{' + '.join(m.modalities) or 'no media'}, {split}"
                + (f"; {len(m.unknown)} file(s) of unknown type not used" if m.unknown else "")
            )
        shown = self.problems if limit is None else self.problems[:limit]
        for p in shown:
            lines.append(f"  {p.severity.upper():7s} {p.file}: {p.problem}")
        if limit is not None and len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def validate_dataset(
    root: str | os.PathLike | Manifest,
    deep: bool = False,
    clip_seconds: float | None = None,
    length_tolerance: float = 0.02,
    workers: int = 4,
    recipe: str = "auto",
    data=None,
    segment_seconds: float = 1.0,
) -> ValidationReport:
    """Check a collection (a folder or manifest file made into a manifest by ``recipe``, or
    an :class:`avsc.data.Manifest`); return a :class:`ValidationReport`.

    ``data`` (a :class:`DataConfig`; default its defaults with ``clip_seconds`` and
    ``length_tolerance``) gives the split to check and the labels file. Files: missing,
    unreadable or empty audio or video, audio or video shorter than one ``segment_seconds``
    segment, audio or video whose length differs by more than ``length_tolerance`` from
    ``clip_seconds`` (default: the length the recipe promises, TAU's 10 s; none for other
    collections), audio not in the format the recipe promises (TAU: 48 kHz stereo; warnings).
    """
    from avsc.config import DataConfig
    from avsc.data.manifest import DatasetError
    from avsc.data.recipes import keep_modalities, load_manifest
    from avsc.data.split import split_problems

    if data is None:
        data = DataConfig(clip_seconds=clip_seconds, length_tolerance=length_tolerance)
    source = root.source if isinstance(root, Manifest) else Path(root)
    report = ValidationReport(Path(source))
    try:
        if isinstance(root, Manifest):
            manifest = keep_modalities(root, tuple(data.modalities)) if data.modalities else root
        else:
            manifest = load_manifest(root, recipe or data.recipe, data.labels, data.modalities)
    except DatasetError as exc:
        text = str(exc)
        where, _, what = text.partition(": ")
        report.add(where if what else source, what or text)
        return report
    report.manifest = manifest
    report.problems.extend(manifest.problems)
    report.clips = len(manifest.clips)
    try:  # whatever else is wrong: can its labels be split as asked?
        report.problems.extend(split_problems(manifest, data))
    except (DatasetError, ValueError, KeyError) as exc:
        report.add(source, f"cannot try the split ({exc})")
    expected = clip_seconds if clip_seconds is not None else data.clip_seconds
    if expected is None:
        expected = manifest.clip_seconds
    jobs = []
    for row in manifest.clips.to_dict("records"):
        a = manifest.path(row["audio"]) if row.get("audio") else None
        v = manifest.path(row["video"]) if row.get("video") else None
        jobs.append((a, v))
    fmt = manifest.audio_format

    def check(job):
        return _check_files(*job, deep, expected, data.length_tolerance, segment_seconds, fmt)

    with cf.ThreadPoolExecutor(max(1, workers)) as ex:
        for found in ex.map(check, jobs):
            report.problems.extend(found)
    return report


def _check_files(
    audio: Path | None,
    video: Path | None,
    deep: bool,
    clip_seconds: float | None,
    tol: float,
    segment_seconds: float = 1.0,
    audio_format: tuple[int, int] | None = None,
) -> list[Problem]:
    from avsc.data.media import VideoError, video_info

    found: list[Problem] = []

    def length(path: Path, seconds: float, what: str) -> None:
        if not math.isfinite(seconds):
            found.append(Problem(str(path), f"{what} of unknown length"))
        elif seconds <= 0:
            found.append(Problem(str(path), f"empty {what}: no samples"))
        elif clip_seconds is not None and abs(seconds - clip_seconds) > tol:
            found.append(
                Problem(str(path), f"wrong length: {seconds:.3f} s, expected {clip_seconds:g} s")
            )
        elif seconds < segment_seconds * 0.99:
            found.append(
                Problem(
                    str(path),
                    f"too short: {seconds:.3f} s of {what}, less than one {segment_seconds:g}-s "
                    "segment (preprocess skips it)",
                )
            )

    if audio is not None:
        if not audio.is_file():
            found.append(Problem(str(audio), "audio file missing"))
        elif audio.stat().st_size == 0:
            found.append(Problem(str(audio), "empty file (0 bytes)"))
        else:
            try:
                seconds, rate, channels = _audio_facts(audio, deep)
                if audio_format is not None and (rate, channels) != tuple(audio_format):
                    want = f"{audio_format[0] / 1000:g} kHz, {audio_format[1]} channel(s)"
                    found.append(
                        Problem(
                            str(audio),
                            f"{rate} Hz, {channels} channel(s); the collection's format is "
                            f"{want} (converted)",
                            "warning",
                        )
                    )
                length(audio, seconds, "audio")
            except ValueError as exc:
                found.append(Problem(str(audio), str(exc)))
    if video is not None and video != audio:
        if not video.is_file():
            found.append(Problem(str(video), "video file missing"))
        elif video.stat().st_size == 0:
            found.append(Problem(str(video), "empty file (0 bytes)"))
        else:
            try:
                vi = video_info(video)
                seconds = vi.duration
                if deep:
                    seconds = _decoded_duration(video, vi.fps)
                length(video, seconds, "video")
            except VideoError as exc:
                found.append(Problem(str(video), str(exc).split(": ", 1)[-1]))
            except Exception as exc:
                found.append(Problem(str(video), f"unreadable video ({type(exc).__name__}: {exc})"))
    elif video is not None and deep:  # one file for both: its video stream too
        try:
            vi = video_info(video)
            _decoded_duration(video, vi.fps)
        except Exception as exc:
            found.append(Problem(str(video), f"unreadable video ({type(exc).__name__}: {exc})"))
    return found


def _audio_facts(path: Path, deep: bool) -> tuple[float, int, int]:
    """``(seconds, sample rate, channels)`` of an audio file (or a video's audio track), from
    its header, or by decoding it where the header does not tell or ``deep``; a
    ``ValueError`` saying what is wrong with an unreadable file or non-finite samples."""
    from avsc.data.media import audio_info, decoded_audio

    info = audio_info(path)
    seconds = info.duration
    if deep or not math.isfinite(seconds):
        seconds, bad = decoded_audio(path)
        if bad:
            raise ValueError(f"audio holds {bad} NaN or infinite sample(s)")
    return seconds, info.sample_rate, info.channels


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
