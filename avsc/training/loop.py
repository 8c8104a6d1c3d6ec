"""The one training loop for every strategy, method.md section 7.

SGD with momentum and weight decay; ``CosineAnnealingWarmRestarts`` (T_0 = 10 epochs, T_mult =
2, stepped per iteration, from ``lr`` down to ``lr_min``); batch size; at most ``max_epochs``
(the loss is cross-entropy, or the model's own ``training_loss(logits, label, inputs)`` where
it defines one); the checkpoint with the best validation loss (segment level) is kept as
``best.pt`` and the last epoch as ``last.pt``, from which a run resumes exactly; optional
early-stopping patience; one log line and one CSV row per epoch. Randomness (shuffling,
augmentation, dropout) is re-seeded from ``(seed, epoch)`` at every epoch, so a resumed run and
an uninterrupted one are identical on the CPU. A NaN or infinite loss stops the run with
:class:`TrainingDiverged`; ``last.pt`` keeps the last good epoch.

AMP (bf16 autocast) and channels_last apply on CUDA. Under ``torchrun`` the model is wrapped
in ``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA), the global batch is split over
the ranks with a ``DistributedSampler``, and rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from avsc.config import TrainConfig
from avsc.training.runfolder import (  # noqa: F401 (importable from here, as before)
    ADDED_SETTINGS,
    RESUMABLE_KEYS,
    RESUMABLE_SECTIONS,
    RUN_FILES,
    FitState,
    RunFolder,
    RunMismatch,
    check_resumable,
    clear_run,
    run_differences,
    training_checkpoint,
    write_history,
    write_run_files,
)
from avsc.utils import (
    in_notebook,
    progress,
    progress_enabled,
    retain_freed_memory,
    training_threads,
)

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


# --------------------------------------------------------------------------------------
# devices and distributed


class DeviceError(ValueError):
    """A device that is not one, or that this machine does not have (the message names the
    key or option it came from and the devices there are)."""


def available_devices() -> list[str]:
    """The torch devices of this machine: ``cpu``, then ``cuda:N`` and ``mps`` where present."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def resolve_device(name: str = "auto", what: str = "device") -> torch.device:
    """The torch device ``name`` (``auto``: CUDA where there is one, else the CPU), checked
    against this machine before any work: a name that is not a device, or a device the
    machine lacks, is a :class:`DeviceError` naming ``what`` (the key or option it came from)
    and the devices there are."""
    if name == "auto":
        if dist_info()[0] > 1 and torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    here = ", ".join(available_devices())
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(
            f"{what}: {name!r} is not a device (cpu, cuda, cuda:N, mps); this machine has {here}"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"{what}: {name} asked, but this machine has no CUDA device (no driver or no "
                f"GPU visible to torch); it has {here}"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"{what}: {name} asked, but this machine has {here}")
    elif dev.type == "mps" and "mps" not in here:
        raise DeviceError(f"{what}: mps asked, but this machine has {here}")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(
            f"{what}: avsc runs on cpu, cuda or mps, not {name}; this machine has {here}"
        )
    return dev


def dist_info() -> tuple[int, int]:
    """``(world_size, rank)`` from torchrun's environment (1, 0 without it)."""
    return int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))


def init_distributed(device: torch.device) -> bool:
    """Initialise the process group when launched by torchrun; True when distributed."""
    world, _ = dist_info()
    if world <= 1:
        return False
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return True


def is_main_process() -> bool:
    return dist_info()[1] == 0


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - seeds libraries that use the legacy RNG
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return int(seed) * 1_000_003 + int(epoch)


# --------------------------------------------------------------------------------------
# the loop


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Batches of one epoch: a permutation seeded by ``seed`` cut into global batches of
    ``batch_size`` (the last partial one dropped unless it is the only one); rank ``r`` of
    ``world`` takes the ``r``-th contiguous slice of every global batch. Every process count
    therefore sees the same global batches, which keeps DistributedDataParallel runs close to
    single-process ones."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        world: int = 1,
        rank: int = 0,
        seed: int = 0,
        max_batches: int | None = None,
    ):
        self.n, self.batch_size, self.world, self.rank, self.seed = n, batch_size, world, rank, seed
        full = n // batch_size
        self.batches = full if full else 1
        if max_batches:
            self.batches = min(self.batches, max_batches)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        b = min(self.batch_size, self.n)
        per = b // self.world
        for i in range(self.batches):
            batch = perm[i * b : (i + 1) * b]
            yield batch[self.rank * per : (self.rank + 1) * per]


