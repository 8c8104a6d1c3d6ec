"""Tests of the synthetic TAU-layout generator (avsc.data.synth).

Every property is checked against an independent reference: soundfile and PyAV for the
formats, the TAU metadata reader for the layout, and plain numpy / librosa / scikit-learn
for the signal properties (stereo, leaks, learnability), never the generator's own
parameters.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from avsc.data.synth import CITIES, make_synthetic_dataset, plan_dataset
from avsc.data.tau import (
    FOLD_COLUMNS,
    LABELS,
    META_COLUMNS,
    TEST_COLUMNS,
    TAUDataset,
    parse_clip_name,
)

CLIPS_PER_CLASS = 15
SECONDS = 2.0
SIZE = (96, 64)
FPS = 24
SEED = 0


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The main test dataset: 150 clips of 2 s, 96x64 video."""
    out = tmp_path_factory.mktemp("synth") / "data"
    return make_synthetic_dataset(
        out,
        clips_per_class=CLIPS_PER_CLASS,
        seconds=SECONDS,
        seed=SEED,
        video_size=SIZE,
        fps=FPS,
        show_progress=False,
    )


@pytest.fixture(scope="module")
def ds(root) -> TAUDataset:
    return TAUDataset(root)


def decode_rgb(path: Path) -> tuple[list[float], np.ndarray]:
    """Frame times and (frames, H, W, 3) uint8 RGB of a video, decoded by PyAV (one
    reformatter for all frames: ``to_ndarray(format=...)`` sets up a new converter for
    each frame, 2-5x the cost of decoding)."""
    from av.video.reformatter import VideoReformatter

    rgb = VideoReformatter()
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [f.time for f in frames], np.stack(
        [rgb.reformat(f, format="rgb24").to_ndarray() for f in frames]
    )


# --------------------------------------------------------------------------- layout, formats


def test_audio_format_and_length(ds):
    sizes = set()
    for row in ds.meta.itertuples(index=False):
        path = ds.audio_path(row.filename_audio)
        info = sf.info(str(path))
        assert info.samplerate == 48000
        assert info.channels == 2
        assert info.format == "WAV"
        assert info.subtype == "PCM_24"
        assert info.frames == round(SECONDS * 48000)
        sizes.add(path.stat().st_size)
    assert len(sizes) == 1, "WAV files differ in size: a file property could name the class"


def test_video_format_and_length(ds):
    n_frames = round(SECONDS * FPS)
    for row in ds.meta.itertuples(index=False):
        path = ds.video_path(row.filename_video)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert (stream.width, stream.height) == SIZE
            assert stream.average_rate == FPS
            assert stream.format.name == "yuv420p"
            assert float(stream.duration * stream.time_base) == pytest.approx(SECONDS)
            assert container.duration / 1e6 == pytest.approx(SECONDS, abs=1e-3)
            times = [f.time for f in container.decode(video=0)]
        assert len(times) == n_frames
        np.testing.assert_allclose(times, np.arange(n_frames) / FPS, atol=1e-6)


def test_metadata_headers_and_folds(root, ds):
    expected = {
        root / "meta.csv": META_COLUMNS,
        root / "evaluation_setup" / "fold1_train.csv": FOLD_COLUMNS,
        root / "evaluation_setup" / "fold1_evaluate.csv": FOLD_COLUMNS,
        root / "evaluation_setup" / "fold1_test.csv": TEST_COLUMNS,
    }
    for path, columns in expected.items():
        assert path.read_text().splitlines()[0].split("\t") == list(columns)
    assert len(ds) == CLIPS_PER_CLASS * len(LABELS)
    train, evaluate, test = ds.fold("train"), ds.fold("evaluate"), ds.fold("test")
    assert len(train) + len(evaluate) == len(ds)
    assert set(train["clip"]) | set(evaluate["clip"]) == set(ds.meta["clip"])
    assert list(test["filename_audio"]) == list(evaluate["filename_audio"])
    assert list(test["filename_video"]) == list(evaluate["filename_video"])
    for row in ds.meta.itertuples(index=False):
        assert ds.audio_path(row.filename_audio).is_file()
        assert ds.video_path(row.filename_video).is_file()
    text = (root / "SYNTHETIC.md").read_text()
    assert "synthetic" in text.lower() and f"seed: {SEED}" in text


def test_names_cities_locations(ds):
    meta = ds.meta
    for row in meta.itertuples(index=False):
        name = parse_clip_name(row.filename_audio)
        assert name.scene == row.scene_label
        assert name.city in CITIES
        assert name.location.isdigit() and name.segment.isdigit()
        assert Path(row.filename_video).stem == Path(row.filename_audio).stem
    assert meta["segment"].is_unique
    # a location id belongs to one city and one class
    assert meta.groupby("location")["identifier"].nunique().max() == 1
    assert meta.groupby("identifier")["scene_label"].nunique().max() == 1
    per_class = meta.groupby("scene_label")
    assert set(per_class.groups) == set(LABELS)
    assert per_class.size().eq(CLIPS_PER_CLASS).all()
    assert per_class["city"].nunique().min() >= 3
    assert per_class["identifier"].nunique().min() >= 4


