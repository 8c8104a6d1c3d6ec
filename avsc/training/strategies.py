"""The paper's strategies as library functions, method.md section 6.

Each takes the config, the feature store and an output folder, trains with the one loop
(:func:`avsc.training.loop.fit`), evaluates the best-validation checkpoint on the
``evaluate`` subset (fold1_evaluate, the paper's test set) and returns a
:class:`StrategyResult`: metrics, checkpoint path, per-segment probabilities and the
embeddings needed for t-SNE (acoustic 1024-d, audio-visual 1024-d).

A :class:`Workspace` caches what several strategies share (normalised audio banks, frames,
visual encoders and their precomputed embeddings) when they run in one session.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from avsc.config import ExperimentConfig
from avsc.data.tau import LABELS
from avsc.evaluation.inference import predict_segments, validation_metrics
from avsc.evaluation.metrics import dcase_metrics
from avsc.features.datasets import (
    ClipTable,
    FrameSamples,
    FrameSource,
    NpyRows,
    SegmentSamples,
    StoreAudio,
    eval_transform,
    load_audio_bank,
    subset_clips,
    train_transform,
)
from avsc.features.store import FeatureStore, load_entry, store_lock
from avsc.models.acoustic import AcousticEncoder
from avsc.models.classifier import SceneClassifier
from avsc.models.systems import AVSystem
from avsc.models.visual import VisualEncoder
from avsc.training.checkpoint import CheckpointError, load_checkpoint
from avsc.training.loop import fit, is_main_process, resolve_device
from avsc.utils import LOCK_NAME, atomic_path, atomic_write_json, exclusive_lock

log = logging.getLogger(__name__)

SUBSETS = ("train", "val", "evaluate")
ABLATIONS = {
    # name: (visual input, AE trainable)
    "I": ("embedding", False),
    "II": ("embedding", True),
    "III": ("image", False),
    "IV": ("image", True),
}


@dataclass
class StrategyResult:
    """One trained system, evaluated on the evaluate subset at segment level."""

    name: str
    system: str
    feature: str | None
    backbone: str | None
    metrics: dict[str, float]
    checkpoint: Path
    proba: pd.DataFrame  # one row per segment: filename, clip, segment, label, <class>...
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "system": self.system,
            "feature": self.feature,
            "backbone": self.backbone,
            **self.metrics,
            "seconds": round(self.seconds, 1),
            "checkpoint": str(self.checkpoint),
        }


class Workspace:
    """Shared, lazily built inputs of the strategies for one feature store and config."""

    def __init__(
        self,
        store: FeatureStore | str | os.PathLike,
        config: ExperimentConfig,
        visual_weights: dict[str, str] | None = None,
    ):
        self.store = store if isinstance(store, FeatureStore) else FeatureStore(store)
        self.visual_weights = dict(visual_weights or {})  # backbone -> weights (fine-tuned)
        sc = self.store.config
        # the store decides the audio / frames / data sections
        self.config = config.replace(audio=sc.audio, frames=sc.frames, data=sc.data)
        self.device = resolve_device(self.config.train.device)
        self.tables = {s: ClipTable(self.store, subset_clips(self.store, s)) for s in SUBSETS}
        self._audio: dict[tuple[str, str], torch.Tensor] = {}
        self._frames: dict[str, FrameSource] = {}
        self._ve: dict[tuple[str, str | None, int | None], VisualEncoder] = {}
        self._vemb: dict[tuple[str, str], torch.Tensor] = {}

    def audio(self, subset: str, kind: str):
        """Normalised features of a subset: in memory (a tensor) or, with
        ``train.audio_in_memory`` "no" (or "auto" past 2 GB), read per sample from the store."""
        key = (subset, kind)
        if key not in self._audio:
            table, stats = self.tables[subset], self.store.normalization(kind)
            one = load_entry(
                table.store.audio_path(table.clips[0], kind), table.clips[0], mmap=True
            )
            if self._stream(len(table) * one.size * 4):  # float32 bytes of the whole subset
                self._audio[key] = StoreAudio(table, kind, stats)
            else:
                self._audio[key] = load_audio_bank(table, kind, stats)
        return self._audio[key]

    def _stream(self, nbytes: int, limit: float = 2e9) -> bool:
        """Read from the store per sample rather than hold ``nbytes`` in memory?"""
        mode = self.config.train.audio_in_memory
        return mode == "no" or (mode == "auto" and nbytes > limit)

    def frames(self, subset: str) -> FrameSource:
        if subset not in self._frames:
            self._frames[subset] = FrameSource(
                self.tables[subset], self.config.train.frames_in_memory
            )
        return self._frames[subset]

    def visual_encoder(self, backbone: str | None = None) -> VisualEncoder:
        v = self.config.visual
        name = backbone or v.backbone
        weights = self.visual_weights.get(name, v.weights if name == v.backbone else None)
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
        image size, augmentation, view count and seed): ``(clips, S, views, D)``."""
        import hashlib

        from avsc.utils import atomic_path

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
        }
        key = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        folder = self.store.path / "bank" / key
        path = folder / f"{subset}.npy"
        if path.is_file():
            if self._stream(path.stat().st_size):
                return NpyRows(path)  # streamed from disk, like the audio
            return torch.from_numpy(np.asarray(load_entry(path)))
        table = self.tables[subset]
        tf = train_transform(ve.input_size[-1], cfg.augment)
        ds = SegmentSamples(table, frames=self.frames(subset), transform=tf)
        loader = torch.utils.data.DataLoader(ds, batch_size=cfg.train.eval_batch_size)
        out = np.empty((len(table) * table.segments, views, ve.num_features), dtype=np.float16)
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
        out = out.reshape(len(table), table.segments, views, -1)
        # written under the store's lock: a preprocess run starting meanwhile must neither
        # clean up this temporary file nor rewrite the store under it
        with store_lock(self.store.path, wait=True):
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, out, allow_pickle=False)
            atomic_write_json(
                folder / "bank.json", {k: v for k, v in ident.items() if k != "clips"}
            )
        log.info(
            "augmentation bank %s/%s: %d views of %d frames in %.1f s",
            key,
            subset,
            views,
            len(table) * table.segments,
            time.perf_counter() - t0,
        )
        if self._stream(out.nbytes):
            return NpyRows(path)
        return torch.from_numpy(out)

    def visual_embeddings(self, subset: str, backbone: str | None = None) -> torch.Tensor:
        """Frozen-VE features of every segment's eval-transformed frame: ``(clips, S, D)``,
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
            self._vemb[key] = torch.cat(feats).view(len(table), table.segments, -1).clone()
        return self._vemb[key]


def _file_identity(weights: str | None) -> str | None:
    """Weights named by path, size and modification time (a changed file changes the key)."""
    if weights is None or not Path(weights).is_file():
        return weights
    st = Path(weights).stat()
    return f"{Path(weights).resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _new_ae(cfg: ExperimentConfig, n_bins: int) -> AcousticEncoder:
    m = cfg.model
    return AcousticEncoder(
        n_bins, 2, m.ae_channels, m.ae_hidden, m.embedding_dim, m.ae_dropout, m.multiscale
    )


def _n_bins(ws: Workspace, kind: str) -> int:
    return int(ws.store.normalization(kind).mean.shape[-1])


def load_acoustic_encoder(
    checkpoint: str | os.PathLike, cfg: ExperimentConfig, n_bins: int
) -> AcousticEncoder:
    """The AE of a trained audio-only (or any) system checkpoint."""
    ck = load_checkpoint(checkpoint)
    ae = _new_ae(cfg, n_bins)
    sd = {k[3:]: v for k, v in ck["model"].items() if k.startswith("ae.")}
    if not sd:
        raise ValueError(f"{checkpoint}: holds no acoustic encoder (no 'ae.' tensors)")
    try:
        ae.load_state_dict(sd)
    except RuntimeError as exc:
        stored = (ck.get("config") or {}).get("model", {})
        diffs = [
            f"model.{k}: {stored[k]!r} stored, {v!r} now"
            for k, v in cfg.model.to_dict().items()
            if k in stored and list(np.atleast_1d(stored[k])) != list(np.atleast_1d(v))
        ]
        why = "; ".join(diffs) or f"{n_bins} feature bins now"
        raise CheckpointError(
            f"{checkpoint}: its acoustic encoder does not fit the one asked for ({why}); "
            "retrain the audio-only system with these settings or pass a matching checkpoint"
        ) from exc
    return ae


def _run(
    ws: Workspace,
    out: Path,
    name: str,
    system: str,
    model: AVSystem,
    train_set,
    eval_sets: dict[str, Any],
    feature: str | None,
    backbone: str | None,
    resume: bool = True,
) -> StrategyResult:
    cfg = ws.config
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    # one training per output folder at a time (the fit loop takes the same lock again)
    lock = exclusive_lock(out / LOCK_NAME, f"training output {out}")
    with lock if is_main_process() else contextlib.nullcontext():
        extra: dict[str, Any] = {
            "system": system,
            "name": name,
            "feature": feature,
            "backbone": backbone,
            "visual_input": model.visual_input,
            "ae_trainable": model.ae_trainable,
            "labels": list(LABELS),
        }
        if feature is not None:
            stats = ws.store.normalization(feature)
            extra["norm_mean"] = torch.from_numpy(stats.mean)
            extra["norm_std"] = torch.from_numpy(stats.std)
        if model.ve is not None:
            extra["visual"] = {
                "name": model.ve.name,
                "image_size": model.ve.input_size[-1],
                "crop_pct": model.ve.crop_pct,
            }
        dev = ws.device
        result = fit(
            model,
            train_set,
            lambda m: validation_metrics(m, eval_sets["val"], cfg.train.eval_batch_size, dev),
            cfg.train,
            out,
            config_dict=cfg.to_dict(),
            extra=extra,
            resume=resume,
            name=name,
        )
        ck = load_checkpoint(result.best_checkpoint)
        model.load_state_dict(ck["model"])
        model.to(dev)
        pred = predict_segments(
            model, eval_sets["evaluate"], cfg.train.eval_batch_size, dev, embeddings=True
        )
        seg = ws.tables["evaluate"].segment_frame().iloc[pred["index"]].reset_index(drop=True)
        proba = seg.copy()
        for k, label in enumerate(LABELS):
            proba[label] = pred["proba"][:, k]
        metrics = dcase_metrics(pred["label"], pred["proba"], n_classes=len(LABELS))
        metrics["best_epoch"] = result.best_epoch + 1
        metrics["best_val_logloss"] = result.best_val_loss
        emb = {k: pred[k] for k in ("acoustic", "audio_visual") if k in pred}
        res = StrategyResult(
            name=name,
            system=system,
            feature=feature,
            backbone=backbone,
            metrics=metrics,
            checkpoint=result.best_checkpoint,
            proba=proba,
            embeddings=emb,
            history=pd.DataFrame(result.history),
            # wall time of the training epochs (with validation), summed over the history so a
            # resumed or reloaded run reports its whole training, not this call's few seconds;
            # one-off precomputation (bank, embeddings) is logged by the workspace, not counted
            seconds=sum(row["seconds"] for row in result.history) or time.perf_counter() - t0,
        )
        if is_main_process():
            _save_result(res, out)
        log.info(
            "%s: evaluate logloss %.4f accuracy %.2f %% (%.0f s)",
            name,
            metrics["logloss_classwise"],
            100 * metrics["accuracy_classwise"],
            res.seconds,
        )
        return res


def _save_result(res: StrategyResult, out: Path) -> None:
    atomic_write_json(out / "metrics.json", res.summary())
    with atomic_path(out / "proba.csv") as tmp:
        res.proba.to_csv(tmp, index=False, float_format="%.6g")
    if res.embeddings:
        with atomic_path(out / "embeddings.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                **{k: v.astype(np.float32) for k, v in res.embeddings.items()},
                label=res.proba["label"].to_numpy(),
            )


def _config(config: ExperimentConfig | dict | None) -> ExperimentConfig:
    if isinstance(config, ExperimentConfig):
        return config
    return ExperimentConfig.from_dict(config)


def audio_only(
    config: ExperimentConfig | dict | None,
    store: FeatureStore | str | os.PathLike,
    out_dir: str | os.PathLike,
    feature: str = "scalogram",
    workspace: Workspace | None = None,
) -> StrategyResult:
    """Audio-only: AE + SC trained on acoustic frames (Table 2, upper half)."""
    ws = workspace or Workspace(store, _config(config))
    cfg = ws.config
    torch.manual_seed(cfg.train.seed)
    ae = _new_ae(cfg, _n_bins(ws, feature))
    model = AVSystem(
        ae,
        SceneClassifier(ae.embedding_dim, len(LABELS), cfg.model.sc_hidden, cfg.model.sc_dropout),
    )
    train = FrameSamples(ws.tables["train"], audio=ws.audio("train", feature))
    evals = {
        s: SegmentSamples(ws.tables[s], audio=ws.audio(s, feature)) for s in ("val", "evaluate")
    }
    return _run(
        ws, Path(out_dir), f"audio_only_{feature}", "audio_only", model, train, evals, feature, None
    )


def video_only(
    config: ExperimentConfig | dict | None,
    store: FeatureStore | str | os.PathLike,
    out_dir: str | os.PathLike,
    backbone: str | None = None,
    workspace: Workspace | None = None,
) -> StrategyResult:
    """Video-only: frozen VE + SC trained on augmented segment images (Table 2, lower half)."""
    ws = workspace or Workspace(store, _config(config))
    cfg = ws.config
    torch.manual_seed(cfg.train.seed)
    ve = ws.visual_encoder(backbone)
    sc = SceneClassifier(ve.num_features, len(LABELS), cfg.model.sc_hidden, cfg.model.sc_dropout)
    model = AVSystem(None, sc, ve=ve, visual_input="image")
    size = ve.input_size[-1]
    if cfg.train.aug_bank > 0:  # K precomputed augmented views, one drawn per image and epoch
        bank = ws.augmentation_bank("train", cfg.train.aug_bank, backbone)
        train = FrameSamples(ws.tables["train"], vemb_bank=bank, unit="segment")
        evals = {
            s: SegmentSamples(ws.tables[s], vemb=ws.visual_embeddings(s, backbone))
            for s in ("val", "evaluate")
        }
    else:  # online augmentation through the frozen VE, as in the paper
        train = FrameSamples(
            ws.tables["train"],
            frames=ws.frames("train"),
            transform=train_transform(size, cfg.augment),
            unit="segment",
        )
        evals = {
            s: SegmentSamples(
                ws.tables[s], frames=ws.frames(s), transform=eval_transform(size, ve.crop_pct)
            )
            for s in ("val", "evaluate")
        }
    return _run(
        ws, Path(out_dir), f"video_only_{ve.name}", "video_only", model, train, evals, None, ve.name
    )


def _pretrained_ae(ws: Workspace, out_dir: Path, feature: str, audio_checkpoint) -> AcousticEncoder:
    if audio_checkpoint is None:
        audio_checkpoint = out_dir.parent / f"audio_only_{feature}" / "best.pt"
        if not Path(audio_checkpoint).is_file():
            log.info(
                "no audio-only checkpoint at %s: training the audio-only system first",
                audio_checkpoint,
            )
            audio_only(ws.config, ws.store, Path(audio_checkpoint).parent, feature, workspace=ws)
    return load_acoustic_encoder(audio_checkpoint, ws.config, _n_bins(ws, feature))


def ablation(
    config: ExperimentConfig | dict | None,
    store: FeatureStore | str | os.PathLike,
    out_dir: str | os.PathLike,
    which: str,
    feature: str = "scalogram",
    backbone: str | None = None,
    audio_checkpoint: str | os.PathLike | None = None,
    workspace: Workspace | None = None,
    system: str | None = None,
) -> StrategyResult:
    """Table 4: I = VE embeddings + pre-trained frozen AE (= pipeline); II = embeddings +
    trainable AE; III = raw augmented images + pre-trained frozen AE; IV = raw augmented
    images + trainable AE (= joint). The pre-trained AE is the audio-only system's
    (``audio_checkpoint``; trained first when absent). A trainable AE starts from scratch
    unless ``model.ae_init`` is ``audio_only``."""
    if which not in ABLATIONS:
        raise ValueError(f"unknown ablation {which!r}; expected one of {list(ABLATIONS)}")
    ws = workspace or Workspace(store, _config(config))
    cfg = ws.config
    out = Path(out_dir)
    visual_input, trainable = ABLATIONS[which]
    torch.manual_seed(cfg.train.seed)
    if not trainable or cfg.model.ae_init == "audio_only":
        ae = _pretrained_ae(ws, out, feature, audio_checkpoint)
    else:
        ae = _new_ae(cfg, _n_bins(ws, feature))
    ve = ws.visual_encoder(backbone)
    sc = SceneClassifier(
        ae.embedding_dim + ve.num_features, len(LABELS), cfg.model.sc_hidden, cfg.model.sc_dropout
    )
    model = AVSystem(ae, sc, ve=ve, visual_input=visual_input, ae_trainable=trainable)
    size = ve.input_size[-1]
    audio_tr = ws.audio("train", feature)
    bank = cfg.train.aug_bank
    if visual_input == "embedding":  # I, II: embeddings of un-augmented frames
        train = FrameSamples(
            ws.tables["train"], audio=audio_tr, vemb=ws.visual_embeddings("train", backbone)
        )
    elif bank > 0:  # III, IV with the augmentation bank: one of K precomputed views per sample
        train = FrameSamples(
            ws.tables["train"],
            audio=audio_tr,
            vemb_bank=ws.augmentation_bank("train", bank, backbone),
        )
    else:  # III, IV as in the paper: online augmentation through the frozen VE
        unit = "segment_frames" if cfg.train.image_major else "frame"
        train = FrameSamples(
            ws.tables["train"],
            audio=audio_tr,
            frames=ws.frames("train"),
            transform=train_transform(size, cfg.augment),
            unit=unit,
        )
    if visual_input == "embedding" or bank > 0:  # evaluation on precomputed centre-crop embeddings
        evals = {
            s: SegmentSamples(
                ws.tables[s], audio=ws.audio(s, feature), vemb=ws.visual_embeddings(s, backbone)
            )
            for s in ("val", "evaluate")
        }
    else:
        evals = {
            s: SegmentSamples(
                ws.tables[s],
                audio=ws.audio(s, feature),
                frames=ws.frames(s),
                transform=eval_transform(size, ve.crop_pct),
            )
            for s in ("val", "evaluate")
        }
    system = system or f"ablation_{which}"
    name = f"{system}_{feature}_{ve.name}"
    return _run(ws, out, name, system, model, train, evals, feature, ve.name)


def pipeline(
    config,
    store,
    out_dir,
    feature: str = "scalogram",
    backbone: str | None = None,
    audio_checkpoint=None,
    workspace: Workspace | None = None,
) -> StrategyResult:
    """Pipeline: SC on [AE, VE] embeddings extracted once (AE from the trained audio-only
    system, frozen; VE frames not augmented) = ablation I (Table 3)."""
    return ablation(
        config,
        store,
        out_dir,
        "I",
        feature,
        backbone,
        audio_checkpoint,
        workspace,
        system="pipeline",
    )


def joint(
    config,
    store,
    out_dir,
    feature: str = "scalogram",
    backbone: str | None = None,
    audio_checkpoint=None,
    workspace: Workspace | None = None,
) -> StrategyResult:
    """Joint: AE + SC trained together on raw augmented images through the frozen VE
    = ablation IV (Table 3)."""
    return ablation(
        config, store, out_dir, "IV", feature, backbone, audio_checkpoint, workspace, system="joint"
    )


def load_result(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``metrics.json`` a strategy wrote."""
    return json.loads((Path(out_dir) / "metrics.json").read_text())
