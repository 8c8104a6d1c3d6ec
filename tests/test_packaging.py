"""Packaging: pyproject and environment.yml agree; the console script and ``python -m`` work."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .conftest import ROOT

# PyPI name -> conda-forge name where they differ
CONDA_NAMES = {"torch": "pytorch", "soundfile": "pysoundfile", "pywavelets": "pywavelets"}


def _split(req: str) -> tuple[str, str]:
    req = req.split(";")[0]  # environment markers are pip's business, not conda's
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower(), m.group(2).replace(" ", "")


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(r) for r in project["dependencies"])
    extras = project["optional-dependencies"]
    for name in ("notebooks", "dev"):
        wanted.update(_split(r) for r in extras[name])
    wanted = {CONDA_NAMES.get(k, k): v for k, v in wanted.items()}

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
        else:
            k, v = _split(dep)
            conda[k] = v
    conda.pop("pip")
    editable = [p for p in pip if p.startswith("-e ")]
    for p in pip:
        if not p.startswith("-e "):
            k, v = _split(p)
            assert k not in conda, f"{k} is both a conda and a pip dependency"
            conda[k] = v
    python = conda.pop("python")
    assert python == ">=" + project["requires-python"].lstrip(">=")
    assert conda == wanted, {
        "only in environment.yml": sorted(set(conda) - set(wanted)),
        "only in pyproject": sorted(set(wanted) - set(conda)),
        "different bounds": sorted(k for k in wanted if k in conda and conda[k] != wanted[k]),
    }
    assert editable in (['-e ".[notebooks,dev]"'], ["-e .[notebooks,dev]"])


def test_console_script_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "avsc", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for sub in ("synth", "validate", "preprocess"):
        assert sub in out.stdout
    script = ROOT / ".venv" / "bin" / "avsc"
    exe = script if script.exists() else "avsc"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("avsc ")


def test_top_level_layout():
    for name in (
        "avsc",
        "notebooks",
        "tests",
        "figures",
        "benchmarks",
        "README.md",
        "environment.yml",
        "pyproject.toml",
        ".ci/run",
    ):
        assert (ROOT / name).exists(), name


def test_a_runs_manifest_names_the_cpu_model():
    """Same libraries, threads and instruction set on two CPU models can still give other
    numbers (README: reproducing the demo), so the manifest records the model as well."""
    import platform

    import torch  # noqa: F401 (numerics are recorded for a process that uses torch)

    from avsc.utils import versions

    names = []
    if Path("/proc/cpuinfo").is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
    assert versions()["cpu"] == (names[0] if names else platform.processor())
    assert versions()["cpu"]
