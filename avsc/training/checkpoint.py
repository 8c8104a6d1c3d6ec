"""Checkpoints: plain dicts of tensors and built-in types, written atomically, loaded with
``torch.load(weights_only=True)``. A file that needs anything else to load is refused."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from avsc.utils import atomic_path


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be loaded safely; names the file."""


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` (a plain dict: ``model``, ``optimizer``, ``scheduler``, ``epoch``,
    ``metrics``, ``config`` as a dict, ``versions``, ...) to a temporary file beside ``path``
    and rename it, so that a crash never leaves a half-written checkpoint."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f"a checkpoint is a plain dict, got {type(checkpoint).__name__}")
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(plain(checkpoint), tmp)
    except (OSError, RuntimeError) as exc:
        full = _disk_full(exc, path.parent)
        if full is None:
            raise
        raise OSError(errno.ENOSPC, full, str(path)) from exc
    return path


def _disk_full(exc: BaseException, folder: Path) -> str | None:
    """What to say when ``exc`` (from writing a checkpoint into ``folder``) means the disk is
    full, else None. torch's writer reports a short write as ``RuntimeError: [enforce fail
    at inline_container.cc] . unexpected pos N vs M``, which names neither."""
    import shutil

    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    short_write = isinstance(exc, RuntimeError) and "unexpected pos" in str(exc)
    no_space = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not (no_space or (short_write and (free is None or free < 256 << 20))):
        return None
    left = "" if free is None else f" ({free / 2**20:.1f} MiB free)"
    return (
        f"no space left on the device of {folder}{left} while writing this checkpoint; the "
        "previous one, if any, is intact: free some space and rerun (the run resumes)"
    )


_SCALARS = (bool, int, float, str, bytes, type(None))


def plain(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` with every value a tensor, a built-in scalar, or a list / tuple / dict of them
    (``str`` subclasses such as ``torch.__version__`` become ``str``, numpy scalars numbers);
    anything else is a :class:`TypeError` naming where it sits."""
    import numpy as np

    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        return {plain(k, where): plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, _SCALARS):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{where}: {type(obj).__name__} cannot go into a plain-dict checkpoint")


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``: tensors, numbers, strings and
    containers only. Anything that would need arbitrary unpickling is refused with
    :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        first = next(
            (ln for ln in lines if "Unsupported" in ln or "global" in ln.lower()),
            lines[0] if lines else "",
        )
        first = first[:300]
        raise CheckpointError(
            f"{path}: refused: it needs more than plain tensors and dicts to load "
            f"(torch.load(weights_only=True) said: {first}). avsc never unpickles arbitrary "
            "objects; re-save it as a plain dict of tensors"
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: a checkpoint must be a dict, found {type(obj).__name__}")
    return obj
