"""``avsc run``: execute the numbered notebook series with papermill under a profile.

Writes, under ``runs/<profile>/``, the executed notebooks, the resolved config
(``config.yaml``), each notebook's metrics JSON (``metrics/``) and ``manifest.json``
(package versions, git commit, per-notebook status and time); figures (PDF and PNG) and
tables (CSV and Markdown) go to ``figures/<profile>/``. The profile and every ``-p`` are
resolved and checked once (:mod:`avsc.runconfig`); each notebook gets only the path of the
run's ``config.yaml``. The run stops at the first failing notebook, naming it and its error;
``--from`` resumes there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from avsc.runconfig import (  # noqa: F401 (the runner's names, as before)
    COMMON,
    PROFILES_DIR,
    REHEARSAL,
    REHEARSAL_EXPERIMENT,
    REHEARSAL_PARAMETERS,
    REPO,
    RunError,
    config_of,
    list_profiles,
    load_profile,
    parse_overrides,
    resolve,
)
from avsc.utils import (
    BATCH_ENV,
    atomic_path,
    atomic_write_json,
    exclusive_lock,
    numerics,
    versions,
)

log = logging.getLogger(__name__)

#: the parameters of every notebook: the run's config file, and overrides for interactive use
NOTEBOOK_PARAMETERS = ("config", "overrides")


def check_notebooks(nbs: list[Path]) -> None:
    """A :class:`RunError` naming the notebooks whose ``parameters`` cell lacks
    :data:`NOTEBOOK_PARAMETERS` (papermill would only warn)."""
    missing = {}
    for nb in nbs:
        have = notebook_parameters(nb)
        lack = [k for k in NOTEBOOK_PARAMETERS if k not in have]
        if lack:
            missing[nb.stem] = lack
    if missing:
        raise RunError(f"notebooks without the parameters {NOTEBOOK_PARAMETERS}: {missing}")


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Names and defaults of a notebook's ``parameters`` cell (via papermill)."""
    import papermill as pm

    # inspect_notebook logs "Input Notebook: ..." at INFO for every notebook it reads: noise
    # in front of a preflight's one-message answer, so it is quiet here
    pm_log = logging.getLogger("papermill")
    level = pm_log.level
    pm_log.setLevel(max(level, logging.WARNING))
    try:
        found = pm.inspect_notebook(str(path))
    finally:
        pm_log.setLevel(level)
    return {k: v.get("default") for k, v in found.items()}


def notebooks(folder: str | os.PathLike | None = None) -> list[Path]:
    """The numbered notebooks ``NN_name.ipynb`` in order."""
    folder = Path(folder) if folder else REPO / "notebooks"
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise RunError(f"{folder}: no numbered notebooks found (pass --notebooks DIR)")
    return found


@dataclass
class Manifest:
    profile: str
    run_dir: Path
    notebooks: list[dict[str, Any]] = field(default_factory=list)
    git: dict[str, Any] = field(default_factory=dict)  # the code's state when the run began

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "git": self.git,
            "versions": {**versions(), **numerics()},  # a kernel starts like this process
            "python": sys.executable,
            "notebooks": self.notebooks,
        }

    def write(self) -> None:
        self.notebooks.sort(key=lambda n: n["notebook"])
        atomic_write_json(self.run_dir / "manifest.json", self.to_dict())


