"""A training's output folder: its lock, the check that a run resumes only with its own
settings, the one checkpoint dict of a system's training, and the writer of ``best.pt``,
``last.pt`` and ``history.csv`` (the fit loop's, late fusion's)."""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avsc.config import TrainConfig
from avsc.training.checkpoint import load_checkpoint, save_checkpoint
from avsc.training.tracking import EVENTS_GLOB, tracker
from avsc.training.tracking import flatten as _flatten
from avsc.utils import LOCK_NAME, atomic_path, exclusive_lock, versions

log = logging.getLogger("avsc.training.loop")


class RunMismatch(ValueError):
    """An output folder holds a run made with other settings; names the differing keys."""


#: config keys that may change between a run and its resumption: where and how fast it
#: runs, and when it stops (a larger ``max_epochs`` continues a finished run)
RESUMABLE_KEYS = frozenset(
    {
        "train.device",
        "train.num_workers",
        "train.eval_batch_size",
        "train.frames_in_memory",
        "train.audio_in_memory",
        "train.cpu_threads",
        "train.max_epochs",
        "train.patience",
        "train.seeds",  # which other seeds are trained: each run has its own train.seed
        "train.tensorboard",  # where the curves are also written, not what is trained
    }
)
#: settings added to the config since runs were first stored: key -> the value that means what
#: a run made before the key existed did (what such a run is compared with on resuming)
ADDED_SETTINGS: dict[str, Any] = {
    "train.fused_optimizer": False,
    # visual fine-tuning's settings that were fixed in its code
    "finetune.backbone_lr_scale": 0.1,
    "finetune.momentum": 0.9,
    "finetune.weight_decay": 1e-4,
    "finetune.crop_scale": [0.35, 1.0],
}
#: config sections that never change a training run by themselves (what a system takes from
#: them goes into its checkpoint's ``extra``: see ``AVSystem.settings``)
RESUMABLE_SECTIONS = frozenset({"robustness"})

#: the files a training run writes into its output folder (``restart`` removes these only)
RUN_FILES = ("last.pt", "best.pt", "history.csv", "metrics.json", "proba.csv", "embeddings.npz")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and bool(torch.equal(a.cpu(), b.cpu()))
        )
    return a == b


def run_differences(
    stored: dict[str, Any], asked: dict[str, Any], ignore: frozenset[str] = RESUMABLE_KEYS
) -> list[str]:
    """``key: stored -> asked`` for every flattened key whose value differs between a stored
    run's ``{"config": ..., "extra": ...}`` and the one asked for now (keys in ``ignore``
    excepted). Tensors (normalisation statistics) are compared exactly. A setting of
    :data:`ADDED_SETTINGS` that a run made by an older avsc lacks counts as the value that
    keeps the old behaviour, so leaving it there does not stop the run resuming."""
    a, b = _flatten(stored), _flatten(asked)
    if any(k.startswith("config.") for k in a):  # a run's config from before a setting existed
        for key, before in ADDED_SETTINGS.items():
            if f"config.{key}" in b:
                a.setdefault(f"config.{key}", before)
    a, b = _weights_per_backbone(a, b)
    diffs = []
    for key in sorted(set(a) | set(b)):
        short = key.removeprefix("config.")
        if short in ignore or (
            key.startswith("config.") and short.split(".")[0] in RESUMABLE_SECTIONS
        ):
            continue
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if not _same(va, vb):
            if isinstance(va, torch.Tensor) or isinstance(vb, torch.Tensor):
                diffs.append(f"{short}: differs (the feature store was rebuilt?)")
            else:
                diffs.append(f"{short}: {va!r} stored, {vb!r} now")
    return diffs


def _weights_per_backbone(a: dict[str, Any], b: dict[str, Any]) -> tuple[dict, dict]:
    """A run stored before ``visual.weights`` took one entry per backbone, compared with a
    config that gives a mapping: stored ``null`` (its weights came from the series setting
    ``start_weights``, which its config did not record) matches any mapping; a stored single
    value matches a mapping holding it for the stored ``visual.backbone``."""
    per = "config.visual.weights."
    mapping = {k[len(per) :]: v for k, v in b.items() if k.startswith(per)}
    stored = a.get("config.visual.weights", {})
    if not mapping or not (stored is None or isinstance(stored, str)):
        return a, b
    if stored is not None and mapping.get(a.get("config.visual.backbone")) != stored:
        return a, b
    a = {k: v for k, v in a.items() if k != "config.visual.weights"}
    return a, {k: v for k, v in b.items() if not k.startswith(per)}


def clear_run(out_dir: str | os.PathLike) -> list[Path]:
    """Start a training output folder over: remove the files a run writes there
    (:data:`RUN_FILES` and its TensorBoard event files), nothing else, under the folder's
    lock. Returns what was removed."""
    out = Path(out_dir)
    removed = []
    if not out.is_dir():
        return removed
    with exclusive_lock(out / LOCK_NAME, f"training output {out}"):
        for p in [out / name for name in RUN_FILES] + sorted(out.glob(EVENTS_GLOB)):
            if p.is_file():
                p.unlink()
                removed.append(p)
    return removed


def check_resumable(
    last: dict[str, Any],
    out: Path,
    cfg: TrainConfig,
    config_dict: dict[str, Any] | None,
    extra: dict[str, Any] | None,
) -> None:
    """A :class:`RunMismatch` when the run stored in ``last`` (a ``last.pt``) was made with
    settings other than those asked for now, or already ran past ``cfg.max_epochs``."""
    diffs = run_differences(
        {"config": last.get("config") or {}, "extra": last.get("extra") or {}},
        {"config": config_dict or {}, "extra": extra or {}},
    )
    done = int(last.get("epoch", -1)) + 1
    if done > cfg.max_epochs:
        diffs.append(
            f"train.max_epochs: {cfg.max_epochs} now, but the run already has {done} epochs"
        )
    if diffs:
        raise RunMismatch(
            f"{out}: holds a training run with other settings ({'; '.join(diffs)}); "
            "it resumes only with the same settings: start over with avsc train --restart "
            f"(or delete {out}), or choose another output folder"
        )


