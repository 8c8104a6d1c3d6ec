"""Reliability: each fault a new user can meet ends in a correct result or in one clear line
naming the file, clip or key, loses nothing the user owns, and a rerun recovers.

One test (or a few) per defect of the reliability issue, each building its bad input in a
temporary folder. Defect 1 (integer PCM audio tracks) is tested in test_audio.py.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from avsc.cli import main
from avsc.config import DataConfig, ExperimentConfig, FrameConfig, PreprocessConfig
from avsc.data import DatasetError, TAUDataset
from avsc.data.validate import validate_dataset
from avsc.features import FeatureStore, StoreError, extract_frames, preprocess
from avsc.features.store import read_index
from tests.media import index_frame, make_tiny_dataset, write_indexed_video, write_wav

CFG2 = PreprocessConfig(
    data=DataConfig(clip_seconds=2.0), frames=FrameConfig(short_side=48), features=("fbank",)
)
PRE2 = [
    "-p",
    "data.clip_seconds=2",
    "-p",
    "frames.short_side=48",
    "--features",
    "fbank",
    "--no-progress",
]
TRAIN = {
    "visual.backbone": "test_efficientnet",
    "visual.image_size": 32,
    "train.batch_size": 32,
    "train.max_epochs": 1,
    "train.t0_epochs": 1,
    "train.eval_batch_size": 32,
}
LINUX_PROC = Path("/proc/self/task").is_dir()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "root", size=(64, 48))


@pytest.fixture(scope="module")
def long_clips(tmp_path_factory):
    """12 ten-second clips at 320x240: about half a second of work each, so that a run
    lasts long enough to be interrupted mid-clip."""
    root = tmp_path_factory.mktemp("long") / "root"
    return make_tiny_dataset(root, ("airport", "bus"), 3, 2, seconds=10.0, size=(320, 240))


@pytest.fixture()
def copy(tiny, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(tiny, root)
    return root


def _avsc(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "avsc", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "AVSC_PROGRESS": "0", **(env or {})},
        **kw,
    )


def _error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ": error: " in ln]


def _children(pid: int) -> set[int]:
    """Child process ids of ``pid`` (Linux /proc)."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_for(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _index_lines(cache: Path) -> int:
    p = cache / "index.jsonl"
    return p.read_text().count("\n") if p.is_file() else 0


# ------------------------------------------------------------------ 2. data loss


def test_preprocess_refuses_a_folder_that_is_not_a_store_and_touches_nothing(tiny, tmp_path):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    draft = project / "src" / "report.tmp-draft.txt"
    draft.write_text("my draft")
    with pytest.raises(StoreError, match=r"project: not empty and not a feature store"):
        preprocess(tiny, project, CFG2)
    assert draft.read_text() == "my draft"
    assert sorted(p.name for p in project.rglob("*")) == ["report.tmp-draft.txt", "src"]
    code = main(["preprocess", "--data", str(tiny), "--cache", str(project), *PRE2])
    assert code == 1 and draft.is_file()


def test_store_cleanup_removes_only_its_own_temporary_files(tiny, tmp_path):
    cache = tmp_path / "cache"
    preprocess(tiny, cache, CFG2)
    clip = FeatureStore(cache).clips[0]
    stale = [  # what a killed run leaves: atomic_path's names, in the store's own folders
        cache / "audio" / "fbank" / f".{clip}.npy.tmp-k3j2h1g0",
        cache / "frames" / f".{clip}.npz.tmp-a1b2c3d4",
        cache / ".store.json.tmp-zz_9x8y7",
    ]
    mine = [  # a user's files, whatever their names, are never touched
        cache / "notes.tmp-1.txt",
        cache / "mine" / ".draft.txt.tmp-abcdef12",
        cache / "audio" / "fbank" / "readme.tmp-x",
    ]
    for p in stale + mine:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    report = preprocess(tiny, cache, CFG2)
    assert report.skipped == 18
    assert not any(p.exists() for p in stale)
    assert all(p.read_text() == "x" for p in mine)


@pytest.mark.parametrize("dies_at", [1, 2])
def test_a_preprocess_killed_at_its_first_files_can_be_run_again(
    tiny, tmp_path, monkeypatch, dies_at
):
    """A run killed while it writes the store's first files (store.json, manifest.csv) leaves
    a folder the next run takes up: never one that holds files but no store.json, which
    preprocess refuses to touch (a second run started in that moment was refused the same
    way, "not a feature store", instead of "in use by another avsc run")."""
    import avsc.features.store.builder as builder

    class Killed(BaseException):
        pass

    writes = []

    def dying(real):
        def write(path, *args, **kwargs):
            writes.append(Path(path).name)
            if len(writes) == dies_at:
                raise Killed(path)
            return real(path, *args, **kwargs)

        return write

    cache = tmp_path / "cache"
    monkeypatch.setattr(builder, "atomic_path", dying(builder.atomic_path))
    monkeypatch.setattr(builder, "atomic_write_json", dying(builder.atomic_write_json))
    with pytest.raises(Killed):
        preprocess(tiny, cache, CFG2)
    monkeypatch.undo()
    report = preprocess(tiny, cache, CFG2)
    assert report.ok and report.processed == 18, writes
    assert len(FeatureStore(cache)) == 18


# ------------------------------------------------------------------ 3. concurrent runs


