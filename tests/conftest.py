"""Shared test fixtures. Real material lives in ../shared/realdata (tests skip where absent)."""

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

from tests.media import make_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("AVSC_REALDATA", ROOT.parent / "shared" / "realdata"))


def pytest_configure(config):
    """Under pytest-xdist (``python3 tasks.py test`` runs its workers side by side) each worker
    is granted its share of the CPUs, as a job on a shared machine would be: avsc's trainings
    (and the notebooks and commands the tests start, which inherit it) then take one thread
    per share instead of every worker taking all the cores. joblib's ``LOKY_MAX_CPU_COUNT``
    is one of the limits ``avsc.utils.granted_cpus`` reads; a value set by the caller wins."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "LOKY_MAX_CPU_COUNT" not in os.environ:
        from avsc.utils import granted_cpus

        os.environ["LOKY_MAX_CPU_COUNT"] = str(max(1, granted_cpus() // workers))


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    monkeypatch.setenv("AVSC_PROGRESS", "0")


@contextlib.contextmanager
def _built_once(tmp_path_factory, name: str):
    """A folder for a session fixture that is built once per test run: under pytest-xdist
    every worker asks for it, the first builds it (holding a file lock) and the others wait
    and reuse it. Yields ``(folder, done)``; the builder writes ``folder/.done`` when it is
    complete, so a half-built folder (a failed fixture) is built again, not reused."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the folder all workers' base temps live in
    folder = shared / f"shared-{name}"
    with FileLock(str(folder) + ".lock"):
        yield folder, (folder / ".done").is_file()


@pytest.fixture(scope="session")
def synth_store(tmp_path_factory):
    """A small synthetic TAU-layout dataset and its feature store, shared by the training,
    evaluation and prediction tests: 10 classes x 6 clips of 3 s, 96x64 video."""
    with _built_once(tmp_path_factory, "synth_store") as (base, done):
        if not done:
            _build_synth_store(base)
            (base / ".done").touch()
    return base / "data", base / "cache"


def copy_store(store: Path, to: Path) -> Path:
    """A private copy of a shared feature store (``synth_store``'s, which tests in other
    pytest-xdist workers use meanwhile): without the lock files and temporary files of a
    run in progress there, which vanish while they are copied."""
    from avsc.utils import LOCK_NAME, TMP_NAME

    def passing(folder, names):
        return [n for n in names if n.startswith(LOCK_NAME) or TMP_NAME.match(n)]

    return Path(shutil.copytree(store, to, ignore=passing))


def _build_synth_store(base: Path) -> None:
    import shutil

    from avsc.config import DataConfig, FrameConfig, PreprocessConfig
    from avsc.data.synth import make_synthetic_dataset
    from avsc.features import preprocess

    shutil.rmtree(base, ignore_errors=True)
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
    assert root == base / "data"


#: the paper profile's rehearsal at the smallest size that runs every code path: 3 clips per
#: class (the fewest the split allows) of 1 s (costs are projected per second of audio), and
#: images of 48 / 32 px where the paper has 288 / 224 (a size given on the command line
#: reaching every system, each backbone its own, is checked)
SERIES_SIZES = {"tf_efficientnetv2_s": 48, "resnet50": 32}
SERIES_OVERRIDES = {
    "data.clip_seconds": 1.0,
    "finetune.image_size": 48,
    "visual.image_size": SERIES_SIZES,
}
#: the test files that read the one series run (the ``series_run`` fixture): one pytest-xdist
#: worker runs them one after the other, as one unit of work
SERIES_FILES = ("tests/test_browser.py", "tests/test_rehearsal.py")
#: seconds each test file took (``python3 tasks.py test --store-durations`` rewrites it): the
#: order in which pytest-xdist's workers are handed the files, longest first, so that the
#: short ones fill the time beside the long ones and the workers finish together. A file not
#: listed comes after them; a stale figure changes only the order.
DURATIONS = ROOT / "tests" / "durations.json"


