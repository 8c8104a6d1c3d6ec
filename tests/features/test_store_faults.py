"""Reliability of the feature store and its worker pool: a bad folder, a killed or
concurrent run, damaged entries, dead workers, a full disk; each ends in a correct result
or one clear line naming the file, and loses nothing the user owns.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from avsc.cli import main
from avsc.features import FeatureStore, StoreError, extract_frames, preprocess
from avsc.features.store import read_index
from tests.conftest import copy_store
from tests.faults import (
    CFG2,
    LINUX_PROC,
    PRE2,
    alive,
    avsc_cli,
    environ_value,
    error_lines,
    index_lines,
    pool_workers,
    stall_env,
    stalled_pid,
    wait_for,
)
from tests.media import index_frame


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


#: preprocess arguments of the tests that stop a run mid-clip (tests/stall_kind.py)
STALL = ["--module", "tests.stall_kind", "--features", "stall", "-p", "frames.short_side=48"]
STALL += ["-p", "data.clip_seconds=2"]  # the clips of twelve_clips


def test_a_second_preprocess_on_one_store_is_refused_naming_the_first(twelve_clips, tmp_path):
    root, cache, gate = twelve_clips, tmp_path / "cache", tmp_path / "gate"
    args = ["preprocess", "--data", str(root), "--cache", str(cache), "--workers", "1"]
    args += [*STALL, "--no-progress"]
    first = subprocess.Popen(
        [sys.executable, "-m", "avsc", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=stall_env(gate),
    )
    try:
        wait_for(lambda: stalled_pid(gate) == first.pid, what="the first run's first clip")
        second = avsc_cli(*args)
        assert second.returncode == 2, second.stderr
        assert first.poll() is None, "the first run must still be running"
        assert len(error_lines(second.stderr)) == 1, second.stderr
        assert "is in use by another avsc run" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        (gate / "release").touch()
        out, errs = first.communicate(timeout=180)
    finally:
        first.kill()
    assert first.returncode == 0, errs
    assert "12 processed, 0 already done, 0 failed" in out  # the first was not disturbed
    assert len(read_index(cache)) == 12


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


@pytest.mark.skipif(not LINUX_PROC, reason="needs Linux /proc to find worker processes")
def test_a_killed_preprocess_leaves_no_worker_behind(twelve_clips, tmp_path):
    root, cache, gate = twelve_clips, tmp_path / "cache", tmp_path / "gate"
    args = ["preprocess", "--data", str(root), "--cache", str(cache), "--workers", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "avsc", *args, *STALL, "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=stall_env(gate),
    )
    wait_for(lambda: stalled_pid(gate) is not None, what="a worker on its first clip")
    workers = pool_workers(proc.pid)
    assert len(workers) == 2 and stalled_pid(gate) in workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert index_lines(cache) < 12, "the kill must land mid-run"
    wait_for(lambda: not any(alive(p) for p in workers), 10, "the workers to exit")


@pytest.mark.skipif(not LINUX_PROC, reason="needs Linux /proc to find worker processes")
def test_a_dead_worker_is_blamed_on_its_clip_and_the_rest_goes_on(twelve_clips, tmp_path):
    root, cache, gate = twelve_clips, tmp_path / "cache", tmp_path / "gate"
    args = ["preprocess", "--data", str(root), "--cache", str(cache), "--workers", "2"]
    args += [*STALL, "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "avsc", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=stall_env(gate),
    )
    wait_for(lambda: stalled_pid(gate) is not None, what="a worker on its first clip")
    victim = stalled_pid(gate)  # mid-clip: one idle between clips has nothing to blame
    assert victim in pool_workers(proc.pid)
    os.kill(victim, signal.SIGKILL)  # as the out-of-memory killer would
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err  # finished, with a failure to report
    failed = [ln for ln in out.splitlines() if "FAILED" in ln]
    assert len(failed) == 1, out
    assert "the worker process featurizing this clip was killed by SIGKILL" in failed[0]
    clip = failed[0].split("FAILED ")[1].split(":")[0]
    assert pd.read_csv(cache / "failures.csv")["clip"].tolist() == [clip]
    assert len(read_index(cache)) == 11 and clip not in read_index(cache)
    again = avsc_cli(*args)  # not stalling: AVSC_TEST_STALL is not set
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


def _loaded(task):
    import sys

    return {"clip": task["clip"], "value": sorted(m for m in task["modules"] if m in sys.modules)}


_POOL_MODULES = ("scipy.signal", "scipy.sparse", "scipy.fft", "avsc.features.store.builder")


def _modules_in_workers(extra: dict[str, tuple[str, ...]]) -> list[str]:
    """The modules of ``_POOL_MODULES`` that a pool's workers have when they start their
    first task, in a fresh process (the fork server is started once per process), with
    ``POOL_EXTRA_MODULES`` set to ``extra``."""
    import json
    import subprocess
    import sys

    code = (
        "import json, avsc.parallel as p\n"
        "from tests.features.test_store_faults import _loaded\n"
        f"p.POOL_EXTRA_MODULES = {extra!r}\n"
        f"tasks = [{{'clip': f'c{{i}}', 'modules': {list(_POOL_MODULES)!r}}} for i in range(4)]\n"
        "print(json.dumps(sorted({m for _, r in p.process_map(_loaded, tasks, 2) "
        "for m in r['value']})))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pool_workers_start_with_what_featurizing_imports_and_only_synth_adds_scipy_signal():
    """Featurizing a clip imports scipy.sparse and scipy.fft when first called: the fork
    server imports them once, so no worker pays again. ``scipy.signal`` (about 1 s of CPU,
    for the synthetic sound's filters: 8 workers of ``avsc synth`` took 4.4 s without it,
    2.0 s with it, on 30 small clips) is imported only for a pool of ``avsc.data.synth``'s
    (``POOL_EXTRA_MODULES``): preprocessing, which resamples without it, does not wait for
    it."""
    from avsc.parallel import POOL_EXTRA_MODULES

    assert POOL_EXTRA_MODULES == {"avsc.data.synth": ("scipy.signal",)}
    assert _modules_in_workers({}) == sorted(set(_POOL_MODULES) - {"scipy.signal"})
    mine = {"tests.features.test_store_faults": ("scipy.signal",)}
    assert _modules_in_workers(mine) == sorted(_POOL_MODULES)


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


def test_a_full_disk_names_the_file_it_could_not_write(tiny, tmp_path):
    def small_files():  # every file larger than 20 kB fails to write, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    cache = tmp_path / "cache"
    res = avsc_cli(
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
    lines = error_lines(res.stderr)
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
    assert error_lines(res.stderr) == [f"avsc preprocess: error: {cache}: Read-only file system"]
    assert "Traceback" not in res.stderr


def test_format_warnings_of_preprocess_reach_the_terminal(copy, tmp_path):
    wav = sorted((copy / "audio").iterdir())[0]
    x, sr = sf.read(str(wav), always_2d=True)
    sf.write(str(wav), x[::2][:, :1], 24000, subtype="PCM_16")  # 24 kHz mono
    res = avsc_cli(
        "preprocess", "--data", str(copy), "--cache", str(tmp_path / "c"), "--workers", "1", *PRE2
    )
    assert res.returncode == 0, res.stderr
    assert "1 clip(s) converted to the method's input" in res.stdout
    assert "24000 Hz, resampled to 16000 Hz: 1 clip(s)" in res.stdout
    assert "mono, duplicated to two channels (side = 0): 1 clip(s)" in res.stdout
    assert f"{wav}: 24000 Hz, resampled to 16000 Hz" in res.stderr  # logged as the clip is done
    again = avsc_cli("preprocess", "--data", str(copy), "--cache", str(tmp_path / "c"), *PRE2)
    assert "1 clip(s) converted" in again.stdout  # also when nothing is redone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = pd.read_csv(tmp_path / "c" / "index.csv", keep_default_na=False)
    assert (table["warnings"] != "").sum() == 1


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
    full = copy_store(synth_store[1], tmp_path / "full")
    assert main(["preprocess", "--data", str(synth_store[0]), "--cache", str(full),
                 "--no-progress", "-p", "data.clip_seconds=10"]) == 1  # fmt: skip
    assert "rm -r" not in capsys.readouterr().err  # finished clips: never offered for deletion


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


def test_pool_workers_take_the_callers_environment_as_it_is_when_the_pool_starts(monkeypatch):
    """Workers forked from the fork server (started by this process's first pool) would
    otherwise have the environment of that moment, not the caller's now."""
    from avsc.parallel import process_map

    probe = ["AVSC_POOL_PROBE"] * 2
    monkeypatch.setenv("AVSC_POOL_PROBE", "first")
    assert [r for _, r in process_map(environ_value, probe, 2, name=str)] == ["first"] * 2
    monkeypatch.setenv("AVSC_POOL_PROBE", "second")
    assert [r for _, r in process_map(environ_value, probe, 2, name=str)] == ["second"] * 2


def test_a_private_copy_of_the_shared_store_leaves_out_a_running_jobs_lock(tmp_path):
    """The shared ``synth_store`` is read by tests in other pytest-xdist workers meanwhile: a
    copy of it failed with ``shutil.Error`` when another worker's lock owner file
    (``.avsc.lock.json``) vanished while it was copied. The copy leaves out the files of a run
    in progress (lock, owner, temporary files) and keeps everything else."""
    from avsc.utils import LOCK_NAME, TMP_MARK

    store = tmp_path / "store"
    (store / "audio" / "scalogram").mkdir(parents=True)
    (store / "audio" / "scalogram" / "a.npy").write_bytes(b"kept")
    (store / "index.jsonl").write_text("{}\n")
    running = [LOCK_NAME, LOCK_NAME + ".json", f".index.jsonl{TMP_MARK}abc123"]
    for name in running:
        (store / name).write_text("a run in progress")
    copy = copy_store(store, tmp_path / "copy")
    kept = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file())
    assert kept == ["audio/scalogram/a.npy", "index.jsonl"]
