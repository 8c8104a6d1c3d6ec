"""Where a sweep's points run: this machine's pool of processes (``launcher: local``), or
one job per point through submitit, on a Slurm cluster (``launcher: slurm``) or with
submitit's local executor (``launcher: submitit-local``, the same code path without a
cluster).

A point runs its ``avsc`` command (:func:`run_point`), which records it in ``point.json``.
On Slurm's signal before the time limit, or a preemption, submitit calls
:meth:`PointJob.checkpoint`: the running command is stopped and the job requeued; the
requeued job runs the command again, and the training resumes from its ``last.pt`` (written
after every epoch), so its result is an uninterrupted run's. A requeue by the cluster
(``scontrol requeue``) restarts the job the same way."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from avsc.utils import atomic_write_json

POINT_FILE = "point.json"
#: how long a job whose command Slurm stopped waits for Slurm to end it (KillWait: 30 s)
SLURM_STOP_WAIT = 300.0
#: Slurm settings of a spec (``slurm:``) -> submitit's parameter
SLURM_KEYS = {
    "partition": "slurm_partition",
    "time": "timeout_min",
    "gpus": "gpus_per_node",
    "cpus": "cpus_per_task",
    "mem": "mem_gb",
    "account": "slurm_account",
    "qos": "slurm_qos",
    "constraint": "slurm_constraint",
    "signal_delay": "slurm_signal_delay_s",
}


def yaml_value(value: Any) -> str:
    """``value`` as the text of a ``-p key=VALUE`` (YAML, one line)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...")


