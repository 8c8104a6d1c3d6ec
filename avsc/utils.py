"""Small shared helpers: atomic writes, progress bars that batch runs switch off, versions."""

from __future__ import annotations

import contextlib
import json
import os
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask's
    set-and-restore would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
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


def remove_stale_tmp(folder: str | os.PathLike) -> int:
    """Delete temporary files left by an interrupted run under ``folder``; return the count."""
    count = 0
    for p in Path(folder).rglob(f"*{TMP_MARK}*"):
        if p.is_file():
            p.unlink()
            count += 1
    return count


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
    """Versions of Python and the main libraries, for manifests and checkpoints."""
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
    return out
