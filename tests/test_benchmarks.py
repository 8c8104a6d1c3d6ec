"""The benchmark scripts run: each one's ``--quick`` mode (tiny sizes, seconds) ends with its
``name: value`` lines, so a benchmark that breaks fails the test command. The full runs, whose
figures the README reports, stay out of it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.forked import python_run

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
NOT_BENCHMARKS = {"_common.py", "compare_runs.py"}  # a helper; a comparison tool (below)
QUICK = {  # script: extra arguments of its quick run
    "joint_training.py": [],
    "loader.py": [],
    "own_data.py": ["--part", "crossval", "--jobs", "2"],
    "predict.py": [],
    "preprocess.py": [],
    "synth_separability.py": [],
    "threads.py": [],
    "gpu_throughput.py": [],
}
FIGURE = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*:\s*(-?[0-9.]+(?:e-?[0-9]+)?|nan|inf)\s*$")


def test_every_benchmark_has_a_quick_run_in_this_file():
    scripts = {p.name for p in BENCH.glob("*.py")} - NOT_BENCHMARKS
    assert scripts == set(QUICK), "a benchmark without a --quick run in tests/test_benchmarks.py"


@pytest.mark.parametrize("script", sorted(QUICK))
def test_benchmark_quick_run_ends_with_its_figures(script, tmp_path):
    res = python_run(BENCH / script, "--quick", *QUICK[script], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, (
        f"{script} --quick failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    )
    figures = [m.group(1) for m in map(FIGURE.match, res.stdout.splitlines()) if m]
    assert len(figures) >= 2, f"{script} --quick printed no `name: value` lines:\n{res.stdout}"
    assert len(figures) == len(set(figures)), f"{script}: a figure printed twice"


def _run_folder(root: Path, logloss: float) -> Path:
    sysdir = root / "runs" / "demo" / "results" / "audio_only_scalogram"
    sysdir.mkdir(parents=True)
    metrics = {"logloss_classwise": logloss, "train_seconds": 12.5}
    (sysdir / "metrics.json").write_text(json.dumps(metrics))
    (sysdir / "proba.csv").write_text("clip,a,b\nc1,0.25,0.75\n")
    (sysdir / "history.csv").write_text("epoch,val_logloss,seconds\n1,0.9,3.0\n")
    figs = root / "figures" / "demo"
    figs.mkdir(parents=True)
    (figs / "table1.csv").write_text("system,logloss\naudio_only,0.9\n")
    (figs / "fig.png").write_bytes(b"\x89PNG not really")
    (root / "runs" / "demo" / "metrics").mkdir()
    (root / "runs" / "demo" / "metrics" / "03.json").write_text(json.dumps({"n": 3, "s": 1.0}))
    return root


def test_compare_runs_finds_a_changed_metric_and_ignores_times(tmp_path):
    base = _run_folder(tmp_path / "base", 0.9)
    same = tmp_path / "same"
    shutil.copytree(base, same)
    # times may differ
    (same / "runs/demo/results/audio_only_scalogram/metrics.json").write_text(
        json.dumps({"logloss_classwise": 0.9, "train_seconds": 99.0})
    )
    tool = [sys.executable, str(BENCH / "compare_runs.py")]
    res = subprocess.run([*tool, str(base), str(same)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "differences: 0" in res.stdout and "results_identical: 1/1" in res.stdout
    other = _run_folder(tmp_path / "other", 0.8)
    res = subprocess.run([*tool, str(base), str(other)], capture_output=True, text=True)
    assert res.returncode == 1
    assert "result differs: runs/demo/results/audio_only_scalogram" in res.stdout
    assert "differences: 1" in res.stdout
