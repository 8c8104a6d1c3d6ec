"""What several strategies share when they run in one session: the feature store's
normalised audio banks, its frames, the frozen visual encoders and their precomputed
embeddings and augmentation banks (:class:`Workspace`)."""

from __future__ import annotations

import copy
import json
import logging
import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from avsc.config import ExperimentConfig, config_differences
from avsc.features.datasets import (
    ClipTable,
    FrameSource,
    NpyRows,
    SegmentSamples,
    StoreAudio,
    eval_transform,
    load_audio_bank,
    subset_clips,
    train_transform,
)
from avsc.features.store import FeatureStore, bank_path, load_entry, write_bank
from avsc.models.visual import VisualEncoder
from avsc.training.loop import resolve_device

log = logging.getLogger(__name__)

SUBSETS = ("train", "val", "evaluate")


class StoreSettingsWarning(UserWarning):
    """The feature store was made with settings other than the experiment asks for."""


def warn_store_overrides(
    store: FeatureStore, config: ExperimentConfig, asked: Iterable[str] | None = None
) -> list[str]:
    """Warn when the store's ``audio`` / ``frames`` settings or the data keys that decide its
    contents (:data:`avsc.features.store.STORE_DATA_KEYS`) differ from the experiment's
    (only the keys in ``asked``, the ones the user set, when given); returns the differences.
    The keys that choose the split (``data.test_fold``, ``data.seed``, ...) are the
    experiment's own: a store serves every split of its clips."""
    from avsc.features.store import STORE_DATA_KEYS

    wanted = config.preprocess_config(store.config.features)
    keys = None if asked is None else set(asked)
    used = {f"data.{k}" for k in STORE_DATA_KEYS}
    diffs = [
        d
        for d in config_differences(wanted, store.config)
        if not d.startswith("features:")
        and (not d.startswith("data.") or d.split(":")[0] in used)
        and (keys is None or d.split(":")[0] in keys)
    ]
    if diffs:
        warnings.warn(
            f"feature store {store.path} was made with other settings than this experiment's: "
            f"{'; '.join(diffs)}. The store's settings are used; to change them, run avsc "
            "preprocess with these settings into another --cache",
            StoreSettingsWarning,
            stacklevel=3,
        )
    return diffs


