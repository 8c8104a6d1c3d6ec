"""Your own clips (issue 20): class folders and manifest files of audio, video or audio-visual
clips of uneven length in several formats, from manifest to cross-validation to predict.

The collections are cut and transcoded at test time from the real recordings in
../shared/realdata (TUT 2018 audio, TAU 2021 footage with its own audio track); where that
folder is absent (CI) from synthetic stand-ins of the same formats, so that every path still
runs."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from avsc.config import DataConfig, FrameConfig, PreprocessConfig
from avsc.data import load_manifest
from avsc.features import FeatureStore, preprocess
from avsc.features.audio import extract_audio_features, read_audio
from tests import owndata
from tests.conftest import ROOT
from tests.forked import avsc_run

QUICK = [
    "-p", "train.max_epochs=2", "-p", "train.t0_epochs=2", "-p", "train.batch_size=32",
    "-p", "visual.backbone=test_efficientnet", "-p", "visual.image_size=64",
]  # fmt: skip
PRE = PreprocessConfig(frames=FrameConfig(short_side=64), features=("scalogram",))


def _avsc(*args, cwd=ROOT):
    return avsc_run(*args, cwd=cwd)  # a new process, forked (tests/forked.py)


@pytest.fixture(scope="module")
def audio_root(tmp_path_factory):
    root = owndata.audio_collection(tmp_path_factory.mktemp("own") / "sounds")
    (root / "notes.txt").write_text("recorded in 2018")
    (root / "parc à l'ombre" / "cover.jpg").write_bytes(b"\xff\xd8not really")
    return root


@pytest.fixture(scope="module")
def folds_csv(audio_root):
    """The audio collection's manifest (as ``avsc manifest`` writes it) with 3 folds added."""
    out = audio_root.parent / "manifest.csv"
    res = _avsc("manifest", audio_root, "--out", out)
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    df["fold"] = [str(1 + int(c.rsplit("-", 1)[1]) % 3) for c in df["clip"]]
    df.to_csv(out, index=False)
    return out


@pytest.fixture(scope="module")
def audio_store(folds_csv):
    cache = folds_csv.parent / "cache"
    report = preprocess(folds_csv, cache, PRE, workers=1, show_progress=False)
    assert report.ok, report.format()
    return cache


def test_transcoded_pieces_decode_to_the_recording_within_codec_tolerance(audio_root):
    """FLAC keeps every bit of the 24-bit source; Ogg Vorbis and MP3 (resampled to 44.1 kHz,
    gapless) come back within lossy-codec distance of the same piece."""
    from scipy.signal import resample_poly

    x, sr = owndata.recording("park.wav")
    folder = audio_root / "parc à l'ombre"
    flac, _ = read_audio(folder / "park-0.flac")
    ref = owndata.cut(x, sr, 0.0, 1.2)
    assert sf.info(str(folder / "park-0.flac")).subtype == "PCM_24"
    np.testing.assert_array_equal(flac, ref)  # lossless: every 24-bit sample
    start = 1.2
    for k, seconds in ((1, 2.3), (2, 3.1), (3, 3.4)):
        ext, _, rate, channels = owndata.FORMATS[k]
        y, ysr = read_audio(folder / f"park-{k}.{ext}")
        piece = owndata.cut(x, sr, start, seconds)
        start += seconds
        if channels == 1:
            piece = piece.mean(axis=0, keepdims=True)
        if rate != sr:
            piece = resample_poly(piece, 147, 160, axis=1)
        assert ysr == rate and y.shape == piece.shape, (ext, y.shape, piece.shape)
        assert owndata.snr_db(piece, y) > 12, (ext, owndata.snr_db(piece, y))


