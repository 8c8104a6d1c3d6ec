"""Normalisation statistics: per (channel, bin) mean and std over a split's training
clips (method.md 2.7)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from avsc.features.store.entries import load_entry, save_npz
from avsc.features.store.errors import StoreError
from avsc.features.store.layout import stats_path
from avsc.utils import text_bytes

log = logging.getLogger("avsc.features.store")


@dataclass(frozen=True)
class NormStats:
    """Per (channel, bin) mean and standard deviation of one feature kind (method.md 2.7)."""

    mean: np.ndarray  # (2, F) float32
    std: np.ndarray  # (2, F) float32
    count: int  # feature frames the statistics were computed over
    clips: int

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise ``(..., 2, F)`` features."""
        return ((x - self.mean) / self.std).astype(np.float32, copy=False)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "mean": self.mean,
            "std": self.std,
            "count": np.int64(self.count),
            "clips": np.int64(self.clips),
        }

    @classmethod
    def load(cls, path: str | os.PathLike) -> NormStats:
        try:
            with load_entry(Path(path)) as z:
                return cls(z["mean"], z["std"], int(z["count"]), int(z["clips"]))
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(
                f"{path}: damaged normalisation statistics ({type(exc).__name__}: {exc}); "
                "delete the file and rerun avsc preprocess"
            ) from exc


def normalization_stats(arrays: Iterable[np.ndarray], min_std: float = 1e-5) -> NormStats:
    """Streaming per (channel, bin) mean/std over ``(..., 2, F)`` arrays (Chan's merge, in
    float64), one array in memory at a time. Standard deviations below ``min_std`` become 1."""
    n = 0
    mean = m2 = None
    clips = 0
    for arr in arrays:
        a = np.asarray(arr, dtype=np.float64).reshape(-1, *arr.shape[-2:])
        k = a.shape[0]
        mu = a.mean(axis=0)
        m2_k = ((a - mu) ** 2).sum(axis=0)
        if mean is None:
            mean, m2, n = mu, m2_k, k
        else:
            delta = mu - mean
            tot = n + k
            mean = mean + delta * (k / tot)
            m2 = m2 + m2_k + delta**2 * (n * k / tot)
            n = tot
        clips += 1
    if mean is None or n < 2:
        raise StoreError("normalisation statistics need at least two feature frames")
    std = np.sqrt(m2 / n)
    std = np.where(std < min_std, 1.0, std)
    return NormStats(mean.astype(np.float32), std.astype(np.float32), int(n), clips)


def write_stats(store, folder: Path, subsets: pd.DataFrame) -> None:
    """The normalisation statistics of every feature kind over the finished training clips
    of ``subsets``, in the ``stats/`` of the split folder ``folder`` (kept when an earlier run
    computed them over the same clips)."""
    index = store.index
    finished = set(index["clip"]) if len(index) else set()
    train = sorted(c for c in subsets.loc[subsets["subset"] == "train", "clip"] if c in finished)
    if not train:
        log.warning("no finished training clips: no normalisation statistics")
        return
    digest = hashlib.sha1(text_bytes("\n".join(train))).hexdigest()
    for kind in store.features:
        path = stats_path(folder, kind)
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                if "clips_sha1" in z and str(z["clips_sha1"]) == digest:
                    continue
        stats = normalization_stats(store.load_audio(c, kind) for c in train)
        arrays = stats.to_arrays()
        arrays["clips_sha1"] = np.asarray(digest)
        save_npz(path, arrays)
