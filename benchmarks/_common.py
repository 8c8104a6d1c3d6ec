"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import subprocess
import sys


def peak_rss_mb(cmd: list[str]) -> float:
    """Peak resident memory (MB) of the largest process among ``cmd`` and its children
    (``ru_maxrss`` of a fresh wrapper process's children, so nothing earlier counts)."""
    code = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
        "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, *cmd], check=True, capture_output=True, text=True
    )
    return int(res.stdout.strip().splitlines()[-1]) / 1024
