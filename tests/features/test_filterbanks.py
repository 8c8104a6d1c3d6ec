"""The scalogram bank against the closed form of method.md 2.5, and against PyWavelets."""

import math

import numpy as np
import pytest
import pywt

from avsc.config import AudioConfig
from avsc.features.audio import features_from_waveform
from avsc.features.filterbanks import (
    mel_filterbank,
    scalogram_centre_frequencies,
    scalogram_filterbank,
    scalogram_filters,
)

SR, NFFT = 16000, 8192


def closed_form(q: int = 32, j: int = 12):
    """method.md 2.5, written out independently of the implementation."""
    xi_max = (1 + 2 ** (-1 / q)) / 4
    ratio = (1 - 2 ** (-1 / q)) / (1 + 2 ** (-1 / q)) / math.sqrt(2 * math.log(math.sqrt(2)))
    smin = 0.1 / 2**j
    xi, sig = [xi_max], [xi_max * ratio]
    while sig[-1] > smin * 2 ** (1 / q):
        xi.append(xi_max * 2 ** (-len(xi) / q))
        sig.append(xi[-1] * ratio)
    n_cq = len(xi)
    elbow = xi[-1]
    xi += [elbow * (1 - k / q) for k in range(1, q)] + [0.0]
    sig += [smin] * q
    return np.array(xi), np.array(sig), n_cq


