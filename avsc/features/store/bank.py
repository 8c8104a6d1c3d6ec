"""Augmentation banks kept in the store: embeddings of augmented views of every segment's
frame (``bank/<key>/<subset>.npy``, float16 ``(segments, views, D)``, and ``bank.json``).
A training computes a bank; the store says where it lives and writes it, under the store's
lock, so that a preprocess run starting meanwhile neither cleans up its temporary file nor
rewrites the store under it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from avsc.features.store.index import store_lock
from avsc.features.store.layout import bank_folder
from avsc.utils import atomic_path, atomic_write_json


def bank_path(cache: str | os.PathLike, key: str, subset: str) -> Path:
    """Where the bank ``key`` of ``subset`` lives in the store at ``cache``."""
    return bank_folder(Path(cache), key) / f"{subset}.npy"


def write_bank(
    cache: str | os.PathLike, key: str, subset: str, bank: np.ndarray, description: dict
) -> Path:
    """Write the bank ``key`` of ``subset`` and its ``bank.json`` (``description``: what it
    was computed with) into the store at ``cache``, atomically and under the store's lock."""
    path = bank_path(cache, key, subset)
    with store_lock(cache, wait=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, bank, allow_pickle=False)
        atomic_write_json(path.parent / "bank.json", description)
    return path