def point_status(folder: Path) -> dict[str, Any]:
    """A point's ``point.json`` (``status``: done, failed, running), or ``{}``."""
    try:
        return json.loads((folder / POINT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_point(
    cmd: list[str],
    folder: str | os.PathLike,
    env: dict[str, str],
    started: Callable[[subprocess.Popen], None] | None = None,
) -> dict[str, Any]:
    """Run one point's command with its output in ``folder/log.txt``; its ``point.json``
    records the outcome (``status`` done or failed, the return code, the seconds, the last
    error line). Returns that record. This is what a launcher runs (in a thread here, in a
    Slurm job there); ``started(process)`` is told the command's process."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = point_status(folder)
    record.update(
        status="running",
        attempts=record.get("attempts", 0) + 1,  # a requeued job runs its command again
        command=cmd,
        started=time.time(),
        host=os.uname().nodename,
        pid=os.getpid(),  # the job's own process (Slurm's signal goes there)
    )
    atomic_write_json(folder / POINT_FILE, record)
    t0 = time.perf_counter()
    with open(folder / "log.txt", "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
        if started is not None:
            started(proc)
        record["command_pid"] = proc.pid
        atomic_write_json(folder / POINT_FILE, record)
        rc = proc.wait()
    record.update(
        status="done" if rc == 0 else "failed",
        returncode=rc,
        seconds=round(time.perf_counter() - t0, 1),
        error=None if rc == 0 else _last_error(folder / "log.txt"),
    )
    atomic_write_json(folder / POINT_FILE, record)
    return record


def _last_error(log_file: Path) -> str:
    lines = [ln for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["(no output)"])[-1].strip()[:500]


def _said(item: str, record: dict[str, Any], where: str) -> None:
    state = "done" if record["status"] == "done" else f"FAILED: {record.get('error')}"
    print(f"[avsc] {item}: {state} ({where})", flush=True)


def run_local(
    commands: dict[str, list[str]], root: Path, env: dict[str, str], jobs: int
) -> dict[str, dict[str, Any]]:
    """Run the points' commands here, ``jobs`` at once; each point's record. Interrupted
    (Ctrl-C, SIGTERM), the commands running are stopped: every point that finished is kept,
    and a training stopped mid-way resumes from its ``last.pt`` on the next run."""
    records: dict[str, dict[str, Any]] = {}
    running: set[subprocess.Popen] = set()
    stopping = threading.Event()

    def started(proc: subprocess.Popen) -> None:
        running.add(proc)
        if stopping.is_set():  # started as the sweep was interrupted: stopped at once
            proc.terminate()

    def one(name: str) -> None:
        records[name] = run_point(commands[name], root / name, env, started=started)
        _said(name, records[name], f"{records[name].get('seconds', 0):.0f} s")

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(one, name) for name in commands]
        for f in futures:
            f.result()
    except BaseException:
        stopping.set()  # first: a command started from now on stops itself (see started)
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in list(running):
            if proc.poll() is None:
                proc.terminate()
        raise
    pool.shutdown()
    return records


try:  # submitit's base class of a job that checkpoints and requeues on the signal
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - submitit is a dependency; the error says so below
    Checkpointable = object  # type: ignore[misc,assignment]


class PointJob(Checkpointable):
    """One point's command as a submitit job."""

    def __init__(self, cmd: list[str], folder: str, env: dict[str, str]):
        self.cmd, self.folder, self.env = list(cmd), str(folder), dict(env)
        self._proc: subprocess.Popen | None = None

    def __call__(self) -> dict[str, Any]:
        record = run_point(self.cmd, self.folder, self.env, started=self._started)
        if record.get("returncode") == -signal.SIGTERM and os.environ.get("SLURM_JOB_ID"):
            # Slurm is ending this job (scontrol requeue, preemption, scancel) and ended the
            # command: the job's own end comes next (after KillWait). Returning now would
            # report as failed a point that a requeue runs again.
            record.update(status="stopped", error="stopped by Slurm (requeued or cancelled)")
            atomic_write_json(Path(self.folder) / POINT_FILE, record)
            time.sleep(SLURM_STOP_WAIT)
        return record

    def _started(self, proc: subprocess.Popen) -> None:
        self._proc = proc

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Stop the running command (its training keeps every finished epoch in ``last.pt``)
        and requeue this job, which runs it again and resumes there."""
        if self._proc is not None:
            _stop(self._proc)
        record = point_status(Path(self.folder))
        record.update(status="requeued", requeued=record.get("requeued", 0) + 1)
        atomic_write_json(Path(self.folder) / POINT_FILE, record)
        return _delayed(PointJob(self.cmd, self.folder, self.env))

    def __getstate__(self) -> dict[str, Any]:  # the process is this job's own
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._proc = None


def _stop(proc: subprocess.Popen, grace: float = 60.0) -> None:
    """Terminate ``proc`` (SIGTERM, SIGKILL after ``grace`` seconds) and reap it. Called from
    submitit's signal handler, which interrupts :func:`run_point` inside ``proc.wait()``:
    that call holds the Popen's lock, so the process is reaped with ``os.waitpid``."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while True:
        try:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped already
            return
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.05)


def _delayed(job: PointJob):
    from submitit.helpers import DelayedSubmission

    return DelayedSubmission(job)


class LaunchError(RuntimeError):
    """A launcher that cannot run the points; names the setting."""


def check_launcher(launcher: str) -> None:
    """A :class:`LaunchError` in one line when ``launcher`` cannot run here: submitit is
    missing, or (slurm) ``sbatch`` is not on PATH. Called before anything is written."""
    if launcher == "local":
        return
    try:
        import submitit  # noqa: F401
    except ImportError as exc:  # pragma: no cover - a dependency
        raise LaunchError(f"launcher {launcher}: needs submitit (pip install submitit)") from exc
    if launcher == "slurm":
        import shutil

        if shutil.which("sbatch") is None:
            raise LaunchError(
                "launcher slurm: sbatch is not on PATH (no Slurm here); use --launcher local "
                "or run avsc on the cluster's login node"
            )


def executor(launcher: str, name: str, slurm: dict[str, Any], folder: Path):
    """submitit's executor for ``launcher`` (slurm, submitit-local), with the ``slurm:``
    settings (:data:`SLURM_KEYS`)."""
    check_launcher(launcher)  # its one-line message where submitit or sbatch is missing
    import submitit

    cluster = "slurm" if launcher == "slurm" else "local"
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: dict[str, Any] = {"name": f"avsc-{name}"}
    for key, value in slurm.items():
        name = SLURM_KEYS[key]
        if cluster != "slurm" and name.startswith("slurm_"):
            continue  # submitit's local executor takes no Slurm settings
        params[name] = value
    params.setdefault("timeout_min", 24 * 60)
    try:
        ex.update_parameters(**params)
    except (ValueError, TypeError) as exc:
        raise LaunchError(f"launcher {launcher}: slurm settings: {exc}") from exc
    return ex


def run_submitit(
    launcher: str,
    name: str,
    slurm: dict[str, Any],
    commands: dict[str, list[str]],
    root: Path,
    env: dict[str, str],
    after: dict[str, list[str]] | None = None,
    what: str = "point",
) -> dict[str, dict[str, Any]]:
    """Submit one job per item (``commands``: item -> its command; its records in
    ``root/<item>/``) and wait for them; each item's record (``point.json``). ``after``:
    item -> the items it needs finished first: it is submitted once they are done, and not
    run (failed, naming them) when one of them failed."""
    if not commands:
        return {}
    after = after or {}
    folder = root / ".submitit"  # submitit's files of every job
    ex = executor(launcher, name, slurm, folder)
    records: dict[str, dict[str, Any]] = {}
    pending = dict(commands)
    waiting: dict[str, Any] = {}
    gone: dict[str, float] = {}  # Slurm jobs no longer queued: since when
    while pending or waiting:
        for item in list(pending):
            needs = [n for n in after.get(item, ()) if n in commands]
            failed = [n for n in needs if n in records and records[n]["status"] != "done"]
            if failed:  # never runs: say why
                del pending[item]
                record = point_status(root / item)
                record.update(status="failed", error=f"not run: {', '.join(failed)} failed")
                atomic_write_json(_folder(root, item) / POINT_FILE, record)
                records[item] = record
                _said(item, record, "not submitted")
            elif all(n in records for n in needs):
                del pending[item]
                waiting[item] = _still_held(launcher, item, root, folder) or _submit(
                    ex, launcher, slurm, item, commands[item], root, env, what
                )
        if pending and not waiting:  # nothing runs and nothing can start
            raise LaunchError(f"{what}s {', '.join(pending)} wait on each other (a cycle)")
        queued = _queued([j.job_id for j in waiting.values()]) if launcher == "slurm" else None
        for item, job in list(waiting.items()):
            if queued is None:  # submitit's own check (its local executor; sacct)
                finished = job.done()
            else:  # the job's result, or its absence from the queue for a while
                finished = job.paths.result_pickle.exists()
                if not finished and str(job.job_id) not in queued:
                    since = gone.setdefault(item, time.monotonic())
                    finished = time.monotonic() - since > SLURM_GONE_S
            if not finished:
                continue
            del waiting[item]
            try:
                records[item] = job.result()
            except Exception as exc:  # the job itself failed (killed, out of memory...)
                record = point_status(root / item)
                record.update(status="failed", error=" ".join(str(exc).split())[-500:])
                records[item] = record
            _said(item, records[item], f"job {job.job_id}")
        if waiting:
            time.sleep(1.0)
    return records


def _folder(root: Path, item: str) -> Path:
    (root / item).mkdir(parents=True, exist_ok=True)
    return root / item


def _still_held(launcher: str, item: str, root: Path, folder: Path):
    """The Slurm job of an earlier submission of ``item`` that the cluster still holds
    (pending, running or requeued), or None. When the ``avsc`` process that waits on the jobs
    is gone (a closed SSH session on the login node) the jobs run on; the same command, run
    again, waits on them instead of submitting a second job into the same folder."""
    if launcher != "slurm":
        return None
    record = point_status(root / item)
    job_id = str(record.get("job_id") or "")
    if not job_id or record.get("status") not in ("submitted", "running"):
        return None
    if job_id not in (_queued([job_id]) or set()):
        return None  # gone without finishing (killed, timed out): submitted again
    import submitit

    print(
        f"[avsc] {item}: job {job_id} of an earlier submission is still queued or running: "
        "waiting for it (not submitted again)",
        flush=True,
    )
    return submitit.SlurmJob(folder=folder, job_id=job_id)


def _submit(ex, launcher, slurm, item, cmd, root, env, what):
    try:
        job = ex.submit(PointJob(cmd, str(root / item), env))
    except Exception as exc:  # sbatch's own message: an unknown partition, account...
        why = " ".join(str(exc).split())[:300]
        setting = ", ".join(f"slurm.{k}={v}" for k, v in slurm.items()) or "defaults"
        raise LaunchError(
            f"launcher {launcher}: submitting {what} {item} failed ({setting}): {why}"
        ) from exc
    record = point_status(root / item)
    record.update(status="submitted", job_id=str(job.job_id))
    atomic_write_json(_folder(root, item) / POINT_FILE, record)
    print(f"[avsc] {item}: submitted as job {job.job_id}", flush=True)
    return job


#: a Slurm job that left the queue without a result is failed after this many seconds
SLURM_GONE_S = 60.0


def _queued(job_ids: list[str]) -> set[str] | None:
    """The ids of ``job_ids`` that Slurm still holds (pending, running, completing,
    requeued), from ``squeue`` (not submitit's ``sacct``, which needs the cluster's
    accounting database); None where squeue does not answer."""
    r = subprocess.run(
        ["squeue", "-h", "-o", "%i", "-j", ",".join(str(j) for j in job_ids)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0 and "Invalid job id" not in r.stderr:
        return None
    return {line.strip() for line in r.stdout.splitlines() if line.strip()}
