"""What a raw media file holds, read from its header: the facts the dataset checks
(``avsc validate``) and the frame extraction both need. PyAV (FFmpeg) does the reading."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from avsc.utils import native_path


def sound_error(exc: BaseException) -> str:
    """libsndfile's reason for ``exc`` (soundfile's message repeats the path, as bytes where
    avsc passed bytes: the caller names the file itself)."""
    return str(getattr(exc, "error_string", "") or exc)


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
        what = "a folder, not an video file" if path.is_dir() else "video file not found"
        raise VideoError(f"{path}: {what}")
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


#: audio the ``soundfile`` library reads itself (the rest goes through PyAV)
SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif")


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file, or of a video file's audio track."""

    sample_rate: int
    channels: int
    frames: int | None  # samples per channel; None where the header does not tell
    backend: str  # "soundfile" or "pyav"

    @property
    def duration(self) -> float:
        return float("nan") if self.frames is None else self.frames / self.sample_rate


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read an audio file's header (soundfile for WAV/FLAC/Ogg, else PyAV: MP3, M4A, the
    audio track of a video); a ``ValueError`` naming the problem (``unreadable audio (...)``,
    ``no audio stream``) for a file that has none."""
    import soundfile as sf

    path = Path(path)
    try:
        info = sf.info(native_path(path))
        return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames), "soundfile")
    except (sf.LibsndfileError, RuntimeError) as exc:
        if path.suffix.lower() in SOUNDFILE_SUFFIXES:
            raise ValueError(f"unreadable audio file ({sound_error(exc)})") from exc
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError("no audio stream")
            stream = container.streams.audio[0]
            sr = int(stream.rate or stream.codec_context.sample_rate)
            frames = None
            if stream.duration is not None and stream.time_base is not None:
                frames = int(round(float(stream.duration * stream.time_base) * sr))
            elif container.duration is not None:
                frames = int(round(container.duration / 1_000_000 * sr))
            return AudioInfo(sr, int(stream.codec_context.channels), frames, "pyav")
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"unreadable audio ({describe_av_error(exc, path)})") from exc


def decoded_audio(path: str | os.PathLike) -> tuple[float, int]:
    """Decode a whole audio file (or track): ``(seconds, non-finite samples)``; a
    ``ValueError`` for undecodable data."""
    import numpy as np
    import soundfile as sf

    path = Path(path)
    info = audio_info(path)
    n = bad = 0
    try:
        if info.backend == "soundfile":
            with sf.SoundFile(native_path(path)) as fh:
                while True:
                    block = fh.read(1 << 18, dtype="float32", always_2d=True)
                    if not len(block):
                        break
                    n += len(block)
                    bad += int(np.count_nonzero(~np.isfinite(block)))
        else:
            import av

            with av.open(str(path)) as container:
                for frame in container.decode(container.streams.audio[0]):
                    x = frame.to_ndarray()
                    n += frame.samples
                    if x.dtype.kind == "f":
                        bad += int(np.count_nonzero(~np.isfinite(x)))
    except Exception as exc:
        raise ValueError(f"unreadable audio ({type(exc).__name__}: {exc})") from exc
    return n / info.sample_rate, bad
