"""Read access to a feature store: its collection, clips, entries and splits."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from avsc.config import PreprocessConfig
from avsc.features.store.entries import load_entry
from avsc.features.store.errors import StoreError
from avsc.features.store.index import read_index, store_lock
from avsc.features.store.layout import (
    FAILURES,
    MANIFEST,
    META,
    SPLIT,
    SPLIT_SETTINGS,
    STORE_VERSION,
    audio_rel,
    frames_rel,
    split_folder,
    stats_path,
)
from avsc.features.store.stats import NormStats, write_stats
from avsc.features.video import decode_jpeg
from avsc.utils import TEXT_OUT, atomic_path, atomic_write_json, read_names_csv


class FeatureStore:
    """Read access to a feature store written by :func:`preprocess`: its clips (``index``),
    their features and frames, the collection's ``labels`` and ``modalities``, and its splits
    (:meth:`split`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / META
        if not meta_path.is_file():
            raise StoreError(
                f"{self.path}: not a feature store (no store.json); run avsc preprocess"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("version") != STORE_VERSION:
            raise StoreError(
                f"{meta_path}: store format {meta.get('version')}, this avsc reads {STORE_VERSION}"
            )
        self.meta = meta
        self.config = PreprocessConfig.from_dict(meta["config"])
        self._index: pd.DataFrame | None = None
        self._manifest = None

    # ------------------------------------------------------------------ the collection
    @property
    def labels(self) -> tuple[str, ...]:
        """The class names in class-index order, from the collection's manifest."""
        if "labels" not in self.meta:
            raise StoreError(
                f"{self.path / META}: made by an older avsc that recorded no label "
                "list; rerun avsc preprocess on the same data and --cache to record it (the "
                "features are kept)"
            )
        return tuple(self.meta["labels"])

    @property
    def modalities(self) -> tuple[str, ...]:
        """``("audio", "video")``, ``("audio",)`` or ``("video",)``: what the store holds."""
        return tuple(self.meta.get("modalities", ("audio", "video")))

    @property
    def features(self) -> tuple[str, ...]:
        """The acoustic feature kinds the store holds (none for a video-only collection)."""
        return tuple(self.config.features) if "audio" in self.modalities else ()

    @property
    def recipe(self) -> str:
        return str(self.meta.get("recipe", "tau2021av"))

    @property
    def data_root(self) -> Path:
        return Path(self.meta.get("data_root", ""))

    @property
    def folds(self) -> list[str]:
        return list(self.meta.get("folds") or [])

    def manifest(self):
        """The :class:`avsc.data.Manifest` the store was built from (its ``manifest.csv``,
        paths relative to :attr:`data_root`)."""
        if self._manifest is None:
            from avsc.data.manifest import Manifest

            path = self.path / MANIFEST
            if not path.is_file():
                raise StoreError(f"{path}: no manifest in this store; rerun avsc preprocess")
            df = read_names_csv(path, dtype=str, keep_default_na=False)
            self._manifest = Manifest(
                df,
                self.data_root,
                self.labels,
                self.recipe,
                Path(self.meta.get("source") or self.data_root),
                clip_seconds=self.meta.get("clip_seconds"),
            )
        return self._manifest

    @property
    def index(self) -> pd.DataFrame:
        """One row per finished clip: clip, scene_label, label (the class index), identifier
        (the group), segments, ..."""
        if self._index is None:
            records = list(read_index(self.path).values())
            df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=["clip"])
            if len(df):
                index = {name: i for i, name in enumerate(self.labels)}
                df["label"] = df["scene_label"].map(index).fillna(-1).astype(int)
                df = df.sort_values("clip").reset_index(drop=True)
            self._index = df
        return self._index

    @property
    def clips(self) -> list[str]:
        return list(self.index["clip"])

    def audio_path(self, clip: str, kind: str) -> Path:
        return self.path / audio_rel(clip, kind)

    def frames_path(self, clip: str) -> Path:
        return self.path / frames_rel(clip, self.config.frames.format)

    def load_audio(self, clip: str, kind: str = "scalogram", mmap: bool = False) -> np.ndarray:
        """float32 ``(segments, 6, 2, F)`` of ``clip``."""
        path = self.audio_path(clip, kind)
        if not path.is_file():
            raise StoreError(f"{path}: no {kind} features for clip {clip!r} in this store")
        return load_entry(path, clip, mmap)

    def load_frames(self, clip: str, segments: Iterable[int] | None = None) -> np.ndarray:
        """uint8 ``(segments, H, W, 3)`` of ``clip`` (all segments, or those listed)."""
        path = self.frames_path(clip)
        if not path.is_file():
            raise StoreError(f"{path}: no frames for clip {clip!r} in this store")
        if path.suffix == ".npy":
            arr = load_entry(path, clip, mmap=True)
            idx = list(range(arr.shape[0])) if segments is None else list(segments)
            return np.ascontiguousarray(arr[idx])
        try:
            with load_entry(path, clip) as z:
                data, offsets, shape = z["jpeg"], z["offsets"], z["shape"]
            idx = list(range(int(shape[0]))) if segments is None else list(segments)
            return np.stack([decode_jpeg(data[offsets[i] : offsets[i + 1]]) for i in idx])
        except StoreError:
            raise
        except Exception as exc:  # a damaged member or JPEG inside a readable .npz
            raise StoreError(
                f"{path}: damaged store entry of clip {clip} ({type(exc).__name__}: {exc}); "
                "rerun avsc preprocess to rebuild damaged entries (--verify also compares "
                "checksums)"
            ) from exc

    def load_frame_jpegs(self, clip: str) -> list[np.ndarray]:
        """The JPEG bytes (uint8, one array per segment) of ``clip``'s stored frames, for
        decoding elsewhere (``train.decode_on_device``)."""
        path = self.frames_path(clip)
        if not path.is_file():
            raise StoreError(f"{path}: no frames for clip {clip!r} in this store")
        if path.suffix == ".npy":
            raise StoreError(
                f"{path}: this store keeps decoded frames (frames.jpeg_quality null); "
                "train.decode_on_device needs JPEG frames"
            )
        with load_entry(path, clip) as z:
            data, offsets = z["jpeg"], z["offsets"]
        return [data[offsets[i] : offsets[i + 1]].copy() for i in range(len(offsets) - 1)]

    # ------------------------------------------------------------------ splits
    def split(self, data=None) -> StoreSplit:
        """The split of the store's clips under ``data`` (a :class:`DataConfig`; default the
        one the store was built with): the store's own ``split.csv`` and ``stats/`` when it
        decides the same split, else ``splits/<key>/``, made now (under the store's lock) if
        no training asked for it before: the subsets and the normalisation statistics of its
        own training clips. No clip is featurized again."""
        from avsc.data.split import split_settings

        own = self.meta.get("split")
        if data is None:
            settings = own
        else:
            settings = split_settings(self.manifest(), data)
        if settings is None or settings == own:
            return StoreSplit(self, self.path, own)
        key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        folder = split_folder(self.path, key)
        if not (folder / SPLIT_SETTINGS).is_file():
            with store_lock(self.path, wait=True):
                if not (folder / SPLIT_SETTINGS).is_file():
                    write_split(self, folder, data, settings)
        return StoreSplit(self, folder, settings)

    def subsets(self, data=None) -> pd.DataFrame:
        """``clip, subset`` (train / val / evaluate / unused) of :meth:`split`."""
        return self.split(data).subsets()

    def split_summary(self, data=None) -> pd.DataFrame:
        """Clips and groups per class in each subset of :meth:`split`."""
        return self.split(data).summary()

    def normalization(self, kind: str = "scalogram", data=None) -> NormStats:
        """The normalisation statistics of ``kind`` over the training clips of :meth:`split`."""
        return self.split(data).normalization(kind)

    def failures(self) -> pd.DataFrame:
        path = self.path / FAILURES
        if not path.is_file():
            return pd.DataFrame(columns=["clip", "file", "problem"])
        return read_names_csv(path, dtype=str, keep_default_na=False)

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return (
            f"FeatureStore({str(self.path)!r}, clips={len(self)}, labels={len(self.labels)}, "
            f"modalities={'+'.join(self.modalities)}, features={self.features})"
        )


@dataclass
class StoreSplit:
    """One split of a store: ``folder`` holds its ``split.csv`` and ``stats/``."""

    store: FeatureStore
    folder: Path
    settings: dict | None

    def subsets(self) -> pd.DataFrame:
        path = self.folder / SPLIT
        if not path.is_file():
            raise StoreError(f"{path}: no split in this store; rerun avsc preprocess")
        return read_names_csv(path, dtype=str, keep_default_na=False)

    def normalization(self, kind: str = "scalogram") -> NormStats:
        path = stats_path(self.folder, kind)
        if not path.is_file():
            raise StoreError(f"{path}: no normalisation statistics for {kind}")
        return NormStats.load(path)

    def summary(self) -> pd.DataFrame:
        """Clips and groups (``locations``, TAU's) per class in each subset."""
        index = self.store.index[["clip", "scene_label", "identifier"]]
        split = self.subsets().merge(index, on="clip")
        out = split.groupby(["scene_label", "subset"]).agg(
            clips=("clip", "size"), locations=("identifier", "nunique")
        )
        return out.unstack("subset").fillna(0).astype(int).reset_index()


def write_split(store: FeatureStore, folder: Path, data, settings: dict) -> None:
    """``split.csv``, ``stats/<kind>.npz`` and, last, ``split.json`` of a split in ``folder``."""
    from avsc.data.split import assign_subsets

    subsets = assign_subsets(store.manifest(), data)
    with atomic_path(folder / SPLIT) as tmp:
        subsets.to_csv(tmp, index=False, **TEXT_OUT)
    write_stats(store, folder, subsets)
    atomic_write_json(folder / SPLIT_SETTINGS, settings)