@pytest.mark.slow
def test_a_second_preprocess_on_one_store_is_refused_naming_the_first(long_clips, tmp_path, capsys):
    root, cache = long_clips, tmp_path / "cache"
    args = ["preprocess", "--data", str(root), "--cache", str(cache), "--workers", "1"]
    args += ["-p", "frames.short_side=48", "--features", "fbank", "--no-progress"]
    first = subprocess.Popen(
        [sys.executable, "-m", "avsc", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AVSC_PROGRESS": "0"},
    )
    try:
        _wait_for(lambda: (cache / ".avsc.lock.json").is_file(), what="the first run's lock")
        assert main(args) == 2
        assert first.poll() is None, "the first run must still be running"
        err = capsys.readouterr().err
        assert len(_error_lines(err)) == 1, err
        assert "is in use by another avsc run" in err and f"pid {first.pid}" in err
        out, errs = first.communicate(timeout=180)
    finally:
        first.kill()
    assert first.returncode == 0, errs
    assert "12 processed, 0 already done, 0 failed" in out  # the first was not disturbed
    assert len(read_index(cache)) == 12


def test_a_second_training_into_one_output_is_refused(synth_store, tmp_path):
    import avsc.experiments as S
    from avsc.utils import LockedError

    out = tmp_path / "results" / "audio_only_scalogram"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "avsc",
            "train",
            "audio_only",
            "--cache",
            str(synth_store[1]),
            "--out",
            str(out.parent),
            "-p",
            "train.max_epochs=500",
            "-p",
            "train.batch_size=32",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "AVSC_PROGRESS": "0"},
    )
    try:
        _wait_for(lambda: (out / ".avsc.lock.json").is_file(), what="the first training's lock")
        cfg = ExperimentConfig().override({**TRAIN, "train.max_epochs": 2})
        with pytest.raises(
            LockedError,
            match=rf"training output .*audio_only_scalogram is in use .*pid {holder.pid}",
        ):
            S.train_system("audio_only", cfg, synth_store[1], out)
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "metrics.json").exists()  # nothing of the refused run was written


# ------------------------------------------------------------------ 4, 5. metadata


def test_metadata_inconsistencies_are_all_listed_before_any_work(copy, tmp_path):
    meta = (copy / "meta.csv").read_text().splitlines()
    meta.append(meta[1])  # a duplicate row
    first = meta[3].split("\t")
    wrong = "park" if first[2] != "park" else "bus"
    meta[3] = "\t".join([first[0], first[1], wrong, first[3]])  # disagrees with the name
    (copy / "meta.csv").write_text("\n".join(meta) + "\n")
    fold = copy / "evaluation_setup" / "fold1_train.csv"
    fold.write_text(fold.read_text() + "audio/bus-oslo-9-999.wav\tvideo/bus-oslo-9-999.mp4\tbus\n")
    expected = [
        "duplicate rows: " + meta[1].split("\t")[0],
        f"label '{wrong}' but the file name says '{first[2]}'",
        "bus-oslo-9-999 is not listed in meta.csv",
    ]
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError) as info:
        preprocess(copy, cache, CFG2)
    assert all(e in str(info.value) for e in expected), str(info.value)
    assert "nothing was done" in str(info.value)
    assert not cache.exists()  # refused before any featurizing
    with pytest.raises(DatasetError):
        TAUDataset(copy)
    report = validate_dataset(copy, clip_seconds=2.0)  # the same checker
    for e in expected:
        assert any(e in p.problem for p in report.errors), (e, report.format())


def test_paths_that_leave_the_dataset_root_are_refused_by_name(copy, tmp_path):
    outside = tmp_path / "outside"
    write_wav(outside / "airport-x-1-1.wav", 0.01 * np.ones((2, 96000)))
    write_indexed_video(outside / "airport-x-1-1.mp4", 48, 24, (64, 48))
    meta = (copy / "meta.csv").read_text().splitlines()
    meta.append(
        "audio/../../outside/airport-x-1-1.wav\tvideo/../../outside/airport-x-1-1.mp4\tairport\tx-1"
    )
    absolute = outside / "airport-x-1-1.wav"
    meta.append(f"{absolute}\tvideo/airport-y-2-2.mp4\tairport\ty-2")
    (copy / "meta.csv").write_text("\n".join(meta) + "\n")
    report = validate_dataset(copy, clip_seconds=2.0)
    assert not report.ok
    problems = [f"{p.file}: {p.problem}" for p in report.errors]
    assert any(
        "audio/../../outside/airport-x-1-1.wav leaves the dataset root" in p for p in problems
    )
    assert any(f"absolute path {absolute}" in p for p in problems), problems
    with pytest.raises(DatasetError, match=r"leaves the dataset root"):
        preprocess(copy, tmp_path / "cache", CFG2)
    assert not (tmp_path / "cache").exists()


def test_empty_fold_files_are_errors(copy):
    fold = copy / "evaluation_setup" / "fold1_evaluate.csv"
    fold.write_text(fold.read_text().splitlines()[0] + "\n")
    report = validate_dataset(copy, clip_seconds=2.0)
    assert any(p.file == str(fold) and "lists no clips" in p.problem for p in report.errors), (
        report.format()
    )
    with pytest.raises(DatasetError, match=r"fold1_evaluate.csv: lists no clips"):
        TAUDataset(copy)


# ------------------------------------------------------------------ 6. mixed frame sizes


