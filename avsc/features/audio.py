"""Acoustic features: resample, mid/side, 1-s segments, STFT, long-term scalogram and FBank.

Implements method.md section 2. A clip becomes an array of shape
``(segments, frames_per_segment, 2, F)``: (10, 6, 2, 290) for a 10-s clip's scalogram,
(10, 6, 2, 256) for its FBank. Channel 0 is mid = (L + R) / 2, channel 1 is side = (L - R) / 2.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from avsc.config import AudioConfig
from avsc.data.media import sound_error
from avsc.features.extractors import get_extractor
from avsc.features.resampling import resample_poly
from avsc.utils import native_path

TAU_SAMPLE_RATE = 48000
TAU_CHANNELS = 2


class AudioError(ValueError):
    """An audio file that cannot be featurized; the message names the file and the problem."""


class AudioFormatWarning(UserWarning):
    """Input that is not in the TAU format (48 kHz stereo) and was converted."""


@dataclass(frozen=True)
class AudioSource:
    """An audio file opened for reading in blocks: its rate, channel count and, where the
    header tells, its length. WAV/FLAC/OGG go through soundfile; anything soundfile cannot
    open (the audio track of an MP4 or MOV, MP3, ...) is decoded with PyAV."""

    path: Path
    sample_rate: int
    channels: int
    frames: int | None  # samples per channel from the header; None when unknown
    backend: str  # "soundfile" or "pyav"

    @property
    def duration(self) -> float:
        return float("nan") if self.frames is None else self.frames / self.sample_rate

    def blocks(self, size: int = 1 << 20) -> Iterator[np.ndarray]:
        """float32 ``(channels, n)`` blocks of at most ``size`` samples (PyAV: one per decoded
        frame), checked as they come: :class:`AudioError` naming the file for undecodable data
        or NaN / infinite samples."""
        if self.backend == "soundfile":
            gen = self._soundfile_blocks(size)
        else:
            gen = _pyav_blocks(self.path)
        for x in gen:
            if not np.all(np.isfinite(x)):
                raise AudioError(f"{self.path}: audio holds NaN or infinite samples")
            yield x

    def _soundfile_blocks(self, size: int) -> Iterator[np.ndarray]:
        import soundfile as sf

        try:
            with sf.SoundFile(native_path(self.path)) as fh:
                while True:
                    data = fh.read(size, dtype="float32", always_2d=True)
                    if not len(data):
                        return
                    yield np.ascontiguousarray(data.T)
        except (sf.LibsndfileError, RuntimeError) as exc:
            # truncated data chunks surface as RuntimeError in soundfile
            raise AudioError(f"{self.path}: unreadable audio file ({sound_error(exc)})") from exc


def open_audio(path: str | os.PathLike) -> AudioSource:
    """Open ``path`` for block-wise reading (see :class:`AudioSource`; its header read by
    :func:`avsc.data.media.audio_info`); :class:`AudioError` naming the file when it is
    missing, unreadable or has no audio stream."""
    from avsc.data.media import audio_info

    path = Path(path)
    if not path.is_file():
        what = "a folder, not an audio file" if path.is_dir() else "audio file not found"
        raise AudioError(f"{path}: {what}")
    try:
        info = audio_info(path)
    except ValueError as exc:
        raise AudioError(f"{path}: {exc}") from exc
    return AudioSource(path, info.sample_rate, info.channels, info.frames, info.backend)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 ``(channels, samples)`` in [-1, 1] and its sample rate.

    WAV/FLAC/OGG go through soundfile; anything soundfile cannot open (MP4, MOV, MP3, ...)
    is decoded with PyAV, whatever its sample format (integer PCM of any width, packed or
    planar, is scaled as soundfile scales it). Raises :class:`AudioError` naming the file
    when it is missing, unreadable, truncated, holds no audio or NaN / infinite samples.
    """
    import soundfile as sf

    p = Path(path)
    if p.is_file():
        # the common case in one open of the file (open_audio + sf.read would open it twice);
        # anything soundfile cannot open takes the open_audio route below, errors included
        try:
            fh = sf.SoundFile(native_path(p))
        except (sf.LibsndfileError, RuntimeError):
            fh = None
        if fh is not None:
            try:
                with fh:
                    sr = fh.samplerate
                    data = fh.read(dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioError(f"{p}: unreadable audio file ({sound_error(exc)})") from exc
            x = np.ascontiguousarray(data.T)
            if not np.all(np.isfinite(x)):
                raise AudioError(f"{p}: audio holds NaN or infinite samples")
            if x.shape[1] == 0:
                raise AudioError(f"{p}: audio file holds no samples")
            return x, int(sr)
    src = open_audio(path)
    if src.backend == "soundfile":
        try:
            data, sr = sf.read(native_path(src.path), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"{src.path}: unreadable audio file ({sound_error(exc)})") from exc
        x = np.ascontiguousarray(data.T)
        if not np.all(np.isfinite(x)):
            raise AudioError(f"{src.path}: audio holds NaN or infinite samples")
    else:
        chunks = list(src.blocks())
        x = np.concatenate(chunks, axis=1) if chunks else np.zeros((src.channels, 0), np.float32)
        sr = src.sample_rate
    if x.shape[1] == 0:
        raise AudioError(f"{src.path}: audio file holds no samples")
    return x, int(sr)


def _pyav_blocks(path: Path) -> Iterator[np.ndarray]:
    """Decode the first audio stream of ``path`` with PyAV: float32 ``(channels, n)`` per frame.

    Every decoded frame goes through FFmpeg's own sample-format conversion to planar float
    (``av.AudioResampler(format="fltp")``, same rate and layout): integer PCM of any width
    (u8, s16, s32, s64, packed or planar) comes out scaled to [-1, 1) exactly as soundfile
    scales a WAV, never as raw integers."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            to_float = av.AudioResampler(format="fltp")
            any_samples = False
            for frame in container.decode(stream):
                for out in to_float.resample(frame):
                    any_samples = True
                    yield out.to_ndarray().astype(np.float32, copy=False)
            for out in to_float.resample(None):
                any_samples = True
                yield out.to_ndarray().astype(np.float32, copy=False)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"{path}: unreadable audio ({type(exc).__name__}: {exc})") from exc
    if not any_samples:
        raise AudioError(f"{path}: audio stream decodes to no samples")


def resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    """Polyphase resampling along the last axis: ``scipy.signal.resample_poly`` (Kaiser
    window, beta 5). Float32 samples (what the pipeline feeds) go through
    :func:`avsc.features.resampling.resample_poly`, which gives the very same bits in a
    third of the time and without importing ``scipy.signal`` (about 1 s: most of ``avsc
    predict``'s start-up beyond torch, and of a preprocessing pool's); anything else through
    scipy itself."""
    if sr == target:
        return x
    g = math.gcd(int(sr), int(target))
    up, down = target // g, sr // g
    x = np.asarray(x)
    if x.dtype == np.float32:
        return resample_poly(x, up, down)
    from scipy.signal import resample_poly as scipy_resample_poly

    return scipy_resample_poly(x, up, down, axis=-1).astype(np.float32, copy=False)


def decimate_poly(x: np.ndarray, down: int) -> np.ndarray:
    """Deprecated: :func:`avsc.features.resampling.resample_poly` ``(x, 1, down)``, the same
    bits (``scipy.signal.resample_poly(x, 1, down, axis=-1)`` of float32 ``x``)."""
    warnings.warn(
        "avsc.features.audio.decimate_poly is deprecated; use "
        "avsc.features.resampling.resample_poly(x, 1, down)",
        DeprecationWarning,
        stacklevel=2,
    )
    return resample_poly(x, 1, down)


def _resample_channels(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    """:func:`resample` of ``(channels, n)``, a channel that repeats the one before it bit for
    bit (mono duplicated to two channels, dual-mono stereo) resampled once and copied: each
    channel is filtered on its own, so the result is the same to the bit at half the cost."""
    if sr == target or x.ndim != 2 or x.shape[0] != 2 or x.dtype != np.float32:
        return resample(x, sr, target)
    a, b = x[0].view(np.uint32), x[1].view(np.uint32)  # bit patterns: -0.0 is not +0.0
    if not (np.array_equal(a[:256], b[:256]) and np.array_equal(a, b)):
        return resample(x, sr, target)
    y = resample(x[:1], sr, target)
    return np.concatenate([y, y])


def mid_side(x: np.ndarray) -> np.ndarray:
    """``(2, n)`` stereo -> ``(2, n)`` [mid, side] = [(L + R) / 2, (L - R) / 2]."""
    return np.stack([(x[0] + x[1]) * 0.5, (x[0] - x[1]) * 0.5]).astype(np.float32, copy=False)


def _two_channels(
    x: np.ndarray, sr: int, config: AudioConfig, source: str, warn: bool = True
) -> np.ndarray:
    """``(channels, n)`` -> ``(2, n)`` float32: mono duplicated (side = 0), channels past two
    dropped; one :class:`AudioFormatWarning` naming ``source`` per conversion from the
    method's reference format, 48 kHz stereo (a rate other than 48 kHz resampled, mono, more
    than two channels)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    notes = []
    if sr != TAU_SAMPLE_RATE:
        notes.append(
            f"{sr} Hz, resampled to {config.sample_rate} Hz"
            if sr != config.sample_rate
            else f"{sr} Hz, the features' own rate (not resampled)"
        )
    if x.shape[0] == 1:
        notes.append("mono, duplicated to two channels (side = 0)")
        x = np.concatenate([x, x])
    elif x.shape[0] > 2:
        notes.append(f"{x.shape[0]} channels, only the first two used")
        x = x[:2]
    if warn:
        for note in notes:
            warnings.warn(f"{source}: {note}", AudioFormatWarning, stacklevel=4)
    return x


