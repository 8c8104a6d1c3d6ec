"""Shared test fixtures. Real material lives in ../shared/realdata (tests skip where absent)."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("AVSC_REALDATA", ROOT.parent / "shared" / "realdata"))


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    monkeypatch.setenv("AVSC_PROGRESS", "0")


@pytest.fixture(scope="session")
def synth_store(tmp_path_factory):
    """A small synthetic TAU-layout dataset and its feature store, shared by the training,
    evaluation and prediction tests: 10 classes x 6 clips of 3 s, 96x64 video."""
    from avsc.config import DataConfig, FrameConfig, PreprocessConfig
    from avsc.data.synth import make_synthetic_dataset
    from avsc.features import preprocess

    base = tmp_path_factory.mktemp("synth_store")
    root = make_synthetic_dataset(
        base / "data",
        clips_per_class=6,
        seconds=3.0,
        seed=0,
        video_size=(96, 64),
        show_progress=False,
    )
    cfg = PreprocessConfig(data=DataConfig(clip_seconds=3.0), frames=FrameConfig(short_side=64))
    report = preprocess(root, base / "cache", cfg, workers=1, show_progress=False)
    assert report.ok, report.format()
    return root, base / "cache"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke profile run end to end once (``avsc run --profile smoke``) into a temporary
    folder, with a config override that must reach preprocessing: ``(base, manifest)``, the
    run in ``base/runs/smoke``, its figures in ``base/figures/smoke``."""
    import json

    from avsc.runner import Manifest, run_profile

    reuse = os.environ.get("AVSC_REUSE_SMOKE")  # a finished run, for iterating on one test
    if reuse and (Path(reuse) / "runs" / "smoke" / "manifest.json").is_file():
        saved = json.loads((Path(reuse) / "runs" / "smoke" / "manifest.json").read_text())
        return Path(reuse), Manifest("smoke", Path(reuse) / "runs" / "smoke", saved["notebooks"])
    base = tmp_path_factory.mktemp("smoke")
    manifest = run_profile(
        "smoke",
        {"frames.jpeg_quality": 90},
        runs_root=base / "runs",
        figures_root=base / "figures",
    )
    return base, manifest
