"""Filterbanks over the magnitude STFT: the 290-filter long-term scalogram and the mel FBank.

Implements method.md section 2.5-2.6. The scalogram bank follows the Andén-Mallat
first-order scattering tiling of [7] (kymatio's ``compute_params_filterbank`` loop with
ScatNet's ``xi_max``): a constant-Q part with ``Q`` filters per octave down to an "elbow",
``Q - 1`` linearly spaced filters of the minimum bandwidth below it, and one low-pass filter.
Every filter is a member of PyWavelets' complex Morlet family ``cmorB-C``: its frequency
response at scale ``s`` is ``exp(-pi^2 B (s f - C)^2)``, a Gaussian centred at ``C / s``
with standard deviation ``1 / (pi s sqrt(2 B))`` cycles/sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pywt


@dataclass(frozen=True)
class MorletFilter:
    """One filter of the scalogram bank.

    ``xi`` and ``sigma`` are the centre frequency and the bandwidth (standard deviation of the
    Gaussian frequency response) in cycles/sample; ``wavelet`` and ``scale`` name the same
    filter as a PyWavelets complex Morlet wavelet; ``part`` is ``constant_q``, ``linear`` or
    ``lowpass``.
    """

    xi: float
    sigma: float
    wavelet: str
    scale: float
    part: str

    def response(self, freqs: np.ndarray) -> np.ndarray:
        """Frequency response at ``freqs`` (cycles/sample), from the PyWavelets wavelet."""
        return morlet_response(self.wavelet, self.scale, freqs)


def xi_max(q: int) -> float:
    """ScatNet's highest centre frequency ``(1 + 2^(-1/Q)) / 4`` cycles/sample."""
    return (1.0 + 2.0 ** (-1.0 / q)) / 4.0


def sigma_ratio(q: int) -> float:
    """Bandwidth over centre frequency of the constant-Q filters:
    ``(1 - 2^(-1/Q)) / (1 + 2^(-1/Q)) / sqrt(2 ln sqrt 2)`` (0.0130 for Q = 32)."""
    f = 2.0 ** (-1.0 / q)
    return (1.0 - f) / (1.0 + f) / math.sqrt(2.0 * math.log(math.sqrt(2.0)))


def sigma_min(j: int, sigma0: float = 0.1) -> float:
    """The smallest bandwidth ``sigma0 / 2^J`` cycles/sample."""
    return sigma0 / 2.0**j


def morlet_wavelet_name(bandwidth: float, center: float) -> str:
    """PyWavelets name ``cmorB-C`` of a complex Morlet wavelet."""
    return f"cmor{bandwidth!r}-{center!r}"


def morlet_response(wavelet: str, scale: float, freqs: np.ndarray) -> np.ndarray:
    """Fourier magnitude of the PyWavelets complex Morlet ``wavelet`` at ``scale``.

    PyWavelets defines ``psi(t) = (pi B)^(-1/2) exp(-t^2 / B) exp(2 pi i C t)``, whose Fourier
    transform is ``exp(-pi^2 B (f - C)^2)``; dilating by ``scale`` gives
    ``exp(-pi^2 B (scale f - C)^2)`` (peak value 1). ``B`` and ``C`` are read from PyWavelets.
    """
    w = pywt.ContinuousWavelet(wavelet)
    b = float(w.bandwidth_frequency)
    c = float(w.center_frequency or 0.0)
    f = np.asarray(freqs, dtype=np.float64)
    return np.exp(-(math.pi**2) * b * (scale * f - c) ** 2)


def _morlet_for(xi: float, sigma: float, part: str) -> MorletFilter:
    """The complex Morlet wavelet (C = 1, or C = 0 for the low-pass) with centre ``xi`` and
    bandwidth ``sigma``: ``B = 1 / (2 (pi sigma / xi)^2)`` and ``scale = C / xi`` via
    ``pywt.frequency2scale``."""
    if xi > 0:
        b = 1.0 / (2.0 * (math.pi * sigma / xi) ** 2)
        name = morlet_wavelet_name(b, 1.0)
        scale = float(pywt.frequency2scale(name, xi))
        w = pywt.ContinuousWavelet(name)
        bw = float(w.bandwidth_frequency)  # PyWavelets keeps B in float32
        sig = float(pywt.scale2frequency(name, scale)) / (math.pi * math.sqrt(2 * bw))
        return MorletFilter(float(pywt.scale2frequency(name, scale)), sig, name, scale, part)
    # Low-pass: the DC member of the family (C = 0, a Gaussian); B = 1/2, scale = 1/(pi sigma).
    name = morlet_wavelet_name(0.5, 0.0)
    scale = 1.0 / (math.pi * sigma)
    return MorletFilter(0.0, sigma, name, scale, part)