def prepare_waveform(
    x: np.ndarray, sr: int, config: AudioConfig | None = None, source: str = "<array>"
) -> np.ndarray:
    """Convert ``(channels, samples)`` audio at ``sr`` to mid/side at ``config.sample_rate``.

    Mono is duplicated (side = 0), more than two channels keep the first two; anything that is
    not 48 kHz stereo gives an :class:`AudioFormatWarning` naming ``source``.
    """
    config = config or AudioConfig()
    x = _two_channels(x, sr, config, source)
    x = _resample_channels(x, sr, config.sample_rate)
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
    return np.abs(_stft(segments, n_fft, hop_length)).astype(np.float32, copy=False)


def _stft(segments: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """The complex STFT of :func:`stft_magnitude` (complex64 for float32 segments)."""
    pad = n_fft // 2
    x = np.pad(segments, [(0, 0)] * (segments.ndim - 1) + [(pad, pad)], mode="reflect")
    n_frames = 1 + (x.shape[-1] - n_fft) // hop_length
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[
        ..., : n_frames * hop_length : hop_length, :
    ]
    import scipy.fft  # pocketfft in float32 for float32 frames: 6x numpy's rfft here

    return scipy.fft.rfft(frames * _periodic_hann(n_fft), axis=-1)


@lru_cache(maxsize=8)
def _periodic_hann(n_fft: int) -> np.ndarray:
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)  # periodic Hann
    window.setflags(write=False)
    return window