def test_clips_of_another_frame_size_train_together(tmp_path):
    import avsc.experiments as S
    from avsc.features.datasets import FrameSource

    root = make_tiny_dataset(tmp_path / "root", ("airport", "bus"), 3, 2, size=(64, 48))
    odd = sorted((root / "video").iterdir())[0]
    write_indexed_video(odd, 48, 24, (128, 96))  # another resolution, kept as it is
    cfg = PreprocessConfig(data=DataConfig(clip_seconds=2.0), frames=FrameConfig(short_side=None))
    assert preprocess(root, tmp_path / "cache", cfg.replace(features=("fbank",))).ok
    store = FeatureStore(tmp_path / "cache")
    shapes = {store.load_frames(c).shape[1:] for c in store.clips}
    assert shapes == {(48, 64, 3), (96, 128, 3)}
    exp = ExperimentConfig().override({**TRAIN, "train.frames_in_memory": "yes"})
    ws = S.Workspace(store, exp)
    table = ws.tables["train"]
    frames = FrameSource(table, "yes")
    for i, clip in enumerate(table.clips):
        np.testing.assert_array_equal(
            frames.get(i, 1).permute(1, 2, 0).numpy(), store.load_frames(clip, [1])[0]
        )
    result = S.train_system("video_only", exp, store, tmp_path / "video_only", workspace=ws)
    assert np.isfinite(result.metrics["logloss_classwise"])


# ------------------------------------------------------------------ 7. changed settings


def test_a_run_resumes_only_with_the_same_settings(synth_store, tmp_path, capsys):
    import avsc.experiments as S
    from avsc.training.loop import RunMismatch

    cache, results = synth_store[1], tmp_path / "results"
    out = results / "audio_only_scalogram"  # where avsc train --out results puts it
    cfg = ExperimentConfig().override(TRAIN)
    first = S.train_system("audio_only", cfg, cache, out)
    assert len(first.history) == 1
    with pytest.raises(RunMismatch, match=r"train\.lr: 0\.01 stored, 0\.02 now"):
        S.train_system("audio_only", cfg.override({"train.lr": 0.02}), cache, out)
    with pytest.raises(RunMismatch, match=r"model\.ae_hidden: 2048 stored, 512 now") as info:
        S.train_system("audio_only", cfg.override({"model.ae_hidden": 512}), cache, out)
    assert "size mismatch" not in str(info.value) and "--restart" in str(info.value)
    # more epochs continue the same run; where it runs may change
    more = S.train_system(
        "audio_only", cfg.override({"train.max_epochs": 2, "train.num_workers": 0}), cache, out
    )
    assert len(more.history) == 2 and more.history["epoch"].tolist() == [1, 2]
    with pytest.raises(RunMismatch, match=r"1 now, but the run already has 2 epochs"):
        S.train_system("audio_only", cfg, cache, out)  # fewer epochs than it has: no silent result

    args = ["train", "audio_only", "--cache", str(cache), "--out", str(results)]
    args += [f"-p{k}={v}" for k, v in {**TRAIN, "train.max_epochs": 2}.items()]
    assert main([*args, "-p", "train.lr=0.02"]) == 2
    err = capsys.readouterr().err
    assert len(_error_lines(err)) == 1 and "train.lr: 0.01 stored, 0.02 now" in err
    assert main([*args, "-p", "train.lr=0.02", "--restart"]) == 0
    summary = json.loads(capsys.readouterr().out.split("(--restart)\n")[-1])
    assert summary["name"] == "audio_only_scalogram"
    from avsc.training import load_checkpoint

    assert load_checkpoint(out / "last.pt")["config"]["train"]["lr"] == 0.02


# ------------------------------------------------------------------ 8. damaged entries


def test_damaged_store_entries_are_named_and_rebuilt(tiny, tmp_path):
    cache = tmp_path / "cache"
    preprocess(tiny, cache, CFG2)
    store = FeatureStore(cache)
    a, b, c = store.clips[:3]
    good = {k: (store.load_audio(k, "fbank"), store.load_frames(k)) for k in (a, b, c)}
    npy, npz = store.audio_path(a, "fbank"), store.frames_path(b)
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])  # truncated
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(StoreError) as info:
        store.load_audio(a, "fbank")
    assert str(npy) in str(info.value) and f"clip {a}" in str(info.value)
    assert "allow_pickle" not in str(info.value) and "rerun avsc preprocess" in str(info.value)
    with pytest.raises(StoreError, match=rf"{npz.name}: damaged store entry of clip {b}"):
        store.load_frames(b)

    report = preprocess(tiny, cache, CFG2)  # a plain rerun finds them by size
    assert sorted(report.rebuilt) == sorted([a, b]) and report.processed == 2
    store = FeatureStore(cache)
    for k in (a, b):
        np.testing.assert_array_equal(store.load_audio(k, "fbank"), good[k][0])
        np.testing.assert_array_equal(store.load_frames(k), good[k][1])

    flipped = store.audio_path(c, "fbank")  # same size, other bytes: only checksums see it
    data = bytearray(flipped.read_bytes())
    data[-5] ^= 0xFF
    flipped.write_bytes(bytes(data))
    assert preprocess(tiny, cache, CFG2).rebuilt == []
    assert preprocess(tiny, cache, CFG2, verify=True).rebuilt == [c]
    np.testing.assert_array_equal(FeatureStore(cache).load_audio(c, "fbank"), good[c][0])


# ------------------------------------------------------------------ 9. worker processes


@pytest.mark.slow
@pytest.mark.skipif(not LINUX_PROC, reason="needs Linux /proc to find worker processes")
def test_a_killed_preprocess_leaves_no_worker_behind(long_clips, tmp_path):
    root, cache = long_clips, tmp_path / "cache"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "avsc",
            "preprocess",
            "--data",
            str(root),
            "--cache",
            str(cache),
            "--workers",
            "2",
            "--features",
            "fbank",
            "-p",
            "frames.short_side=48",
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(lambda: _index_lines(cache) >= 1, what="the first finished clip")
    workers = {p for p in _children(proc.pid) if "spawn_main" in _cmdline(p)}
    assert len(workers) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _index_lines(cache) < 12, "the kill must land mid-run"
    _wait_for(lambda: not any(_alive(p) for p in workers), 10, "the workers to exit")


