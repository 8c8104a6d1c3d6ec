"""Small shared helpers: atomic writes, progress bars that batch runs switch off, versions."""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

TMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary file lives in the same folder (so the rename is atomic on POSIX) and its
    name contains ``.tmp-`` so that :func:`remove_stale_tmp` can clean up after a killed run.
    On error the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and (exc.filename is None or TMP_MARK in str(exc.filename)):
            raise _naming(exc, path) from exc  # e.g. a full disk names no file by itself
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` again, naming ``path`` (the file being written) instead of no file or a
    temporary name: ``OSError(28, 'No space left on device', path)``."""
    if exc.errno is None:
        return OSError(f"{path}: cannot write ({exc})")
    return type(exc)(exc.errno, f"cannot write: {exc.strerror}", str(path))


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask's
    set-and-restore would race with other threads creating files)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii", errors="replace")
        for line in status.splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


#: temporary names made by :func:`atomic_path`: ``.<name>.tmp-<mkstemp suffix>``
TMP_NAME = re.compile(r"^\..+" + re.escape(TMP_MARK) + r"[A-Za-z0-9_]{6,}$")


def remove_own_tmp(folders: Iterable[str | os.PathLike]) -> int:
    """Delete the temporary files that :func:`atomic_path` left in ``folders`` (not below
    them) when a run was killed; nothing else, whatever its name. Returns the count."""
    count = 0
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if TMP_NAME.match(p.name) and p.is_file() and not p.is_symlink():
                p.unlink()
                count += 1
    return count


class LockedError(RuntimeError):
    """Another run holds the lock of a store or training output; names that run."""


LOCK_NAME = ".avsc.lock"


@contextlib.contextmanager
def exclusive_lock(lock_file: str | os.PathLike, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (``filelock``: ``fcntl.flock`` on POSIX, so a
    killed process never leaves a stale lock) while the block runs; ``what`` says what it
    guards ("feature store runs/cache"). Re-entrant within one process. Without ``wait`` a
    lock held by another process is a :class:`LockedError` naming that run (pid, host,
    command, start time, from ``<lock_file>.json``); with ``wait`` it waits, logging who
    holds it."""
    import logging
    import socket
    import time

    import filelock

    lock_file = Path(lock_file).resolve()
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    owner_file = lock_file.with_name(lock_file.name + ".json")
    lock = filelock.FileLock(str(lock_file), is_singleton=True)
    if lock.is_locked:  # held by this process already: re-entry
        with lock:
            yield
        return
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        holder = _lock_owner(owner_file)
        if not wait:
            raise LockedError(
                f"{what} is in use by another avsc run ({holder}); wait for it to finish "
                "or use another folder"
            ) from None
        logging.getLogger("avsc").info("waiting for %s, in use by %s", what, holder)
        lock.acquire()
    try:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": _command_line(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        with contextlib.suppress(OSError):
            owner_file.write_text(json.dumps(info) + "\n", encoding="utf-8")
        yield
    finally:
        with contextlib.suppress(OSError):
            owner_file.unlink()
        lock.release()


def _command_line() -> str:
    """This process's command line as the user typed it (``avsc train ...`` also when run as
    ``python -m avsc``)."""
    argv = list(sys.argv) or [sys.executable]
    first = Path(argv[0])
    if first.name == "avsc" or (first.name == "__main__.py" and first.parent.name == "avsc"):
        argv[0] = "avsc"
    return " ".join(argv)


def _lock_owner(owner_file: Path) -> str:
    try:
        info = json.loads(owner_file.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}"
    except (OSError, ValueError, KeyError):
        return "a process that has not said who it is yet"


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """While the block runs, SIGTERM (a scheduler's preemption, ``kill``) raises
    ``SystemExit(143)`` in the main thread instead of ending the process on the spot, so the
    block's ``except``/``finally`` keep its work as they do on Ctrl-C. Elsewhere than the
    main thread, nothing changes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # type: ignore[no-untyped-def]
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


#: set by ``avsc run`` for the notebooks it executes (papermill saves no widget state)
BATCH_ENV = "AVSC_BATCH"


_RETAINED = False


# Names and text files, whatever the locale. Under a non-UTF-8 locale (LC_ALL=C with
# PYTHONUTF8=0) Python holds a non-ASCII file name as the str os.fsdecode gives: its bytes
# with surrogate escapes. avsc keeps every name in that form (what the file system gives it,
# what the OS functions take), writes its text files as UTF-8 with the escapes turned back
# into the name's own bytes (TEXT_OUT), and reads the names in a text file back into the
# same form (NAMES_IN, fs_str). Where the locale is UTF-8, all of this is plain UTF-8.
TEXT_OUT = {"encoding": "utf-8", "errors": "surrogateescape"}
NAMES_IN = {"encoding": sys.getfilesystemencoding(), "errors": "surrogateescape"}
_FS_UTF8 = codecs.lookup(sys.getfilesystemencoding()).name == "utf-8"  # names are UTF-8 text


def fs_str(text: str) -> str:
    """UTF-8 text (a name read from a user's CSV, labels file or manifest) as the str the
    file system gives for a name of those bytes: the text itself where the locale is UTF-8,
    its UTF-8 bytes with surrogate escapes where it is not (``LC_ALL=C``)."""
    if _FS_UTF8:
        return text
    return os.fsdecode(text.encode("utf-8", "surrogateescape"))


def read_names_csv(path: str | os.PathLike, **kwargs: Any) -> Any:
    """``pandas.read_csv`` of a CSV avsc wrote (UTF-8), with its text (clip ids, paths,
    labels, the header) in the form the file system gives names (:func:`fs_str`)."""
    import pandas as pd

    df = pd.read_csv(path, encoding="utf-8", encoding_errors="surrogateescape", **kwargs)
    if _FS_UTF8:  # nothing to convert
        return df
    df.columns = [fs_str(c) if isinstance(c, str) else c for c in df.columns]
    for c in df.columns:
        if not pd.api.types.is_numeric_dtype(df[c]):
            df[c] = [fs_str(v) if isinstance(v, str) else v for v in df[c]]
    return df


def text_bytes(text: str) -> bytes:
    """``text`` as the bytes avsc writes for it (UTF-8; a name's surrogate escapes as the
    name's own bytes): for digests that must not depend on the locale."""
    return text.encode("utf-8", "surrogateescape")


def native_path(path: str | os.PathLike) -> str | bytes:
    """``path`` for a library that encodes file names strictly (libsndfile through
    ``soundfile``): its bytes (``os.fsencode``) on POSIX, so a non-ASCII name opens whatever
    the locale (under ``LC_ALL=C`` Python holds it with surrogate escapes, which an ASCII
    encoder refuses); the path itself on Windows, whose wide-character API takes any name."""
    return os.fspath(path) if os.name == "nt" else os.fsencode(path)


def granted_cpus() -> int:
    """The CPUs this process is granted: the fewest of the machine's cores, its affinity mask
    (``taskset``, a Slurm job's cpuset), the cgroup CPU quota where the container shows one
    at ``/sys/fs/cgroup`` (Docker ``--cpus``, Kubernetes limits; rounded up) and
    ``LOKY_MAX_CPU_COUNT``. joblib's ``cpu_count`` (loky) reads them all."""
    from joblib import cpu_count

    return max(1, int(cpu_count(only_physical_cores=False)))


_TORCH_DEFAULT_THREADS: int | None = None  # torch's own count, seen before avsc first sets it


def training_threads(asked: int | None) -> int:
    """torch's intra-op thread count for CPU work: ``asked`` (``train.cpu_threads``) where
    given; else torch's own count (which follows ``OMP_NUM_THREADS`` and the affinity mask,
    as it was before avsc first set one), but never more than the CPUs granted (a cgroup
    quota, which torch does not see: 64 threads on a 4-CPU container quota otherwise)."""
    global _TORCH_DEFAULT_THREADS
    import torch

    if _TORCH_DEFAULT_THREADS is None:
        _TORCH_DEFAULT_THREADS = torch.get_num_threads()
    if asked is not None:
        return asked
    return max(1, min(_TORCH_DEFAULT_THREADS, granted_cpus()))


def retain_freed_memory() -> bool:
    """Keep the memory a process frees for its next allocations (glibc only; idempotent).

    glibc's ``malloc`` gives large blocks their own ``mmap`` and returns them, and the top of
    its heap, to the system when they are freed, so a training step that allocates tens of
    MB of gradients and optimizer temporaries and frees them again takes fresh, zeroed pages
    from the kernel every step (about 2,000 page faults per step of the acoustic encoder).
    This raises ``M_MMAP_THRESHOLD`` to 256 MiB and ``M_TRIM_THRESHOLD`` to 1 GiB
    (``mallopt``, the settings ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` give at
    start-up), so freed blocks are reused. Where the allocator is another, nothing happens.
    Only where memory is placed changes, never a value. Returns whether it applied."""
    global _RETAINED
    if _RETAINED or not sys.platform.startswith("linux"):
        return _RETAINED
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: no such tunables
            return False
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    # glibc before 2.26 (or so) refuses an mmap threshold above 32 MiB on 64-bit systems
    mmap = bool(mallopt(m_mmap_threshold, 256 << 20)) or bool(mallopt(m_mmap_threshold, 32 << 20))
    trim = bool(mallopt(m_trim_threshold, 1 << 30))
    _RETAINED = mmap and trim
    return _RETAINED


def in_batch_run() -> bool:
    """Whether this is a notebook executed by ``avsc run`` (papermill), not a live session."""
    return os.environ.get(BATCH_ENV, "").strip() not in ("", "0")


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (JupyterLab, or papermill's batch run)."""
    return "ipykernel" in sys.modules


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether to show progress bars.

    ``enabled`` wins when given. Otherwise the environment variable ``AVSC_PROGRESS``
    (``0``/``1``) decides, and by default bars are shown only on an interactive terminal or
    in Jupyter. Batch runs (papermill) set ``AVSC_PROGRESS=0``: tqdm widgets saved by
    papermill would show "0 %" forever.
    """
    if enabled is not None:
        return enabled
    env = os.environ.get("AVSC_PROGRESS")
    if env is not None:
        return env.strip().lower() not in ("0", "false", "no", "off", "")
    if "ipykernel" in sys.modules:
        return True
    return sys.stderr.isatty()


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str | None = None,
    enabled: bool | None = None,
    **kwargs: Any,
) -> Iterable[T]:
    """Wrap ``iterable`` in ``tqdm.auto`` when progress bars are enabled, else return it."""
    if not progress_enabled(enabled):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, **kwargs)


def versions() -> dict[str, str]:
    """Versions of Python and the main libraries, for manifests and checkpoints, and what
    else decides the floating-point results of a run on the CPU: torch's thread count and
    the instruction set its kernels use (the same seed gives other numbers with another
    thread count or instruction set: README, "Reproducing the demo")."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for name in (
        "avsc",
        "numpy",
        "scipy",
        "torch",
        "torchvision",
        "timm",
        "librosa",
        "PyWavelets",
        "av",
        "soundfile",
        "scikit-learn",
        "pandas",
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    if "torch" in sys.modules:  # a process that uses torch (never imported just for this)
        out.update(numerics())
    return out


def numerics() -> dict[str, str]:
    """torch's intra-op thread count, the CPU instruction set its kernels use, and the CPU
    model (two CPUs with one instruction set can still sum in other orders: the demo's
    audio-only log loss was 1.277 on one AVX-512 machine and 1.338 on an AMD EPYC one, with
    the same libraries and threads)."""
    import torch

    out = {"torch_threads": str(torch.get_num_threads())}
    with contextlib.suppress(Exception):
        out["cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    out["cpu"] = cpu_model()
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    import platform

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