def git_commit(outputs: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The repository's commit and whether its files differ from it (``dirty``), leaving out
    ``outputs``: the folders a run writes (committed demo figures a run rewrites are not a
    change to the code that produced them)."""
    exclude = []
    for folder in outputs:
        try:
            rel = Path(folder).resolve().relative_to(REPO)
        except ValueError:
            continue  # outside the repository
        exclude.append(f":(exclude){rel.as_posix()}")
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", *exclude],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if sha.returncode == 0:
            return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": None, "dirty": None}


def run_profile(
    profile: str,
    overrides: dict[str, Any] | None = None,
    start: str | None = None,
    only: list[str] | None = None,
    runs_root: str | os.PathLike = "runs",
    figures_root: str | os.PathLike = "figures",
    notebooks_dir: str | os.PathLike | None = None,
    kernel: str = "python3",
    data_dir: str | None = None,
    cache_dir: str | None = None,
    preflight: bool = True,
    rehearse: bool = False,
    name: str | None = None,
) -> Manifest:
    """Execute the notebook series (from ``start`` on, or ``only`` the listed numbers).
    First, unless ``preflight`` is False, :func:`avsc.preflight.check_run` looks at
    everything the run needs and a :class:`RunError` lists every problem before any work.

    ``rehearse``: the profile's code path on a tiny synthetic dataset in the real formats
    (:data:`REHEARSAL_PARAMETERS`), stamped as a rehearsal on every output, then
    ``projection.json`` in its run folder and a printed table: the full run's hours, disk
    and memory projected from what the rehearsal measured (:mod:`avsc.experiments.projection`).

    ``name``: the run folder ``<runs_root>/<name>`` (and ``<figures_root>/<name>``) in place
    of the profile's name: ``avsc run --name``, a sweep's points."""
    nbs = notebooks(notebooks_dir)
    check_notebooks(nbs)
    params = resolve(
        profile,
        overrides or {},
        Path(runs_root),
        Path(figures_root),
        data_dir,
        cache_dir,
        rehearse=rehearse,
        name=name,
    )
    standin = Path(params["places_root"]) if rehearse and params.get("places_root") else None
    if preflight:
        from avsc.preflight import PreflightError, check_run

        checked = {**params, "places_root": ""} if standin else params  # the rehearsal's own
        problems = check_run(checked, profile, base=REPO, rehearsal=rehearse)  # notebooks' cwd
        if problems:
            raise RunError(str(PreflightError(profile, problems)))
    run_dir = Path(params["run_dir"])
    # one run per run folder at a time: a second would overwrite the first's notebooks
    lock = run_dir.with_name(f".{run_dir.name}.run.lock")
    with exclusive_lock(lock, f"run folder {run_dir}"):
        return _run_series(
            profile, params, nbs, run_dir, start, only, runs_root, figures_root, kernel,
            rehearse, standin,
        )  # fmt: skip


def local_kernel_manager(folder: str | os.PathLike):
    """A Jupyter kernel manager class whose kernels talk over Unix sockets in ``folder``
    (IPC transport), not TCP ports: local to this machine, and without ipykernel's "Kernel is
    running over TCP without encryption" in every run's output. On a system without Unix
    sockets, or where ``folder`` is too long for a socket path, the default (TCP on
    127.0.0.1)."""
    from jupyter_client.manager import AsyncKernelManager

    prefix = str(Path(folder) / "kernel")
    if os.name != "posix" or len(prefix) > 80:  # sun_path holds 108 bytes with the suffix
        return AsyncKernelManager

    class LocalKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = prefix

    return LocalKernelManager


def _run_series(
    profile, params, nbs, run_dir, start, only, runs_root, figures_root, kernel,
    rehearse, standin,
) -> Manifest:  # fmt: skip
    """:func:`run_profile` after its checks, under the run folder's lock."""
    import papermill as pm

    if rehearse and not (start or only) and run_dir.exists():
        if not (run_dir / REHEARSAL).is_file():  # not ours: never touched
            raise RunError(
                f"{run_dir} exists and is not a rehearsal's run folder (no {REHEARSAL}); move "
                "it away or pass --runs DIR"
            )
        shutil.rmtree(run_dir)  # a rehearsal measures from scratch: nothing reloaded
    run_dir.mkdir(parents=True, exist_ok=True)
    if rehearse:
        atomic_write_json(
            run_dir / REHEARSAL,
            {
                "profile": profile,
                "what": "a rehearsal: the profile's code path on synthetic data in the real "
                "formats, random visual weights, "
                f"{params['experiment'].get('train.max_epochs')} epoch(s); not results",
                "parameters": {k: params.get(k) for k in REHEARSAL_PARAMETERS},
                "experiment": {k: params["experiment"].get(k) for k in REHEARSAL_EXPERIMENT},
            },
        )
        if standin and not (standin / "categories_places365.txt").is_file():
            from avsc.data.standin import make_places365_layout_standin

            make_places365_layout_standin(standin)
    with atomic_path(run_dir / "config.yaml") as tmp:
        tmp.write_text(
            yaml.safe_dump({"profile": profile, "parameters": params}, sort_keys=True),
            encoding="utf-8",
        )
    selected = [p for p in nbs if _selected(p, start, only)]
    if not selected:
        raise RunError(f"no notebook matches --from {start} / --only {only}")

    outputs = (Path(runs_root), Path(figures_root))
    manifest = Manifest(profile, run_dir, git=git_commit(outputs))
    old = run_dir / "manifest.json"
    if old.is_file():  # keep the record of notebooks this call does not run (--from, --only)
        prev = json.loads(old.read_text()).get("notebooks", [])
        rerun = {p.stem for p in selected}
        manifest.notebooks = [n for n in prev if n["notebook"] not in rerun]
    env_before = {k: os.environ.get(k) for k in ("AVSC_PROGRESS", "MPLBACKEND", "PATH", BATCH_ENV)}
    os.environ["AVSC_PROGRESS"] = "0"  # tqdm widgets saved by papermill read "0 %" forever
    # figures go into the executed notebooks as PNG outputs (Agg would save only their repr)
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ[BATCH_ENV] = "1"
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    sockets = tempfile.TemporaryDirectory(prefix="avsc-kernel-")  # the kernels' IPC sockets
    kernel_manager = local_kernel_manager(sockets.name)
    try:
        for nb in selected:
            own = {"config": str(run_dir / "config.yaml")}  # the notebook reads the rest there
            out = run_dir / nb.name
            reason = unmet_needs(nb, params["cache_dir"])
            if reason:  # the collection lacks what this notebook works on
                stamp = ""
                if rehearse:  # every output of a rehearsal says so
                    epochs = params["experiment"].get("train.max_epochs")
                    stamp = f"REHEARSAL, random weights, {epochs} epoch(s), not results"
                write_skipped(nb, out, reason, profile, stamp)
                manifest.notebooks.append(
                    {"notebook": nb.stem, "output": str(out), "status": "skipped", "why": reason}
                )
                manifest.write()
                print(f"[avsc run {profile}] {nb.stem} skipped: {reason}", flush=True)
                continue
            t0 = time.perf_counter()
            entry = {"notebook": nb.stem, "output": str(out), "status": "running"}
            log.info("running %s", nb.stem)
            print(f"[avsc run {profile}] {nb.stem} ...", flush=True)
            try:
                pm.execute_notebook(
                    str(nb),
                    str(out),
                    parameters=own,
                    kernel_name=kernel,
                    progress_bar=False,
                    cwd=str(REPO),
                    kernel_manager_class=kernel_manager,
                )
            except pm.PapermillExecutionError as exc:
                entry.update(
                    status="failed",
                    seconds=round(time.perf_counter() - t0, 1),
                    error=f"{exc.ename}: {exc.evalue}",
                )
                manifest.notebooks.append(entry)
                manifest.write()
                raise RunError(
                    f"notebook {nb.stem} failed: {exc.ename}: {exc.evalue} (executed copy: {out}; "
                    f"fix and resume with: avsc run --profile {profile}"
                    f"{' --rehearse' if rehearse else ''} --from {nb.stem[:2]})"
                ) from exc
            entry.update(
                status="ok", seconds=round(time.perf_counter() - t0, 1), peak_rss_mb=_peak_rss_mb()
            )
            manifest.notebooks.append(entry)
            manifest.write()
            print(f"[avsc run {profile}] {nb.stem} ok ({entry['seconds']:.0f} s)", flush=True)
    finally:
        sockets.cleanup()
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    check_metrics(run_dir)
    if rehearse:
        _project(profile, params, manifest)
    return manifest


def notebook_needs(path: Path) -> list[str]:
    """What a notebook works on (its metadata ``avsc.needs``: ``audio``, ``video``,
    ``folds``); empty when it adapts to any collection."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return list(nb.metadata.get("avsc", {}).get("needs", []))


def unmet_needs(path: Path, cache_dir: str | os.PathLike) -> str | None:
    """Why notebook ``path`` has nothing to do on the run's collection (its feature store at
    ``cache_dir`` lacks a modality or folds it needs), or None (also before the store
    exists: the notebook then runs and names what is missing itself)."""
    needs = notebook_needs(path)
    meta_path = Path(cache_dir) / "store.json"
    if not needs or not meta_path.is_file():
        return None
    from avsc.experiments.results import skip_reason
    from avsc.features import FeatureStore

    store = FeatureStore(cache_dir)
    have = set(store.modalities) | ({"folds"} if store.folds else set())
    missing = [n for n in needs if n not in have]
    return skip_reason(missing, needs, store) if missing else None


def write_skipped(path: Path, out: Path, reason: str, profile: str, stamp: str = "") -> None:
    """The notebook as it stands, with a note under its title saying why ``avsc run`` did not
    execute it (and ``stamp``, what the run was), as the run's copy ``out``."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    note = nbformat.v4.new_markdown_cell(
        f"> **Not executed by `avsc run --profile {profile}`:** {reason}."
        + (f"\n>\n> {stamp}" if stamp else "")
    )
    nb.cells.insert(1, note)
    with atomic_path(out) as tmp:
        nbformat.write(nb, str(tmp))