def test_location_disjoint_split(ds):
    train, evaluate = ds.fold("train"), ds.fold("evaluate")
    assert not set(train["identifier"]) & set(evaluate["identifier"])
    for label in LABELS:
        tr = train[train["scene_label"] == label]
        ev = evaluate[evaluate["scene_label"] == label]
        assert ev["identifier"].nunique() >= 1
        assert tr["identifier"].nunique() >= 2
        assert 0.15 <= len(ev) / (len(ev) + len(tr)) <= 0.45


def test_plan_scales_locations_with_clips():
    for n in (3, 4, 10, 40):
        plan = plan_dataset(n, seed=3)
        for label in LABELS:
            clips = [c for c in plan if c.scene == label]
            locs = {c.identifier for c in clips}
            ev = {c.identifier for c in clips if c.fold == "evaluate"}
            assert len(clips) == n
            assert len(locs) == min(n, max(4, round(n / 2.5)))
            assert 1 <= len(ev) <= len(locs) - 2
    assert len({c.identifier for c in plan_dataset(40)}) == 16 * len(LABELS)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clips_per_class": 2},
        {"seconds": 0},
        {"seconds": -1.0},
        {"classes": ["airport", "beach"]},
        {"classes": ["airport"]},
        {"video_size": (95, 64)},
        {"seed": -1},
        {"workers": 0},
    ],
)
def test_bad_input(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_synthetic_dataset(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad" / "meta.csv").exists()


# --------------------------------------------------------------------------- determinism


def _small(path: Path, seed: int, workers: int) -> Path:
    return make_synthetic_dataset(
        path,
        clips_per_class=3,
        seconds=1.0,
        seed=seed,
        video_size=(64, 48),
        classes=("bus", "park", "tram"),
        workers=workers,
        show_progress=False,
    )


def test_deterministic_for_a_seed_and_any_workers(tmp_path):
    a = _small(tmp_path / "a", seed=5, workers=1)
    b = _small(tmp_path / "b", seed=5, workers=1)
    c = _small(tmp_path / "c", seed=5, workers=2)
    d = _small(tmp_path / "d", seed=6, workers=1)
    names = sorted(p.name for p in (a / "audio").iterdir())
    assert len(names) == 9
    assert names == sorted(p.name for p in (c / "audio").iterdir())
    assert (a / "meta.csv").read_bytes() == (c / "meta.csv").read_bytes()
    for name in names:
        wav = (a / "audio" / name).read_bytes()
        assert wav == (b / "audio" / name).read_bytes()
        assert wav == (c / "audio" / name).read_bytes()
        mp4 = f"{Path(name).stem}.mp4"
        _, frames = decode_rgb(a / "video" / mp4)
        for other in (b, c):
            np.testing.assert_array_equal(frames, decode_rgb(other / "video" / mp4)[1])
    # another seed: other names or other content
    d_wavs = {p.name: p.read_bytes() for p in (d / "audio").iterdir()}
    a_wavs = {n: (a / "audio" / n).read_bytes() for n in names}
    assert not set(d_wavs.values()) & set(a_wavs.values())
    d_frames = decode_rgb(next((d / "video").iterdir()))[1]
    assert not any(np.array_equal(d_frames, decode_rgb(p)[1]) for p in (a / "video").iterdir())


# --------------------------------------------------------------------------- signal properties


def test_stereo_mid_side_and_headroom(ds):
    for row in ds.meta.itertuples(index=False):
        x, _ = sf.read(ds.audio_path(row.filename_audio), dtype="float64")
        mid = 0.5 * (x[:, 0] + x[:, 1])
        side = 0.5 * (x[:, 0] - x[:, 1])
        e_mid, e_side = np.mean(mid**2), np.mean(side**2)
        assert 0.01 * e_mid < e_side < e_mid
        assert np.max(np.abs(x)) < 0.99
        assert np.sqrt(e_mid) > 10 ** (-60 / 20)


def _best_1d_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    """Best accuracy over features of a nearest-class-mean classifier on one feature alone
    (fitted and scored on the same samples, so an upper bound)."""
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in classes])  # (classes, features)
    best = np.zeros(x.shape[1])
    for start in range(0, x.shape[1], 2048):
        xs = x[:, start : start + 2048]
        ms = means[:, start : start + 2048]
        pred = classes[np.argmin(np.abs(xs[:, None, :] - ms[None]), axis=1)]
        best[start : start + 2048] = np.mean(pred == y[:, None], axis=0)
    return float(best.max())


