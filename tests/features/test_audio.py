"""Acoustic features: shapes, conversions and values against librosa / scipy / closed form."""

import warnings

import numpy as np
import pytest
import soundfile as sf

from avsc.config import AudioConfig
from avsc.features import AudioError, AudioFormatWarning, extract_audio_features, read_audio
from avsc.features.audio import mid_side, resample, segment, stft_magnitude
from tests.conftest import REALDATA
from tests.media import write_wav

TUT = REALDATA / "tut2018_audio"
TAU_VIDEO = REALDATA / "tau_av2021_video"


def noise(seconds: float, sr: int = 48000, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((channels, int(round(seconds * sr))))).clip(-1, 1)


@pytest.fixture(scope="module")
def tau_wav(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("a") / "clip.wav", noise(10.0))


def test_ten_second_clip_shapes(tau_wav):
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioFormatWarning)  # 48 kHz stereo: no warning
        s = extract_audio_features(tau_wav, "scalogram")
        f = extract_audio_features(tau_wav, "fbank")
    assert s.shape == (10, 6, 2, 290) and s.dtype == np.float32
    assert f.shape == (10, 6, 2, 256) and f.dtype == np.float32
    assert np.isfinite(s).all() and np.isfinite(f).all()


def test_one_second_clip(tmp_path):
    p = write_wav(tmp_path / "one.wav", noise(1.0))
    assert extract_audio_features(p, "scalogram").shape == (1, 6, 2, 290)
    assert extract_audio_features(p, "fbank").shape == (1, 6, 2, 256)


def test_each_segment_is_featurized_on_its_own(tau_wav):
    """Segment 3 of a 10-s clip equals the features of that second cut out as a 1-s file."""
    x, sr = read_audio(tau_wav)
    full = extract_audio_features(tau_wav, "fbank")
    # resampling is global, so compare on the already-16-kHz signal
    y = resample(x, sr, 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioFormatWarning)
        from avsc.features.audio import features_from_waveform

        alone = features_from_waveform(y[:, 3 * 16000 : 4 * 16000], 16000, "fbank")
    np.testing.assert_allclose(alone[0], full[3], atol=1e-4)


@pytest.mark.parametrize("sr,channels", [(44100, 2), (22050, 1), (16000, 2), (8000, 1)])
def test_any_rate_mono_or_stereo_with_a_warning(tmp_path, sr, channels):
    x = noise(2.0, sr, channels)
    p = write_wav(tmp_path / f"x{sr}.wav", x, sr, "PCM_16")
    with pytest.warns(AudioFormatWarning, match=str(p)):
        s = extract_audio_features(p, "scalogram")
    assert s.shape == (2, 6, 2, 290)
    if channels == 1:  # duplicated channel: the side channel is silent
        np.testing.assert_allclose(s[:, :, 1], np.log(AudioConfig().log_eps), atol=1e-5)


def test_resampling_is_polyphase_and_keeps_a_tone():
    import librosa

    sr = 48000
    t = np.arange(sr) / sr
    x = np.sin(2 * np.pi * 1000 * t)[None].astype(np.float32)
    y = resample(x, sr, 16000)
    assert y.shape == (1, 16000)
    ref = librosa.resample(x[0], orig_sr=sr, target_sr=16000, res_type="polyphase")
    np.testing.assert_allclose(y[0], ref, atol=1e-5)
    spec = np.abs(np.fft.rfft(y[0]))
    assert spec.argmax() == 1000  # 1-Hz bins


