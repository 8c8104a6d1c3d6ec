#!/usr/bin/env python3
"""Set-up and the two jobs of the README, with nothing but Python installed.

    python3 tasks.py demo   # create .venv, install avsc, run the notebook series (demo profile)
    python3 tasks.py test   # create .venv, install avsc, run ruff, the import contract, pytest
    python3 tasks.py lab    # create .venv, install avsc, start JupyterLab on the notebooks
    python3 tasks.py board  # TensorBoard on runs/: every training's curves, HParams of sweeps

Standard library only. The virtual environment lives in ``.venv`` (or ``$AVSC_VENV``) and is
reinstalled only when ``pyproject.toml`` changes. Extra arguments after ``test`` go to
pytest; after ``demo`` they go to ``avsc run`` (``-p clips_per_class=20``, ``--from 03``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("AVSC_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def run(*cmd: str | Path, **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)


def setup() -> None:
    """Create the virtual environment and install the package with all its extras."""
    if sys.version_info < (3, 10):  # noqa: UP036 - tasks.py may run on any python3
        sys.exit(f"avsc needs Python >= 3.10, this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".avsc-installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    t0 = time.time()
    if not install_with_uv():
        run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        run(PY, "-m", "pip", "install", "--quiet", "-e", SPEC)
    stamp.write_text(digest)
    print(f"installed avsc and its dependencies in {time.time() - t0:.0f} s", flush=True)


SPEC = ".[notebooks,dev]"
#: pip settings (pip.conf, PIP_* variables) and the uv options that mean the same
_UV_LISTS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}


def install_with_uv() -> bool:
    """Install with uv (PyPI's ``uv``, into the environment), which fetches and unpacks in
    parallel: on a 2-core machine 73 s where pip takes 161 s for the same packages. uv does
    not read pip's configuration, so the indexes, links, constraints and certificate pip is
    configured with here are passed on, and, as pip does, the best version from any index
    is taken and the packages are compiled to bytecode. False (pip then does the install)
    where uv cannot be had or fails, or ``AVSC_INSTALLER=pip``."""
    if os.environ.get("AVSC_INSTALLER", "uv") == "pip":
        return False
    args: list[str] = []
    env = dict(os.environ)
    try:
        listed = subprocess.run(
            [str(PY), "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
        ).stdout
        subprocess.run([str(PY), "-m", "pip", "install", "--quiet", "uv"], check=True, cwd=ROOT)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"uv could not be installed ({exc}); installing with pip", flush=True)
        return False
    settings: dict[str, str] = {}  # as pip reads them: PIP_* over [install] over [global]
    for line in sorted(listed.splitlines(), key=lambda ln: ln.startswith(":env:")):
        key, _, value = line.partition("=")
        section, _, name = key.rpartition(".")
        if section != "global" or name not in settings:
            settings[name] = value.strip().strip("'\"")
    for name, value in settings.items():
        if name in _UV_LISTS:
            args += [a for v in value.split() for a in (_UV_LISTS[name], v)]
        elif name == "no-index" and value.lower() in ("1", "true", "yes", "on"):
            args.append("--no-index")
        elif name == "cert":
            env.setdefault("SSL_CERT_FILE", value)
        elif name in ("timeout", "default-timeout"):
            env.setdefault("UV_HTTP_TIMEOUT", value)
    cmd = [PY, "-m", "uv", "pip", "install", "--python", PY, "--quiet", "--compile-bytecode"]
    cmd += ["--index-strategy", "unsafe-best-match", *args, "-e", SPEC]
    try:
        run(*cmd, env=env)
    except subprocess.CalledProcessError:
        print("uv failed (above); installing with pip instead", flush=True)
        return False
    return True


def demo(argv: list[str]) -> None:
    """The main job: the whole notebook series under the demo profile (synthetic data).

    Extra arguments go to ``avsc run``, e.g. ``-p clips_per_class=20`` or ``--from 03``."""
    t0 = time.time()
    run(PY, "-m", "avsc", "run", "--profile", "demo", *argv)
    print(
        f"demo finished in {time.time() - t0:.0f} s: executed notebooks in runs/demo/, "
        "figures and tables in figures/demo/"
    )


def test(argv: list[str]) -> None:
    """Lint, format check, the layering contract (import-linter) and the whole pytest suite."""
    run(PY, "-m", "ruff", "check", "avsc", "tests", "benchmarks", "tasks.py")
    run(PY, "-m", "ruff", "format", "--check", "avsc", "tests", "benchmarks", "tasks.py")
    run(BIN / "lint-imports")  # the layering contract of pyproject.toml
    env = dict(os.environ, AVSC_PROGRESS="0")
    run(PY, "-m", "pytest", "--durations=15", *parallel(argv), *argv, env=env)  # 15 slowest


def parallel(argv: list[str]) -> list[str]:
    """pytest-xdist's options: test files spread over one worker process more than there are
    cores, 2 to 4 (each file's tests in one worker, so a module's fixtures are built once),
    unless the arguments choose (``-n 0`` runs everything in this process). Part of every
    worker's time is spent waiting on subprocesses, kernels and files: with 2 workers on 2
    cores about 9 % of the CPU time stood idle, and 3 workers took the suite from 651-675 s
    to 597-618 s; each worker is granted its share of the cores (tests/conftest.py)."""
    if any(a == "-n" or a.startswith(("-n", "--numprocesses", "--dist")) for a in argv):
        return []
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return ["-n", str(max(2, min(4, cores + 1))), "--dist", "loadfile"]


def lab(argv: list[str]) -> None:
    """JupyterLab with the project's environment, opened on ``notebooks/`` (run them in order,
    01 to 07; their defaults are the cheap smoke settings). Extra arguments go to jupyter."""
    run(BIN / "jupyter", "lab", f"--notebook-dir={ROOT}", "notebooks/", *argv)


def board(argv: list[str]) -> None:
    """TensorBoard on ``runs/`` (every training writes its curves there, ``train.tensorboard``;
    a sweep's points fill the HParams view). Extra arguments go to tensorboard, e.g.
    ``--logdir runs/my_sweep`` or ``--port 6007``."""
    logdir = [] if any(a.startswith("--logdir") for a in argv) else ["--logdir", "runs"]
    run(BIN / "tensorboard", *logdir, *argv)  # on localhost, port 6006, unless told


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test", "setup", "lab", "board"):
        sys.exit(__doc__)
    job, rest = sys.argv[1], sys.argv[2:]
    try:
        setup()
        if job == "demo":
            demo(rest)
        elif job == "test":
            test(rest)
        elif job == "lab":
            lab(rest)
        elif job == "board":
            board(rest)
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode or 1)


if __name__ == "__main__":
    main()
