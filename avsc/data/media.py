"""What a raw media file holds, read from its header: the facts the dataset checks
(``avsc validate``) and the frame extraction both need. PyAV (FFmpeg) does the reading."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class VideoError(ValueError):
    """A video file that cannot be read as needed; the message names the file and the problem."""


@dataclass(frozen=True)
class VideoInfo:
    """Header facts of a video file (no decoding)."""

    width: int
    height: int
    fps: float
    frames: int
    duration: float
    codec: str
    pix_fmt: str | None
    has_audio: bool


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Read a video's header with PyAV; :class:`VideoError` naming the file if unreadable."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            s = container.streams.video[0]
            duration = stream_duration(container, s)
            return VideoInfo(
                width=s.codec_context.width,
                height=s.codec_context.height,
                fps=float(s.average_rate or s.guessed_rate or 0),
                frames=int(s.frames or 0),
                duration=duration,
                codec=s.codec_context.name,
                pix_fmt=s.codec_context.pix_fmt,
                has_audio=bool(container.streams.audio),
            )
    except VideoError:
        raise
    except Exception as exc:
        raise VideoError(f"{path}: unreadable video ({describe_av_error(exc, path)})") from exc


def describe_av_error(exc: Exception, path: Path) -> str:
    """``TypeName: message`` without FFmpeg's trailing repetition of the file name."""
    msg = str(exc).replace(f": '{path}'", "").replace(f"'{path}'", "")
    return f"{type(exc).__name__}: {msg}"


def stream_duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return float("nan")