@pytest.mark.slow
@pytest.mark.skipif(not LINUX_PROC, reason="needs Linux /proc to find worker processes")
def test_a_dead_worker_is_blamed_on_its_clip_and_the_rest_goes_on(long_clips, tmp_path):
    root, cache = long_clips, tmp_path / "cache"
    args = ["preprocess", "--data", str(root), "--cache", str(cache), "--workers", "2"]
    args += ["--features", "fbank", "-p", "frames.short_side=48", "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "avsc", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(lambda: _index_lines(cache) >= 1, what="the first finished clip")
    victim = min(p for p in _children(proc.pid) if "spawn_main" in _cmdline(p))
    os.kill(victim, signal.SIGKILL)  # as the out-of-memory killer would
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err  # finished, with a failure to report
    failed = [ln for ln in out.splitlines() if "FAILED" in ln]
    assert len(failed) == 1, out
    assert "the worker process featurizing this clip was killed by SIGKILL" in failed[0]
    clip = failed[0].split("FAILED ")[1].split(":")[0]
    assert pd.read_csv(cache / "failures.csv")["clip"].tolist() == [clip]
    assert len(read_index(cache)) == 11 and clip not in read_index(cache)
    again = _avsc(*args)
    assert again.returncode == 0 and "1 processed, 11 already done" in again.stdout


def _square(task: dict) -> dict:  # module level: spawned workers import it
    return {"clip": task["clip"], "ok": True, "value": task["i"] ** 2}


@pytest.mark.timeout(180)
def test_thousands_of_clips_pass_through_the_worker_pool():
    """The workers announce every clip they start: that channel must never fill up."""
    from avsc.parallel import process_map

    tasks = [{"clip": f"c{i}", "i": i} for i in range(4000)]
    out = {r["clip"]: r["value"] for _, r in process_map(_square, tasks, 2)}
    assert out == {t["clip"]: t["i"] ** 2 for t in tasks}


@pytest.mark.timeout(180)
def test_a_pool_that_breaks_before_a_submit_loses_no_task(monkeypatch):
    """A worker can die while the consumer handles a result; the next submit then finds
    the pool broken (CI saw this as an 'unexpected BrokenProcessPool'). The task is kept,
    and a fresh pool does it and the rest."""
    import concurrent.futures as cf
    from concurrent.futures.process import BrokenProcessPool

    from avsc.parallel import process_map

    real = cf.ProcessPoolExecutor
    submits = []

    class BreaksOnce(real):
        def submit(self, *args, **kwargs):
            submits.append(1)
            if len(submits) == 3:
                raise BrokenProcessPool("a worker died meanwhile")
            return super().submit(*args, **kwargs)

    monkeypatch.setattr(cf, "ProcessPoolExecutor", BreaksOnce)
    tasks = [{"clip": f"c{i}", "i": i} for i in range(10)]
    out = {r["clip"]: r["value"] for _, r in process_map(_square, tasks, 2)}
    assert out == {t["clip"]: t["i"] ** 2 for t in tasks}


# ------------------------------------------------------------------ 10. predict


def _checkpoints(synth_store, runs):
    import avsc.experiments as S

    cfg = ExperimentConfig().override({**TRAIN, "visual.image_size": 32})
    ws = S.Workspace(synth_store[1], cfg)
    audio = S.train_system("audio_only", cfg, ws.store, runs / "audio", workspace=ws)
    joint = S.train_system(
        "pipeline",
        cfg,
        ws.store,
        runs / "pipeline",
        audio_checkpoint=audio.checkpoint,
        workspace=ws,
    )
    return ws, audio.checkpoint, joint.checkpoint


@pytest.fixture(scope="module")
def checkpoints(synth_store, tmp_path_factory):
    return _checkpoints(synth_store, tmp_path_factory.mktemp("runs"))


def test_predict_streams_a_long_clip_block_by_block(checkpoints, tmp_path):
    from avsc.experiments.predict import predict_clip

    _, audio_ck, _ = checkpoints
    rng = np.random.default_rng(0)
    wav = write_wav(tmp_path / "long.wav", 0.1 * rng.standard_normal((2, 48000 * 7)))
    whole = predict_clip(wav, audio_ck, block_segments=1000)
    for block in (1, 3):
        part = predict_clip(wav, audio_ck, block_segments=block)
        pd.testing.assert_frame_equal(part, whole, check_exact=False, atol=1e-6)
    assert len(whole) == 7


def test_predict_streams_a_video_only_system(checkpoints, synth_store, tmp_path):
    import avsc.experiments as S
    from avsc.experiments.predict import predict_clip

    ws, _, _ = checkpoints
    video_ck = S.train_system(
        "video_only", ws.config, ws.store, tmp_path / "video", workspace=ws
    ).checkpoint
    clip = ws.tables["evaluate"].clips[0]
    video = synth_store[0] / "video" / f"{clip}.mp4"
    whole = predict_clip(video, video_ck)
    assert len(whole) == 3  # every segment of the 3-s clip
    pd.testing.assert_frame_equal(
        predict_clip(video, video_ck, block_segments=2), whole, check_exact=False, atol=1e-6
    )


def test_predict_says_when_the_video_outlasts_the_audio(checkpoints, synth_store, tmp_path):
    from avsc.experiments.predict import PredictNote, predict_clip

    ws, _, pipeline_ck = checkpoints
    root = synth_store[0]
    clip = ws.tables["evaluate"].clips[0]
    x, sr = sf.read(str(root / "audio" / f"{clip}.wav"), always_2d=True)
    short = write_wav(tmp_path / "two_seconds.wav", x[: 2 * sr].T, sr)
    video = root / "video" / f"{clip}.mp4"
    with pytest.warns(PredictNote, match=r"the last 1.0 s of video were not used"):
        df = predict_clip(video, pipeline_ck, audio=short)
    full = predict_clip(video, pipeline_ck, audio=root / "audio" / f"{clip}.wav")
    assert len(df) == 2 and len(full) == 3
    pd.testing.assert_frame_equal(df, full.iloc[:2], check_exact=False, atol=1e-5)
    res = _avsc("predict", str(video), "--audio", str(short), "--checkpoint", str(pipeline_ck))
    assert res.returncode == 0, res.stderr
    assert "avsc predict: note:" in res.stderr and "were not used" in res.stderr


# ------------------------------------------------------------------ 11. config values


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_epochs=abc", "config key train.max_epochs: expected an integer, got 'abc'"),
        ("train.batch_size=0", "config key train.batch_size: must be >= 1, got 0"),
        ("train.max_epochs=0", "config key train.max_epochs: must be >= 1, got 0"),
        ("train.lr=.nan", "config key train.lr: must be a finite number, got nan"),
        ("train.lr=nan", "config key train.lr: must be a finite number, got nan"),
        ("train.lr=-1", "config key train.lr: must be > 0"),
        ("model.sc_dropout=1.5", "config key model.sc_dropout: must be in [0, 1)"),
        ("augment.crop_scale=[0.5]", "config key augment.crop_scale: expected a list of 2"),
        ("visual.image_size=big", "config key visual.image_size"),
    ],
)
def test_bad_config_values_are_refused_before_any_work(tmp_path, capsys, override, message):
    missing = tmp_path / "no-store-here"  # never reached: the config is checked first
    code = main(
        [
            "train",
            "audio_only",
            "--cache",
            str(missing),
            "--out",
            str(tmp_path / "o"),
            "-p",
            override,
        ]
    )
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert "store" not in err and not (tmp_path / "o").exists()