@dataclass
class FitState:
    """Where a training stands: the next epoch, the best selection score and its epoch,
    epochs without improvement, and the history rows so far."""

    start_epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def update(self, epoch: int, score: float) -> bool:
        """Record ``epoch``'s selection score; True where it is the best so far."""
        if score < self.best_loss:
            self.best_loss, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False


class RunFolder:
    """A training's output folder: its lock, the resume check, and the writer of its
    checkpoints (``best.pt``, ``last.pt``) and ``history.csv``. Only the main process of a
    distributed run locks and writes. A training whose product is one file (visual
    fine-tuning: ``<name>.pt``) names its own ``last`` and ``lock`` files beside it."""

    def __init__(
        self,
        out: str | os.PathLike,
        name: str = "train",
        *,
        last: str | os.PathLike | None = None,
        lock: str | os.PathLike | None = None,
        what: str | None = None,
        history_file: str | None = "history.csv",
        tensorboard: bool = True,
        events: str | os.PathLike | None = None,
    ):
        self.out = Path(out)
        self.name = name
        self.last = Path(last) if last is not None else self.out / "last.pt"
        self.best = self.out / "best.pt"
        self.lock = Path(lock) if lock is not None else self.out / LOCK_NAME
        self.what = what or f"training output {self.out}"  # named by a refused second run
        self.history_file = history_file
        # the curves in TensorBoard event files (in ``events``, by default the folder itself)
        self.tracker = tracker(Path(events) if events is not None else self.out, tensorboard)

    def locked(self, main: bool = True):
        """A context holding the folder's lock (made first): a second training into it is
        refused, naming the first. Other ranks of a distributed run (``main`` False) take
        no lock."""
        if not main:
            return contextlib.nullcontext()
        self.out.mkdir(parents=True, exist_ok=True)
        return exclusive_lock(self.lock, self.what)

    def stored(self) -> dict[str, Any] | None:
        """The checkpoint in ``last.pt`` (an interrupted run), or None."""
        return load_checkpoint(self.last, map_location="cpu") if self.last.is_file() else None

    @staticmethod
    def restore(ck: dict[str, Any], model: nn.Module, optimizer, scheduler) -> None:
        """Load a stored run's weights, optimizer and schedule into a new run's."""
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])

    def resume(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        cfg: TrainConfig,
        config_dict: dict[str, Any] | None,
        extra: dict[str, Any] | None,
    ) -> FitState:
        """The state of the run in ``last.pt``, loaded into ``model``, ``optimizer`` and
        ``scheduler`` (a :class:`RunMismatch` where its settings differ), or a fresh one."""
        ck = self.stored()
        if ck is None:
            return FitState()
        check_resumable(ck, self.out, cfg, config_dict, extra)
        self.restore(ck, model, optimizer, scheduler)
        st = ck["state"]
        state = FitState(
            int(ck["epoch"]) + 1,
            float(st["best_loss"]),
            int(st["best_epoch"]),
            int(st["bad_epochs"]),
            list(st["history"]),
        )
        log.info("%s: resuming from %s after epoch %d", self.name, self.last, state.start_epoch)
        return state

    def write(self, checkpoint: dict[str, Any], history: list[dict[str, Any]] | None, best: bool):
        """``best.pt`` (where ``best``), ``last.pt`` and ``history.csv`` (unless ``history``
        is None or the folder keeps none), each atomically; then the history's new rows to
        the tracker (TensorBoard)."""
        if best:
            save_checkpoint(self.best, checkpoint)
        save_checkpoint(self.last, checkpoint)
        if history is not None:
            if self.history_file:
                write_history(self.out / self.history_file, history)
            self.tracker.epochs(history, checkpoint.get("config"))


def training_checkpoint(
    model: nn.Module,
    epoch: int,
    row: dict[str, Any],
    config_dict: dict | None,
    extra: dict | None,
    best_loss: float,
    best_epoch: int,
    bad_epochs: int,
    history: list[dict[str, Any]],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> dict[str, Any]:
    """The one checkpoint dict of a system's training (``best.pt`` / ``last.pt``): weights,
    the optimizer and scheduler where there are any (a resumable loop), the epoch, that
    epoch's numeric figures, the config, versions, ``extra`` (the system's settings) and the
    state a resume needs (best loss and epoch, epochs without improvement, the history)."""
    ck: dict[str, Any] = {"model": model.state_dict()}
    if optimizer is not None:
        ck["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        ck["scheduler"] = scheduler.state_dict()
    ck.update(
        {
            "epoch": epoch,
            "metrics": {k: v for k, v in row.items() if isinstance(v, (int, float))},
            "config": config_dict or {},
            "versions": versions(),
            "extra": extra or {},
            "state": {
                "best_loss": best_loss,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "history": history,
            },
        }
    )
    return ck


def write_run_files(
    out: Path,
    checkpoint: dict[str, Any],
    history: list[dict[str, Any]],
    best: bool,
    tensorboard: bool = True,
) -> None:
    """A training's files in its folder ``out``: ``best.pt`` (where ``best``), ``last.pt``
    and ``history.csv``, each written atomically, and its curves as TensorBoard events."""
    folder = RunFolder(out, tensorboard=tensorboard)
    try:
        folder.write(checkpoint, history, best)
    finally:
        folder.tracker.close()


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