def filterbank(kind: str, config: AudioConfig | None = None) -> np.ndarray:
    """The ``(F, n_fft // 2 + 1)`` weights of the registered feature kind ``kind``
    ("scalogram", "fbank", or one of a user's, :mod:`avsc.features.extractors`)."""
    return get_extractor(kind, config).filterbank()


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
    out = _segment_features(segment(ms, config, source=source), kind_list, config)
    return out[kind_list[0]] if single else out


_BLAS = None  # threadpoolctl's controller, made on first use (it scans the loaded libraries)


def _one_blas_thread():
    """A context in which BLAS runs on one thread (threadpoolctl)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def _segment_features(
    segs: np.ndarray, kinds: tuple[str, ...], config: AudioConfig
) -> dict[str, np.ndarray]:
    """``(S, 2, segment_samples)`` mid/side segments -> ``{kind: (S, T, 2, F)}`` log features.

    A segment's features depend on its samples only: preprocess, streamed predict and any
    block size agree to the bit. The STFT transforms each frame on its own. A log filterbank
    whose weights are sparse (the paper's two kinds: :func:`avsc.features.extractors.
    filterbank_product`) sums each row on its own, in bin order: the magnitudes are laid out
    once, bins first, for all such kinds (``csr_matvecs`` reads them so), and rows that are
    all zeros are not multiplied (their product is zero). Any other kind gets every row,
    ``(S, 2T, bins)``, through its own :meth:`~avsc.features.extractors.FeatureExtractor.apply`,
    on one BLAS thread: a dense product goes segment by segment (one ``(2T, bins)`` matrix
    each, stacked), because OpenBLAS sums a product in an order that depends on the matrix's
    row count and on its thread count (0.3.31: up to 2e-6 apart).

    A segment's channel that is all zeros (the side channel of mono or dual-mono audio,
    digital silence) has an all-zero magnitude: its STFT is not computed."""
    from avsc.features.extractors import sparse_log_filterbank

    n_seg, n_fft, hop = segs.shape[0], config.n_fft, config.hop_length
    n_frames = 1 + (segs.shape[-1] + 2 * (n_fft // 2) - n_fft) // hop
    bins = n_fft // 2 + 1
    live = segs.any(axis=-1)  # (S, 2): False where a segment's channel is all zeros
    s_idx, c_idx = np.nonzero(live)
    spec = _stft(segs[s_idx, c_idx], n_fft, hop) if len(s_idx) else None  # (L, T, bins)
    columns = rows = None
    out = {}
    for kind in kinds:
        ex = get_extractor(kind, config)
        csr = sparse_log_filterbank(ex)
        if csr is not None:
            prod = np.zeros((n_seg, n_frames, 2, csr.shape[0]), np.float32)
            if spec is not None:
                if columns is None:  # (bins, L T): the live rows' magnitudes, bins first
                    columns = np.empty((bins, spec.shape[0] * n_frames), np.float32)
                    np.abs(spec.reshape(-1, bins).T, out=columns)
                live_prod = (csr @ columns).T  # (L T, F): csr_matvecs, a row's sums in bin order
                prod[s_idx, :, c_idx] = live_prod.reshape(len(s_idx), n_frames, csr.shape[0])
            out[kind] = ex.log(prod)
            continue
        if rows is None:
            mag = np.zeros((n_seg, n_frames, 2, bins), np.float32)
            if spec is not None:
                mag[s_idx, :, c_idx] = np.abs(spec)
            rows = mag.reshape(n_seg, -1, bins)  # (S, 2T, bins): a product per segment
        with _one_blas_thread():
            feats = ex.apply(rows)
        out[kind] = feats.reshape(n_seg, n_frames, 2, feats.shape[-1])
    return out


def iter_audio_features(
    path: str | os.PathLike | AudioSource,
    kinds: tuple[str, ...] | str = "scalogram",
    config: AudioConfig | None = None,
    block_segments: int = 64,
) -> Iterator[dict[str, np.ndarray]]:
    """The features of an audio file of any length, streamed: ``{kind: (b, T, 2, F)}`` for
    successive blocks of at most ``block_segments`` segments, with memory flat in the file's
    length. Concatenated, the blocks equal :func:`extract_audio_features` of the whole file:
    each block is resampled with one segment of context on either side (far more than the
    polyphase filter reaches), so block edges leave no trace."""
    config = config or AudioConfig()
    kind_list = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    for kind in kind_list:
        get_extractor(kind, config)  # an unknown kind fails here, before any decoding
    src = path if isinstance(path, AudioSource) else open_audio(path)
    sr, target, name = src.sample_rate, config.sample_rate, str(src.path)
    seg_in = config.segment_seconds * sr
    if seg_in != int(seg_in) or config.segment_seconds * target != config.segment_samples:
        # segments do not fall on whole input samples: featurize the file in one piece
        x, sr = read_audio(src.path)
        yield features_from_waveform(x, sr, kind_list, config, source=name)  # type: ignore[misc]
        return
    seg_in = int(seg_in)
    step = seg_in * max(1, int(block_segments))  # input samples featurized per block
    margin = seg_in if sr != target else 0  # resampling context on either side
    seg_out = config.segment_samples
    buf = np.zeros((0, 0), np.float32)  # input samples [buf_start, buf_start + buf.shape[1])
    buf_start = 0
    a = 0  # first input sample of the next block
    warned = False
    total = 0

    def block(lo: int, hi: int, final: bool) -> dict[str, np.ndarray] | None:
        ctx_lo = max(0, lo - margin)
        x = buf[:, ctx_lo - buf_start : hi + (0 if final else margin) - buf_start]
        y = mid_side(_resample_channels(x, sr, target))
        skip = (lo - ctx_lo) * target // sr  # whole output samples: lo and ctx_lo are segments
        n = (hi - lo) * target // sr if not final else y.shape[1] - skip
        y = y[:, skip : skip + n]
        if not final:
            segs = y.reshape(2, -1, seg_out).transpose(1, 0, 2)
        else:
            count = int(math.floor(y.shape[1] / seg_out + config.segment_tolerance))
            if count < 1:
                return None
            if y.shape[1] < count * seg_out:
                y = np.pad(y, [(0, 0), (0, count * seg_out - y.shape[1])])
            segs = y[:, : count * seg_out].reshape(2, count, seg_out).transpose(1, 0, 2)
        return _segment_features(np.ascontiguousarray(segs), kind_list, config)

    waiting: list[np.ndarray] = []  # decoded chunks not yet joined to buf (PyAV: small)
    waiting_n = 0
    for x in src.blocks(max(step, 1 << 16)):
        x = _two_channels(x, sr, config, name, warn=not warned)
        warned = True
        waiting.append(x)
        waiting_n += x.shape[1]
        if buf_start + buf.shape[1] + waiting_n < a + step + margin:
            continue  # join only when a whole block is there: no copy per decoded frame
        buf = np.concatenate(([buf] if buf.size else []) + waiting, axis=1)
        waiting, waiting_n = [], 0
        while buf_start + buf.shape[1] >= a + step + margin:
            out = block(a, a + step, final=False)
            assert out is not None
            total += step // seg_in
            yield out
            a += step
            keep = max(0, a - margin) - buf_start  # drop what no later block needs
            buf, buf_start = buf[:, keep:], buf_start + keep
    if waiting:
        buf = np.concatenate(([buf] if buf.size else []) + waiting, axis=1)
    end = buf_start + buf.shape[1]
    out = block(a, end, final=True) if end > a else None
    if out is not None:
        total += len(next(iter(out.values())))
        yield out
    if total == 0:
        seconds = end / sr
        raise AudioError(
            f"{name}: {seconds:.3f} s of audio is shorter than one "
            f"{config.segment_seconds:g}-s segment"
        )


def extract_audio_features(
    path: str | os.PathLike, kind: str = "scalogram", config: AudioConfig | None = None
) -> np.ndarray:
    """Long-term scalogram or FBank of an audio file, method.md section 2.

    Any sample rate, mono or stereo (resampled to 16 kHz; an :class:`AudioFormatWarning` for
    non-TAU formats); WAV through soundfile, audio tracks of video files through PyAV.
    Returns float32 ``(segments, 6, 2, F)`` with F = 290 (scalogram) or 256 (FBank).
    """
    get_extractor(kind, config)  # an unknown kind fails here, before any decoding
    x, sr = read_audio(path)
    return features_from_waveform(x, sr, kind, config, source=str(path))  # type: ignore[return-value]
