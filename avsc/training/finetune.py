"""Visual-encoder fine-tuning on Places365 or any ImageFolder, method.md section 5.

The paper's visual encoders are ImageNet networks fine-tuned on Places365 (365 scene
classes). :func:`finetune_visual` fine-tunes a timm backbone on a Places365 root
(torchvision's ``Places365`` layout) or any ImageFolder, saves a plain-dict checkpoint that
:class:`avsc.models.VisualEncoder` loads, and reports top-1 on held-out images before and
after. "Before" is the starting backbone's features under a nearest-class-mean classifier
(no training); "after" is the fine-tuned network itself, and, for a like-for-like view, the
same nearest-class-mean classifier on the fine-tuned features.

:func:`make_places_standin` writes a small procedurally drawn ImageFolder of place-like
classes that stands in for Places365 in the demo (it is not Places365, and says so).
"""

from __future__ import annotations

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

from avsc.training.checkpoint import load_checkpoint, save_checkpoint
from avsc.training.loop import resolve_device, seed_everything
from avsc.utils import progress, versions

log = logging.getLogger(__name__)

STANDIN_CLASSES = (
    "beach",
    "corridor",
    "desert_road",
    "forest_path",
    "harbor",
    "library",
    "parking_lot",
    "platform",
    "skyline",
    "stadium",
    "tunnel",
    "wheat_field",
)


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


PLACES_LISTS = {"train": "places365_train_standard.txt", "val": "places365_val.txt"}
PLACES_DIRS = {  # torchvision's folder names first, then the CSAIL archives' own
    ("train", "256"): ("data_256_standard", "data_256"),
    ("train", "large"): ("data_large_standard", "data_large"),
    ("val", "256"): ("val_256",),
    ("val", "large"): ("val_large",),
}