def test_filter_count_is_290_and_configurable():
    assert scalogram_filterbank().shape == (290, NFFT // 2 + 1)
    xi, _, n_cq = closed_form()
    assert n_cq == 258 and len(xi) == 290
    assert len(scalogram_filters(32, 13)) == 322
    assert len(scalogram_filters(32, 11)) == 258


def test_centre_frequencies_and_bandwidths_match_closed_form():
    xi, sig, n_cq = closed_form()
    filters = scalogram_filters()
    got_xi = np.array([f.xi for f in filters])
    got_sig = np.array([f.sigma for f in filters])
    np.testing.assert_allclose(got_xi, xi, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(got_sig, sig, rtol=1e-6)
    assert xi[0] * SR == pytest.approx(7914.29, abs=0.01)
    assert xi[n_cq - 1] * SR == pytest.approx(30.3, abs=0.05)  # the elbow
    assert got_sig[0] / got_xi[0] == pytest.approx(0.0130, abs=5e-5)
    np.testing.assert_allclose(scalogram_centre_frequencies(SR), xi * SR)
    parts = [f.part for f in filters]
    assert parts.count("constant_q") == 258 and parts.count("linear") == 31
    assert parts[-1] == "lowpass"


@pytest.mark.parametrize("index", [0, 100, 257, 258, 280])
def test_responses_are_the_fourier_transform_of_the_pywavelets_wavelet(index):
    """Our analytic response must equal |FFT| of PyWavelets' own sampled wavelet."""
    f = scalogram_filters()[index]
    w = pywt.ContinuousWavelet(f.wavelet)
    b = float(w.bandwidth_frequency)
    half = 8 * math.sqrt(b) + 8  # wide enough that the Gaussian envelope has decayed
    w.lower_bound, w.upper_bound = -half, half
    psi, x = w.wavefun(level=16)
    dx = x[1] - x[0]
    n = 1 << 20
    spec = np.abs(np.fft.fft(psi, n)) * dx  # continuous FT magnitude, peak ~1
    freqs = np.fft.fftfreq(n, dx)
    keep = freqs > 0
    fr, sp = freqs[keep], spec[keep]
    # at scale s the response is the mother's at s f: compare on the mother's frequency axis
    expected = f.response(fr / f.scale)
    peak = sp.argmax()
    assert fr[peak] / f.scale == pytest.approx(f.xi, rel=2e-3)
    band = expected > 1e-3
    np.testing.assert_allclose(sp[band], expected[band], atol=2e-3)
    # bandwidth: standard deviation of the response equals sigma
    p = sp / sp.sum()
    mean = (p * fr).sum()
    std = math.sqrt((p * (fr - mean) ** 2).sum()) / f.scale
    assert std == pytest.approx(f.sigma, rel=1e-2)


def test_bank_rows_are_unit_sum_gaussians_centred_on_the_nearest_bin():
    w = scalogram_filterbank()
    xi, sig, _ = closed_form()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
    bins = np.arange(NFFT // 2 + 1) / NFFT
    centre_bin = np.abs(bins[None, :] - xi[:, None]).argmin(axis=1)
    assert np.array_equal(w.argmax(axis=1), centre_bin)
    # measured bandwidths of constant-Q filters well inside (0, Nyquist) match sigma
    for k in (40, 80, 120):
        row = w[k].astype(np.float64)
        mean = (row * bins).sum()
        std = math.sqrt((row * (bins - mean) ** 2).sum())
        assert mean == pytest.approx(xi[k], rel=1e-4)
        assert std == pytest.approx(sig[k], rel=2e-3)
    assert not w.flags.writeable


TONES = [65.0, 100.0, 440.0, 1000.0, 2500.0, 3000.0, 6000.0, 7500.0]


def _tone_peaks(freqs):
    t = np.arange(SR) / SR
    y = np.sin(2 * np.pi * np.asarray(freqs)[:, None] * t[None])
    x = np.stack([y, 0.5 * y], axis=1)  # (n, 2, SR)
    peaks = []
    for xi in x:
        s = features_from_waveform(xi, SR, "scalogram")  # (1, 6, 2, 290)
        assert s.shape == (1, 6, 2, 290)
        peaks.append(int(s[0, :, 0].mean(axis=0).argmax()))
    return np.array(peaks)


@pytest.mark.filterwarnings("ignore::avsc.features.audio.AudioFormatWarning")
def test_pure_tone_peaks_in_the_filter_whose_centre_is_nearest():
    """Above 60 Hz (where adjacent centres are resolvable on the 1.95-Hz STFT grid): a tone
    peaks in the nearest filter whenever it is not within the middle fifth between two
    centres, and never more than one filter away."""
    centres = scalogram_centre_frequencies(SR)
    rng = np.random.default_rng(7)
    freqs = np.concatenate([TONES, rng.uniform(60, 7850, 40), centres[10:230:20]])
    peaks = _tone_peaks(freqs)
    nearest = np.abs(centres[None] - freqs[:, None]).argmin(axis=1)
    spacing = np.abs(np.diff(centres))
    half = np.minimum(spacing[np.minimum(nearest, 288)], spacing[np.maximum(nearest - 1, 0)]) / 2
    clear = np.abs(freqs - centres[nearest]) < 0.6 * half
    assert clear.sum() >= 25
    np.testing.assert_array_equal(peaks[clear], nearest[clear])
    assert np.abs(peaks - nearest).max() <= 1


def test_mel_bank_is_librosas():
    import librosa

    ref = librosa.filters.mel(sr=SR, n_fft=NFFT, n_mels=256, fmin=0, fmax=8000)
    np.testing.assert_allclose(mel_filterbank(), ref, rtol=1e-6)


def test_fbank_equals_librosa_melspectrogram_of_the_same_stft():
    import librosa

    rng = np.random.default_rng(0)
    y = rng.standard_normal(SR).astype(np.float32) * 0.1
    cfg = AudioConfig()
    ours = features_from_waveform(np.stack([y, y]), SR, "fbank", cfg)  # mid = y, side = 0
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=SR,
        n_fft=NFFT,
        hop_length=cfg.hop_length,
        window="hann",
        center=True,
        pad_mode="reflect",
        power=1.0,
        n_mels=256,
        fmin=0.0,
        fmax=8000.0,
    )  # (256, 6)
    ref = np.log(mel.T + cfg.log_eps)
    assert ours.shape == (1, 6, 2, 256)
    np.testing.assert_allclose(ours[0, :, 0], ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(ours[0, :, 1], np.log(cfg.log_eps), atol=1e-6)


def test_filterbanks_kept_between_processes_are_the_same_bits(tmp_path, monkeypatch):
    """Worker processes load the filterbanks from avsc's cache folder instead of importing
    librosa and building the Morlet bank again: the very same bits as computing them."""
    import librosa

    from avsc.features import filterbanks as fb

    monkeypatch.setenv("AVSC_CACHE_DIR", str(tmp_path))
    for matrix in (fb._mel_matrix, fb._scalogram_matrix):
        matrix.cache_clear()
    built = fb.mel_filterbank(), fb.scalogram_filterbank()
    assert len(list((tmp_path / "filterbanks").glob("*.npy"))) == 2
    for matrix in (fb._mel_matrix, fb._scalogram_matrix):
        matrix.cache_clear()
    loaded = fb.mel_filterbank(), fb.scalogram_filterbank()
    ref = librosa.filters.mel(sr=16000, n_fft=8192, n_mels=256, fmin=0, fmax=8000)
    np.testing.assert_array_equal(loaded[0], ref.astype(np.float32))
    for a, b in zip(built, loaded, strict=True):
        assert a.dtype == b.dtype == np.float32 and not b.flags.writeable
        np.testing.assert_array_equal(a, b)
    monkeypatch.setenv("AVSC_CACHE_DIR", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a folder")  # nowhere to keep them: computed each time
    fb._mel_matrix.cache_clear()
    np.testing.assert_array_equal(fb.mel_filterbank(), loaded[0])
    fb._mel_matrix.cache_clear()
