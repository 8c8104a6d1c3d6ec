"""Reliability of training: a second run into one output, changed settings on resume,
mixed frame sizes, a full disk at a checkpoint, NaN in stored features.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avsc.cli import main
from avsc.config import DataConfig, ExperimentConfig, FrameConfig, PreprocessConfig
from avsc.features import FeatureStore, preprocess
from tests.conftest import copy_store
from tests.faults import TRAIN, error_lines, wait_for
from tests.media import make_tiny_dataset, write_indexed_video


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
        wait_for(lambda: (out / ".avsc.lock.json").is_file(), what="the first training's lock")
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
    assert len(error_lines(err)) == 1 and "train.lr: 0.01 stored, 0.02 now" in err
    assert main([*args, "-p", "train.lr=0.02", "--restart"]) == 0
    summary = json.loads(capsys.readouterr().out.split("(--restart)\n")[-1])
    assert summary["name"] == "audio_only_scalogram"
    from avsc.training import load_checkpoint

    assert load_checkpoint(out / "last.pt")["config"]["train"]["lr"] == 0.02


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
    cache = copy_store(synth_store[1], tmp_path / "cache")
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
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0] == (
        f"avsc train: error: clip {clip} (segment 0): its stored audio input holds NaN or "
        f"infinite values (a damaged entry of {cache}?); avsc preprocess --verify rebuilds the "
        "entries whose checksum is wrong"
    )
    assert not list(out.rglob("metrics.json"))