def scattering_centres(
    q: int = 32, j: int = 12, sigma0: float = 0.1
) -> list[tuple[float, float, str]]:
    """Centre frequencies and bandwidths (cycles/sample) of the first-order scattering tiling.

    Returns ``(xi, sigma, part)`` triples from the highest frequency down: the constant-Q
    filters (appended while the last sigma exceeds ``sigma_min * 2^(1/Q)``; 258 for Q=32,
    J=12, the last one the elbow at 30.3 Hz at 16 kHz), then ``Q - 1`` filters of bandwidth
    ``sigma_min`` at ``xi_elbow (1 - q/Q)``, then one low-pass filter at 0.
    """
    if q < 1 or j < 1:
        raise ValueError(f"scalogram needs Q >= 1 and J >= 1, got Q={q}, J={j}")
    smin = sigma_min(j, sigma0)
    factor = 2.0 ** (-1.0 / q)
    xi = [xi_max(q)]
    sig = [xi[0] * sigma_ratio(q)]
    if sig[0] <= smin:
        raise ValueError(f"Q={q}, J={j}: the widest filter is narrower than sigma_min")
    while sig[-1] > smin * 2.0 ** (1.0 / q):
        xi.append(xi[-1] * factor)
        sig.append(sig[-1] * factor)
    out = [(x, s, "constant_q") for x, s in zip(xi, sig, strict=True)]
    elbow = xi[-1]
    out += [(elbow * (1.0 - k / q), smin, "linear") for k in range(1, q)]
    out.append((0.0, smin, "lowpass"))
    return out


def scalogram_filters(q: int = 32, j: int = 12, sigma0: float = 0.1) -> list[MorletFilter]:
    """The scalogram bank as PyWavelets complex Morlet wavelets (290 for Q=32, J=12)."""
    return [_morlet_for(x, s, p) for x, s, p in scattering_centres(q, j, sigma0)]


def _disk_cached(name: str, key: tuple, compute) -> np.ndarray:
    """``compute()`` (a float32 matrix), kept between processes in avsc's cache folder
    (``$AVSC_CACHE_DIR``, else ``$XDG_CACHE_HOME/avsc`` or ``~/.cache/avsc``) under a digest
    of ``key`` and the versions of the libraries that compute it, so that a worker process
    loads in milliseconds what takes a second to build (librosa's import, the Morlet bank).
    ``np.save`` and ``np.load`` keep every bit; any trouble with the folder just computes."""
    import hashlib
    import os
    from pathlib import Path

    import numpy

    try:
        import importlib.metadata as md

        libs = tuple(md.version(m) for m in ("librosa", "PyWavelets"))
    except Exception:
        return compute()
    base = os.environ.get("AVSC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "avsc"
    )
    digest = hashlib.sha1(repr((name, key, libs, numpy.__version__, 1)).encode()).hexdigest()
    path = Path(base) / "filterbanks" / f"{name}-{digest[:16]}.npy"
    try:
        w = np.load(path, allow_pickle=False)
        w.setflags(write=False)
        return w
    except (OSError, ValueError):
        pass
    w = compute()
    try:
        from avsc.utils import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, w, allow_pickle=False)
    except OSError:
        pass  # a read-only home: computed each time, as before
    return w


@lru_cache(maxsize=16)
def _scalogram_matrix(sr: int, n_fft: int, q: int, j: int, sigma0: float) -> np.ndarray:
    return _disk_cached(
        "scalogram", (sr, n_fft, q, j, sigma0), lambda: _scalogram_compute(sr, n_fft, q, j, sigma0)
    )


def _scalogram_compute(sr: int, n_fft: int, q: int, j: int, sigma0: float) -> np.ndarray:
    freqs = np.arange(n_fft // 2 + 1, dtype=np.float64) / n_fft  # cycles/sample
    filters = scalogram_filters(q, j, sigma0)
    w = np.stack([f.response(freqs) for f in filters])
    sums = w.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        bad = int(np.argmin(sums[:, 0]))
        raise ValueError(f"scalogram filter {bad} has no support on the {n_fft}-point STFT grid")
    w = w / sums
    # Gaussian tails below 1e-10 of a filter's peak are set to zero: they are far below
    # float32 resolution of the result and would otherwise be subnormal numbers, which make
    # the matrix product many times slower on x86.
    w[w < 1e-10 * w.max(axis=1, keepdims=True)] = 0.0
    w = (w / w.sum(axis=1, keepdims=True)).astype(np.float32)
    w.setflags(write=False)
    return w


def scalogram_filterbank(
    sr: int = 16000, n_fft: int = 8192, q: int = 32, j: int = 12, sigma0: float = 0.1
) -> np.ndarray:
    """Scalogram weights ``W`` of shape ``(n_filters, n_fft // 2 + 1)``, float32, read-only.

    Row ``k`` is filter ``k``'s Gaussian frequency response evaluated at the STFT bin
    frequencies, normalised to unit sum so that no narrow filter vanishes between bins. Rows
    run from the highest centre frequency down to the low-pass filter. ``S = W |X|``.
    """
    return _scalogram_matrix(int(sr), int(n_fft), int(q), int(j), float(sigma0))


def scalogram_centre_frequencies(
    sr: int = 16000, q: int = 32, j: int = 12, sigma0: float = 0.1
) -> np.ndarray:
    """Centre frequencies of the scalogram filters in Hz, in row order."""
    return np.array([x for x, _, _ in scattering_centres(q, j, sigma0)]) * sr


@lru_cache(maxsize=16)
def _mel_matrix(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    return _disk_cached(
        "mel", (sr, n_fft, n_mels, fmin, fmax), lambda: _mel_compute(sr, n_fft, n_mels, fmin, fmax)
    )


def _mel_compute(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    import librosa

    w = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(
        np.float32
    )
    w.setflags(write=False)
    return w


def mel_filterbank(
    sr: int = 16000, n_fft: int = 8192, n_mels: int = 256, fmin: float = 0.0, fmax: float = 8000.0
) -> np.ndarray:
    """``librosa.filters.mel`` (Slaney), ``(n_mels, n_fft // 2 + 1)`` float32, read-only."""
    return _mel_matrix(int(sr), int(n_fft), int(n_mels), float(fmin), float(fmax))
