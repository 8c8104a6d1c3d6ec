"""A feature kind is one registered class (issue 22, section 3): a third kind, a log-mel
spectrogram defined here and nowhere in avsc, goes through preprocessing (in spawned
workers), training, every table and the feature figure, and its values equal librosa's."""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from avsc.config import AudioConfig, ConfigError, ExperimentConfig, PreprocessConfig
from avsc.features import (
    ExtractorOptions,
    FeatureExtractor,
    extractor_names,
    features_from_waveform,
    get_extractor,
    preprocess,
    register_extractor,
)
from avsc.features.extractors import unregister_extractor


class LogMel(FeatureExtractor):
    """Not registered at import: the ``logmel`` fixture registers it (and a preprocessing
    worker, which imports this module by the class's name)."""

    name = "logmel"
    title = "log-mel spectrogram"
    short = "log-mel"
    unit = "mel"
    band_label = "mel band"

    @dataclass(frozen=True)
    class Options(ExtractorOptions):
        n_mels: int = 40
        fmax: float = 8000.0

        def _validate(self) -> None:
            self._at_least("n_mels", 1)

    def filterbank(self) -> np.ndarray:
        a, o = self.audio, self.options
        return librosa.filters.mel(
            sr=a.sample_rate, n_fft=a.n_fft, n_mels=o.n_mels, fmax=o.fmax, htk=True, norm=None
        ).astype(np.float32)


@pytest.fixture
def logmel():
    register_extractor(LogMel)
    yield LogMel
    unregister_extractor("logmel")


def test_a_registered_kind_equals_librosa_computed_independently(logmel):
    ac = AudioConfig(extractors={"logmel": {"n_mels": 24}})
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, (1, 2 * ac.sample_rate)).astype(np.float32)  # mono: side = 0
    feats = features_from_waveform(x, ac.sample_rate, ("scalogram", "logmel"), ac)
    got = feats["logmel"]
    assert got.shape == (2, ac.frames_per_segment, 2, 24) and got.dtype == np.float32
    for s in range(2):
        seg = x[0, s * ac.sample_rate : (s + 1) * ac.sample_rate]
        mag = np.abs(
            librosa.stft(seg, n_fft=ac.n_fft, hop_length=ac.hop_length, pad_mode="reflect")
        )
        mel = librosa.feature.melspectrogram(
            S=mag, sr=ac.sample_rate, n_mels=24, fmax=8000.0, htk=True, norm=None
        )
        want = np.log(mel + ac.log_eps).T  # (frames, 24)
        np.testing.assert_allclose(got[s, :, 0], want, rtol=1e-4, atol=1e-4)
    # the side channel of mono audio is all zeros: log(eps)
    np.testing.assert_allclose(got[:, :, 1], np.log(np.float32(ac.log_eps)), rtol=1e-6)
    # the paper's kinds are untouched by a third: the scalogram of the same call is the one
    # computed alone
    alone = features_from_waveform(x, ac.sample_rate, "scalogram", ac)
    np.testing.assert_array_equal(feats["scalogram"], alone)


def test_options_and_names_are_refused_naming_the_key(logmel):
    with pytest.raises(
        ConfigError, match=r"audio\.extractors\.logmel: unknown key\(s\) \['n_melz'\]"
    ):
        get_extractor("logmel", AudioConfig(extractors={"logmel": {"n_melz": 3}}))
    with pytest.raises(
        ConfigError, match=r"config key audio\.extractors\.logmel\.n_mels: must be >= 1"
    ):
        get_extractor("logmel", AudioConfig(extractors={"logmel": {"n_mels": 0}}))
    with pytest.raises(ValueError, match="unknown feature kind 'mfcc'; expected one of"):
        features_from_waveform(np.zeros((1, 16000), np.float32), 16000, "mfcc")
    with pytest.raises(ValueError, match="already registered"):

        class Other(FeatureExtractor):
            name = "logmel"

        register_extractor(Other)


def test_preprocess_refuses_an_unknown_kind_before_any_work(tiny, tmp_path):
    config = PreprocessConfig(features=("scalogram", "mfcc"))
    with pytest.raises(ConfigError, match="config key features: unknown feature kind 'mfcc'"):
        preprocess(tiny, tmp_path / "cache", config)
    assert not (tmp_path / "cache").exists()


