"""Test media: WAV files and H.264 videos whose frames encode their own index."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

BITS = 10  # frame indices up to 1023


def write_wav(path: Path, x: np.ndarray, sr: int = 48000, subtype: str = "PCM_24") -> Path:
    """``x`` is (channels, samples) or (samples,) float in [-1, 1]."""
    x = np.asarray(x, dtype=np.float64)
    data = x.T if x.ndim == 2 else x
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype=subtype)
    return path


def index_frame(i: int, width: int, height: int) -> np.ndarray:
    """An RGB frame whose top band shows ``i`` in binary as BITS black/white blocks and whose
    lower half is a gradient (so the encoder has something to code)."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    band = height // 2
    edges = np.linspace(0, width, BITS + 1).astype(int)
    for b in range(BITS):
        if (i >> b) & 1:
            img[:band, edges[b] : edges[b + 1]] = 255
    ramp = np.linspace(40, 200, width, dtype=np.float64)
    img[band:] = ramp[None, :, None].astype(np.uint8)
    return img


def read_index(frame: np.ndarray) -> int:
    """Invert :func:`index_frame` on a (possibly resized, lossy) RGB frame."""
    h, w = frame.shape[:2]
    band = frame[: h // 2].mean(axis=2)
    edges = np.linspace(0, w, BITS + 1).astype(int)
    value = 0
    for b in range(BITS):
        lo, hi = edges[b], edges[b + 1]
        inner = band[h // 8 : h // 2 - h // 8, lo + (hi - lo) // 4 : hi - (hi - lo) // 4]
        if inner.mean() > 127:
            value |= 1 << b
    return value


def write_indexed_video(
    path: Path,
    n_frames: int,
    fps: int | Fraction = 24,
    size: tuple[int, int] = (160, 96),
    pix_fmt: str = "yuv420p",
    gop: int = 12,
) -> Path:
    """H.264 MP4 whose frame ``i`` (timestamp i / fps) shows ``i`` (see :func:`read_index`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = {"preset": "ultrafast", "g": str(gop), "bf": "2"}
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, w, h), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_tiny_dataset(
    root: Path,
    classes: tuple[str, ...] = ("airport", "bus", "park"),
    locations_per_class: int = 3,
    clips_per_location: int = 2,
    seconds: float = 2.0,
    size: tuple[int, int] = (64, 48),
    meta_sibling: bool = False,
    seed: int = 0,
) -> Path:
    """A small TAU-layout dataset of noise WAVs and index-coded MP4s (not the synthetic
    scene generator: just valid files in the official layout, fast to write). The last
    location of every class goes to fold1_evaluate."""
    import pandas as pd

    from avsc.data.tau import write_metadata

    rng = np.random.default_rng(seed)
    rows, eval_ids = [], []
    seg = 100
    for ci, scene in enumerate(classes):
        for li in range(locations_per_class):
            loc = 10 * ci + li
            city = ("london", "lyon", "milan")[li % 3]
            if li == locations_per_class - 1:
                eval_ids.append(f"{city}-{loc}")
            for _ in range(clips_per_location):
                clip = f"{scene}-{city}-{loc}-{seg}"
                seg += 1
                x = 0.05 * rng.standard_normal((2, int(seconds * 48000)))
                x[1] *= 0.5
                write_wav(root / "audio" / f"{clip}.wav", x)
                write_indexed_video(root / "video" / f"{clip}.mp4", int(seconds * 24), 24, size)
                rows.append((f"audio/{clip}.wav", f"video/{clip}.mp4", scene))
    clips = pd.DataFrame(rows, columns=["filename_audio", "filename_video", "scene_label"])
    meta_dir = root.parent / f"{root.name}.meta" if meta_sibling else root
    write_metadata(meta_dir, clips, eval_ids)
    return root


def write_audio_track(path: Path, x: np.ndarray, sr: int = 48000, codec: str = "pcm_s16le") -> Path:
    """``x`` (channels, samples) float in [-1, 1] as an audio-only file in the container of
    ``path``'s suffix (MOV, MKV, NUT, MP4), encoded by FFmpeg's ``codec`` in its native sample
    format (``pcm_s16le`` packed s16, ``pcm_s32le_planar`` planar s32, ``aac`` planar float)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    layout = "stereo" if x.shape[0] == 2 else "mono"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=sr)
        stream.layout = layout
        fmt = stream.codec_context.codec.audio_formats[0].name
        to_codec = av.AudioResampler(format=fmt, layout=layout, rate=sr)
        block = 4800
        for i in range(0, x.shape[1], block):
            frame = av.AudioFrame.from_ndarray(x[:, i : i + block], format="fltp", layout=layout)
            frame.sample_rate = sr
            frame.pts = i
            for f in to_codec.resample(frame):
                for packet in stream.encode(f):
                    out.mux(packet)
        for f in to_codec.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