def test_a_folder_of_class_folders_is_a_manifest(audio_root, folds_csv):
    m = load_manifest(audio_root)
    assert m.recipe == "folders" and m.modalities == ("audio",) and not m.errors
    assert m.labels == tuple(sorted(owndata.AUDIO_CLASSES))  # as written: spaces, ß, à, '
    assert len(m) == 3 * len(owndata.PIECES)
    assert "parc à l'ombre/park-2" in set(m.clips["clip"])  # the path without its extension
    assert sorted(m.unknown) == ["notes.txt", "parc à l'ombre/cover.jpg"]
    assert any("2 file(s) with an unknown extension" in p.problem for p in m.problems)
    again = load_manifest(folds_csv)  # the written manifest is the same collection, with folds
    assert again.labels == m.labels and set(again.clips["clip"]) == set(m.clips["clip"])
    assert again.folds == ["1", "2", "3"]
    for clip in ("Flughafen · airport/airport-4", "tram 2 – Straßenbahn/tram-1"):
        assert again.audio_path(clip).resolve() == m.audio_path(clip).resolve()


def test_validate_lists_every_problem_of_a_collection_at_once(audio_root, tmp_path):
    root = shutil.copytree(audio_root, tmp_path / "broken")
    airport = root / "Flughafen · airport"
    (airport / "airport-1.ogg").write_bytes(b"OggS but not really")  # unreadable
    (airport / "airport-3.ogg").write_bytes(b"")  # empty
    sf.write(str(airport / "short.wav"), np.zeros((28800, 2)), 48000)  # 0.6 s: too short
    (root / "two of them").mkdir()
    for k in (1, 2):  # a label with two clips: too few for a seeded train/val/test split
        sf.write(str(root / "two of them" / f"x{k}.flac"), 0.1 * np.ones(48000), 48000)
    (airport / "airport-0.mp4").write_bytes(b"")  # a video beside one audio: nothing pairs
    res = _avsc("validate", root, "--limit", "100")
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout
    for expect in (
        f"{airport / 'airport-1.ogg'}: unreadable audio",
        f"{airport / 'airport-3.ogg'}: empty file (0 bytes)",
        f"{airport / 'short.wav'}: too short: 0.600 s of audio",
        "label 'two of them' has 2 clip(s) in 2 group(s)",
        "file(s) with an unknown extension, not used: notes.txt",
        "has no video to pair with",
    ):
        assert expect in out, (expect, out)
    assert out.splitlines()[0].startswith(f"{root}: 18 clips checked,")
    assert out.rstrip().endswith("FAILED")


def test_preprocess_cuts_any_length_into_whole_segments_and_says_each_conversion_once(
    audio_store, audio_root, folds_csv, tmp_path
):
    store = FeatureStore(audio_store)
    assert store.modalities == ("audio",) and store.recipe == "csv"
    assert store.labels == tuple(sorted(owndata.AUDIO_CLASSES))
    assert not (audio_store / "frames").exists()  # an audio collection: no frames extracted
    index = store.index.set_index("clip")
    for clip, seconds in zip(
        [f"parc à l'ombre/park-{k}" for k in range(5)], owndata.PIECES, strict=True
    ):
        assert index.at[clip, "segments"] == int(np.floor(seconds + 0.01)), clip
        x = store.load_audio(clip)
        assert x.shape[0] == index.at[clip, "segments"]
        path = load_manifest(folds_csv).audio_path(clip)
        np.testing.assert_array_equal(x, extract_audio_features(path, "scalogram"))
    assert index["dropped_seconds"].sum() == pytest.approx(3 * (0.2 + 0.3 + 0.1 + 0.4), abs=0.05)
    # a clip shorter than one segment is reported and skipped, the rest goes on
    m = load_manifest(folds_csv)
    extra = m.clips.iloc[:1].assign(clip="tiny", audio="tiny.wav")
    sf.write(str(folds_csv.parent / "tiny.wav"), np.zeros((24000, 2)), 48000)
    small = folds_csv.parent / "with_tiny.csv"
    pd.concat([m.clips, extra]).to_csv(small, index=False)
    report = preprocess(small, tmp_path / "c", PRE, show_progress=False)
    assert [f["clip"] for f in report.failures] == ["tiny"]
    assert "shorter than one 1-s segment" in report.failures[0]["problem"]
    text = report.format()
    assert "44100 Hz, resampled to 16000 Hz: 6 clip(s)" in text  # the MP3s and mono Oggs
    assert "mono, duplicated to two channels (side = 0): 3 clip(s)" in text


