"""One entry file: written atomically with its size and SHA-1, checked against the
index, read back without ever unpickling."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from avsc.features.store.errors import StoreError
from avsc.utils import atomic_write_bytes


def save_npy(path: Path, arr: np.ndarray) -> list:
    """Write ``arr`` as ``.npy`` atomically; return ``[size, sha1]`` of the bytes written."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return save_bytes(path, buf.getvalue())


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> list:
    """Write ``arrays`` as ``.npz`` atomically; return ``[size, sha1]`` of the bytes written."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return save_bytes(path, buf.getvalue())


def save_bytes(path: Path, data: bytes) -> list:
    atomic_write_bytes(path, data)
    return [len(data), hashlib.sha1(data).hexdigest()]


def entry_problem(path: Path, expected: list | None, checksum: bool) -> str | None:
    """Why the store entry at ``path`` is damaged, or None: missing, a size other than the
    index's ``[size, sha1]`` or, with ``checksum``, other bytes."""
    try:
        size = path.stat().st_size
    except OSError:
        return "missing"
    if expected is None:
        return None  # written by an avsc that did not record sizes: existence is all we know
    if size != expected[0]:
        return f"{size} bytes, the index says {expected[0]} (truncated or overwritten)"
    if checksum:
        digest = hashlib.sha1()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != expected[1]:
            return "checksum differs from the index (corrupted)"
    return None


def load_entry(path: Path, clip: str | None = None, mmap: bool = False):
    """``np.load`` of a store entry; a damaged file is a :class:`StoreError` naming it (and
    never a hint to allow pickles: avsc's entries hold plain arrays)."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise
    except Exception as exc:
        text = str(exc)
        if "pickled data" in text or "allow_pickle" in text:
            text = "not a valid .npy/.npz file"
        whose = f" of clip {clip}" if clip else ""
        raise StoreError(
            f"{path}: damaged store entry{whose} ({type(exc).__name__}: {text}); rerun avsc "
            "preprocess to rebuild damaged entries (--verify also compares checksums)"
        ) from exc
