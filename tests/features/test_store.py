"""The feature store and ``avsc preprocess``: contents, resume, atomicity, bad input, stats."""

import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from avsc.cli import main
from avsc.config import DataConfig, FrameConfig, PreprocessConfig
from avsc.data import TAUDataset
from avsc.features import (
    FeatureStore,
    PreprocessError,
    StoreError,
    extract_audio_features,
    extract_frames,
    preprocess,
)
from avsc.features.store import read_index
from tests.faults import stall_env, stalled_pid, wait_for
from tests.media import index_frame, make_tiny_dataset, write_wav
from tests.media import read_index as read_frame_index

CFG2 = PreprocessConfig(data=DataConfig(clip_seconds=2.0), frames=FrameConfig(short_side=48))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "root", size=(64, 48))


@pytest.fixture(scope="module")
def store(tiny, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache") / "store"
    report = preprocess(tiny, cache, CFG2, workers=1)
    assert report.ok and report.processed == 18, report.format()
    return FeatureStore(cache)


def test_store_holds_every_clip_with_the_right_contents(tiny, store):
    ds = TAUDataset(tiny)
    assert sorted(store.clips) == sorted(ds.meta["clip"])
    row = ds.meta.iloc[4]
    clip = row["clip"]
    for kind, f in (("scalogram", 290), ("fbank", 256)):
        arr = store.load_audio(clip, kind)
        assert arr.shape == (2, 6, 2, f) and arr.dtype == np.float32
        ref = extract_audio_features(ds.audio_path(row.filename_audio), kind)
        np.testing.assert_allclose(arr, ref, rtol=1e-5, atol=1e-5)  # BLAS summation order
    frames = store.load_frames(clip)
    ref = extract_frames(ds.video_path(row.filename_video), short_side=48)
    assert frames.shape == ref.shape == (2, 48, 64, 3)
    assert np.abs(frames.astype(int) - ref.astype(int)).mean() < 3  # JPEG q95
    assert [read_frame_index(f) for f in frames] == [12, 36]
    assert store.load_frames(clip, [1]).shape == (1, 48, 64, 3)
    idx = store.index.set_index("clip")
    assert idx.loc[clip, "scene_label"] == row.scene_label and idx.loc[clip, "segments"] == 2
    assert (store.path / "index.csv").is_file() and store.failures().empty


def test_normalisation_statistics_come_from_the_training_split_only(store):
    sub = store.subsets().set_index("clip")["subset"]
    train = sorted(sub[sub == "train"].index)
    assert 0 < len(train) < len(sub)
    for kind in ("scalogram", "fbank"):
        stats = store.normalization(kind)
        all_frames = np.concatenate(
            [store.load_audio(c, kind).reshape(-1, 2, stats.mean.shape[-1]) for c in train]
        )
        assert stats.count == len(all_frames) == len(train) * 2 * 6
        np.testing.assert_allclose(stats.mean, all_frames.mean(axis=0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stats.std, all_frames.std(axis=0), rtol=1e-4, atol=1e-5)
        z = stats.apply(all_frames)
        np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-3)


def test_rerun_skips_finished_clips(tiny, store):
    before = {p: p.stat().st_mtime_ns for p in store.path.rglob("*.npy")}
    report = preprocess(tiny, store.path, CFG2)
    assert (report.processed, report.skipped) == (0, 18)
    after = {p: p.stat().st_mtime_ns for p in store.path.rglob("*.npy")}
    assert before == after


def test_two_workers_give_the_same_store(tiny, store, tmp_path):
    report = preprocess(tiny, tmp_path / "w2", CFG2, workers=2)
    assert report.processed == 18
    other = FeatureStore(tmp_path / "w2")
    for clip in store.clips:
        np.testing.assert_array_equal(
            other.load_audio(clip, "scalogram"), store.load_audio(clip, "scalogram")
        )
        np.testing.assert_array_equal(other.load_frames(clip), store.load_frames(clip))


def test_lossless_frames_option(tiny, tmp_path):
    cfg = CFG2.replace(frames=FrameConfig(short_side=None, format="npy"), features=("fbank",))
    preprocess(tiny, tmp_path / "npy", cfg)
    s = FeatureStore(tmp_path / "npy")
    clip = s.clips[0]
    ds = TAUDataset(tiny)
    row = ds.meta.set_index("clip").loc[clip]
    np.testing.assert_array_equal(
        s.load_frames(clip), extract_frames(ds.video_path(row.filename_video), short_side=None)
    )
    with pytest.raises(StoreError, match="no scalogram features"):
        s.load_audio(clip, "scalogram")


def test_different_settings_are_refused(tiny, store):
    with pytest.raises(StoreError, match="different frames settings"):
        preprocess(tiny, store.path, CFG2.replace(frames=FrameConfig(short_side=32)))


def _write_faststart_truncated(path: Path) -> None:
    """A video with its index at the front and the second half of the data cut off."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i in range(48):
            for p in s.encode(av.VideoFrame.from_ndarray(index_frame(i, 64, 48), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.55)])


@pytest.fixture()
def broken(tiny, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(tiny, root)
    clips = sorted(TAUDataset(root).meta["clip"])
    bad = {
        clips[0]: ("audio", "unreadable"),
        clips[1]: ("video", "truncated"),
        clips[2]: ("audio", "wrong length"),
        clips[3]: ("video", "missing"),
        clips[4]: ("audio", "truncated"),
    }
    (root / "audio" / f"{clips[0]}.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    _write_faststart_truncated(root / "video" / f"{clips[1]}.mp4")
    write_wav(root / "audio" / f"{clips[2]}.wav", np.zeros((2, 48000 * 3)))
    (root / "video" / f"{clips[3]}.mp4").unlink()
    wav = root / "audio" / f"{clips[4]}.wav"
    wav.write_bytes(wav.read_bytes()[:60000])
    return root, bad


def test_bad_clips_are_reported_by_name_and_skipped(broken, tmp_path):
    root, bad = broken
    cache = tmp_path / "c"
    report = preprocess(root, cache, CFG2, workers=2)
    assert report.processed == 18 - len(bad)
    failed = {f["clip"]: f for f in report.failures}
    assert set(failed) == set(bad)
    for clip, (kind, _) in bad.items():
        assert failed[clip]["file"].endswith(f"{kind}/{clip}.{'wav' if kind == 'audio' else 'mp4'}")
    assert "wrong length: 3.000 s" in failed[sorted(bad)[2]]["problem"]
    assert "missing" in failed[sorted(bad)[3]]["problem"]
    store = FeatureStore(cache)
    assert not set(bad) & set(store.clips)
    for clip in bad:  # nothing featurized wrong
        assert (
            not store.audio_path(clip, "scalogram").exists()
            and not store.frames_path(clip).exists()
        )
    table = store.failures()
    assert set(table["clip"]) == set(bad) and (table.problem != "").all()
    text = report.format()
    assert all(c in text for c in bad)


def test_strict_stops_at_the_first_bad_clip(broken, tmp_path, capsys):
    root, bad = broken
    with pytest.raises(PreprocessError, match=r"--strict"):
        preprocess(root, tmp_path / "s", CFG2, strict=True)
    code = main(
        [
            "preprocess",
            "--data",
            str(root),
            "--cache",
            str(tmp_path / "s2"),
            "--strict",
            "-p",
            "data.clip_seconds=2",
            "-p",
            "frames.short_side=48",
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert any(c in err for c in bad)


def test_torn_index_line_is_ignored_and_repaired(tiny, tmp_path):
    cache = tmp_path / "torn"
    preprocess(tiny, cache, CFG2.replace(features=("fbank",)))
    lines = (cache / "index.jsonl").read_text().splitlines(keepends=True)
    (cache / "index.jsonl").write_text("".join(lines[:5]) + lines[5][:20])  # killed mid-write
    assert len(read_index(cache)) == 5
    report = preprocess(tiny, cache, CFG2.replace(features=("fbank",)))
    assert (report.processed, report.skipped) == (13, 5)
    assert len(read_index(cache)) == 18


@pytest.mark.slow
def test_killed_run_resumes_without_half_written_entries(tmp_path):
    """Killed mid-clip after 5 of 36 clips (the sixth stalled inside its features,
    tests/stall_kind.py, rather than a race against the clock)."""
    root = make_tiny_dataset(
        tmp_path / "root", locations_per_class=3, clips_per_location=4, seconds=10.0, size=(64, 48)
    )
    cache, gate = tmp_path / "cache", tmp_path / "gate"
    cmd = [
        sys.executable,
        "-m",
        "avsc",
        "preprocess",
        "--data",
        str(root),
        "--cache",
        str(cache),
        "--workers",
        "1",
        "--module",
        "tests.stall_kind",
        "--features",
        "scalogram,stall",
        "-p",
        "frames.short_side=48",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=stall_env(gate, cache, after=5),
    )
    wait_for(lambda: stalled_pid(gate) == proc.pid, what="the sixth clip")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = read_index(cache)
    assert len(done) == 5, "the kill must land on the sixth clip"
    # every indexed clip is complete and loads; nothing else counts as finished
    store = FeatureStore(cache)
    for clip in done:
        assert store.load_audio(clip, "scalogram").shape == (10, 6, 2, 290)
        assert store.load_frames(clip).shape == (10, 48, 64, 3)

    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{36 - len(done)} processed, {len(done)} already done" in rerun.stdout
    assert not list(cache.rglob("*.tmp-*"))
    store = FeatureStore(cache)
    assert len(store) == 36
    ds = TAUDataset(root).meta.set_index("clip")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for clip in store.clips[::5]:
            ref = extract_audio_features(root / ds.loc[clip, "filename_audio"], "scalogram")
            # a segment's features depend on its samples only: the same bits
            np.testing.assert_array_equal(store.load_audio(clip, "scalogram"), ref)
    assert pd.read_csv(cache / "index.csv").shape[0] == 36