@pytest.mark.parametrize(
    "sr", [48000, 44100, 22050, 8000, 12000, 32000, 37800, 88200, 96000, 15999, 144000]
)
def test_resampling_is_scipy_resample_poly_bit_for_bit(sr):
    """Integer decimation (TAU's 48 kHz), rational ratios (44.1 kHz: 160 / 441), upsampling
    (8 kHz), and lengths shorter than the filter: every float32 sample the same bits as
    scipy's resample_poly, zeros' signs included."""
    import math

    from scipy.signal import resample_poly

    from avsc.features.resampling import resample_poly as ours_poly

    g = math.gcd(sr, 16000)
    up, down = 16000 // g, sr // g
    rng = np.random.default_rng(sr)
    for n in (sr * 2 + 7, sr, 1000, 31, 1):
        x = (0.3 * rng.standard_normal((2, n))).astype(np.float32)
        x[:, : n // 3] = 0  # silence: +0.0 and -0.0 sums
        x[1, -(n // 4) :] = -0.0
        ref = resample_poly(x, up, down, axis=-1)
        ours = ours_poly(x, up, down)
        assert ours.dtype == ref.dtype == np.float32 and ours.shape == ref.shape
        np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))
        np.testing.assert_array_equal(resample(x, sr, 16000).view(np.uint32), ref.view(np.uint32))
        one = ours_poly(x[1], up, down)  # a channel alone: the same bits as beside another
        np.testing.assert_array_equal(one.view(np.uint32), ref[1].view(np.uint32))
    # float64 input (not what the pipeline feeds) goes through scipy itself
    ref64 = resample_poly(x.astype(np.float64), up, down, axis=-1).astype(np.float32)
    np.testing.assert_array_equal(resample(x.astype(np.float64), sr, 16000), ref64)
    with pytest.raises(TypeError, match="float32 samples expected, not float64"):
        ours_poly(x.astype(np.float64), up, down)


@pytest.mark.parametrize("sr", [48000, 44100])
def test_predict_path_does_not_import_scipy_signal(tmp_path, sr):
    """Resampling TAU audio (48 kHz) or CD-rate audio never imports scipy.signal, whose
    import costs most of the start-up of ``avsc predict`` beyond torch."""
    import subprocess
    import sys

    wav = write_wav(tmp_path / "clip.wav", noise(2.0, sr), sr)
    code = (
        "import sys; from avsc.features.audio import iter_audio_features; "
        f"list(iter_audio_features({str(wav)!r}, ('scalogram', 'fbank')[:1])); "
        "print('scipy.signal' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_mid_side_is_average_and_difference():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 100)).astype(np.float32)
    ms = mid_side(x)
    np.testing.assert_allclose(ms[0], (x[0] + x[1]) / 2)
    np.testing.assert_allclose(ms[1], (x[0] - x[1]) / 2)


def test_stft_matches_librosa():
    import librosa

    rng = np.random.default_rng(2)
    y = rng.standard_normal(16000).astype(np.float32)
    ours = stft_magnitude(y, 8192, 2736)
    ref = np.abs(librosa.stft(y, n_fft=8192, hop_length=2736, center=True, pad_mode="reflect")).T
    assert ours.shape == (6, 4097) == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)


def test_segmenting_pads_a_nearly_whole_last_second_and_drops_a_partial_one():
    cfg = AudioConfig()
    x = np.ones((2, 3 * 16000 - 50), dtype=np.float32)  # 50 samples short of 3 s
    segs = segment(x, cfg)
    assert segs.shape == (3, 2, 16000)
    assert segs[2, 0, -50:].sum() == 0 and segs[2, 0, :-50].all()
    assert segment(np.ones((2, 16000 + 8000), np.float32), cfg).shape == (1, 2, 16000)
    with pytest.raises(AudioError, match="shorter than one"):
        segment(np.ones((2, 8000), np.float32), cfg)


def test_bad_files_raise_errors_naming_the_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        extract_audio_features(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00junk" * 10)
    with pytest.raises(AudioError, match="junk.wav"):
        extract_audio_features(junk)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 2)), 48000, subtype="PCM_24")
    with pytest.raises(AudioError, match="empty.wav"):
        extract_audio_features(empty)
    with pytest.raises(ValueError, match="unknown feature kind"):
        extract_audio_features(junk, "mfcc")


