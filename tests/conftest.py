"""Shared test fixtures. Real material lives in ../shared/realdata (tests skip where absent)."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("AVSC_REALDATA", ROOT.parent / "shared" / "realdata"))


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    monkeypatch.setenv("AVSC_PROGRESS", "0")