def test_an_audio_collection_trains_predicts_its_labels_and_refuses_video_systems(
    audio_store, tmp_path
):
    res = _avsc("train", "audio_only", "--cache", audio_store, "--out", tmp_path / "r", *QUICK)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout[res.stdout.index("{") :])
    assert summary["labels"] == sorted(owndata.AUDIO_CLASSES)
    for key in ("logloss_classwise", "clip_logloss_classwise", "clip_accuracy_classwise"):
        assert np.isfinite(summary[key]), key
    res = _avsc("train", "joint", "--cache", audio_store, "--out", tmp_path / "r", *QUICK)
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"avsc train: error: system joint needs audio and video, but the collection of "
        f"{audio_store} has no video (it holds audio); systems it can train: audio_only"
    )
    clip = load_manifest(audio_store / ".." / "manifest.csv").audio_path(
        "tram 2 – Straßenbahn/tram-2"
    )
    res = _avsc(
        "predict", clip, "--checkpoint", tmp_path / "r" / "audio_only_scalogram" / "best.pt"
    )
    assert res.returncode == 0, res.stderr
    head = res.stdout.splitlines()[0]
    assert all(label in head for label in owndata.AUDIO_CLASSES), head
    assert "44100 Hz, resampled to 16000 Hz" in res.stderr  # the MP3, said once


@pytest.mark.parametrize("with_audio", [False, True], ids=["video only", "audio-visual"])
def test_video_only_and_audio_visual_collections_of_mp4_files(tmp_path, with_audio):
    root = owndata.video_collection(tmp_path / "clips", with_audio)
    m = load_manifest(root)
    assert m.modalities == (("audio", "video") if with_audio else ("video",)), m
    cache = tmp_path / "cache"
    report = preprocess(root, cache, PRE, show_progress=False)
    assert report.ok, report.format()
    store = FeatureStore(cache)
    assert store.modalities == m.modalities and store.labels == tuple(sorted(owndata.VIDEO_CLASSES))
    clip = m.clips["clip"].iloc[0]
    frames = store.load_frames(clip)
    assert frames.shape[0] == store.index.set_index("clip").at[clip, "segments"] >= 3
    if with_audio:  # the MP4's own audio track
        np.testing.assert_array_equal(
            store.load_audio(clip), extract_audio_features(m.video_path(clip), "scalogram")
        )
    else:
        assert not (cache / "audio").exists()
        res = _avsc("train", "audio_only", "--cache", cache, "--out", tmp_path / "r", *QUICK)
        assert res.returncode == 2 and "system audio_only needs audio" in res.stderr
        assert "has no audio (it holds video); systems it can train: video_only" in res.stderr
    res = _avsc("train", "video_only", "--cache", cache, "--out", tmp_path / "r", *QUICK)
    assert res.returncode == 0, res.stderr