@dataclass
class FitResult:
    """What :func:`fit` produced."""

    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = math.inf
    stopped_early: bool = False
    seconds: float = 0.0
    info: dict[str, float] = field(default_factory=dict)  # figures to report with the metrics


class _Gathered:
    """The batches of ``sampler`` from ``dataset.gather`` (see :meth:`FrameSamples.gather`)."""

    def __init__(self, dataset, sampler):
        self.dataset, self.sampler = dataset, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return (self.dataset.gather(idx) for idx in self.sampler)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    fused = {"fused": True} if cfg.fused_optimizer else {}
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused
    )


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, iters_per_epoch: int):
    """``CosineAnnealingWarmRestarts`` stepped per iteration: the first cycle lasts
    ``t0_epochs`` epochs, each next one ``t_mult`` times longer."""
    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer,
        T_0=max(1, cfg.t0_epochs * iters_per_epoch),
        T_mult=cfg.t_mult,
        eta_min=cfg.lr_min,
    )


def _to(
    batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool
) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        if k == "image" and channels_last and v.dim() == 4:
            v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fit(
    model: nn.Module,
    train_set: Dataset,
    evaluate: Callable[[nn.Module], dict[str, float]],
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    config_dict: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    resume: bool = True,
    callbacks: Iterable[Callable[[int, dict[str, Any]], None]] = (),
    name: str = "train",
) -> FitResult:
    """Train ``model`` on ``train_set`` (dict items with ``label``), validating with
    ``evaluate(model) -> {"val_logloss": ..., ...}`` after each epoch.

    Writes ``out_dir/last.pt``, ``out_dir/best.pt`` (plain-dict checkpoints holding
    ``model``, ``optimizer``, ``scheduler``, ``epoch``, ``metrics``, ``config``, ``versions``
    and ``extra``), ``out_dir/history.csv`` and, with ``cfg.tensorboard``, the same curves
    as TensorBoard event files in ``out_dir`` (:mod:`avsc.training.tracking`). With
    ``resume`` an existing ``last.pt`` is continued, but only when it was made with the same
    settings (``config_dict`` and the non-tensor and tensor values of ``extra``, except
    :data:`RESUMABLE_KEYS`): otherwise a :class:`RunMismatch` names the differing keys. The
    output folder is locked for the run (a second training into it is refused, naming the
    first). ``callbacks(epoch, row)`` run
    after each epoch (a raising callback interrupts the run, as a kill would).

    The pieces, each usable alone: :class:`RunFolder` (the lock, the resume check, the
    history and the checkpoint writer), :func:`prepare_model` (device, threads, distributed
    wrapping), :func:`epoch_loader` and :func:`train_one_epoch`.
    """
    folder = RunFolder(out_dir, name, tensorboard=cfg.tensorboard)
    with folder.locked(main=dist_info()[1] == 0):
        try:
            return _fit(
                model, train_set, evaluate, cfg, folder, config_dict, extra, resume, callbacks
            )
        finally:
            folder.tracker.close()


def prepare_model(model: nn.Module, cfg: TrainConfig) -> tuple[nn.Module, torch.device, bool]:
    """The device (``cfg.device``; on the CPU, the training threads), the process group
    under torchrun, the seed, and ``model`` moved there: ``(net, device, distributed)``,
    ``net`` being ``model`` wrapped in ``DistributedDataParallel`` where distributed."""
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(training_threads(cfg.cpu_threads))
        retain_freed_memory()  # a step's freed gradients reused, not fresh pages: 1.3x a step
    distributed = init_distributed(device)
    seed_everything(cfg.seed)
    model.to(device)
    if device.type == "cuda" and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    return net, device, distributed


def epoch_loader(train_set: Dataset, sampler, cfg: TrainConfig, device: torch.device, gen):
    """One epoch's batches of ``train_set`` in ``sampler``'s order."""
    if cfg.num_workers == 0 and getattr(train_set, "gathers", False):
        # in-memory inputs without per-item randomness: each batch in one indexing step,
        # the very tensors the DataLoader's per-item collation gives (without its cost)
        return _Gathered(train_set, sampler)
    return DataLoader(
        train_set,
        batch_sampler=sampler,
        num_workers=cfg.num_workers,
        generator=gen,
        pin_memory=device.type == "cuda",
        collate_fn=getattr(train_set, "collate", None),  # e.g. JPEG bytes as a list
    )