def _peak_rss_mb() -> float:
    """The largest resident memory of any finished child process so far (the notebooks'
    kernels and the workers they waited for), in MiB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS


def _project(profile: str, params: dict[str, Any], manifest: Manifest) -> None:
    """``projection.json`` (and ``projection.md``) of a finished rehearsal, printed."""
    from avsc.experiments.projection import format_projection, project

    full = config_of(load_profile(profile))
    device = "CPU"
    import torch

    if torch.cuda.is_available():
        device = f"GPU {torch.cuda.get_device_name(0)}"
    device += f", {os.cpu_count()} CPU cores"
    p = project(
        manifest.run_dir,
        params["cache_dir"],
        params["figures_dir"],
        full.train.max_epochs,
        full.finetune.epochs,
        device,
        clip_seconds=config_of(params).data.clip_seconds or 10.0,
    )
    atomic_write_json(manifest.run_dir / "projection.json", p)
    text = format_projection(p)
    with atomic_path(manifest.run_dir / "projection.md") as tmp:
        tmp.write_text(f"<!-- rehearsal of profile {profile} -->\n\n{text}\n")
    print(f"[avsc run {profile} --rehearse] projected full run:\n{text}", flush=True)


def _selected(path: Path, start: str | None, only: list[str] | None) -> bool:
    num = path.stem[:2]
    if only:
        return any(num == o.zfill(2)[:2] or path.stem == o for o in only)
    if start:
        return num >= start.zfill(2)[:2]
    return True


def check_metrics(run_dir: Path) -> None:
    """Every number in ``runs/<profile>/metrics/*.json`` must be finite."""
    bad = []
    for path in sorted((run_dir / "metrics").glob("*.json")):
        for key, value in _numbers(json.loads(path.read_text())):
            if not math.isfinite(value):
                bad.append(f"{path.name}:{key}={value}")
    if bad:
        raise RunError(f"non-finite metrics: {bad[:10]}")


def _numbers(obj, prefix=""):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield prefix, float(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{prefix}[{i}]")
