"""Training a registered system, method.md section 6: :func:`train_system` builds the
system's model with its registry factory, feeds it the inputs its branches need
(:mod:`avsc.experiments.inputs`), trains it with the one loop
(:func:`avsc.training.loop.fit`, or the system's own ``train``), evaluates the
best-validation checkpoint on the ``evaluate`` subset (fold1_evaluate, the paper's test set)
and returns a :class:`StrategyResult`: metrics, checkpoint path, per-segment probabilities
and the embeddings needed for t-SNE (acoustic 1024-d, audio-visual 1024-d)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from avsc.config import ExperimentConfig
from avsc.evaluation.inference import predict_segments, validation_metrics
from avsc.evaluation.metrics import clip_metrics, dcase_metrics
from avsc.experiments.inputs import training_inputs
from avsc.experiments.registry import (
    Parts,
    SystemSpec,
    SystemUsageError,
    TrainJob,
    get_system,
    systems,
)
from avsc.experiments.results import StrategyResult
from avsc.experiments.workspace import Workspace
from avsc.features.store import FeatureStore
from avsc.models.acoustic import AcousticEncoder
from avsc.models.fusion import AVSystem
from avsc.models.visual import check_backbone
from avsc.training.checkpoint import CheckpointError, load_checkpoint
from avsc.training.loop import fit, is_main_process
from avsc.training.tracking import TensorBoardTracker, hparams_of
from avsc.utils import LOCK_NAME, exclusive_lock

log = logging.getLogger(__name__)

AudioCheckpoint = str | os.PathLike | Callable[[], Path] | None


def train_system(
    system: str,
    config: ExperimentConfig | dict | None,
    store: FeatureStore | str | os.PathLike,
    out_dir: str | os.PathLike,
    feature: str | None = None,
    backbone: str | None = None,
    audio_checkpoint: AudioCheckpoint = None,
    workspace: Workspace | None = None,
    resume: bool = True,
    trained: Callable[[str], Path] | None = None,
) -> StrategyResult:
    """Train the registered ``system`` into ``out_dir`` and evaluate it.

    ``feature`` (default scalogram) and ``backbone`` (default ``visual.backbone``) are used
    by the systems that take them. ``audio_checkpoint`` (a path, or a function returning one)
    is the trained audio-only system whose acoustic encoder the system starts from when its
    factory asks for it; asking without one is an error, never a silent extra training.
    ``trained(name)`` gives the checkpoint of a finished system the system ``needs`` (late
    fusion, distillation). A finished run in ``out_dir`` is reloaded, an interrupted one
    resumes (same settings only)."""
    spec = get_system(system)
    ws = workspace or Workspace(store, _config(config))
    cfg = ws.config
    for what, value in (("feature", feature), ("backbone", backbone)):
        if value is not None and not spec.takes(what):
            raise SystemUsageError(f"system {spec.name} takes no {what} (got {value!r})")
    if audio_checkpoint is not None and not spec.takes("audio_checkpoint"):
        raise SystemUsageError(f"system {spec.name} takes no audio checkpoint")
    check_modalities(spec, ws.store)
    if spec.takes("feature"):
        feature = feature or ws.store.features[0]
        if feature not in ws.store.features:
            raise SystemUsageError(
                f"system {spec.name}: the feature store {ws.store.path} holds no {feature} "
                f"features (it holds {', '.join(ws.store.features)}); run avsc preprocess "
                f"--features {feature} on it"
            )
    torch.manual_seed(cfg.train.seed)
    if spec.takes("backbone"):  # a name timm lacks: one line naming the key, before any work
        name = backbone or cfg.visual.backbone
        check_backbone(
            name, "config key visual.backbone" if name == cfg.visual.backbone else "backbone"
        )
    ve = ws.visual_encoder(backbone) if spec.takes("backbone") else None
    n_bins = _n_bins(ws, feature) if feature else None

    def pretrained() -> AcousticEncoder:
        ck = audio_checkpoint() if callable(audio_checkpoint) else audio_checkpoint
        if ck is None:
            raise SystemUsageError(
                f"system {spec.name} starts from a trained audio-only {feature} system's "
                "acoustic encoder: pass its checkpoint (audio_checkpoint, avsc train "
                "--audio-checkpoint) or train through a results folder that holds it"
            )
        return load_acoustic_encoder(ck, cfg, n_bins)

    def needed(other: str) -> Path:
        if other not in spec.needs:
            raise SystemUsageError(
                f"system {spec.name} uses the trained {other} system: declare needs=({other!r},)"
            )
        if trained is None:
            raise SystemUsageError(
                f"system {spec.name} is built on the trained {', '.join(spec.needs)} "
                "system(s): train it through a results folder that holds them (Results.train, "
                "avsc train --out RESULTS)"
            )
        return trained(other)

    parts = Parts(
        cfg, len(ws.labels), n_bins=n_bins, visual=ve, pretrained=pretrained, trained=needed
    )
    model = spec.build(parts)
    train, evals = training_inputs(ws, model, feature, backbone)
    name = spec.result_name(feature, ve.name if ve else None)
    backbone_name = ve.name if ve is not None else None
    return _run(ws, Path(out_dir), name, spec, model, train, evals, feature, backbone_name, resume)


def _n_bins(ws: Workspace, kind: str) -> int:
    return int(ws.normalization(kind).mean.shape[-1])


def check_modalities(spec: SystemSpec, store) -> None:
    """A :class:`SystemUsageError` in one line when the store lacks a modality ``spec``
    needs (an audio-only collection asked for a system that sees video)."""
    missing = [m for m in spec.modalities if m not in store.modalities]
    if missing:
        raise SystemUsageError(
            f"system {spec.name} needs {' and '.join(spec.modalities)}, but the collection "
            f"of {store.path} has no {missing[0]} (it holds {' + '.join(store.modalities)}); "
            f"systems it can train: {', '.join(trainable_systems(store)) or 'none'}"
        )


def trainable_systems(store) -> list[str]:
    """The registered systems whose modalities the store holds."""
    return [s.name for s in systems() if set(s.modalities) <= set(store.modalities)]


def _config(config: ExperimentConfig | dict | None) -> ExperimentConfig:
    if isinstance(config, ExperimentConfig):
        return config
    return ExperimentConfig.from_dict(config)


def load_acoustic_encoder(
    checkpoint: str | os.PathLike, cfg: ExperimentConfig, n_bins: int
) -> AcousticEncoder:
    """The AE of a trained audio-only (or any) system checkpoint."""
    ck = load_checkpoint(checkpoint)
    ae = Parts(cfg, 1, n_bins=n_bins).acoustic_encoder()
    sd = {k[3:]: v for k, v in ck["model"].items() if k.startswith("ae.")}
    if not sd:
        raise CheckpointError(f"{checkpoint}: holds no acoustic encoder (no 'ae.' tensors)")
    system = (ck.get("extra") or {}).get("system")
    if system not in (None, "audio_only"):  # e.g. a joint system's: say which part is used
        log.warning(
            "%s is a %s system's checkpoint: only its acoustic encoder is used (its scene "
            "classifier and visual parts are not)", checkpoint, system,
        )  # fmt: skip
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
    spec: SystemSpec,
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
        system = spec.name
        extra: dict[str, Any] = {
            "system": system,
            "name": name,
            "feature": feature,
            "backbone": backbone,
            "visual_input": model.visual_input,
            "ae_trainable": model.ae_trainable,
            "labels": list(ws.labels),
        }
        if feature is not None:
            stats = ws.normalization(feature)
            extra["norm_mean"] = torch.from_numpy(stats.mean)
            extra["norm_std"] = torch.from_numpy(stats.std)
        if model.ve is not None:
            extra["visual"] = {
                "name": model.ve.name,
                "image_size": model.ve.input_size[-1],
                "crop_pct": model.ve.crop_pct,
            }
        extra.update(getattr(model, "settings", dict)())  # e.g. modality dropout
        dev = ws.device
        job = TrainJob(
            model=model,
            train_set=train_set,
            val_set=eval_sets["val"],
            evaluate=lambda m: validation_metrics(
                m, eval_sets["val"], cfg.train.eval_batch_size, dev
            ),
            config=cfg,
            out=out,
            config_dict=cfg.to_dict(),
            extra=extra,
            resume=resume,
            name=name,
            device=dev,
        )
        result = (spec.train or _fit_loop)(job)
        ck = load_checkpoint(result.best_checkpoint)
        model.load_state_dict(ck["model"])
        model.to(dev)
        pred = predict_segments(
            model, eval_sets["evaluate"], cfg.train.eval_batch_size, dev, embeddings=True
        )
        seg = ws.tables["evaluate"].segment_frame().iloc[pred["index"]].reset_index(drop=True)
        proba = probability_frame(seg, pred["proba"], ws.labels)
        metrics = dcase_metrics(pred["label"], pred["proba"], n_classes=len(ws.labels))
        metrics.update(clip_metrics(proba, ws.labels))
        metrics["best_epoch"] = result.best_epoch + 1
        metrics["best_val_logloss"] = result.best_val_loss
        metrics.update(result.info)  # e.g. the late-fusion weight
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
            labels=tuple(ws.labels),
        )
        if is_main_process():
            res.save(out)
            if cfg.train.tensorboard:
                track_result(out, cfg, extra, metrics, len(result.history))
        chosen = ", ".join(f"{k} {v:.2f}" for k, v in result.info.items())
        log.info(
            "%s: %s (val log loss %.3f); evaluate: log loss %.3f, accuracy %.1f %% "
            "(class-wise, DCASE's official figures); %.0f s",
            name,
            f"{chosen} chosen of {len(res.history)} on validation"
            if chosen
            else f"{len(res.history)} epochs, best {metrics['best_epoch']}",
            metrics["best_val_logloss"],
            metrics["logloss_classwise"],
            100 * metrics["accuracy_classwise"],
            res.seconds,
        )
        return res


def track_result(
    out: Path, cfg: ExperimentConfig, extra: dict[str, Any], metrics: dict, epochs: int
) -> None:
    """The finished training's settings and test metrics for TensorBoard's HParams view
    (:mod:`avsc.training.tracking`): its system, feature, backbone and the config keys that
    differ from the defaults; the metrics under ``test/``."""
    hp = hparams_of(
        cfg.to_dict(),
        ExperimentConfig().to_dict(),
        {k: extra.get(k) for k in ("system", "feature", "backbone")},
    )
    TensorBoardTracker(out).result(hp, {f"test/{k}": v for k, v in metrics.items()}, epochs + 1)


def probability_frame(segments: pd.DataFrame, proba: np.ndarray, labels) -> pd.DataFrame:
    """``segments`` (one row per segment) with one probability column per label."""
    return pd.concat(
        [
            segments.reset_index(drop=True),
            pd.DataFrame(np.asarray(proba), columns=list(labels)),
        ],
        axis=1,
    )


def _fit_loop(job: TrainJob):
    """The default ``train`` of a system: the one fit loop."""
    return fit(
        job.model,
        job.train_set,
        job.evaluate,
        job.config.train,
        job.out,
        config_dict=job.config_dict,
        extra=job.extra,
        resume=job.resume,
        name=job.name,
    )