def test_run_checks_config_and_notebook_parameter_types_up_front(tmp_path, capsys):
    base = ["run", "--profile", "smoke", "--runs", str(tmp_path), "--figures", str(tmp_path)]
    assert main([*base, "-p", "train.batch_size=0"]) == 1
    assert "config key train.batch_size: must be >= 1, got 0" in capsys.readouterr().err
    assert main([*base, "-p", "clips_per_class=abc"]) == 1
    err = capsys.readouterr().err
    assert "parameter clips_per_class: expected int" in err and "'abc'" in err
    assert not (tmp_path / "smoke").exists()


# ------------------------------------------------------------------ 12. one line, not a traceback


def test_a_config_file_with_python_tags_is_refused_in_one_line(tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'train: !!python/object/apply:os.system ["touch {marker}"]\n')
    code = main(
        [
            "train",
            "audio_only",
            "--cache",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--config",
            str(bad),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert _error_lines(err) == [ln for ln in err.splitlines() if ln.strip()]
    assert f"{bad}: not a plain YAML config (ConstructorError" in err


def test_a_damaged_weights_file_is_named(synth_store, tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    code = main(
        [
            "train",
            "video_only",
            "--cache",
            str(synth_store[1]),
            "--out",
            str(tmp_path / "o"),
            "-p",
            f"visual.weights={weights}",
            *[f"-p{k}={v}" for k, v in TRAIN.items()],
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(_error_lines(err)) == 1, err
    assert f"{weights}: not a readable safetensors file" in err


def test_a_full_disk_names_the_file_it_could_not_write(tiny, tmp_path):
    def small_files():  # every file larger than 20 kB fails to write, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    cache = tmp_path / "cache"
    res = _avsc(
        "preprocess",
        "--data",
        str(tiny),
        "--cache",
        str(cache),
        "--workers",
        "1",
        *PRE2,
        preexec_fn=small_files,
    )
    assert res.returncode == 2, res.stderr
    lines = _error_lines(res.stderr)
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"avsc preprocess: error: {cache}/" in lines[0]
    assert "cannot write: File too large" in lines[0]
    assert not list(cache.rglob("*.tmp-*"))  # no half-written file left behind


def _read_only_mount_works(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    cmd = f"mount --bind {probe} {probe} && mount -o remount,bind,ro {probe} && touch {probe}/x"
    res = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True)
    return "Read-only file system" in res.stderr


def test_a_read_only_cache_is_one_line_naming_it(tiny, tmp_path):
    if shutil.which("unshare") is None or not _read_only_mount_works(tmp_path):
        pytest.skip("cannot make a private read-only mount here (unshare -rm)")
    ro = tmp_path / "ro"
    ro.mkdir()
    cache = ro / "cache"
    avsc = " ".join(
        [sys.executable, "-m", "avsc", "preprocess", "--data", str(tiny), "--cache", str(cache),
         "--workers", "1", *PRE2]
    )  # fmt: skip
    cmd = f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && exec {avsc}"
    res = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert _error_lines(res.stderr) == [f"avsc preprocess: error: {cache}: Read-only file system"]
    assert "Traceback" not in res.stderr


def test_debug_shows_the_traceback(tmp_path, capsys):
    args = ["validate", str(tmp_path / "nowhere"), "--report", str(tmp_path / "x" / "r.csv")]
    assert main(args) == 1  # a missing root is a validation finding, not an exception
    assert "dataset root does not exist" in (tmp_path / "x" / "r.csv").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    args = [
        "train",
        "audio_only",
        "--cache",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "--config",
        str(bad),
    ]
    assert main(args) == 2
    assert "not a plain YAML config (ParserError" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a plain YAML config"):
        main(["--debug", *args])


# ------------------------------------------------------------------ 13. smaller


def _rotated_video(path: Path, rotation: int, size=(64, 48)) -> Path:
    """An index-coded H.264 MP4 whose display matrix says ``rotation`` degrees
    counter-clockwise (a portrait phone clip stores -90)."""
    import av

    w, h = size
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = w, h, "yuv444p"
        s.options = {"preset": "ultrafast", "qp": "0"}
        s.set_display_rotation(rotation)
        for i in range(48):
            for p in s.encode(av.VideoFrame.from_ndarray(index_frame(i, w, h), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_the_rotation_of_a_video_is_applied(tmp_path, rotation):
    import av

    path = _rotated_video(tmp_path / "phone.mp4", rotation)
    with av.open(str(path)) as c:
        assert next(c.decode(video=0)).rotation == (rotation if rotation != 180 else -180)
    stored = extract_frames(_rotated_video(tmp_path / "plain.mp4", 0), short_side=None)
    frames = extract_frames(path, short_side=None)
    turns = (rotation // 90) % 4
    assert frames.shape[1:3] == ((64, 48) if turns % 2 else (48, 64))
    for f, g in zip(frames, stored, strict=True):  # upright = the stored picture turned
        np.testing.assert_array_equal(f, np.rot90(g, turns))
    small = extract_frames(path, short_side=32)  # the upright picture's short side
    assert min(small.shape[1:3]) == 32 and (small.shape[1] > small.shape[2]) == bool(turns % 2)


def test_validate_deep_finds_nan_audio(copy):
    wav = sorted((copy / "audio").iterdir())[0]
    x = 0.01 * np.ones((96000, 2))
    x[1000, 0] = np.nan
    x[2000, 1] = np.inf
    sf.write(str(wav), x, 48000, subtype="FLOAT")
    shallow = validate_dataset(copy, clip_seconds=2.0)
    assert shallow.ok  # the header is fine
    deep = validate_dataset(copy, deep=True, clip_seconds=2.0)
    assert any(
        p.file == str(wav) and "2 NaN or infinite sample(s)" in p.problem for p in deep.errors
    ), deep.format()


def test_format_warnings_of_preprocess_reach_the_terminal(copy, tmp_path):
    wav = sorted((copy / "audio").iterdir())[0]
    x, sr = sf.read(str(wav), always_2d=True)
    sf.write(str(wav), x[::2][:, :1], 24000, subtype="PCM_16")  # 24 kHz mono
    res = _avsc(
        "preprocess", "--data", str(copy), "--cache", str(tmp_path / "c"), "--workers", "1", *PRE2
    )
    assert res.returncode == 0, res.stderr
    assert "1 clip(s) converted to the method's input" in res.stdout
    assert "24000 Hz, resampled to 16000 Hz: 1 clip(s)" in res.stdout
    assert "mono, duplicated to two channels (side = 0): 1 clip(s)" in res.stdout
    assert f"{wav}: 24000 Hz, resampled to 16000 Hz" in res.stderr  # logged as the clip is done
    again = _avsc("preprocess", "--data", str(copy), "--cache", str(tmp_path / "c"), *PRE2)
    assert "1 clip(s) converted" in again.stdout  # also when nothing is redone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = pd.read_csv(tmp_path / "c" / "index.csv", keep_default_na=False)
    assert (table["warnings"] != "").sum() == 1


def test_synth_below_its_minimum_of_clips_says_the_minimum_not_unexpected(tmp_path, capsys):
    """Issue 21: ``synth --clips-per-class 2`` printed ``ValueError ... (unexpected ...)``;
    the option now states its minimum, and the library's own error is avsc's."""
    from avsc.data.synth import SynthError, make_synthetic_dataset

    with pytest.raises(SystemExit) as exit_:
        main(["synth", "--out", str(tmp_path / "d"), "--clips-per-class", "2"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unexpected" not in err
    assert err.strip().splitlines()[-1] == (
        "avsc synth: error: argument --clips-per-class: must be at least 3 (each class needs "
        "clips for training, validation and evaluation), got 2"
    )
    with pytest.raises(SynthError, match=r"^clips_per_class must be an integer >= 3, got 2$"):
        make_synthetic_dataset(tmp_path / "e", clips_per_class=2, show_progress=False)
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_the_machine_lacks_is_named_before_any_work(synth_store, tmp_path, capsys):
    """Issue 21 (5): ``-p train.device=cuda`` without a GPU, ``predict --device cuda`` and
    ``--device banana`` gave torch's errors as unexpected ones, and training left a results
    folder holding only a lock file. Now one line naming the key or option and the devices
    there are, and nothing written."""
    out = tmp_path / "results"
    code = main(["train", "audio_only", "--cache", str(synth_store[1]), "--out", str(out),
                 "-p", "train.device=cuda"])  # fmt: skip
    lines = _error_lines(capsys.readouterr().err)
    assert code == 2 and lines == [
        "avsc train: error: config key train.device: cuda asked, but this machine has no CUDA "
        "device (no driver or no GPU visible to torch); it has cpu"
    ]
    assert not out.exists()
    for device, why in (
        ("cuda:1", "cuda:1 asked, but this machine has no CUDA device"),
        ("banana", "'banana' is not a device (cpu, cuda, cuda:N, mps); this machine has cpu"),
    ):
        code = main(["predict", str(tmp_path / "clip.wav"), "--checkpoint",
                     str(tmp_path / "best.pt"), "--device", device])  # fmt: skip
        lines = _error_lines(capsys.readouterr().err)
        assert (
            code == 2
            and len(lines) == 1
            and lines[0].startswith(f"avsc predict: error: --device: {why}")
        ), lines


def test_an_unknown_backbone_is_named_with_close_timm_names_before_any_work(
    synth_store, tmp_path, capsys
):
    """Issue 21 (6): ``-p visual.backbone=does_not_exist`` gave timm's "Unknown model" as an
    unexpected RuntimeError. Now one line naming the key and the closest timm names."""
    out = tmp_path / "results"
    code = main(["train", "video_only", "--cache", str(synth_store[1]), "--out", str(out),
                 "-p", "visual.backbone=efficientnet_lite"])  # fmt: skip
    lines = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(
        "avsc train: error: config key visual.backbone: timm has no model 'efficientnet_lite'; "
        "close names: efficientnet_lite"
    ), lines
    assert not out.exists()


def test_a_second_avsc_run_into_one_run_folder_is_refused(tmp_path, capsys):
    """Issue 21: two ``avsc run`` of one profile into one folder overwrote each other's
    executed notebooks. The second is refused, naming the first (pid, host, command)."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom avsc.utils import exclusive_lock\n"
         "with exclusive_lock(sys.argv[1], 'a run'):\n    print('held', flush=True)\n"
         "    time.sleep(120)\n",
         str(tmp_path / "runs" / ".smoke.run.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["run", "--profile", "smoke", "--runs", str(tmp_path / "runs"),
                     "--figures", str(tmp_path / "fig"), "--no-preflight"])  # fmt: skip
        lines = _error_lines(capsys.readouterr().err)
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith(
            f"avsc run: error: run folder {tmp_path / 'runs' / 'smoke'} is in use by another "
            f"avsc run (pid {holder.pid} on "
        ), lines
        assert lines[0].endswith("; wait for it to finish or use another folder")
        assert not (tmp_path / "runs" / "smoke").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_full_disk_while_writing_a_checkpoint_says_so_and_keeps_the_previous(
    tmp_path, monkeypatch
):
    """Issue 21 (4): a full disk while saving a checkpoint came out as torch's "unexpected
    pos 17701888 vs 17701784" (an unexpected RuntimeError). Now "no space left" naming the
    file and folder; the previous checkpoint stays intact and no temporary file is left."""
    import errno
    import shutil

    import torch

    import avsc.training.checkpoint as C
    from avsc.cli import describe_error

    path = tmp_path / "best.pt"
    C.save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})

    def short_write(obj, f):  # what torch's zip writer does when the device fills up
        Path(f).write_bytes(b"PK\x03\x04 half of a checkpoint")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . unexpected pos 17701888 vs 17701784"
        )

    monkeypatch.setattr(C.torch, "save", short_write)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(2**30, 2**30, 0))
    with pytest.raises(OSError) as err:
        C.save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    assert err.value.errno == errno.ENOSPC
    assert describe_error(err.value) == (
        f"{path}: no space left on the device of {tmp_path} (0.0 MiB free) while writing this "
        "checkpoint; the previous one, if any, is intact: free some space and rerun (the run "
        "resumes)"
    )
    monkeypatch.undo()
    assert C.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


@pytest.mark.parametrize("subset", ["evaluate", "val"])
def test_nan_in_a_stored_clip_is_named_instead_of_a_nan_metric(
    synth_store, tmp_path, subset, capsys
):
    """Issue 21 (2, 3): NaN in an evaluation clip's stored features gave
    ``"logloss_overall": NaN`` and exit 0; in a validation clip, NaN validation losses and
    then "best.pt: checkpoint not found". Now one line naming the clip and the way to rebuild
    it, and no metric written."""
    cache = Path(shutil.copytree(synth_store[1], tmp_path / "cache"))
    store = FeatureStore(cache)
    subsets = store.split(DataConfig()).subsets()
    clip = sorted(subsets[subsets["subset"] == subset]["clip"])[0]
    entry = np.load(store.audio_path(clip, "scalogram"), mmap_mode="r+")
    entry[0, 0, 0] = np.nan  # same size: a plain preprocess rerun would not notice
    entry.flush()
    del entry
    out = tmp_path / "results"
    code = main(["train", "audio_only", "--cache", str(cache), "--out", str(out),
                 "-p", "train.max_epochs=1", "-p", "train.batch_size=32"])  # fmt: skip
    lines = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0] == (
        f"avsc train: error: clip {clip} (segment 0): its stored audio input holds NaN or "
        f"infinite values (a damaged entry of {cache}?); avsc preprocess --verify rebuilds the "
        "entries whose checksum is wrong"
    )
    assert not list(out.rglob("metrics.json"))


def test_a_folder_as_the_clip_and_a_joint_checkpoint_as_the_audio_one_are_said(
    checkpoints, tmp_path, capsys, caplog
):
    """Issue 21: a folder passed as the clip was reported as "audio file not found"; a
    pipeline/joint checkpoint given as the audio checkpoint was taken silently. Now the folder
    is named as a folder, and the log says which part of the checkpoint is used."""
    import logging

    from avsc.experiments.strategies import load_acoustic_encoder

    ws, audio_ck, pipeline_ck = checkpoints
    folder = tmp_path / "my clips"
    folder.mkdir()
    code = main(["predict", str(folder), "--checkpoint", str(audio_ck)])
    lines = _error_lines(capsys.readouterr().err)
    assert code == 2 and lines == [f"avsc predict: error: {folder}: a folder, not an audio file"]
    with caplog.at_level(logging.WARNING, logger="avsc.experiments.strategies"):
        load_acoustic_encoder(audio_ck, ws.config, 290)
        assert not caplog.records  # the audio-only system's own: nothing to say
        load_acoustic_encoder(pipeline_ck, ws.config, 290)
    assert [r.getMessage() for r in caplog.records] == [
        f"{pipeline_ck} is a pipeline system's checkpoint: only its acoustic encoder is used "
        "(its scene classifier and visual parts are not)"
    ]


def test_a_store_whose_first_run_finished_no_clip_says_how_to_start_over(
    synth_store, tmp_path, capsys
):
    """Issue 21: a store whose first run failed every clip (wrong settings) then refused the
    corrected settings with only "use a new --cache folder". It now says that nothing is lost
    by deleting it, and how; a store holding finished clips is not offered for deletion."""
    cache = tmp_path / "cache"
    base = ["preprocess", "--data", str(synth_store[0]), "--cache", str(cache),
            "--features", "scalogram", "--workers", "1", "--no-progress"]  # fmt: skip
    assert main([*base, "-p", "data.clip_seconds=10"]) == 3  # every 3-s clip: wrong length
    capsys.readouterr()
    assert main([*base, "-p", "data.clip_seconds=3"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"avsc preprocess: error: {cache}: built with different data settings "
        "{'clip_seconds': (10.0, 3.0)} (stored, asked); use a new --cache folder; it holds no "
        f"finished clip yet, so nothing is lost by deleting it: rm -r {cache} and rerun with "
        "the new settings"
    )
    assert main([*base, "-p", "data.clip_seconds=10"]) == 3  # nothing was touched
    capsys.readouterr()
    full = shutil.copytree(synth_store[1], tmp_path / "full")
    assert main(["preprocess", "--data", str(synth_store[0]), "--cache", str(full),
                 "--no-progress", "-p", "data.clip_seconds=10"]) == 1  # fmt: skip
    assert "rm -r" not in capsys.readouterr().err  # finished clips: never offered for deletion


def test_non_ascii_names_work_under_a_non_utf8_locale(tmp_path):
    """Under ``LC_ALL=C PYTHONUTF8=0`` (an ASCII locale: Python holds non-ASCII file names
    with surrogate escapes) a collection whose root, labels and clip names are not ASCII
    validates, preprocesses, trains and predicts; the one broken file is named as it is
    named on disk; every file avsc writes is UTF-8 holding the names' own text. (validate
    called every clip unreadable, preprocess crashed writing failures.csv, predict failed
    without naming the file.)"""
    root = tmp_path / "dätä"
    rng = np.random.default_rng(0)
    for k, label in enumerate(["café", "straße", "park"]):
        for i in range(4):
            tone = np.sin(2 * np.pi * (300 + 200 * k) * np.arange(32000) / 16000)
            x = 0.3 * tone + 0.05 * rng.standard_normal(32000)
            path = root / label / f"clïp_{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(os.fsencode(path), x, 16000)
    (root / "park" / "brøken.wav").write_bytes(b"not a wave file")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_") and k != "LANG"}
    env.update(LC_ALL="C", PYTHONUTF8="0", PYTHONIOENCODING="", AVSC_PROGRESS="0")

    def run(*args: str) -> tuple[int, str, str]:
        res = subprocess.run([sys.executable, "-m", "avsc", *args], capture_output=True, env=env)
        return res.returncode, res.stdout.decode("utf-8"), res.stderr.decode("utf-8")

    probe = "import sys; print(sys.getfilesystemencoding())"
    fs = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert fs.stdout.strip() == "ascii", "the locale under test is not an ASCII one"

    rc, out, err = run("validate", str(root))
    assert rc == 1, out + err
    assert f"{root}/park/brøken.wav: unreadable audio file" in out
    assert "13 clips checked, 1 error(s)" in out, out
    assert "codec can't" not in out + err

    rc, out, err = run("manifest", str(root), "--out", str(tmp_path / "mänifest.csv"))
    assert rc == 0, err
    text = (tmp_path / "mänifest.csv").read_bytes().decode("utf-8")
    assert "café/clïp_0,dätä/café/clïp_0.wav,café" in text.splitlines()

    cache = tmp_path / "cäche"
    rc, out, err = run("preprocess", "--data", str(root), "--cache", str(cache))
    assert rc == 3, err  # some clips failed
    assert f"FAILED park/brøken: {root}/park/brøken.wav: unreadable audio file" in out
    failures = pd.read_csv(cache / "failures.csv", encoding="utf-8")
    assert list(failures["clip"]) == ["park/brøken"]
    assert list(failures["file"]) == [f"{root}/park/brøken.wav"]

    out_dir = tmp_path / "rün"
    rc, out, err = run("train", "audio_only", "--cache", str(cache), "--out", str(out_dir),
                       "-p", "train.max_epochs=1")  # fmt: skip
    assert rc == 0, err
    assert json.loads(out[out.index("{") :])["labels"] == ["café", "park", "straße"]

    ckpt = str(out_dir / "audio_only_scalogram" / "best.pt")
    csv_out = tmp_path / "prédictions.csv"
    rc, out, err = run("predict", str(root / "café" / "clïp_1.wav"), "--checkpoint", ckpt,
                       "--csv", str(csv_out))  # fmt: skip
    assert rc == 0, err
    assert "café" in out.splitlines()[0] and "straße" in out.splitlines()[0]
    header = csv_out.read_bytes().decode("utf-8").splitlines()[0]
    assert header.endswith(",café,park,straße")
    rc, out, err = run("predict", str(root / "park" / "brøken.wav"), "--checkpoint", ckpt)
    assert rc == 2
    assert err.strip() == (
        f"avsc predict: error: {root}/park/brøken.wav: unreadable audio file "
        "(Format not recognised.)"
    )
