"""What the fault tests share (tests/*/test_*_faults.py, tests/test_cli_faults.py): small
settings, the ``avsc`` command as a subprocess, and process helpers (Linux /proc)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from avsc.config import DataConfig, FrameConfig, PreprocessConfig
from tests.forked import avsc_run

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


def avsc_cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """``python -m avsc ARGS`` in a new process (:mod:`tests.forked`), its output as text."""
    return avsc_run(*args, env={**os.environ, "AVSC_PROGRESS": "0", **(env or {})}, **kw)


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ": error: " in ln]


def children(pid: int) -> set[int]:
    """Child process ids of ``pid`` (Linux /proc)."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return out


def pool_workers(pid: int) -> set[int]:
    """The worker processes of ``pid``'s process pool (avsc.parallel): the children of its
    fork server (``multiprocessing.forkserver``), or, where workers are spawned, its
    children started by ``spawn_main``."""
    out: set[int] = set()
    for child in children(pid):
        line = cmdline(child)
        if "multiprocessing.forkserver" in line:
            out |= children(child)
        elif "spawn_main" in line:
            out.add(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def stalled_pid(gate: Path) -> int | None:
    """The process stalled on its clip by ``tests/stall_kind.py``'s ``stall`` kind (its
    ``AVSC_TEST_STALL`` folder ``gate``), once one is."""
    p = gate / "stalled"
    return int(p.read_text()) if p.is_file() else None


def stall_env(gate: Path, cache: Path | None = None, after: int = 0) -> dict[str, str]:
    """The environment of a preprocess that ``tests/stall_kind.py``'s ``stall`` kind stalls
    on a clip (the first, or the first to start once ``cache``'s index lists ``after``
    clips); ``gate`` is made here."""
    gate.mkdir()
    env = {**os.environ, "AVSC_PROGRESS": "0", "AVSC_TEST_STALL": str(gate)}
    if after:
        env["AVSC_TEST_STALL_AFTER"] = str(after)
        env["AVSC_TEST_STALL_INDEX"] = str(cache / "index.jsonl")
    return env


def wait_for(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def index_lines(cache: Path) -> int:
    p = cache / "index.jsonl"
    return p.read_text().count("\n") if p.is_file() else 0


def environ_value(name: str) -> str | None:
    """In a pool worker: the value of environment variable ``name``."""
    return os.environ.get(name)