def _perfectly_separating(x: np.ndarray, y: np.ndarray) -> list[tuple[int, int]]:
    """(class, feature) pairs where one threshold on one feature isolates a class exactly."""
    found = []
    for c in np.unique(y):
        inside, outside = x[y == c], x[y != c]
        sep = (inside.min(axis=0) > outside.max(axis=0)) | (
            inside.max(axis=0) < outside.min(axis=0)
        )
        found += [(int(c), int(j)) for j in np.flatnonzero(sep)]
    return found


def test_no_pixel_names_the_class(ds):
    y = ds.meta["label"].to_numpy()
    frames = []
    for row in ds.meta.itertuples(index=False):
        _, rgb = decode_rgb(ds.video_path(row.filename_video))
        frames.append(rgb[len(rgb) // 2].astype(np.float32).ravel())
    x = np.stack(frames)
    assert _best_1d_accuracy(x, y) < 0.5
    assert _perfectly_separating(x, y) == []


def test_no_tone_names_the_class(ds):
    """Narrow spectral peaks (fine long-term spectrum minus its local median) must not
    identify a class: no pure tone at a class frequency."""
    from scipy.ndimage import median_filter
    from scipy.signal import welch

    y = ds.meta["label"].to_numpy()
    peaks = []
    for row in ds.meta.itertuples(index=False):
        x, sr = sf.read(ds.audio_path(row.filename_audio), dtype="float64")
        f, p = welch(x.mean(axis=1), fs=sr, nperseg=8192)
        db = 10 * np.log10(p[(f > 20) & (f < 8000)] + 1e-20)
        peaks.append(db - median_filter(db, size=31, mode="nearest"))
    x = np.stack(peaks)
    assert _perfectly_separating(x, y) == []
    assert _best_1d_accuracy(x, y) < 0.4


# --------------------------------------------------------------------------- learnability


def _segment_features(ds: TAUDataset, fold: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per 1-s segment: mean log-mel of mid at 16 kHz; 8x6 colour thumbnail + colour
    histograms of the frame nearest s + 0.5 s; labels."""
    import librosa
    from scipy.signal import resample_poly

    xa, xv, y = [], [], []
    for row in ds.fold(fold).itertuples(index=False):
        x, sr = sf.read(ds.audio_path(row.filename_audio), dtype="float64")
        mid = resample_poly(x.mean(axis=1), 16000, sr)
        times, rgb = decode_rgb(ds.video_path(row.filename_video))
        for s in range(int(len(mid) // 16000)):
            mel = librosa.feature.melspectrogram(
                y=mid[s * 16000 : (s + 1) * 16000], sr=16000, n_fft=1024, hop_length=512, n_mels=64
            )
            xa.append(np.log(mel + 1e-10).mean(axis=1))
            img = rgb[int(np.argmin(np.abs(np.asarray(times) - (s + 0.5))))] / 255.0
            h, w = img.shape[0] // 6 * 6, img.shape[1] // 8 * 8
            thumb = img[:h, :w].reshape(6, h // 6, 8, w // 8, 3).mean(axis=(1, 3)).ravel()
            hist = [np.histogram(img[..., c], 8, (0, 1))[0] / img[..., c].size for c in range(3)]
            xv.append(np.concatenate([thumb, *hist]))
            y.append(row.label)
    return np.asarray(xa), np.asarray(xv), np.asarray(y)


def _most_confused(y: np.ndarray, pred: np.ndarray) -> frozenset[int]:
    cm = np.zeros((len(LABELS), len(LABELS)))
    np.add.at(cm, (y, pred), 1.0)
    cm /= np.maximum(cm.sum(axis=1, keepdims=True), 1)
    sym = cm + cm.T
    np.fill_diagonal(sym, -1)
    i, j = np.unravel_index(np.argmax(sym), sym.shape)
    return frozenset((int(i), int(j)))


def test_learnable_not_trivial_and_complementary(ds):
    """A linear probe trained on some locations and tested on others: each modality well
    above chance (10 %) but not perfect, different most-confused pairs, and late fusion
    better than the better modality."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xa_tr, xv_tr, y_tr = _segment_features(ds, "train")
    xa_te, xv_te, y_te = _segment_features(ds, "evaluate")
    probs = {}
    for name, x_tr, x_te in (("audio", xa_tr, xa_te), ("video", xv_tr, xv_te)):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
        model.fit(x_tr, y_tr)
        probs[name] = model.predict_proba(x_te)
        classes = model.classes_
    probs["fused"] = 0.5 * (probs["audio"] + probs["video"])
    pred = {k: classes[p.argmax(axis=1)] for k, p in probs.items()}
    acc = {k: float(np.mean(p == y_te)) for k, p in pred.items()}
    print(acc)
    for name in ("audio", "video"):
        assert 0.35 < acc[name] < 0.95, acc
    assert acc["fused"] > max(acc["audio"], acc["video"]) + 0.03, acc
    assert _most_confused(y_te, pred["audio"]) != _most_confused(y_te, pred["video"])