def test_a_third_kind_goes_through_the_store_training_tables_and_figure(logmel, tiny, tmp_path):
    from avsc.evaluation.tables import claims_table, compare_features, results_table
    from avsc.experiments import train as T
    from avsc.experiments.workspace import Workspace
    from avsc.viz import clip_feature_figure

    assert extractor_names() == ("scalogram", "fbank", "logmel")
    cfg = ExperimentConfig().override(
        {
            "audio.extractors": {"logmel": {"n_mels": 32}},
            "frames.short_side": 48,
            "data.clip_seconds": 2.0,
            "train.batch_size": 32,
            "train.max_epochs": 1,
            "train.t0_epochs": 1,
            "train.eval_batch_size": 32,
        }
    )
    cache = tmp_path / "cache"
    report = preprocess(
        tiny, cache, cfg.preprocess_config(("scalogram", "fbank", "logmel")), workers=2
    )
    assert report.ok and report.processed == 18, report.format()  # spawned workers know logmel
    ws = Workspace(cache, cfg)
    assert ws.store.load_audio(ws.store.clips[0], "logmel").shape[-1] == 32
    results = [
        T.train_system("audio_only", cfg, ws.store, tmp_path / f"a_{f}", feature=f, workspace=ws)
        for f in ("scalogram", "fbank", "logmel")
    ]
    table = results_table(results, paper=False)
    assert sorted(table["feature"]) == ["fbank", "logmel", "scalogram"]
    claims = claims_table(results, paper=False)
    assert list(claims["claim"]) == ["scalogram vs FBank", "scalogram vs log-mel"]
    assert list(claims["B"]) == [results[1].name, results[2].name]
    lines = compare_features(results)
    assert len(lines) == 2 and "vs fbank" in lines[0] and "vs logmel" in lines[1]
    fig = clip_feature_figure(ws.store.manifest(), ws.store.clips[0], cfg, "test")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[2:] == [
        "long-term scalogram (290 filters)",
        "long-term FBank (256 mel)",
        "log-mel spectrogram (32 mel)",
    ]


def test_the_filterbank_product_is_sparse_for_band_filters_and_equals_the_dense_product():
    """The paper's two filterbanks are applied as sparse matrices: each value equals the
    float64 product within float32 rounding, and a row's value is the same bits whether it
    is computed alone or with others (no BLAS kernel or thread count decides its order). A
    dense filterbank goes through ``numpy.matmul`` as before, bit for bit."""
    from avsc.features.extractors import _sparse_weights, filterbank_product

    rng = np.random.default_rng(7)
    rows = np.abs(rng.standard_normal((4, 12, 4097))).astype(np.float32) * 30
    rows[1, 6:] = 0  # a mono segment's side rows
    for kind in ("scalogram", "fbank"):
        w = get_extractor(kind).filterbank()
        assert _sparse_weights(w) is not None, kind
        ours = filterbank_product(rows, w)
        assert ours.dtype == np.float32 and ours.shape == (4, 12, w.shape[0])
        ref = rows.astype(np.float64) @ w.T.astype(np.float64)
        np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=1e-6 * ref.max())
        assert (ours[1, 6:] == 0).all()
        np.testing.assert_array_equal(filterbank_product(rows[2:3, 5:6], w)[0, 0], ours[2, 5])
    dense = rng.random((20, 4097)).astype(np.float32)
    assert _sparse_weights(dense) is None
    np.testing.assert_array_equal(filterbank_product(rows, dense), np.matmul(rows, dense.T))


def test_segment_features_skip_silent_channels_and_equal_each_kinds_own_apply(monkeypatch):
    """Featurizing multiplies only the rows of live channels, laid out once for both sparse
    kinds: the features are the same bits as each extractor's own ``apply`` over every row
    (zeros included), for mono (side = 0), a silent segment, and stereo; a kind that
    overrides ``apply`` (here a dense filterbank) still gets every row."""
    from avsc.config import AudioConfig
    from avsc.features.audio import _segment_features, stft_magnitude
    from avsc.features.extractors import sparse_log_filterbank

    cfg = AudioConfig()
    rng = np.random.default_rng(3)
    segs = (0.1 * rng.standard_normal((4, 2, cfg.segment_samples))).astype(np.float32)
    segs[0, 1] = 0  # mono: side = 0
    segs[2] = 0  # a silent segment
    out = _segment_features(segs, ("scalogram", "fbank"), cfg)
    mag = np.moveaxis(stft_magnitude(segs, cfg.n_fft, cfg.hop_length), 2, 1)  # (S, T, 2, bins)
    rows = np.ascontiguousarray(mag).reshape(4, -1, mag.shape[-1])
    for kind in ("scalogram", "fbank"):
        ex = get_extractor(kind, cfg)
        assert sparse_log_filterbank(ex) is not None
        ref = ex.apply(rows).reshape(out[kind].shape)
        np.testing.assert_array_equal(out[kind].view(np.uint32), ref.view(np.uint32))
        assert (out[kind][2] == np.log(np.float32(cfg.log_eps))).all()

    class Dense(get_extractor("fbank").__class__):
        def apply(self, rows):  # an overridden apply: not a log filterbank to avsc
            self.seen = rows.shape
            return super().apply(rows)

    dense = Dense(cfg)
    assert sparse_log_filterbank(dense) is None
    monkeypatch.setattr("avsc.features.audio.get_extractor", lambda kind, config: dense)
    mine = _segment_features(segs, ("fbank",), cfg)["fbank"]
    assert dense.seen == rows.shape  # every row, zeros included
    np.testing.assert_array_equal(mine.view(np.uint32), out["fbank"].view(np.uint32))