def train_one_epoch(
    net: nn.Module,
    loader: Iterable[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
    cfg: TrainConfig,
    epoch: int,
    name: str = "train",
    distributed: bool = False,
    keep: Path | str = "",
    train_set: Any = None,
    own_loss: Callable | None = None,
    hint: str = "lower train.lr?",
) -> tuple[float, float]:
    """One pass over ``loader``'s dict batches (``label`` and the model's inputs), stepping
    ``optimizer`` and ``scheduler`` after each: ``(mean training loss, the rate of the last
    step)``. The loss is cross-entropy, or ``own_loss(logits, label, inputs)``. A NaN or
    infinite loss (on any process) raises :class:`TrainingDiverged`, naming ``keep``, the
    last good checkpoint. The caller puts ``net`` in training mode."""
    main = dist_info()[1] == 0
    loss_fn = nn.CrossEntropyLoss()
    total, count = 0.0, 0
    last_lr = optimizer.param_groups[0]["lr"]
    bar = progress(
        loader,
        total=len(loader),  # type: ignore[arg-type]
        desc=f"{name} epoch {epoch + 1}",
        enabled=progress_enabled() and main,
        leave=False,
    )
    for step, batch in enumerate(bar):
        jpegs = batch.pop("jpeg", None)
        if jpegs is not None:  # train.decode_on_device: decoded and augmented here
            batch["image"] = train_set.decode_images(jpegs, device)
        batch = _to(batch, device, cfg.channels_last and device.type == "cuda")
        label = batch.pop("label")
        with _autocast(device, cfg.amp):
            logits = net(**batch)
            if logits.shape[0] != label.shape[0]:  # image-major: T frames per segment
                label = label.repeat_interleave(logits.shape[0] // label.shape[0])
            if own_loss is not None:  # e.g. distillation: the model defines its loss
                loss = own_loss(logits.float(), label, batch)
            else:
                loss = loss_fn(logits.float(), label)
        bad = not torch.isfinite(loss)
        if distributed:  # every rank stops together (one rank alone would hang the rest)
            import torch.distributed as dist

            flag = torch.tensor([float(bad)], device=device)
            dist.all_reduce(flag)
            bad = bool(flag.item() > 0)
        if bad:
            raise TrainingDiverged(
                f"{name}: loss is {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                "(on this or another process); "
                "stopped. "
                f"The last good epoch is kept in {keep} ({hint})"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        last_lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        total += float(loss.detach()) * len(label)
        count += len(label)
    train_loss = total / max(count, 1)
    if distributed:
        import torch.distributed as dist

        t = torch.tensor([total, count], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        train_loss = float(t[0] / t[1])
    return train_loss, last_lr


def _fit(
    model: nn.Module,
    train_set: Dataset,
    evaluate: Callable[[nn.Module], dict[str, float]],
    cfg: TrainConfig,
    folder: RunFolder,
    config_dict: dict[str, Any] | None,
    extra: dict[str, Any] | None,
    resume: bool,
    callbacks: Iterable[Callable[[int, dict[str, Any]], None]],
) -> FitResult:
    t_start = time.perf_counter()
    name = folder.name
    net, device, distributed = prepare_model(model, cfg)
    world, rank = dist_info()
    main = rank == 0
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {world} processes")
    n = len(train_set)  # type: ignore[arg-type]
    per_item = int(getattr(train_set, "samples_per_item", 1))  # image-major items hold T samples
    if cfg.batch_size % (per_item * world):
        raise ValueError(
            f"batch_size {cfg.batch_size} is not a multiple of {per_item} x {world} processes"
        )
    iters = len(
        GlobalBatchSampler(n, cfg.batch_size // per_item, world, rank, 0, cfg.max_train_batches)
    )
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, iters)
    own_loss = getattr(model, "training_loss", None)
    if resume:
        state = folder.resume(model, optimizer, scheduler, cfg, config_dict, extra)
    else:
        state = FitState()
    history = state.history

    stopped_early = False
    epochs_bar = progress(  # interactive runs: one bar per training (batch runs: none)
        None,
        total=cfg.max_epochs,
        initial=state.start_epoch,
        desc=name,
        enabled=progress_enabled() and main and in_notebook(),  # a terminal has the log lines
        unit="epoch",
    )
    for epoch in range(state.start_epoch, cfg.max_epochs):
        t0 = time.perf_counter()
        seed = epoch_seed(cfg.seed, epoch)
        torch.manual_seed(seed + 7919 * rank)  # dropout / augmentation differ per rank
        gen = torch.Generator().manual_seed(seed)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(seed)  # e.g. which augmentation-bank view each sample gets
        sampler = GlobalBatchSampler(n, cfg.batch_size // per_item, world, rank, seed, iters)
        loader = epoch_loader(train_set, sampler, cfg, device, gen)
        net.train()
        train_loss, last_lr = train_one_epoch(
            net, loader, optimizer, scheduler, device, cfg, epoch, name, distributed,
            keep=folder.last, train_set=train_set, own_loss=own_loss,
        )  # fmt: skip
        model.eval()
        metrics = evaluate(model)
        val_loss = float(metrics["val_logloss"])
        score = selection_score([r["val_logloss"] for r in history] + [val_loss], cfg)
        improved = state.update(epoch, score)
        row = {
            "epoch": epoch + 1,
            "lr": last_lr,  # the rate of the epoch's last step
            "train_loss": train_loss,
            **{k: float(v) for k, v in metrics.items()},
            "best": improved,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if device.type == "cuda":  # peak device memory so far (the rehearsal's projection)
            row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        history.append(row)
        if main:
            ck = training_checkpoint(
                model, epoch, row, config_dict, extra, state.best_loss, state.best_epoch,
                state.bad_epochs, history, optimizer=optimizer, scheduler=scheduler,
            )  # fmt: skip
            folder.write(ck, history, best=improved)
            log.info(
                "%s epoch %d/%d: %s%s (%.1f s)",
                name,
                epoch + 1,
                cfg.max_epochs,
                epoch_summary(row),
                ", best so far" if improved else "",
                row["seconds"],
                extra={"avsc_epoch": True},  # notebooks show a progress bar instead
            )
            if hasattr(epochs_bar, "set_postfix_str"):
                epochs_bar.set_postfix_str(epoch_summary(row, short=True), refresh=False)
                epochs_bar.update(1)
        if distributed:
            import torch.distributed as dist

            dist.barrier()
        for cb in callbacks:
            cb(epoch, row)
        if cfg.patience is not None and state.bad_epochs >= cfg.patience:
            stopped_early = True
            log.info("%s: no improvement for %d epochs: stopping early", name, state.bad_epochs)
            break
    if hasattr(epochs_bar, "close"):
        epochs_bar.close()
    best_epoch = state.best_epoch
    return FitResult(
        folder.best,
        folder.last,
        history,
        best_epoch,
        history[best_epoch]["val_logloss"] if 0 <= best_epoch < len(history) else state.best_loss,
        stopped_early,
        time.perf_counter() - t_start,
    )


def selection_score(val_losses: list[float], cfg: TrainConfig) -> float:
    """What the kept checkpoint minimises, after the last of ``val_losses`` (one per epoch so
    far): that epoch's validation log loss (``train.select_window`` 1, the paper's best
    epoch), or the mean over the last ``select_window`` epochs, so that the checkpoint kept
    ends a run of good epochs rather than one lucky one; epochs before a full window are not
    eligible (infinite score) unless the whole run is shorter than the window."""
    w = min(cfg.select_window, cfg.max_epochs)
    if len(val_losses) < w:
        return math.inf
    return float(np.mean(val_losses[-w:])) if w > 1 else float(val_losses[-1])


def epoch_summary(row: dict[str, Any], short: bool = False) -> str:
    """One epoch in words, accuracy in % like every table: ``train loss 0.081, val log loss
    1.211 (class-wise 1.207), val accuracy 70.8 % (class-wise 68.8 %), lr 9.5e-03``."""
    parts = [f"train loss {row['train_loss']:.3f}"]
    if "val_logloss" in row:
        cw = row.get("val_logloss_classwise")
        parts.append(
            f"val log loss {row['val_logloss']:.3f}"
            + (f" (class-wise {cw:.3f})" if cw is not None and not short else "")
        )
    if "val_accuracy" in row:
        cw = row.get("val_accuracy_classwise")
        parts.append(
            f"val accuracy {100 * row['val_accuracy']:.1f} %"
            + (f" (class-wise {100 * cw:.1f} %)" if cw is not None and not short else "")
        )
    if not short:
        parts.append(f"lr {row['lr']:.1e}")
    return ", ".join(parts)