class Places365Folder(Dataset):
    """One split of a Places365-Standard root, read from its own file lists: ``(PIL image,
    label)`` like torchvision's ``Places365``, without its checksums of the full lists (so a
    root holding a subset of the lists and images works) and with either image size.

    The layout is CSAIL's (and torchvision's): ``categories_places365.txt``
    (``/a/airfield 0``), ``places365_train_standard.txt`` / ``places365_val.txt`` (``image
    label`` lines) and the images under ``data_256[_standard]/`` / ``val_256/`` (``size``
    "256", the 256x256 release) or ``data_large[_standard]/`` / ``val_large/`` ("large");
    ``size`` "auto" takes the 256 release when present.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", size: str = "auto"):
        if split not in PLACES_LISTS:
            raise ValueError(f"Places365 split must be 'train' or 'val', got {split!r}")
        if size not in ("auto", "256", "large"):
            raise ValueError(f"Places365 size must be 'auto', '256' or 'large', got {size!r}")
        root = Path(root)
        self.classes = places365_categories(root)
        listing = root / PLACES_LISTS[split]
        if not listing.is_file():
            raise FileNotFoundError(
                f"{listing}: Places365 file list missing (it comes with the devkit, "
                "filelist_places365-standard.tar)"
            )
        sizes = ("256", "large") if size == "auto" else (size,)
        found = [root / d for z in sizes for d in PLACES_DIRS[(split, z)] if (root / d).is_dir()]
        if not found:
            names = [d for z in sizes for d in PLACES_DIRS[(split, z)]]
            raise FileNotFoundError(
                f"{root}: no Places365 {split} image folder (looked for {names})"
            )
        self.images_dir = found[0]
        self.samples: list[tuple[Path, int]] = []
        for n, line in enumerate(listing.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= len(self.classes):
                raise ValueError(f"{listing}, line {n}: expected 'image label', got {line!r}")
            self.samples.append((self.images_dir / parts[0].lstrip("/"), int(parts[1])))
        if not self.samples:
            raise ValueError(f"{listing}: no images listed")
        missing = [p for p, _ in self.samples[:50] if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{missing[0]}: listed in {listing.name} but absent "
                f"({len(missing)} of the first {min(50, len(self.samples))} listed images)"
            )
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                return img.convert("RGB"), label
        except OSError as exc:
            raise OSError(f"{path}: unreadable image ({exc})") from exc


def places365_categories(root: str | os.PathLike) -> list[str]:
    """The 365 class names of ``categories_places365.txt`` in label order (``/a/airfield
    0`` -> ``airfield``; ``/b/bakery/shop 12`` -> ``bakery/shop``)."""
    path = Path(root) / "categories_places365.txt"
    names: dict[int, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}, line {n}: expected '/x/name index', got {line!r}")
        names[int(parts[1])] = parts[0].lstrip("/").split("/", 1)[-1]
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{path}: class indices are not 0..{len(names) - 1}")
    return [names[i] for i in range(len(names))]


def open_image_dataset(
    root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0, places_size: str = "auto"
):
    """``(train, val, classes, description)`` for a Places365 root or an ImageFolder.

    Places365: ``categories_places365.txt`` at the root (:class:`Places365Folder`), split
    ``train-standard`` / ``val``. ImageFolder: ``root/train`` and ``root/val`` when both
    exist, else one folder split ``val_fraction`` per class, seeded.
    """
    from torchvision import datasets

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found")
    if (root / "categories_places365.txt").is_file():
        train = Places365Folder(root, "train", places_size)
        val = Places365Folder(root, "val", places_size)
        desc = f"Places365 at {root} ({train.images_dir.name}, {val.images_dir.name})"
        return train, val, list(train.classes), desc
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = datasets.ImageFolder(str(root / "train"))
        val = datasets.ImageFolder(str(root / "val"))
        if train.classes != val.classes:
            raise ValueError(f"{root}: train/ and val/ hold different classes")
        return train, val, list(train.classes), f"ImageFolder {root} (train/ and val/)"
    full = datasets.ImageFolder(str(root))
    targets = np.asarray(full.targets)
    rng = np.random.default_rng(seed)
    val_idx = []
    for k in range(len(full.classes)):
        idx = np.flatnonzero(targets == k)
        rng.shuffle(idx)
        val_idx += idx[: max(1, int(round(val_fraction * len(idx))))].tolist()
    val_set = set(val_idx)
    train_idx = [i for i in range(len(full)) if i not in val_set]
    return (
        Subset(full, train_idx),
        Subset(full, sorted(val_set)),
        list(full.classes),
        (f"ImageFolder {root} ({val_fraction:.0%} held out per class, seed {seed})"),
    )


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
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 1e-2,
    image_size: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "auto",
    num_workers: int = 0,
    freeze_bn: bool = True,
    ncm_images: int | None = 20000,
    places_size: str = "auto",
) -> FinetuneResult:
    """Fine-tune ``backbone`` (starting from ``weights``, see
    :func:`avsc.models.visual.create_backbone`) on the images at ``images``; write ``out``
    (a ``.pt`` file) holding ``model`` (the backbone and its new head), ``classes``,
    ``metrics``, ``config`` and ``versions``. SGD with momentum and a cosine schedule;
    RandomResizedCrop + flip for training, resize + centre crop for evaluation. The new head
    starts from the class means (:func:`imprinted_head`); ``freeze_bn`` keeps the backbone's
    BatchNorm statistics, which a few small batches would otherwise pull off.

    The nearest-class-mean figures use at most ``ncm_images`` training images (a seeded
    random subset; None: all). Each finished epoch is saved to ``<out>.last.pt`` (weights,
    optimiser, schedule, random state), from which an interrupted run resumes; the file is
    removed once ``out`` is written."""
    from avsc.utils import exclusive_lock

    out = Path(out)
    lock = out.with_name(f".{out.name}.lock")  # one fine-tuning per output file at a time
    with exclusive_lock(lock, f"fine-tuning output {out}"):
        from timm.data import resolve_data_config

        from avsc.config import AugmentConfig
        from avsc.features.datasets import eval_transform, train_transform
        from avsc.models.visual import create_backbone

        t0 = time.perf_counter()
        seed_everything(seed)
        dev = resolve_device(device)
        train_base, val_base, classes, source = open_image_dataset(
            images, val_fraction, seed, places_size
        )
        body = create_backbone(backbone, weights)
        cfg = resolve_data_config({}, model=body)
        size = image_size or int(cfg["input_size"][-1])
        crop_pct = float(cfg.get("crop_pct", 0.875))
        aug = AugmentConfig(crop_scale=(0.35, 1.0))
        train_eval = _Images(train_base, eval_transform(size, crop_pct))
        train_aug = _Images(train_base, train_transform(size, aug))
        val = _Images(val_base, eval_transform(size, crop_pct))

        def mk(ds, shuffle, g=None):
            return DataLoader(
                ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, generator=g
            )

        if ncm_images is not None and len(train_eval) > ncm_images:  # Places365: 1.8 M images
            pick = np.random.default_rng(seed).choice(len(train_eval), ncm_images, replace=False)
            train_eval = Subset(train_eval, np.sort(pick).tolist())
        last = out.with_name(out.name + ".last.pt")
        run_key = {
            "images": str(images),
            "backbone": backbone,
            "weights": None if weights is None else str(weights),
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "image_size": size,
            "seed": seed,
            "freeze_bn": freeze_bn,
        }
        st = load_checkpoint(last) if last.is_file() else None
        if st is not None and st.get("run") != run_key:
            raise ValueError(
                f"{last}: an interrupted fine-tuning with other settings ({st.get('run')}); "
                "remove it or use another output path"
            )
        norm_body = _Normalized(body, cfg["mean"], cfg["std"]).to(dev)
        if st is None:
            tr_f, tr_y = _features(norm_body, mk(train_eval, False), dev)
            va_f, va_y = _features(norm_body, mk(val, False), dev)
            before = nearest_class_mean_top1(tr_f, tr_y, va_f, va_y, len(classes))
            head = imprinted_head(tr_f, tr_y, len(classes))
        else:  # resuming: "before" and the head come from the saved state
            before = float(st["before"])
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
            {"params": body.parameters(), "lr": lr * 0.1},
            {"params": head.parameters(), "lr": lr},
        ]
        opt = torch.optim.SGD(params, momentum=0.9, weight_decay=1e-4)
        steps = max(1, epochs * math.ceil(len(train_aug) / batch_size))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 1e-3)
        loss_fn = nn.CrossEntropyLoss()
        history: list[dict[str, Any]] = []
        start = 0
        if st is not None:
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            torch.set_rng_state(st["rng"])
            history, start = list(st["history"]), int(st["epoch"]) + 1
            log.info("fine-tuning %s: resuming after epoch %d from %s", backbone, start, last)
        for epoch in range(start, epochs):
            model.train()
            if freeze_bn:  # small fine-tuning sets: keep the pretrained BatchNorm statistics
                for m in body.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            total, n = 0.0, 0
            for x, y in progress(
                mk(train_aug, True, g), desc=f"fine-tune epoch {epoch + 1}", leave=False
            ):
                x, y = x.to(dev), y.to(dev)
                loss = loss_fn(model(x), y)
                if not torch.isfinite(loss):
                    raise RuntimeError(
                        f"fine-tuning {backbone}: loss is {loss.item()} at epoch {epoch + 1}"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(y)
                n += len(y)
            model.eval()
            correct = 0
            with torch.no_grad():
                for x, y in mk(val, False):
                    correct += int((model(x.to(dev)).argmax(1).cpu() == y).sum())
            top1 = correct / len(val)
            history.append({"epoch": epoch + 1, "train_loss": total / max(n, 1), "val_top1": top1})
            log.info(
                "fine-tune %s epoch %d/%d train_loss %.4f val_top1 %.3f",
                backbone,
                epoch + 1,
                epochs,
                total / max(n, 1),
                top1,
            )
            save_checkpoint(
                last,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "rng": torch.get_rng_state(),
                    "epoch": epoch,
                    "history": history,
                    "before": before,
                    "run": run_key,
                },
            )
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
        return res

    # --------------------------------------------------------------------------------------
    # the demo's stand-in for Places365


def make_places_standin(
    out: str | os.PathLike,
    images_per_class: int = 40,
    size: int = 128,
    classes: tuple[str, ...] = STANDIN_CLASSES,
    seed: int = 0,
) -> Path:
    """Write a small ImageFolder (``out/<class>/<i>.png``) of procedurally drawn place-like
    scenes: per class a horizon, sky and ground colours, an oriented texture and a number of
    structures, each image with random variation. A stand-in for Places365 so the demo can
    run its fine-tuning step offline; it is not Places365 and carries a README saying so."""
    from PIL import Image

    out = Path(out)
    rng0 = np.random.default_rng(np.random.SeedSequence([seed, 365]))
    protos = []
    for _ in classes:
        protos.append(
            {
                "horizon": rng0.uniform(0.2, 0.8),
                "sky": rng0.uniform(0, 1, 3),
                "ground": rng0.uniform(0, 1, 3),
                "freq": rng0.uniform(2, 14),
                "angle": rng0.uniform(0, math.pi),
                "blocks": int(rng0.integers(0, 7)),
                "block_col": rng0.uniform(0, 1, 3),
            }
        )
    yy, xx = np.mgrid[0:size, 0:size] / size
    for ci, name in enumerate(classes):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        p = protos[ci]
        for i in range(images_per_class):
            rng = np.random.default_rng(np.random.SeedSequence([seed, 366, ci, i]))
            h = np.clip(p["horizon"] + rng.normal(0, 0.08), 0.05, 0.95)
            sky = np.clip(p["sky"] + rng.normal(0, 0.12, 3), 0, 1)
            ground = np.clip(p["ground"] + rng.normal(0, 0.12, 3), 0, 1)
            img = np.where(
                (yy < h)[..., None], sky * (0.7 + 0.3 * yy[..., None] / max(h, 1e-3)), ground
            )
            ang = p["angle"] + rng.normal(0, 0.3)
            tex = np.sin(
                2 * math.pi * p["freq"] * (xx * math.cos(ang) + yy * math.sin(ang))
                + rng.uniform(0, 6.3)
            )
            img = img * (1 + 0.15 * tex[..., None] * (yy >= h)[..., None])
            for _ in range(max(0, p["blocks"] + int(rng.integers(-1, 2)))):
                w, hh = rng.uniform(0.05, 0.25), rng.uniform(0.1, 0.5)
                x0 = rng.uniform(0, 1 - w)
                m = (xx >= x0) & (xx < x0 + w) & (yy < h) & (yy > h - hh)
                img[m] = np.clip(p["block_col"] + rng.normal(0, 0.1, 3), 0, 1)
            img = np.clip(img * rng.uniform(0.7, 1.2) + rng.normal(0, 0.04, img.shape), 0, 1)
            Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    (out / "README.md").write_text(
        "# Synthetic stand-in for Places365\n\nProcedurally drawn place-like images written by "
        f"avsc.training.finetune.make_places_standin (seed {seed}, {images_per_class} per class, "
        f"{size} px). NOT Places365: it lets the demo run its visual-encoder fine-tuning step "
        "offline. Results on it say nothing about Places365.\n"
    )
    return out
