"""Visual-encoder fine-tuning on Places365 or any ImageFolder, method.md section 5.

The paper's visual encoders are ImageNet networks fine-tuned on Places365 (365 scene
classes). :func:`finetune_visual` fine-tunes a timm backbone on a Places365 root
(torchvision's ``Places365`` layout) or any ImageFolder, saves a plain-dict checkpoint that
:class:`avsc.models.VisualEncoder` loads, and reports top-1 on held-out images before and
after. "Before" is the starting backbone's features under a nearest-class-mean classifier
(no training); "after" is the fine-tuned network itself, and, for a like-for-like view, the
same nearest-class-mean classifier on the fine-tuned features.

The images are read by :mod:`avsc.data.places`; the demo's synthetic stand-in for Places365
is :func:`avsc.data.standin.make_places_standin`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from avsc.config import AugmentConfig, FinetuneConfig, TrainConfig
from avsc.data.places import open_image_dataset
from avsc.features.datasets import eval_transform, train_transform
from avsc.models.visual import create_backbone
from avsc.training.checkpoint import save_checkpoint
from avsc.training.loop import epoch_seed, resolve_device, seed_everything, train_one_epoch
from avsc.training.runfolder import (
    RunFolder,
    RunMismatch,
    run_differences,
    training_checkpoint,
)
from avsc.utils import versions

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """Top-1 on the held-out images before and after fine-tuning, and the checkpoint."""

    backbone: str
    classes: list[str]
    top1_before: float  # nearest-class-mean on the starting features
    top1_after: float  # the fine-tuned network
    top1_after_ncm: float  # nearest-class-mean on the fine-tuned features
    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    source: str = ""


class _Images(Dataset):
    """(uint8 CHW tensor transformed, label) over a torchvision dataset of PIL images."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        img, label = self.base[i]
        from torchvision.transforms.v2 import functional as F

        x = F.pil_to_tensor(img.convert("RGB"))
        return self.transform(x), label