@pytest.fixture(scope="session")
def series_run(tmp_path_factory):
    """The notebook series run end to end once, ``avsc run --profile paper --rehearse`` with
    :data:`SERIES_OVERRIDES` into a temporary folder: the paper profile's code path (its
    backbones, batch 256, 8 loader workers, Places365 fine-tuning, every notebook) on a tiny
    synthetic dataset in the real formats. ``(base, manifest, printed)``: the run in
    ``base/runs/paper-rehearsal``, its figures in ``base/figures/paper-rehearsal``, what it
    printed. ``AVSC_REUSE_SERIES=BASE`` reuses a finished one, for iterating on one test."""
    from avsc.runner import Manifest, run_profile

    reuse = os.environ.get("AVSC_REUSE_SERIES")
    with _built_once(tmp_path_factory, "series") as (base, done):
        if reuse:
            base, done = Path(reuse), True
        elif not done:
            shutil.rmtree(base, ignore_errors=True)  # a half-built run from a failed try
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                manifest = run_profile(
                    "paper",
                    SERIES_OVERRIDES,
                    runs_root=base / "runs",
                    figures_root=base / "figures",
                    rehearse=True,
                )
            (base / "printed.txt").write_text(printed.getvalue())
            (base / ".done").touch()
            return base, manifest, printed.getvalue()
    run = base / "runs" / "paper-rehearsal"
    saved = json.loads((run / "manifest.json").read_text())
    manifest = Manifest("paper", run, saved["notebooks"], saved["git"])
    return base, manifest, (base / "printed.txt").read_text()


def pytest_addoption(parser):
    parser.addoption(
        "--store-durations",
        action="store_true",
        help=f"write the seconds each test file took to {DURATIONS.relative_to(ROOT)}",
    )


_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    _seconds[path] = _seconds.get(path, 0.0) + report.duration


def pytest_sessionfinish(session):
    config = session.config
    if config.getoption("store_durations") and not hasattr(config, "workerinput"):
        try:  # a run of some files updates theirs
            seconds = json.loads(DURATIONS.read_text())
        except (OSError, ValueError):
            seconds = {}
        seconds.update({k: round(v, 1) for k, v in _seconds.items()})
        seconds = dict(sorted(seconds.items(), key=lambda kv: -kv[1]))
        DURATIONS.write_text(json.dumps(seconds, indent=1) + "\n")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's ``--dist loadfile`` with :data:`SERIES_FILES` as one unit of work, and
    the units handed out longest first (:data:`DURATIONS`); xdist's own order is by the
    number of tests. With the measured order the three workers of a 2-core run finished
    within a few seconds of each other; in xdist's, the last ran alone for a minute."""
    if config.getoption("dist") != "loadfile":
        return None
    from collections import OrderedDict

    from xdist.scheduler import LoadFileScheduling

    try:
        measured = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        measured = {}

    def scope_of(path: str) -> str:
        return "series" if path in SERIES_FILES else path

    seconds: dict[str, float] = {}
    for path, s in measured.items():
        seconds[scope_of(path)] = seconds.get(scope_of(path), 0.0) + float(s)

    class LongestFirstQueue(OrderedDict):  # xdist fills it, then hands out from the front
        def __setitem__(self, scope, tests):
            super().__setitem__(scope, tests)
            for key in sorted(self, key=lambda k: -seconds.get(k, 0.0)):  # stable: ties keep
                self.move_to_end(key)  # xdist's order

    class LongestFirst(LoadFileScheduling):
        def __init__(self, config, log=None):
            super().__init__(config, log)
            self.workqueue = LongestFirstQueue()

        def _split_scope(self, nodeid: str) -> str:
            return scope_of(super()._split_scope(nodeid))

    return LongestFirst(config, log)


# the fault tests' small datasets (tests/*/test_*_faults.py)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "root", size=(64, 48))


@pytest.fixture(scope="module")
def twelve_clips(tmp_path_factory):
    """12 small clips (2 s, 64x48) in two classes, for the tests that stop a preprocess
    mid-clip: they stall it on a clip (tests/stall_kind.py) rather than race the clock."""
    root = tmp_path_factory.mktemp("twelve") / "root"
    return make_tiny_dataset(root, ("airport", "bus"), 3, 2)


@pytest.fixture()
def copy(tiny, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(tiny, root)
    return root