def test_crossval_trains_each_fold_as_a_direct_train_would(audio_store, tmp_path):
    """Fold 2 of ``avsc crossval`` is exactly ``avsc train -p data.test_fold=2``: the same
    split, the same per-fold statistics, the same probabilities; no clip is featurized
    again."""
    lines = (audio_store / "index.jsonl").read_text().count("\n")
    res = _avsc("crossval", "audio_only", "--cache", audio_store, "--out", tmp_path / "cv", *QUICK)
    assert res.returncode == 0, res.stderr
    res2 = _avsc("train", "audio_only", "--cache", audio_store, "--out", tmp_path / "one" / "fold2",
                 "-p", "data.test_fold=2", *QUICK)  # fmt: skip
    assert res2.returncode == 0, res2.stderr
    a = pd.read_csv(tmp_path / "cv" / "fold2" / "audio_only_scalogram" / "proba.csv")
    b = pd.read_csv(tmp_path / "one" / "fold2" / "audio_only_scalogram" / "proba.csv")
    pd.testing.assert_frame_equal(a, b)
    assert (audio_store / "index.jsonl").read_text().count("\n") == lines
    # the fold's statistics: its own training clips', computed once in the store
    store = FeatureStore(audio_store)
    fold2 = store.split(DataConfig(test_fold="2"))
    train = fold2.subsets().query("subset == 'train'")["clip"]
    x = np.concatenate([store.load_audio(c) for c in sorted(train)]).reshape(-1, 2, 290)
    stats = fold2.normalization("scalogram")
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.std, x.std(axis=0), rtol=1e-4, atol=1e-5)
    assert not np.allclose(stats.mean, store.normalization("scalogram").mean)
    held = set(fold2.subsets().query("subset == 'evaluate'")["clip"])
    assert held == set(a["clip"]) and all(c.endswith(("-1", "-4")) for c in held)
    # the table: every fold, pooled out of fold with intervals, mean and std over folds
    table = pd.read_csv(tmp_path / "cv" / "crossval_audio_only_scalogram.csv")
    assert list(table["fold"]) == ["1", "2", "3", "pooled (out of fold)", "mean over folds",
                                   "std over folds"]  # fmt: skip
    pooled = table.iloc[3]
    assert (
        pooled["clips"] == 15
        and pooled["logloss_low"] <= pooled["logloss"] <= pooled["logloss_high"]
    )
    assert table.iloc[4]["logloss"] == pytest.approx(table.iloc[:3]["logloss"].mean())
    md = (tmp_path / "cv" / "crossval_audio_only_scalogram.md").read_text()
    assert "| clip log loss " in md and "mean ± std over folds" in md
    low, high = pooled["logloss_low"], pooled["logloss_high"]
    assert f"{pooled['logloss']:.3f} ({low:.3f} to {high:.3f})" in md
    assert "segment accuracy % (official)" in res.stdout  # printed as well