def test_truncated_wav_gives_fewer_samples_not_garbage(tmp_path, tau_wav):
    data = tau_wav.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    try:
        x, sr = read_audio(cut)
    except AudioError as exc:
        assert "cut.wav" in str(exc)
    else:
        assert sr == 48000 and x.shape[1] < 48000 * 6


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["airport", "bus", "metro", "park", "street_traffic", "tram"])
def test_real_tut_recordings(name):
    path = TUT / f"{name}.wav"
    if not path.is_file():
        pytest.skip("real TUT recordings absent")
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (48000, 2, "PCM_24")
    for kind, f in (("scalogram", 290), ("fbank", 256)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", AudioFormatWarning)
            feats = extract_audio_features(path, kind)
        assert feats.shape == (10, 6, 2, f)
        assert np.isfinite(feats).all()
        energy = np.exp(feats.astype(np.float64)).sum(axis=(0, 1, 3))  # per channel
        assert energy[0] > energy[1], f"{name}: mid {energy[0]:.3g} <= side {energy[1]:.3g}"


@pytest.mark.realdata
def test_audio_track_of_a_real_tau_mp4():
    path = TAU_VIDEO / "barcelona161_4901.mp4"
    if not path.is_file():
        pytest.skip("real TAU videos absent")
    with pytest.warns(AudioFormatWarning, match="44100 Hz"):
        feats = extract_audio_features(path, "scalogram")
    assert feats.shape == (10, 6, 2, 290) and np.isfinite(feats).all()


# integer PCM audio tracks (MOV / MKV / NUT) against the same audio as WAV and as AAC
PCM_TRACKS = [
    # (file name, FFmpeg codec, decoded sample format, the WAV subtype holding the same values)
    ("s16.mov", "pcm_s16le", "s16", "PCM_16"),
    ("s16be.mov", "pcm_s16be", "s16", "PCM_16"),
    ("s16p.nut", "pcm_s16le_planar", "s16p", "PCM_16"),
    ("s24.mov", "pcm_s24le", "s32", "PCM_24"),
    ("s24p.nut", "pcm_s24le_planar", "s32p", "PCM_24"),
    ("s32.mkv", "pcm_s32le", "s32", "PCM_32"),
    ("s32p.nut", "pcm_s32le_planar", "s32p", "PCM_32"),
    ("u8.mov", "pcm_u8", "u8", "PCM_U8"),
    ("u8p.nut", "pcm_s8_planar", "u8p", "PCM_U8"),
]
GRID_BITS = {"PCM_16": 16, "PCM_24": 24, "PCM_32": 24, "PCM_U8": 8}  # float32 holds 24 bits


@pytest.fixture(scope="module")
def pcm_signal():
    x = noise(3.0, seed=5)
    x[:, :48000] *= 4  # a louder first second, so that scaling errors show in the features
    return x.clip(-0.99, 0.99)


@pytest.mark.parametrize("name,codec,fmt,subtype", PCM_TRACKS)
def test_integer_pcm_tracks_read_like_the_same_audio_as_wav(
    tmp_path, pcm_signal, name, codec, fmt, subtype
):
    import av

    from tests.media import write_audio_track

    # on the integer grid of the format, so that both writers store the very same integers
    step = 2.0 ** (1 - GRID_BITS[subtype])
    pcm_signal = np.round(pcm_signal / step) * step
    track = write_audio_track(tmp_path / name, pcm_signal, codec=codec)
    with av.open(str(track)) as c:  # the decoder really hands out this integer format
        assert next(c.decode(audio=0)).format.name == fmt
    wav = write_wav(tmp_path / "same.wav", pcm_signal, subtype=subtype)
    x_track, sr_track = read_audio(track)
    x_wav, sr_wav = read_audio(wav)
    assert sr_track == sr_wav == 48000 and x_track.shape == x_wav.shape == (2, 3 * 48000)
    assert np.abs(x_track).max() < 1.0
    # the same integers, scaled as soundfile scales them: equal to the last bit
    np.testing.assert_array_equal(x_track, x_wav)
    np.testing.assert_array_equal(
        extract_audio_features(track, "fbank"), extract_audio_features(wav, "fbank")
    )


def test_aac_track_and_integer_track_agree(tmp_path, pcm_signal):
    from tests.media import write_audio_track

    s16 = extract_audio_features(write_audio_track(tmp_path / "a.mov", pcm_signal), "scalogram")
    aac = write_audio_track(tmp_path / "a.mp4", pcm_signal, codec="aac")
    x, _ = read_audio(aac)
    assert 0.1 < np.abs(x).max() < 2.0  # float samples pass through unscaled (AAC overshoots)
    feats = extract_audio_features(aac, "scalogram")
    assert feats.shape == s16.shape
    # a lossy codec: per-segment mean log energy within 0.2 (unscaled integers: +10.4)
    np.testing.assert_allclose(feats.mean(axis=(1, 2, 3)), s16.mean(axis=(1, 2, 3)), atol=0.2)


@pytest.mark.parametrize("sr,seconds", [(48000, 7.0), (44100, 5.3), (16000, 4.995)])
def test_streamed_features_equal_whole_file_features(tmp_path, sr, seconds):
    from avsc.features.audio import iter_audio_features

    p = write_wav(tmp_path / "long.wav", noise(seconds, sr, seed=3), sr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioFormatWarning)
        whole = {k: extract_audio_features(p, k) for k in ("scalogram", "fbank")}
        for block in (1, 3):
            parts = list(iter_audio_features(p, ("scalogram", "fbank"), block_segments=block))
            assert len(parts) == -(-len(whole["fbank"]) // block)
            for kind in ("scalogram", "fbank"):
                np.testing.assert_array_equal(np.concatenate([q[kind] for q in parts]), whole[kind])


def test_features_do_not_depend_on_the_blas_thread_count():
    """OpenBLAS sums a product in an order that depends on its thread count: features are
    computed on one BLAS thread, so a preprocess worker (one thread) and a prediction in the
    main process (every core) give the same bits. A 10-s clip: 120 rows per product."""
    from threadpoolctl import threadpool_limits

    from avsc.features import features_from_waveform
    from avsc.features.audio import _segment_features, prepare_waveform

    x = noise(10.0, seed=5)
    kinds = ("scalogram", "fbank")
    with threadpool_limits(limits=1, user_api="blas"):
        one = features_from_waveform(x, 48000, kinds)
    with threadpool_limits(limits=2, user_api="blas"):
        two = features_from_waveform(x, 48000, kinds)
    for kind in kinds:
        np.testing.assert_array_equal(two[kind], one[kind])
    # and a segment's features do not depend on the segments featurized with it
    config = AudioConfig()
    segs = segment(prepare_waveform(x, 48000, config), config)
    alone = _segment_features(np.ascontiguousarray(segs[3:4]), kinds, config)
    for kind in kinds:
        np.testing.assert_array_equal(alone[kind][0], one[kind][3])


def test_streamed_features_of_a_video_audio_track(tmp_path):
    from avsc.features.audio import iter_audio_features
    from tests.media import write_audio_track

    track = write_audio_track(tmp_path / "t.mov", noise(4.0, seed=4).clip(-1, 1))
    whole = extract_audio_features(track, "scalogram")
    parts = [b["scalogram"] for b in iter_audio_features(track, "scalogram", block_segments=2)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    short = write_wav(tmp_path / "short.wav", noise(0.5))
    with pytest.raises(AudioError, match="short.wav: 0.500 s of audio is shorter than one"):
        list(iter_audio_features(short))


def test_decimate_poly_still_works_with_a_deprecation_warning():
    from scipy.signal import resample_poly

    from avsc.features.audio import decimate_poly

    x = (0.3 * np.random.default_rng(2).standard_normal((2, 4801))).astype(np.float32)
    with pytest.warns(DeprecationWarning, match=r"resampling.resample_poly\(x, 1, down\)"):
        y = decimate_poly(x, 3)
    np.testing.assert_array_equal(y, resample_poly(x, 1, 3, axis=-1))
