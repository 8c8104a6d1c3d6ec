"""Places365 (CSAIL's scene dataset, the visual encoders' fine-tuning data, method.md
section 5) and any ImageFolder, read as torch datasets of ``(PIL image, label)``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Subset

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