def test_crossval_jobs_trains_folds_at_once_each_as_its_direct_train_would(audio_store, tmp_path):
    """``--jobs 2``: two folds at a time in worker processes, cores/2 torch threads each
    (``train.cpu_threads``, recorded in each fold's config); fold 2 is exactly ``avsc train
    -p data.test_fold=2 -p train.cpu_threads=N``. A rerun trains nothing."""
    from avsc.training.checkpoint import load_checkpoint
    from avsc.utils import granted_cpus

    threads = max(1, granted_cpus() // 2)
    cv = tmp_path / "cv"
    res = _avsc("crossval", "audio_only", "--cache", audio_store, "--out", cv, "--jobs", "2",
                *QUICK)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"folds 1, 2, 3, 2 at a time, {threads} thread(s) each" in res.stderr
    assert "fold 3 avsc.training.loop: audio_only_scalogram epoch 2/2" in res.stderr  # named
    one = ["-p", "data.test_fold=2", "-p", f"train.cpu_threads={threads}", *QUICK]
    res2 = _avsc("train", "audio_only", "--cache", audio_store, "--out", tmp_path / "one", *one)
    assert res2.returncode == 0, res2.stderr
    run = cv / "fold2" / "audio_only_scalogram"
    a = pd.read_csv(run / "proba.csv")
    b = pd.read_csv(tmp_path / "one" / "audio_only_scalogram" / "proba.csv")
    pd.testing.assert_frame_equal(a, b)
    assert load_checkpoint(run / "best.pt")["config"]["train"]["cpu_threads"] == threads
    table = pd.read_csv(cv / "crossval_audio_only_scalogram.csv")
    assert list(table["fold"][:3]) == ["1", "2", "3"]
    direct = json.loads((tmp_path / "one" / "audio_only_scalogram" / "metrics.json").read_text())
    assert table.iloc[1]["logloss"] == pytest.approx(direct["logloss_classwise"])
    # a finished cross-validation is reloaded, not trained again
    stamps = {h: h.stat().st_mtime_ns for h in cv.glob("fold*/*/last.pt")}
    res3 = _avsc("crossval", "audio_only", "--cache", audio_store, "--out", cv, "--jobs", "2",
                 *QUICK)  # fmt: skip
    assert res3.returncode == 0, res3.stderr
    assert len(stamps) == 3 and {h: h.stat().st_mtime_ns for h in stamps} == stamps
    assert pd.read_csv(cv / "crossval_audio_only_scalogram.csv").equals(table)


def test_a_failing_fold_of_a_parallel_crossval_is_named_and_the_others_are_kept(
    audio_store, tmp_path
):
    """A user's system (registered by ``--module``, imported in the workers too) that fails
    on fold 2: one line naming the fold; folds 1 and 3 finish and stay for the rerun."""
    cv = tmp_path / "cv"
    res = _avsc("crossval", "audio_only_but_fold2", "--module", "tests.user_fold_systems",
                "--cache", audio_store, "--out", cv, "--jobs", "2", *QUICK)  # fmt: skip
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last == (
        "avsc crossval: error: fold 2: ValueError: this system will not train with fold 2 held out"
    ), res.stderr[-2000:]
    done = sorted(p.parent.parent.name for p in cv.glob("fold*/*/metrics.json"))
    assert done == ["fold1", "fold3"]
    assert not (cv / "crossval_audio_only_but_fold2_scalogram.csv").exists()


@pytest.mark.slow
def test_the_own_profile_runs_the_series_on_a_users_collection(folds_csv, tmp_path):
    """The series on an audio collection with folds, every system twice (two seeds): what
    the collection cannot support is skipped, saying why."""
    res = _avsc(
        "run", "--profile", "own", "--data", folds_csv, "--runs", tmp_path / "runs",
        "--figures", tmp_path / "fig", "-p", "train.max_epochs=2", "-p", "train.t0_epochs=2",
        "-p", "seeds=[0,1]",
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    manifest = json.loads((tmp_path / "runs" / "own" / "manifest.json").read_text())
    status = {n["notebook"][:2]: n["status"] for n in manifest["notebooks"]}
    assert status == {"01": "ok", "02": "skipped", "03": "ok", "04": "skipped", "05": "skipped",
                      "06": "skipped", "07": "ok", "08": "skipped", "09": "ok"}  # fmt: skip
    why = {n["notebook"][:2]: n.get("why", "") for n in manifest["notebooks"]}
    assert why["04"] == (
        "this collection has no video (it holds audio, folds); this notebook's systems need "
        "audio and video"
    )
    fig = tmp_path / "fig" / "own"
    results = pd.read_csv(fig / "results_all.csv")
    assert list(results["system"]) == ["audio_only"]
    assert "paper_logloss" not in results and "clip_logloss" in results  # no TAU columns here
    assert not (fig / "table5_prior_work.csv").exists()
    cv = pd.read_csv(fig / "crossval_audio_only_scalogram.csv")
    assert list(cv["fold"][:3]) == ["1", "2", "3"]
    assert "recipe csv" in (fig / "results_all.md").read_text()  # what data made it
    # two seeds: each system trained twice, side by side, both in the tables and each fold
    run = tmp_path / "runs" / "own"
    assert (run / "results" / "seed1" / "audio_only_scalogram" / "best.pt").is_file()
    assert (results["seeds"] == 2).all() and results["logloss_seed_std"].notna().all()
    assert len(list(run.rglob("fold*/seed1/audio_only_scalogram/best.pt"))) == 3
