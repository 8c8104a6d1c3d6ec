"""A feature kind for the tests that stop a preprocess mid-clip, so that they need not race
the clock (a run of small clips can finish before a test that samples it acts).

``stall`` is ``fbank``, except that with ``AVSC_TEST_STALL=DIR`` in the environment the first
clip of a run (in whichever worker claims it first: ``DIR/claim`` is created exclusively)
writes its process id to ``DIR/stalled`` and waits inside the extractor until ``DIR/release``
exists (2 minutes at most). A test then kills that worker, kills or interrupts the run, or
lets it go on. With ``AVSC_TEST_STALL_AFTER=N`` as well, the clip that stalls is the first
to start once the store's index (``AVSC_TEST_STALL_INDEX``) lists N finished clips: with one
worker, the run stops after exactly N clips. Loaded with ``avsc preprocess --module
tests.stall_kind --features stall``, never imported by the test modules (it would register
``stall`` in the pytest process).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from avsc.features import register_extractor
from avsc.features.extractors import FBank

ENV = "AVSC_TEST_STALL"


@register_extractor
class Stall(FBank):
    name = "stall"

    def apply(self, rows):
        folder = os.environ.get(ENV)
        if folder and _after_enough():
            gate = Path(folder)
            try:
                os.close(os.open(gate / "claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass  # another clip of this run stalled first
            else:
                tmp = gate / f".stalled-{os.getpid()}"
                tmp.write_text(str(os.getpid()))
                tmp.rename(gate / "stalled")
                deadline = time.monotonic() + 120
                while not (gate / "release").exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
        return super().apply(rows)


def _after_enough() -> bool:
    after = int(os.environ.get("AVSC_TEST_STALL_AFTER", "0"))
    if not after:
        return True
    index = Path(os.environ["AVSC_TEST_STALL_INDEX"])
    return index.is_file() and index.read_text().count("\n") >= after
