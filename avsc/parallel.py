"""One process pool for avsc's parallel jobs (``avsc preprocess``, ``avsc synth``).

:func:`process_map` runs a function over tasks in worker processes (forked from a fork
server, or spawned) with a bounded number in flight, so memory does not grow with the number
of tasks. Workers exit with the parent process (a killed command leaves no orphans), and a
worker that dies (killed, out of memory, a crash inside a decoder) is blamed on the task it
was running: that task comes back as a :class:`WorkerDied`, a fresh pool takes the others,
and the job goes on.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_STARTED = None  # in a worker: the queue on which it says which task it starts


class PoolError(RuntimeError):
    """Worker processes keep dying before they finish anything."""


class WorkerDied(RuntimeError):
    """The worker process running a task died; ``why`` says how (``was killed by SIGKILL
    (often the out-of-memory killer)``)."""

    def __init__(self, name: str, why: str):
        super().__init__(f"{name}: the worker process running it {why}")
        self.name = name
        self.why = why


def _worker_init(started, environ: dict[str, str] | None = None) -> None:
    """Worker start-up: the caller's environment variables as they are now (a worker forked
    from the fork server would otherwise have the server's, from when it started), exit at
    once when the parent process dies, and remember the queue on which the worker says which
    task it starts (so that its death can be blamed on it)."""
    import threading
    from multiprocessing import connection, parent_process

    if environ is not None and environ != os.environ:
        os.environ.clear()
        os.environ.update(environ)
    global _STARTED
    _STARTED = started
    parent = parent_process()
    if parent is not None:

        def watch() -> None:
            connection.wait([parent.sentinel])
            os._exit(1)

        threading.Thread(target=watch, name="avsc-parent-watch", daemon=True).start()


def _announced(fn, key: int, task: Any) -> Any:
    """In a worker: say which task this worker starts, then run ``fn(task)``."""
    if _STARTED is not None:
        _STARTED.put((os.getpid(), key))
    return fn(task)


def death(exitcode: int | None) -> str:
    """How a process with ``exitcode`` ended, in words."""
    import signal

    if exitcode is None:
        return "died"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        why = " (often the out-of-memory killer)" if name == "SIGKILL" else ""
        return f"was killed by {name}{why}"
    return f"exited with status {exitcode}"


def process_map(
    fn: Callable[[T], Any],
    tasks: Sequence[T],
    workers: int,
    name: Callable[[T], str] = lambda t: t["clip"],  # type: ignore[index]
) -> Iterator[tuple[T, Any]]:
    """``(task, fn(task))`` for every task, in ``workers`` worker processes (in-process for
    1), yielded as they finish with at most ``2 * workers`` tasks in flight. ``fn`` must be
    importable by the workers (a module-level function).

    A worker that dies is blamed on the task it was running: that task is yielded with a
    :class:`WorkerDied` in place of its result (``name(task)`` names it), and a fresh pool
    takes the other tasks. A worker that dies between tasks gets its in-flight tasks retried
    once. Pools that keep breaking before finishing anything raise :class:`PoolError`. An
    exception raised by ``fn`` itself propagates."""
    import signal
    from concurrent.futures.process import BrokenProcessPool

    if workers <= 1:
        for t in tasks:
            yield t, fn(t)
        return
    ctx = _context(fn)
    todo = deque(enumerate(tasks))
    suspect: dict[int, int] = {}  # task -> pool breaks it was in flight for, unexplained
    fruitless = 0  # pools in a row that broke before finishing or blaming anything
    while todo:
        progressed = False
        started = ctx.SimpleQueue()  # written synchronously: no message lost to a kill
        ex = cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(started, dict(os.environ)),
        )
        pending: dict[cf.Future, tuple[int, T]] = {}
        procs: dict[int, Any] = {}
        key_of: dict[int, int] = {}  # worker pid -> the task it last started
        broken: list[tuple[int, T]] = []
        try:
            refused = False  # the pool broke before a submit (a worker died meanwhile)
            while todo or pending:
                while todo and len(pending) < 2 * workers and not broken:
                    key, task = todo.popleft()
                    try:
                        fut = ex.submit(_announced, fn, key, task)
                    except BrokenProcessPool:
                        todo.appendleft((key, task))  # never started: it goes again
                        refused = True
                        break
                    pending[fut] = (key, task)
                    procs.update(getattr(ex, "_processes", None) or {})
                if not pending:
                    break
                # a refused submit: collect everything in flight, then a fresh pool
                until = cf.ALL_COMPLETED if refused else cf.FIRST_COMPLETED
                done, _ = cf.wait(pending, return_when=until)
                _drain(started, key_of)  # keep the pipe empty: a full one blocks the workers
                for fut in done:
                    item = pending.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        broken.append(item)
                        continue
                    progressed = True
                    yield item[1], result
                if broken or refused:
                    cf.wait(pending)  # every other future fails the same way
                    broken += list(pending.values())
                    pending.clear()
                    break
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
        if not broken:
            continue
        _drain(started, key_of)
        dead = {
            pid: p.exitcode
            for pid, p in procs.items()
            if p.exitcode not in (None, 0, -signal.SIGTERM) and pid in key_of
        }
        in_flight, names = dict(broken), {k: name(t) for k, t in broken}
        blamed = {key_of[pid]: code for pid, code in dead.items() if key_of[pid] in in_flight}
        if not blamed:  # no task to blame (a worker died between tasks?): retry them once
            running = {k for k in key_of.values() if k in in_flight}
            for k in running:
                suspect[k] = suspect.get(k, 0) + 1
            blamed = {k: None for k in running if suspect[k] >= 2}
        fruitless = 0 if (progressed or blamed) else fruitless + 1
        if fruitless >= 3:
            codes = sorted({str(p.exitcode) for p in procs.values()})
            raise PoolError(
                f"worker processes keep dying before they finish anything (exit codes "
                f"{', '.join(codes)}); run with --workers 1 to see the error"
            )
        for key, code in blamed.items():
            task = in_flight.pop(key)
            others = sorted({names[k] for k in in_flight} | {names[k] for k in blamed if k != key})
            with_ = f"; in flight at the same time: {', '.join(others)}" if code is None else ""
            yield task, WorkerDied(name(task), f"{death(code)}{with_}")
        todo.extendleft(reversed(list(in_flight.items())))  # the innocent ones go again
        log.warning("a worker process died; %s task(s) go to a fresh pool", len(in_flight))
        with contextlib.suppress(Exception):
            started.close()


#: the modules of avsc's own pools without torch, imported by the fork server whichever
#: pool starts it (``avsc preprocess`` after ``avsc synth`` in one notebook, for example),
#: and the parts of scipy that featurizing a clip imports when first called (sparse
#: filterbank products and resampling, the FFT): a worker would otherwise import them anew
POOL_MODULES = ("avsc.data.synth", "avsc.features.store.builder", "scipy.sparse", "scipy.fft")
#: imported too when the pool that starts the fork server runs a function of the key's
#: module: ``scipy.signal`` (about 1 s), which the synthetic sound's filters need and
#: preprocessing does not, is imported for ``avsc synth`` only
POOL_EXTRA_MODULES = {"avsc.data.synth": ("scipy.signal",)}


def _context(fn: Callable) -> Any:
    """The start method of the pool's workers: ``forkserver`` where the platform has it, with
    ``fn``'s module, :data:`POOL_MODULES` (and :data:`POOL_EXTRA_MODULES` of ``fn``'s
    module) and the caller's main module (when run as
    ``python -m NAME``: a Jupyter kernel's ``ipykernel_launcher``, which each worker runs
    again, as under spawn) imported once in the fork server, so that each worker is forked
    from a process that has them (a spawned worker imports them anew: with torch, seconds
    per worker); ``spawn`` elsewhere. Either way a worker starts from a fresh,
    single-threaded process, never from the caller's (whose threads a fork would leave
    locked). The fork server is started once per process, by its first pool: a module
    only a later pool needs is imported by each of its workers, as under spawn."""
    import sys

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    module = getattr(fn, "__module__", None)
    preload = list(POOL_MODULES) + list(POOL_EXTRA_MODULES.get(module, ()))
    if module and module != "__main__" and module not in preload:
        preload.insert(0, module)
    main = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None)
    if main and not main.endswith("__main__"):
        preload.append(main)  # multiprocessing skips a package's __main__ too
    ctx.set_forkserver_preload(preload)
    return ctx


def _drain(started, key_of: dict[int, int]) -> None:
    """Read every (pid, task) message waiting on the workers' start queue."""
    with contextlib.suppress(Exception):
        while not started.empty():
            pid, key = started.get()
            key_of[pid] = key