class _Labelled(Dataset):
    """``{"x": image, "label": label}`` items of an ``(image, label)`` dataset: the fit loop's
    batches (:func:`avsc.training.loop.train_one_epoch`)."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, label = self.base[i]
        return {"x": x, "label": label}


@torch.no_grad()
def _features(backbone: nn.Module, loader: DataLoader, device) -> tuple[torch.Tensor, torch.Tensor]:
    backbone.eval()
    feats, labels = [], []
    for x, y in loader:
        feats.append(backbone(x.to(device)).float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def nearest_class_mean_top1(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    val_f: torch.Tensor,
    val_y: torch.Tensor,
    n_classes: int,
) -> float:
    """Top-1 of the nearest class mean (cosine) classifier: a training-free feature probe."""
    tf = nn.functional.normalize(train_f, dim=1)
    means = torch.stack(
        [
            tf[train_y == k].mean(0) if (train_y == k).any() else torch.zeros(tf.shape[1])
            for k in range(n_classes)
        ]
    )
    pred = (nn.functional.normalize(val_f, dim=1) @ nn.functional.normalize(means, dim=1).T).argmax(
        1
    )
    return float((pred == val_y).float().mean())


def imprinted_head(
    feats: torch.Tensor, labels: torch.Tensor, n_classes: int, scale: float = 10.0
) -> nn.Linear:
    """A new classifier whose weights are the normalised class means of the starting
    features ("weight imprinting", Qi et al. 2018): it starts at nearest-class-mean accuracy
    instead of chance, so short fine-tuning runs improve on the starting features."""
    head = nn.Linear(feats.shape[1], n_classes)
    norm = feats.norm(dim=1).mean().clamp_min(1e-6)
    with torch.no_grad():
        for k in range(n_classes):
            m = feats[labels == k].mean(0) if (labels == k).any() else torch.zeros(feats.shape[1])
            head.weight[k] = scale * nn.functional.normalize(m, dim=0) / norm
        head.bias.zero_()
    return head


class _Normalized(nn.Module):
    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return self.model((x.float() / 255.0 - self.mean) / self.std)


def finetune_visual(
    images: str | os.PathLike,
    backbone: str,
    out: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    config: FinetuneConfig | None = None,
    device: str = "auto",
    num_workers: int = 0,
    tensorboard: bool = True,
) -> FinetuneResult:
    """Fine-tune ``backbone`` (starting from ``weights``, see
    :func:`avsc.models.visual.create_backbone`) on the images at ``images`` (a Places365 root
    or an ImageFolder, :func:`avsc.data.places.open_image_dataset`) with the settings of
    ``config`` (the ``finetune`` section); write ``out`` (a ``.pt`` file) holding ``model``
    (the backbone and its new head), ``classes``, ``metrics``, ``config`` and ``versions``.
    SGD with momentum and a cosine schedule; RandomResizedCrop + flip for training, resize +
    centre crop for evaluation. The new head starts from the class means
    (:func:`imprinted_head`); ``freeze_bn`` keeps the backbone's BatchNorm statistics, which a
    few small batches would otherwise pull off.

    The nearest-class-mean figures use at most ``ncm_images`` training images (a seeded
    random subset; None: all). The epochs are the fit loop's (:func:`train_one_epoch`), and
    so is the rest: a :class:`RunFolder` holds the lock (``.<out>.lock``) and writes each
    finished epoch to ``<out>.last.pt`` (the fit loop's checkpoint dict, plus the random
    state), from which an interrupted run resumes, with the fit loop's seeding and only with
    the same settings (a :class:`RunMismatch` names the ones that differ); the file is
    removed once ``out`` is written. The optimiser's settings (``backbone_lr_scale``,
    ``momentum``, ``weight_decay``) and the crops (``crop_scale``) are the section's keys."""
    fc = config or FinetuneConfig()
    out = Path(out)
    folder = RunFolder(  # one fine-tuning per output file at a time; resumes from <out>.last.pt
        out.parent,
        "fine-tuning",
        last=out.with_name(out.name + ".last.pt"),
        lock=out.with_name(f".{out.name}.lock"),
        what=f"fine-tuning output {out}",
        history_file=None,  # the history is kept in the checkpoint
        tensorboard=tensorboard,
        events=out.with_name(f"{out.stem}_tensorboard"),
    )
    with folder.locked(), contextlib.closing(folder.tracker):
        from timm.data import resolve_data_config

        t0 = time.perf_counter()
        epochs, batch_size, lr, seed = fc.epochs, fc.batch_size, fc.lr, fc.seed
        seed_everything(seed)
        dev = resolve_device(device)
        train_base, val_base, classes, source = open_image_dataset(
            images, fc.val_fraction, seed, fc.places_size
        )
        body = create_backbone(backbone, weights)
        cfg = resolve_data_config({}, model=body)
        size = fc.image_size or int(cfg["input_size"][-1])
        crop_pct = float(cfg.get("crop_pct", 0.875))
        aug = AugmentConfig(crop_scale=tuple(fc.crop_scale))
        train_eval = _Images(train_base, eval_transform(size, crop_pct))
        train_aug = _Images(train_base, train_transform(size, aug))
        val = _Images(val_base, eval_transform(size, crop_pct))

        def mk(ds, shuffle, g=None):
            return DataLoader(
                ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, generator=g
            )

        if fc.ncm_images is not None and len(train_eval) > fc.ncm_images:  # Places365: 1.8 M
            pick = np.random.default_rng(seed).choice(len(train_eval), fc.ncm_images, replace=False)
            train_eval = Subset(train_eval, np.sort(pick).tolist())
        last = folder.last
        run_key = {
            "images": str(images),
            "backbone": backbone,
            "weights": None if weights is None else str(weights),
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "image_size": size,
            "seed": seed,
            "freeze_bn": fc.freeze_bn,
            "backbone_lr_scale": fc.backbone_lr_scale,
            "momentum": fc.momentum,
            "weight_decay": fc.weight_decay,
            "crop_scale": fc.crop_scale,
        }
        st = folder.stored()
        if st is not None:
            stored = st.get("config", st.get("run"))  # "run": a file of an older avsc
            diffs = run_differences(  # settings added since: as they were (ADDED_SETTINGS)
                {"config": {"finetune": stored or {}}},
                {"config": {"finetune": run_key}},
                frozenset(),
            )
            if diffs:
                raise RunMismatch(
                    f"{last}: an interrupted fine-tuning with other settings "
                    f"({'; '.join(diffs)}); it resumes only with the same settings: remove it "
                    "or choose another output path"
                )
        norm_body = _Normalized(body, cfg["mean"], cfg["std"]).to(dev)
        if st is None:
            tr_f, tr_y = _features(norm_body, mk(train_eval, False), dev)
            va_f, va_y = _features(norm_body, mk(val, False), dev)
            before = nearest_class_mean_top1(tr_f, tr_y, va_f, va_y, len(classes))
            head = imprinted_head(tr_f, tr_y, len(classes))
        else:  # resuming: "before" and the head come from the saved state
            before = float(st["extra"]["before"] if "extra" in st else st["before"])
            head = nn.Linear(int(body.num_features), len(classes))
        log.info(
            "fine-tuning %s on %s: %d classes, %d train / %d val images; top-1 before %.3f",
            backbone,
            source,
            len(classes),
            len(train_aug),
            len(val),
            before,
        )
        model = _Normalized(nn.Sequential(body, head), cfg["mean"], cfg["std"]).to(dev)
        params = [
            {"params": body.parameters(), "lr": lr * fc.backbone_lr_scale},
            {"params": head.parameters(), "lr": lr},
        ]
        opt = torch.optim.SGD(params, momentum=fc.momentum, weight_decay=fc.weight_decay)
        steps = max(1, epochs * math.ceil(len(train_aug) / batch_size))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 1e-3)
        # the fit loop's epoch: cross-entropy, full precision (this loop never used autocast)
        one_epoch = TrainConfig(amp=False, channels_last=False)
        train_dicts = _Labelled(train_aug)
        history: list[dict[str, Any]] = []
        start = 0
        if st is not None:
            folder.restore(st, model, opt, sched)
            torch.set_rng_state(st["rng"])
            history = list(st["state"]["history"] if "state" in st else st["history"])
            start = int(st["epoch"]) + 1
            log.info("fine-tuning %s: resuming after epoch %d from %s", backbone, start, last)
        for epoch in range(start, epochs):
            model.train()
            if fc.freeze_bn:  # small fine-tuning sets: keep the pretrained BatchNorm statistics
                for m in body.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
            g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
            train_loss, _ = train_one_epoch(
                model, mk(train_dicts, True, g), opt, sched, dev, one_epoch, epoch, "fine-tune",
                keep=last, hint="lower finetune.lr?",
            )  # fmt: skip
            model.eval()
            correct = 0
            with torch.no_grad():
                for x, y in mk(val, False):
                    correct += int((model(x.to(dev)).argmax(1).cpu() == y).sum())
            top1 = correct / len(val)
            history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_top1": top1})
            log.info(
                "fine-tune %s epoch %d/%d train_loss %.4f val_top1 %.3f",
                backbone,
                epoch + 1,
                epochs,
                train_loss,
                top1,
            )
            ck = training_checkpoint(  # the fit loop's checkpoint dict; the last epoch is kept
                model, epoch, history[-1], run_key, {"before": before}, 1 - top1, epoch, 0,
                history, opt, sched,
            )  # fmt: skip
            ck["rng"] = torch.get_rng_state()  # the crops' and flips' random state
            folder.write(ck, history, best=False)
        after = history[-1]["val_top1"] if history else before
        tr_f, tr_y = _features(norm_body, mk(train_eval, False), dev)
        va_f, va_y = _features(norm_body, mk(val, False), dev)
        after_ncm = nearest_class_mean_top1(tr_f, tr_y, va_f, va_y, len(classes))
        sd = {f"backbone.{k}": v.cpu() for k, v in body.state_dict().items()}
        sd.update({f"classifier.{k}": v.cpu() for k, v in head.state_dict().items()})
        res = FinetuneResult(
            backbone,
            classes,
            before,
            after,
            after_ncm,
            out,
            history,
            time.perf_counter() - t0,
            source,
        )
        save_checkpoint(
            out,
            {
                "model": sd,
                "kind": "visual_backbone",
                "backbone": backbone,
                "classes": classes,
                "metrics": {
                    "top1_before": before,
                    "top1_after": after,
                    "top1_after_ncm": after_ncm,
                },
                "history": history,
                "config": {**run_key, "source": source},
                "versions": versions(),
            },
        )
        last.unlink(missing_ok=True)
        folder.tracker.result(
            {"backbone": backbone, **{k: v for k, v in run_key.items() if _is_scalar(v)}},
            {"test/top1_before": before, "test/top1_after": after, "test/top1_ncm": after_ncm},
        )
        return res


def _is_scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float | str)
