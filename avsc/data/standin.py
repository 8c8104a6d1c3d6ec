"""A synthetic stand-in for Places365, beside the synthetic TAU dataset (``avsc.data.synth``):
procedurally drawn place-like scenes so the demo runs its fine-tuning step offline. It is not
Places365, and says so in the README it writes."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

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
        f"avsc.data.standin.make_places_standin (seed {seed}, {images_per_class} per class, "
        f"{size} px). NOT Places365: it lets the demo run its visual-encoder fine-tuning step "
        "offline. Results on it say nothing about Places365.\n"
    )
    return out


def make_places365_layout_standin(
    out: str | os.PathLike, images_per_class: int = 2, val_per_class: int = 1, seed: int = 0
) -> Path:
    """The stand-in's scenes in Places365-Standard's own layout (CSAIL's 256x256 release), so
    that the reader of the real dataset (:class:`avsc.data.places.Places365Folder`) and a
    365-way head are exercised: ``categories_places365.txt`` with 365 classes (the first
    twelve carry the stand-in's images, the rest none), ``places365_train_standard.txt`` and
    ``places365_val.txt``, JPEG images in ``data_256/<letter>/<class>/`` and ``val_256/``.
    Used by ``avsc run --rehearse``; it is not Places365 and its README says so."""
    import tempfile

    from PIL import Image

    out = Path(out)
    names = [
        *STANDIN_CLASSES,
        *(f"standin_empty_{k:03d}" for k in range(365 - len(STANDIN_CLASSES))),
    ]
    (out / "val_256").mkdir(parents=True, exist_ok=True)
    cats = [f"/{n[0]}/{n} {k}" for k, n in enumerate(names)]
    train, val = [], []
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        folder = make_places_standin(
            tmp, images_per_class=images_per_class + val_per_class, size=256, seed=seed
        )
        for k, name in enumerate(STANDIN_CLASSES):
            pngs = sorted((folder / name).glob("*.png"))
            for i, png in enumerate(pngs):
                if i < images_per_class:
                    rel = f"/{name[0]}/{name}/{i + 1:08d}.jpg"
                    dst = out / "data_256" / rel.lstrip("/")
                    train.append(f"{rel} {k}")
                else:
                    rel = f"Places365_val_{len(val) + 1:08d}.jpg"
                    dst = out / "val_256" / rel
                    val.append(f"{rel} {k}")
                dst.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(png) as img:
                    img.convert("RGB").save(dst, quality=90)
    (out / "categories_places365.txt").write_text("\n".join(cats) + "\n")
    (out / "places365_train_standard.txt").write_text("\n".join(train) + "\n")
    (out / "places365_val.txt").write_text("\n".join(val) + "\n")
    (out / "README.md").write_text(
        "# Synthetic stand-in in the layout of Places365-Standard\n\nWritten by "
        "avsc.data.standin.make_places365_layout_standin for avsc run --rehearse: the "
        "stand-in's procedurally drawn scenes (12 of the 365 classes listed carry images). "
        "NOT Places365; results on it say nothing about Places365.\n"
    )
    return out
