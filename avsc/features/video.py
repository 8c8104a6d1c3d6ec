"""Visual frames at 1 fps, method.md section 3.

For each 1-s segment ``s`` the decoded frame whose presentation timestamp is nearest to
``s + 0.5`` s is kept (ties go to the earlier frame), converted to RGB and resized so that its
short side is ``short_side``. Frames are picked by timestamp, never by an assumed frame
rate. Decoding is PyAV's threaded sequential decoding, the fast path on footage with sparse
keyframes (real TAU clips may hold a single keyframe); only the chosen frames are converted.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from avsc.data.media import VideoError, describe_av_error, stream_duration
from avsc.data.media import VideoInfo as VideoInfo  # re-exported
from avsc.data.media import video_info as video_info  # re-exported


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """``(width, height)`` scaled so that the short side is ``short_side`` (aspect kept)."""
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def extract_frames(
    path: str | os.PathLike,
    short_side: int | None = 320,
    segments: int | None = None,
    segment_seconds: float = 1.0,
    max_offset: float | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """One RGB frame per segment: uint8 ``(segments, H, W, 3)``.

    ``segments`` defaults to the number of whole segments in the stream's duration.
    ``max_offset`` (default half a segment) is the largest distance allowed between a chosen
    frame's timestamp and its target ``s + 0.5`` s; a video too short or with a gap beyond it
    raises :class:`VideoError`, as does an unreadable or truncated file. ``threads`` sets the
    decoder's thread count (None: FFmpeg's automatic choice; 1 suits parallel workers).
    A rotation stored in the file (display matrix: a phone held upright) is applied, so
    frames come out as a player shows them; ``short_side`` applies to the upright frame.
    """
    frames = list(iter_frames(path, short_side, segments, segment_seconds, max_offset, threads))
    return np.stack(frames)


def iter_frames(
    path: str | os.PathLike,
    short_side: int | None = 320,
    segments: int | None = None,
    segment_seconds: float = 1.0,
    max_offset: float | None = None,
    threads: int | None = None,
    until_end: bool = False,
) -> Iterator[np.ndarray]:
    """The frames of :func:`extract_frames` one at a time, uint8 ``(H, W, 3)`` each, in
    segment order: memory stays flat however long the video is. With ``until_end`` the
    count is open: frames come for as long as the stream has a frame within ``max_offset``
    of the next target (``segments`` is ignored)."""
    import av

    path = Path(path)
    if not path.is_file():
        what = "a folder, not an video file" if path.is_dir() else "video file not found"
        raise VideoError(f"{path}: {what}")
    seg = Fraction(segment_seconds).limit_denominator(1_000_000)
    max_off = Fraction(max_offset if max_offset is not None else segment_seconds / 2)
    try:
        container = av.open(str(path))
    except Exception as exc:
        raise VideoError(f"{path}: unreadable video ({describe_av_error(exc, path)})") from exc
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = int(threads)
        if until_end:
            segments = None
        elif segments is None:
            duration = stream_duration(container, stream)
            if not math.isfinite(duration):
                raise VideoError(f"{path}: unknown duration; pass segments explicitly")
            segments = int(math.floor(duration / float(seg) + 0.01))
        if segments is not None and segments < 1:
            raise VideoError(f"{path}: shorter than one {float(seg):g}-s segment")
        width = stream.codec_context.width
        height = stream.codec_context.height
        start = Fraction(stream.start_time or 0) * stream.time_base
        limit = segments if segments is not None else math.inf

        def target_of(i: int) -> Fraction:
            return seg * i + seg / 2

        turns = None  # quarter turns counter-clockwise, from the first frame's display matrix

        def convert(frame) -> np.ndarray:
            nonlocal turns
            if turns is None:
                turns = round(getattr(frame, "rotation", 0) / 90) % 4
            # the upright picture's short side is short_side: size it in stored orientation
            w, h = (width, height) if turns % 2 == 0 else (height, width)
            out_w, out_h = output_size(w, h, short_side)
            if turns % 2:
                out_w, out_h = out_h, out_w
            interp = "AREA" if out_w * out_h < width * height else "BILINEAR"
            img = frame.reformat(
                width=out_w, height=out_h, format="rgb24", interpolation=interp
            ).to_ndarray()
            return np.ascontiguousarray(np.rot90(img, turns)) if turns else img

        ti = 0
        prev = None
        prev_t = None
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = Fraction(frame.pts) * frame.time_base - start
                while ti < limit and t >= target_of(ti):
                    target = target_of(ti)
                    if prev is not None and target - prev_t <= t - target:
                        chosen, ct = prev, prev_t
                    else:
                        chosen, ct = frame, t
                    if abs(ct - target) > max_off:
                        raise VideoError(
                            f"{path}: no frame within {float(max_off):g} s of "
                            f"t={float(target):g} s (nearest at {float(ct):.3f} s)"
                        )
                    yield convert(chosen)
                    ti += 1
                if ti == limit:
                    break
                prev, prev_t = frame, t
        except VideoError:
            raise
        except Exception as exc:
            of = "" if segments is None else f" of {segments}"
            raise VideoError(
                f"{path}: decoding failed after {ti}{of} frames ({describe_av_error(exc, path)})"
            ) from exc
        while ti < limit:  # targets after the last decoded frame
            target = target_of(ti)
            if until_end and (prev is None or abs(target - prev_t) > max_off):
                if ti == 0:
                    raise VideoError(f"{path}: shorter than one {float(seg):g}-s segment")
                return
            if prev is None or abs(target - prev_t) > max_off:
                last = (
                    "no frame decoded" if prev is None else f"last frame at {float(prev_t):.3f} s"
                )
                raise VideoError(
                    f"{path}: video too short or truncated: needs a frame near "
                    f"t={float(target):g} s for segment {ti}, {last}"
                )
            yield convert(prev)
            ti += 1


# the stored frames' JPEG codec (the feature store keeps frames as JPEG bytes)


def encode_frames(frames: np.ndarray, quality: int = 95) -> dict[str, np.ndarray]:
    """JPEG-encode ``(S, H, W, 3)`` uint8 frames into arrays for an ``.npz`` file."""
    from PIL import Image

    blobs = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="JPEG", quality=quality, subsampling=0)
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return {
        "jpeg": np.concatenate(blobs) if blobs else np.zeros(0, np.uint8),
        "offsets": offsets,
        "shape": np.asarray(frames.shape, dtype=np.int64),
    }


def decode_jpeg(blob: np.ndarray) -> np.ndarray:
    """One JPEG (uint8 bytes) -> ``(H, W, 3)`` uint8 RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(blob.tobytes())) as im:
        return np.asarray(im.convert("RGB"))