class Workspace:
    """Shared, lazily built inputs of the strategies for one feature store and config."""

    def __init__(
        self,
        store: FeatureStore | str | os.PathLike,
        config: ExperimentConfig,
        visual_weights: dict[str, str] | None = None,
        asked: Iterable[str] | None = None,
    ):
        self.store = store if isinstance(store, FeatureStore) else FeatureStore(store)
        self.visual_weights = dict(visual_weights or {})  # backbone -> weights (fine-tuned)
        sc = self.store.config
        # the store decides the audio and frames sections and which clips it holds, and says
        # so when they differ; the split is the experiment's (data.test_fold, data.seed, ...)
        warn_store_overrides(self.store, config, asked)
        data = sc.data.replace(**config.data.split_keys())
        self.config = config.replace(audio=sc.audio, frames=sc.frames, data=data)
        self.device = resolve_device(self.config.train.device, "config key train.device")
        self.labels: tuple[str, ...] = self.store.labels
        self.split = self.store.split(data)
        subsets = self.split.subsets()
        self.tables = {
            s: ClipTable(self.store, subset_clips(self.store, s, subsets)) for s in SUBSETS
        }
        self._audio: dict[tuple[str, str], torch.Tensor] = {}
        self._frames: dict[tuple[str, bool], FrameSource] = {}
        self._ve: dict[tuple[str, str | None, int | None], VisualEncoder] = {}
        self._vemb: dict[tuple[str, str], torch.Tensor] = {}

    def with_seed(self, seed: int) -> Workspace:
        """This workspace for another ``train.seed``: the store, tables, audio and frames are
        shared; what depends on the seed (a randomly initialised visual encoder, its
        embeddings, the augmentation bank) is built again for it."""
        if seed == self.config.train.seed:
            return self
        other = copy.copy(self)
        other.config = self.config.replace(train=self.config.train.replace(seed=seed))
        other._ve, other._vemb = {}, {}
        return other

    def audio(self, subset: str, kind: str):
        """Normalised features of a subset: in memory (a tensor) or, with
        ``train.audio_in_memory`` "no" (or "auto" past 2 GB), read per sample from the store."""
        key = (subset, kind)
        if key not in self._audio:
            table, stats = self.tables[subset], self.normalization(kind)
            one = load_entry(
                table.store.audio_path(table.clips[0], kind), table.clips[0], mmap=True
            )
            nbytes = table.total_segments * (one.size // max(1, one.shape[0])) * 4
            if self._stream(nbytes):  # float32 bytes of the whole subset
                self._audio[key] = StoreAudio(table, kind, stats)
            else:
                self._audio[key] = load_audio_bank(table, kind, stats)
        return self._audio[key]

    def normalization(self, kind: str):
        """The normalisation statistics of ``kind`` over this split's training clips."""
        return self.split.normalization(kind)

    def _stream(self, nbytes: int, limit: float = 2e9) -> bool:
        """Read from the store per sample rather than hold ``nbytes`` in memory?"""
        mode = self.config.train.audio_in_memory
        return mode == "no" or (mode == "auto" and nbytes > limit)

    def frames(self, subset: str, encoded: bool = False) -> FrameSource:
        """The subset's frames, decoded (uint8 images) or ``encoded`` (JPEG bytes)."""
        if (subset, encoded) not in self._frames:
            self._frames[(subset, encoded)] = FrameSource(
                self.tables[subset], self.config.train.frames_in_memory, encoded=encoded
            )
        return self._frames[(subset, encoded)]

    def visual_encoder(self, backbone: str | None = None) -> VisualEncoder:
        v = self.config.visual
        name = backbone or v.backbone
        weights = self.visual_weights.get(name, v.weights_for(name))
        size = v.size_for(name)
        key = (name, weights, size)
        if key not in self._ve:
            # seeded: without weights (random init, tests and smoke runs) every workspace
            # still builds the same encoder, so banks and embeddings in the store agree
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.train.seed)
                self._ve[key] = VisualEncoder(name, weights=weights, image_size=size)
        return self._ve[key]

    def augmentation_bank(
        self, subset: str, views: int, backbone: str | None = None
    ) -> torch.Tensor:
        """Embeddings of ``views`` augmented views of every segment's frame, computed once by
        the frozen VE under ``torch.inference_mode`` and kept as float16 in the feature store
        (``bank/<key>/<subset>.npy``, reused by later runs with the same encoder, weights,
        image size, augmentation, view count and seed): ``(segments, views, D)``."""
        import hashlib

        ve = self.visual_encoder(backbone)
        cfg = self.config
        ident = {
            "backbone": ve.name,
            "weights": _file_identity(ve.weights),
            "image_size": ve.input_size[-1],
            "augment": cfg.augment.to_dict(),
            "views": int(views),
            "seed": cfg.train.seed,
            "clips": self.tables[subset].clips,
            "layout": "segment rows",  # (segments, views, D); earlier banks were per clip
        }
        key = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        path = bank_path(self.store.path, key, subset)
        if path.is_file():
            if self._stream(path.stat().st_size):
                return NpyRows(path)  # streamed from disk, like the audio
            return torch.from_numpy(np.asarray(load_entry(path)))
        table = self.tables[subset]
        tf = train_transform(ve.input_size[-1], cfg.augment)
        ds = SegmentSamples(table, frames=self.frames(subset), transform=tf)
        loader = torch.utils.data.DataLoader(ds, batch_size=cfg.train.eval_batch_size)
        out = np.empty((table.total_segments, views, ve.num_features), dtype=np.float16)
        ve.to(self.device).eval()
        t0 = time.perf_counter()
        with torch.inference_mode():
            for k in range(views):
                torch.manual_seed(cfg.train.seed * 1_000_003 + 7_919 * k + 1)
                row = 0
                for batch in loader:
                    f = ve(batch["image"].to(self.device)).float().cpu().numpy()
                    out[row : row + len(f), k] = f
                    row += len(f)
        write_bank(
            self.store.path, key, subset, out, {k: v for k, v in ident.items() if k != "clips"}
        )
        log.info(
            "augmentation bank %s/%s: %d views of %d frames in %.1f s",
            key,
            subset,
            views,
            table.total_segments,
            time.perf_counter() - t0,
        )
        if self._stream(out.nbytes):
            return NpyRows(path)
        return torch.from_numpy(out)

    def visual_embeddings(self, subset: str, backbone: str | None = None) -> torch.Tensor:
        """Frozen-VE features of every segment's eval-transformed frame: ``(segments, D)``,
        computed once under ``torch.inference_mode``."""
        ve = self.visual_encoder(backbone)
        key = (subset, f"{ve.name}|{ve.weights}|{ve.input_size}")
        if key not in self._vemb:
            table = self.tables[subset]
            ds = SegmentSamples(
                table,
                frames=self.frames(subset),
                transform=eval_transform(ve.input_size[-1], ve.crop_pct),
            )
            loader = torch.utils.data.DataLoader(ds, batch_size=self.config.train.eval_batch_size)
            ve.to(self.device).eval()
            feats = []
            with torch.inference_mode():
                for batch in loader:
                    feats.append(ve(batch["image"].to(self.device)).float().cpu())
            self._vemb[key] = torch.cat(feats).view(table.total_segments, -1).clone()
        return self._vemb[key]


def _file_identity(weights: str | None) -> str | None:
    """Weights named by path, size and modification time (a changed file changes the key)."""
    if weights is None or not Path(weights).is_file():
        return weights
    st = Path(weights).stat()
    return f"{Path(weights).resolve()}|{st.st_size}|{st.st_mtime_ns}"
