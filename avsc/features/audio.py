"""Acoustic features: resample, mid/side, 1-s segments, STFT, long-term scalogram and FBank.

Implements method.md section 2. A clip becomes an array of shape
``(segments, frames_per_segment, 2, F)``: (10, 6, 2, 290) for a 10-s clip's scalogram,
(10, 6, 2, 256) for its FBank. Channel 0 is mid = (L + R) / 2, channel 1 is side = (L - R) / 2.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from avsc.config import AudioConfig
from avsc.features.filterbanks import mel_filterbank, scalogram_filterbank

FEATURE_KINDS = ("scalogram", "fbank")
TAU_SAMPLE_RATE = 48000
TAU_CHANNELS = 2


class AudioError(ValueError):
    """An audio file that cannot be featurized; the message names the file and the problem."""


class AudioFormatWarning(UserWarning):
    """Input that is not in the TAU format (48 kHz stereo) and was converted."""


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 ``(channels, samples)`` and its sample rate.

    WAV/FLAC/OGG go through soundfile; anything soundfile cannot open (MP4, MP3, ...) is
    decoded with PyAV. Raises :class:`AudioError` naming the file when it is missing,
    unreadable, truncated or holds no audio.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        x = np.ascontiguousarray(data.T)
    except sf.LibsndfileError as exc:
        if path.suffix.lower() in (".wav", ".flac", ".ogg", ".aiff", ".aif"):
            raise AudioError(f"{path}: unreadable audio file ({exc})") from exc
        x, sr = _read_audio_pyav(path)
    except RuntimeError as exc:  # truncated data chunks surface as RuntimeError in soundfile
        raise AudioError(f"{path}: unreadable audio file ({exc})") from exc
    if x.shape[1] == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{path}: audio holds NaN or infinite samples")
    return x, int(sr)


def _read_audio_pyav(path: Path) -> tuple[np.ndarray, int]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            sr = stream.rate or stream.codec_context.sample_rate
            chunks = []
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                if not frame.format.is_planar:  # packed: (1, samples * channels)
                    arr = arr.reshape(-1, len(frame.layout.channels)).T
                chunks.append(arr.astype(np.float32, copy=False))
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"{path}: unreadable audio ({type(exc).__name__}: {exc})") from exc
    if not chunks:
        raise AudioError(f"{path}: audio stream decodes to no samples")
    x = np.concatenate(chunks, axis=1)
    if np.issubdtype(chunks[0].dtype, np.integer):
        x = x / float(np.iinfo(chunks[0].dtype).max)
    return np.ascontiguousarray(x, dtype=np.float32), int(sr)


def resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    """Polyphase resampling along the last axis (``scipy.signal.resample_poly``)."""
    if sr == target:
        return x
    g = math.gcd(int(sr), int(target))
    return resample_poly(x, target // g, sr // g, axis=-1).astype(np.float32, copy=False)


def mid_side(x: np.ndarray) -> np.ndarray:
    """``(2, n)`` stereo -> ``(2, n)`` [mid, side] = [(L + R) / 2, (L - R) / 2]."""
    return np.stack([(x[0] + x[1]) * 0.5, (x[0] - x[1]) * 0.5]).astype(np.float32, copy=False)


def prepare_waveform(
    x: np.ndarray, sr: int, config: AudioConfig | None = None, source: str = "<array>"
) -> np.ndarray:
    """Convert ``(channels, samples)`` audio at ``sr`` to mid/side at ``config.sample_rate``.

    Mono is duplicated (side = 0), more than two channels keep the first two; anything that is
    not 48 kHz stereo gives an :class:`AudioFormatWarning` naming ``source``.
    """
    config = config or AudioConfig()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    notes = []
    if sr != TAU_SAMPLE_RATE:
        notes.append(
            f"{sr} Hz"
            + (f" (resampled to {config.sample_rate} Hz)" if sr != config.sample_rate else "")
        )
    if x.shape[0] == 1:
        notes.append("mono (duplicated to two channels)")
        x = np.concatenate([x, x])
    elif x.shape[0] > 2:
        notes.append(f"{x.shape[0]} channels (only the first two used)")
        x = x[:2]
    if notes:
        warnings.warn(
            f"{source}: not the TAU format (48 kHz stereo): {', '.join(notes)}",
            AudioFormatWarning,
            stacklevel=3,
        )
    x = resample(x, sr, config.sample_rate)
    return mid_side(x)


def segment(
    x: np.ndarray, config: AudioConfig | None = None, source: str = "<array>"
) -> np.ndarray:
    """Cut ``(channels, n)`` into ``(segments, channels, segment_samples)`` 1-s segments.

    A final partial segment within ``config.segment_tolerance`` of a whole segment is
    zero-padded; a shorter remainder is dropped. Less than one segment is an error.
    """
    config = config or AudioConfig()
    seg = config.segment_samples
    n = x.shape[-1]
    count = int(math.floor(n / seg + config.segment_tolerance))
    if count < 1:
        raise AudioError(
            f"{source}: {n / config.sample_rate:.3f} s of audio is shorter than one "
            f"{config.segment_seconds:g}-s segment"
        )
    if n < count * seg:
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, count * seg - n)])
    x = x[..., : count * seg]
    return np.ascontiguousarray(np.moveaxis(x.reshape(x.shape[0], count, seg), 1, 0))


def stft_magnitude(segments: np.ndarray, n_fft: int = 8192, hop_length: int = 2736) -> np.ndarray:
    """Magnitude STFT of each segment on its own: periodic Hann window, centred with reflect
    padding (as ``librosa.stft(center=True, pad_mode="reflect")``).

    ``(..., samples)`` -> ``(..., frames, n_fft // 2 + 1)`` float32.
    """
    pad = n_fft // 2
    x = np.pad(segments, [(0, 0)] * (segments.ndim - 1) + [(pad, pad)], mode="reflect")
    n_frames = 1 + (x.shape[-1] - n_fft) // hop_length
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[
        ..., : n_frames * hop_length : hop_length, :
    ]
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)  # periodic Hann
    spec = np.fft.rfft(frames * window, axis=-1)
    return np.abs(spec).astype(np.float32)


def filterbank(kind: str, config: AudioConfig | None = None) -> np.ndarray:
    """The ``(F, n_fft // 2 + 1)`` weights of ``kind`` ("scalogram" or "fbank")."""
    config = config or AudioConfig()
    if kind == "scalogram":
        return scalogram_filterbank(
            config.sample_rate, config.n_fft, config.scalogram_q, config.scalogram_j
        )
    if kind == "fbank":
        return mel_filterbank(
            config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax
        )
    raise ValueError(f"unknown feature kind {kind!r}; expected one of {FEATURE_KINDS}")


def features_from_waveform(
    x: np.ndarray,
    sr: int,
    kinds: tuple[str, ...] | str = "scalogram",
    config: AudioConfig | None = None,
    source: str = "<array>",
) -> dict[str, np.ndarray] | np.ndarray:
    """Features of a ``(channels, samples)`` waveform at ``sr``.

    Returns one float32 array ``(segments, frames, 2, F)`` for a single ``kinds`` string, or a
    dict of them for a tuple (the STFT is computed once and shared).
    """
    config = config or AudioConfig()
    single = isinstance(kinds, str)
    kind_list = (kinds,) if single else tuple(kinds)
    ms = prepare_waveform(x, sr, config, source=source)
    segs = segment(ms, config, source=source)  # (S, 2, seg)
    mag = stft_magnitude(segs, config.n_fft, config.hop_length)  # (S, 2, T, bins)
    mag = np.ascontiguousarray(np.moveaxis(mag, 2, 1))  # (S, T, 2, bins)
    flat = mag.reshape(-1, mag.shape[-1])  # one 2-D product, not S * T small ones
    out = {}
    for kind in kind_list:
        w = filterbank(kind, config)
        s = (flat @ w.T).reshape(*mag.shape[:-1], w.shape[0])
        out[kind] = np.log(s + np.float32(config.log_eps)).astype(np.float32, copy=False)
    return out[kind_list[0]] if single else out


def extract_audio_features(
    path: str | os.PathLike, kind: str = "scalogram", config: AudioConfig | None = None
) -> np.ndarray:
    """Long-term scalogram or FBank of an audio file, method.md section 2.

    Any sample rate, mono or stereo (resampled to 16 kHz; an :class:`AudioFormatWarning` for
    non-TAU formats); WAV through soundfile, audio tracks of video files through PyAV.
    Returns float32 ``(segments, 6, 2, F)`` with F = 290 (scalogram) or 256 (FBank).
    """
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {FEATURE_KINDS}")
    x, sr = read_audio(path)
    return features_from_waveform(x, sr, kind, config, source=str(path))  # type: ignore[return-value]
