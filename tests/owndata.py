"""Collections of a user's own kind made from the real recordings in ../shared/realdata: class
folders of audio files of uneven length in several formats (FLAC, Ogg Vorbis, MP3, WAV; mono
and stereo; 44.1 and 48 kHz), the real TAU MP4s with and without their own audio tracks, and
labels with spaces and non-ASCII letters. Nothing here is committed data: every file is cut or
transcoded (PyAV, soundfile) from the real material at test time."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import soundfile as sf

from tests.conftest import REALDATA

TUT = REALDATA / "tut2018_audio"
TAU_VIDEO = REALDATA / "tau_av2021_video"

#: three classes from three real recordings; the labels as a user might name their folders
AUDIO_CLASSES = {
    "Flughafen · airport": "airport.wav",
    "tram 2 – Straßenbahn": "tram.wav",
    "parc à l'ombre": "park.wav",
}
#: uneven pieces (seconds) cut from each 10-s recording, in order; the 12-s piece wraps round
PIECES = (1.2, 2.3, 3.1, 3.4, 12.0)
#: the format of each piece: (extension, codec or soundfile subtype, rate, channels)
FORMATS = (
    ("flac", "flac", 48000, 2),
    ("ogg", "vorbis", 48000, 2),  # PyAV's Vorbis encoder (stereo)
    ("mp3", "libmp3lame", 44100, 2),
    ("ogg", "sf-vorbis", 44100, 1),  # mono Ogg Vorbis (soundfile: PyAV's encoder is stereo only)
    ("wav", "PCM_24", 48000, 2),
)
#: the real TAU street-traffic clips in three made-up classes, by city (clip: source file;
#: one file serves twice, so that every class has three clips)
VIDEO_CLASSES = {
    "nord 北": {c: c for c in ["helsinki164_5009", "stockholm174_5341_md", "london167_5118_md"]},
    "sud ñ": {c: c for c in ["barcelona161_4901", "lisbon1067_40096_md", "milan1087_40737_md"]},
    "centre é": {
        "lyon1045_40062_md": "lyon1045_40062_md",
        "vienna176_5411_md": "vienna176_5411_md",
        "again lyon": "lyon1045_40062_md",
    },
}


def real() -> bool:
    """Whether the real recordings are here (else the collections are made of synthetic
    sound and pictures, so that the same tests run in CI)."""
    return TUT.is_dir() and TAU_VIDEO.is_dir()


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(x.T), sr


def recording(wav: str) -> tuple[np.ndarray, int]:
    """The real 10-s TUT recording ``wav`` (48 kHz stereo), or, without the real material, a
    synthetic stand-in of the same format: seeded noise shaped by the file name, plus tones."""
    if real():
        return read_wav(TUT / wav)
    sr = 48000
    rng = np.random.default_rng(sum(map(ord, wav)))
    t = np.arange(10 * sr) / sr
    f0 = 200 + 300 * (sum(map(ord, wav)) % 7)
    tone = 0.2 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    noise = np.cumsum(rng.standard_normal((2, t.size)), axis=1)
    noise = 0.05 * (noise - noise.mean(axis=1, keepdims=True)) / noise.std()
    x = (tone + noise).astype(np.float32)
    other = np.cumsum(rng.standard_normal(t.size))  # the other ear: more brown noise
    x[1] = 0.8 * x[1] + 0.05 * ((other - other.mean()) / other.std()).astype(np.float32)
    x = np.round(np.clip(x, -1, 1 - 2.0**-23) * 2**23) / 2**23  # 24-bit samples, like TUT's
    return x.astype(np.float32), sr


def cut(x: np.ndarray, sr: int, start: float, seconds: float) -> np.ndarray:
    """``seconds`` of ``x`` from ``start``, wrapping round the end."""
    n, a = int(round(seconds * sr)), int(round(start * sr)) % x.shape[1]
    idx = (a + np.arange(n)) % x.shape[1]
    return np.ascontiguousarray(x[:, idx])


def write_audio(path: Path, x: np.ndarray, sr: int, codec: str, rate: int, channels: int) -> Path:
    """``x`` ((channels, n) float at ``sr``) as ``path``: soundfile for WAV and mono Ogg, else
    PyAV with FFmpeg's ``codec`` at ``rate`` Hz and ``channels`` channels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if channels == 1:
        x = x.mean(axis=0, keepdims=True)
    if codec.startswith("PCM"):
        sf.write(str(path), x.T, sr, subtype=codec)
        return path
    if codec == "sf-vorbis":
        y = _resample(x, sr, rate)
        sf.write(str(path), y.T, rate, format="OGG", subtype="VORBIS")
        return path
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        fmt = stream.codec_context.codec.audio_formats[0].name
        if codec == "flac":
            fmt = stream.format = "s32"  # a 24-bit source: FLAC keeps every bit
        to_codec = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        for i in range(0, x.shape[1], 4800):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(x[:, i : i + 4800]), format="fltp", layout=layout
            )
            frame.sample_rate, frame.pts = sr, i
            for f in to_codec.resample(frame):
                for packet in stream.encode(f):
                    out.mux(packet)
        for f in to_codec.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _resample(x: np.ndarray, sr: int, rate: int) -> np.ndarray:
    if sr == rate:
        return x
    from scipy.signal import resample_poly

    g = np.gcd(sr, rate)
    return resample_poly(x, rate // g, sr // g, axis=-1).astype(np.float32)


def audio_collection(root: Path, pieces=PIECES, formats=FORMATS) -> Path:
    """``root/<label>/<recording>-<k>.<ext>``: each class's recording cut into ``pieces``,
    piece ``k`` in format ``formats[k % len(formats)]``. Returns ``root``."""
    for label, wav in AUDIO_CLASSES.items():
        x, sr = recording(wav)
        start = 0.0
        for k, seconds in enumerate(pieces):
            ext, codec, rate, channels = formats[k % len(formats)]
            piece = cut(x, sr, start, seconds)
            write_audio(
                root / label / f"{Path(wav).stem}-{k}.{ext}", piece, sr, codec, rate, channels
            )
            start += seconds
    return root


def strip_audio(src: Path, dst: Path) -> Path:
    """``src``'s video stream alone (stream copy, no re-encoding) as ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        v = inp.streams.video[0]
        ov = out.add_stream_from_template(v)
        for packet in inp.demux(v):
            if packet.dts is None:
                continue
            packet.stream = ov
            out.mux(packet)
    return dst


def video_collection(root: Path, with_audio: bool) -> Path:
    """``root/<label>/<clip>.mp4``: the real TAU MP4s in :data:`VIDEO_CLASSES`, with their
    own audio track (an audio-visual collection) or without it (video only)."""
    import shutil

    for label, clips in VIDEO_CLASSES.items():
        for k, (clip, source) in enumerate(clips.items()):
            dst = root / label / f"{clip}.mp4"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not real():  # a synthetic stand-in: pictures and sound of the class
                write_av_mp4(dst, sum(map(ord, label)) % 200 + 20 * k, with_audio)
            elif with_audio:
                shutil.copyfile(TAU_VIDEO / f"{source}.mp4", dst)
            else:
                strip_audio(TAU_VIDEO / f"{source}.mp4", dst)
    return root


def write_av_mp4(path: Path, seed: int, with_audio: bool, seconds: float = 4.0) -> Path:
    """An H.264 MP4 (160x96, 24 fps) of drifting coloured noise with, when ``with_audio``, an
    AAC stereo track at 44.1 kHz: a stand-in for a real clip where none is here."""
    rng = np.random.default_rng(seed)
    w, h, fps, sr = 160, 96, 24, 44100
    base = rng.integers(0, 255, 3)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast"}
        aus = None
        if with_audio:
            aus = out.add_stream("aac", rate=sr)
            aus.layout = "stereo"
        for i in range(int(seconds * fps)):
            img = np.clip(base + rng.normal(0, 30, (h, w, 3)) + i, 0, 255).astype(np.uint8)
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if aus is not None:
            t = np.arange(int(seconds * sr)) / sr
            x = 0.2 * np.sin(2 * np.pi * (300 + seed) * t) + 0.02 * rng.standard_normal(t.size)
            x = np.stack([x, 0.7 * x]).astype(np.float32)
            for i in range(0, x.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(x[:, i : i + 1024]), format="fltp", layout="stereo"
                )
                frame.sample_rate, frame.pts = sr, i
                for packet in aus.encode(frame):
                    out.mux(packet)
            for packet in aus.encode(None):
                out.mux(packet)
    return path


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-noise ratio of ``test`` against ``ref`` (same shape), in dB."""
    noise = np.sum((ref - test) ** 2)
    return float(10 * np.log10(np.sum(ref**2) / max(noise, 1e-20)))
