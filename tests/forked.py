"""``python -m avsc ARGS`` for the tests without paying for ``import torch`` every time.

A test that runs the command as a user would (its exit code, what it prints, the files it
writes) gets a new process for each call, as ``subprocess.run`` would give it: its own
working folder, environment, standard output and error (file descriptors 1 and 2, so the
output of its own workers is caught too), signal handlers and exit. The process is forked
from a server that imported torch, timm and avsc once (one server per pytest worker), not
started from nothing: a command that fails at once took 0.25 s instead of 4.8 s (most of a
new process's start is ``import torch`` and ``timm``, about 4 CPU-seconds). Where a fork
would not be the same as a new interpreter it is not used, and the command runs as a real
subprocess: an environment that differs in what is read when Python or these modules start
(``PYTHON*``, locale, OpenMP and BLAS settings, the matplotlib backend), or a server that
runs a Python thread after its imports (a fork keeps only the thread that forks).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: what the server imports before it forks: everything the commands import at their start
PRELOAD = (
    "torch",
    "timm",
    "pandas",
    "threadpoolctl",
    "avsc.cli",
    "avsc.training.loop",
    "avsc.experiments.strategies",
    "avsc.experiments.predict",
    "torch.utils.tensorboard",  # a training's curves (train.tensorboard)
)
#: environment variables read when Python or the preloaded modules start
STARTUP = ("PYTHON", "LC_", "LANG", "OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "MPLBACKEND")

_server: dict = {}
_lock = threading.Lock()


def avsc_run(*args, **kw) -> subprocess.CompletedProcess:
    """``subprocess.run([python, "-m", "avsc", *args], capture_output=True, **kw)``, forked
    from the server where that is the same (:func:`python_run`)."""
    return python_run("-m", "avsc", *args, **kw)


def python_run(
    *args,
    env: dict | None = None,
    cwd=None,
    timeout: float | None = None,
    text: bool = True,
    **kw,
) -> subprocess.CompletedProcess:
    """``subprocess.run([python, *args], capture_output=True, ...)`` for ``-m avsc ARGS`` or
    ``SCRIPT.py ARGS`` (run as ``__main__``, its folder first on ``sys.path``), forked from
    the server where that is the same (module docstring); other ``subprocess.run`` options
    (``preexec_fn``) make it a real subprocess."""
    argv = [str(a) for a in args]
    env = dict(os.environ if env is None else env)
    cwd = str(cwd or os.getcwd())
    with _lock:
        server = None if kw else _start()
        if server is None or not _same_start(env, server):
            return subprocess.run(
                [sys.executable, *argv], env=env, cwd=cwd, capture_output=True, text=text,
                timeout=timeout, **kw,
            )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="avsc-forked-") as tmp:
            out, err = Path(tmp) / "out", Path(tmp) / "err"
            request = {"argv": argv, "env": env, "cwd": cwd, "out": str(out), "err": str(err)}
            proc = server["proc"]
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
            pid = _answer(proc)["pid"]
            done = _answer(proc, timeout)
            if done is None:  # as subprocess.run: the command is killed, then the error raised
                os.kill(pid, signal.SIGKILL)
                _answer(proc)
                raise subprocess.TimeoutExpired([sys.executable, *argv], timeout)
            code = done["code"]
            stdout, stderr = out.read_bytes(), err.read_bytes()
    if text:
        stdout, stderr = stdout.decode(), stderr.decode()
    return subprocess.CompletedProcess([sys.executable, *argv], code, stdout, stderr)


def _answer(proc: subprocess.Popen, timeout: float | None = None) -> dict | None:
    """The server's next answer line, read byte by byte from its unbuffered pipe (so that
    ``select`` sees all that is unread); None after ``timeout`` seconds."""
    fd = proc.stdout.fileno()
    deadline = None if timeout is None else time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([fd], [], [], left)[0]:
            return None
        byte = os.read(fd, 1)
        if not byte:
            raise RuntimeError(f"the forked-command server (pid {proc.pid}) has stopped")
        line += byte
    return json.loads(line)


def _startup_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(STARTUP)}


def _same_start(env: dict, server: dict) -> bool:
    """Whether a new process with ``env`` would start as the server did: the same
    :data:`STARTUP` settings, but for those its imports set themselves where they were unset
    (threadpoolctl's ``KMP_DUPLICATE_LIB_OK``), which ``env`` may lack or hold the same."""
    asked, before, after = _startup_env(env), server["before"], server["after"]
    own = set(after) - set(before)
    return all(
        asked.get(k) == after.get(k) for k in set(asked) | set(after) if k not in own
    ) and all(asked.get(k) in (None, after[k]) for k in own)


def _start() -> dict | None:
    """This pytest worker's server, started on first use; None where it cannot fork safely."""
    if "proc" in _server or _server.get("failed"):
        return _server if "proc" in _server else None
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tests.forked import serve; serve()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
    )  # fmt: skip
    try:
        hello = _answer(proc)
    except RuntimeError:
        hello = {}
    if not hello.get("single_threaded"):
        proc.kill()
        proc.wait()
        _server["failed"] = True
        return None
    _server.update(proc=proc, before=hello["before"], after=hello["after"])
    atexit.register(_stop, proc)
    return _server


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def serve() -> None:
    """The server: import :data:`PRELOAD`, then fork one child per request line on stdin
    and answer its pid, then its exit code, one JSON line each."""
    import importlib

    before = _startup_env(dict(os.environ))
    answer = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)  # the protocol is on `answer`; nothing else may write there
    for name in PRELOAD:
        importlib.import_module(name)
    # Python threads would be lost in the child; the only other thread is OpenBLAS's pool
    # (numpy's), which shuts down before a fork and starts again after it (pthread_atfork)
    hello = {"single_threaded": threading.active_count() == 1, "before": before}
    answer.write(json.dumps({**hello, "after": _startup_env(dict(os.environ))}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            answer.close()
            os.dup2(devnull, 0)
            _child(request)
        answer.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        answer.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")


def _child(request: dict) -> None:
    """Run ``avsc.cli.main`` as ``python -m avsc`` would, or a script as ``python SCRIPT``
    would, in the forked process; never returns."""
    code = 1
    try:
        import io
        import traceback

        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        encoding = sys.stdout.encoding
        for fd, path in ((1, request["out"]), (2, request["err"])):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(f, fd)
            os.close(f)
        sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), encoding=encoding)
        sys.stderr = io.TextIOWrapper(
            open(2, "wb", closefd=False), encoding=encoding, errors="backslashreplace",
            line_buffering=True,
        )  # fmt: skip
        argv = request["argv"]
        if argv[:2] == ["-m", "avsc"]:
            from avsc.cli import main

            sys.argv = [str(ROOT / "avsc" / "__main__.py"), *argv[2:]]
            run = lambda: main(argv[2:])  # noqa: E731
        else:
            import runpy

            script = os.path.abspath(argv[0])
            sys.argv = [script, *argv[1:]]
            if sys.path and sys.path[0] == "":  # the server's `-c`: the cwd, not a script's
                sys.path[0] = os.path.dirname(script)
            else:
                sys.path.insert(0, os.path.dirname(script))
            run = lambda: runpy.run_path(script, run_name="__main__") and 0  # noqa: E731
        try:
            code = run()
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)
