"""Checks before a run (issue 13, section 2): ``avsc run --profile paper`` with no data and no
weights names every missing piece in one message, in seconds, before any work; the data,
weights, Places365, disk and GPU checks each against a case that must fail."""

import shutil
import time

import pytest
import torch

from avsc.cli import main
from avsc.config import ExperimentConfig
from avsc.preflight import check_run, projected_store_bytes
from avsc.runner import resolve

from .conftest import ROOT
from .forked import avsc_run


def _params(profile, tmp_path, **overrides):
    return resolve(profile, overrides, tmp_path / "runs", tmp_path / "fig")


def test_the_paper_profile_without_data_or_weights_names_every_missing_piece(tmp_path, monkeypatch):
    monkeypatch.delenv("AVSC_DATA_ROOT", raising=False)
    t0 = time.perf_counter()
    res = avsc_run(
        "run", "--profile", "paper", "--runs", tmp_path / "runs", "--figures", tmp_path / "fig",
        cwd=ROOT,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    msg = res.stderr
    assert msg.startswith("avsc run: error: "), msg  # nothing in front of the one message
    assert msg.startswith("avsc run: error: profile paper cannot start; ")
    items = [line for line in msg.splitlines() if line.startswith("  - ")]
    whats = [line[4:].split(":")[0] for line in items]
    expected = ["data", "weights tf_efficientnetv2_s", "weights resnet50", "Places365"]
    if not torch.cuda.is_available():
        expected.append("GPU")
    assert whats == expected, msg
    assert "Zenodo 4477542" in items[0]
    assert "avsc download --dataset dev --out DIR" in items[0]
    assert "huggingface.co/timm/tf_efficientnetv2_s.in1k" in items[1]
    assert "resnet50_places365.pth.tar" in items[2]
    assert "-p train.device=cpu" in items[-1] or torch.cuda.is_available()
    assert not (tmp_path / "runs").exists()  # before any work
    assert seconds < 60, seconds  # seconds, not the hours a notebook would take to fail


def test_the_smoke_and_demo_profiles_pass(tmp_path):
    assert check_run(_params("smoke", tmp_path), "smoke", ROOT) == []
    assert check_run(_params("demo", tmp_path), "demo", ROOT) == []


def test_a_dataset_with_a_missing_file_is_named(synth_store, tmp_path):
    data, _ = synth_store
    root = shutil.copytree(data, tmp_path / "data")
    params = _params("smoke", tmp_path, synthetic=False, data_dir=str(root))
    params["data_dir"] = str(root)
    assert check_run(params, base=ROOT) == []
    gone = sorted((root / "video").glob("*.mp4"))[0]
    gone.unlink()
    problems = check_run(params, base=ROOT)
    assert [p.what for p in problems] == ["data"]
    assert "1 of 120 listed audio/video files are missing" in problems[0].detail
    assert f"video/{gone.name}" in problems[0].detail


def test_weights_files_are_looked_for_where_the_notebooks_run(tmp_path, monkeypatch):
    import avsc.models.visual as V

    params = _params("smoke", tmp_path)
    params["experiment"]["visual.weights"] = {"test_efficientnet": "w/te.pth"}
    (problem,) = check_run(params, base=tmp_path)
    assert problem.what == "weights test_efficientnet" and "w/te.pth is missing" in problem.detail
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "te.pth").write_bytes(b"x")
    assert check_run(params, base=tmp_path) == []
    # weights given, but none for a second backbone of the series: not a silent random init
    two = {**params, "backbones": ["test_efficientnet", "test_resnet"]}
    two["experiment"] = {**params["experiment"], "visual.weights": "w/te.pth"}
    (problem,) = check_run(two, base=tmp_path)
    assert problem.what == "weights test_resnet"
    assert "visual.weights gives none for test_resnet (one value is for visual.backbone " in (
        problem.detail
    )
    monkeypatch.setattr(V, "hub_reachable", lambda *a, **k: False)
    params["experiment"]["visual.weights"] = "hub"  # one value: for visual.backbone
    (problem,) = check_run(params, base=tmp_path)
    assert "not reachable" in problem.detail and "visual.weights" in problem.detail


def test_the_store_projection_and_the_disk_check(synth_store, tmp_path, monkeypatch):
    import avsc.preflight as P

    _, cache = synth_store
    clips = sum(1 for _ in (cache / "index.csv").open()) - 1
    cfg = ExperimentConfig().override({"data.clip_seconds": 3.0, "frames.short_side": 64})
    actual = sum(f.stat().st_size for d in ("audio", "frames") for f in (cache / d).rglob("*"))
    assert projected_store_bytes(clips, cfg) == pytest.approx(actual, rel=0.25)
    params = _params("smoke", tmp_path)
    monkeypatch.setattr(P.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 9, 1))
    (problem,) = check_run(params, base=ROOT)
    assert problem.what == "disk" and "0.0 GB free" in problem.detail


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_a_gpu_asked_for_and_absent_is_named(tmp_path):
    params = _params("smoke", tmp_path, **{"train.device": "cuda"})
    (problem,) = check_run(params, base=ROOT)
    assert problem.what == "GPU" and "train.device is cuda" in problem.detail
    main_rc = main(["run", "--profile", "smoke", "-p", "train.device=cuda", "--runs"]
                   + [str(tmp_path / "r"), "--figures", str(tmp_path / "f")])  # fmt: skip
    assert main_rc == 1 and not (tmp_path / "r").exists()
