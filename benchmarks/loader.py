#!/usr/bin/env python3
"""Feeding a GPU (issue 13, section 4): images per second of the online-augmentation loader
on this CPU, per worker process, at the paper's sizes (frames stored at short side 320 px
as JPEG, RandomResizedCrop + flip + ColorJitter to 288 px), and how many workers a GPU that
consumes N images per second would need.

    python benchmarks/loader.py [--clips-per-class 3] [--seconds 4] [--workers 2] [--device cuda]

The device path (``train.decode_on_device``): the same frames' JPEG bytes decoded on
``--device`` (torchvision.io.decode_jpeg, nvJPEG on CUDA) and augmented there (transforms.v2
on device tensors), batches of 256 in the main process; its ratio to one loader worker says
how many CPU workers it replaces.

Builds a synthetic dataset in the real video format (1280x720, 24 fps, H.264) in a
temporary folder. Ends with one ``name: value`` line per figure; the ratios are measured in
this one run. An epoch of online augmentation decodes and augments about 450,000 images
(79,000 with image-major batching): its loader time is that count over the images per
second.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from avsc.config import AugmentConfig, DataConfig, FrameConfig, PreprocessConfig
from avsc.data.synth import make_synthetic_dataset
from avsc.features import FeatureStore, preprocess
from avsc.features.datasets import (
    ClipTable,
    FrameSource,
    decode_and_transform,
    subset_clips,
    train_transform,
)

EPOCH_IMAGES = {"online": 450_000, "image_major": 79_000}


class Images(Dataset):
    """Every stored frame of the training split, decoded from JPEG, then (optionally)
    augmented: what the online loader does per sample."""

    def __init__(self, cache: Path, size: int | None, encoded: bool = False):
        store = FeatureStore(cache)
        table = ClipTable(store, subset_clips(store, "train"))
        # read from the store each time; ``encoded``: only the JPEG bytes, what a worker does
        # with train.decode_on_device
        self.frames = FrameSource(table, in_memory="no", encoded=encoded)
        self.n_seg = table.segments
        self.n = len(table) * table.segments
        self.tf = train_transform(size, AugmentConfig()) if size else None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        img = self.frames.get(i // self.n_seg, i % self.n_seg)
        return self.tf(img) if self.tf is not None else img


def rate(ds: Dataset, workers: int, repeats: int = 2) -> float:
    """Images per second through a DataLoader with ``workers`` worker processes."""
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=workers,
                        collate_fn=lambda b: b, persistent_workers=workers > 0)  # fmt: skip
    next(iter(loader))  # start the workers
    t0, n = time.perf_counter(), 0
    for _ in range(repeats):
        for batch in loader:
            n += len(batch)
    return n / (time.perf_counter() - t0)


def device_rate(cache: Path, size: int, device: str, batch: int = 256, repeats: int = 3) -> float:
    """Images per second decoded and augmented on ``device`` from JPEG bytes held in memory
    (what the loader hands over with ``train.decode_on_device``)."""
    store = FeatureStore(cache)
    table = ClipTable(store, subset_clips(store, "train"))
    jpegs = [b for clip in FrameSource(table, in_memory="yes", encoded=True).memory for b in clip]
    jpegs = (jpegs * (batch // len(jpegs) + 1))[:batch]
    tf = train_transform(size, AugmentConfig())
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    decode_and_transform(jpegs, tf, device)  # warm up (nvJPEG handles, kernels)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        decode_and_transform(jpegs, tf, device)
    sync()
    return repeats * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips-per-class", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--short-side", type=int, default=320)
    ap.add_argument("--image-size", type=int, default=288)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="where the device path decodes: cpu, cuda")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="does it run? 1-s clips at 320x180 made in this process (the test command runs it)",
    )
    args = ap.parse_args()
    size = (320, 180) if args.quick else (1280, 720)
    if args.quick:
        args.seconds, args.short_side, args.image_size = 1.0, 90, 64
    torch.set_num_threads(1)  # one core per worker, like a loader process
    build_workers = 1 if args.quick else 2  # --quick: a pool's start-up would dominate
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = make_synthetic_dataset(
            tmp / "data", clips_per_class=args.clips_per_class, seconds=args.seconds,
            video_size=size, workers=build_workers, show_progress=False,
        )  # fmt: skip
        cfg = PreprocessConfig(
            data=DataConfig(clip_seconds=args.seconds),
            frames=FrameConfig(short_side=args.short_side),
        )
        rep = preprocess(root, tmp / "cache", cfg, workers=build_workers, show_progress=False)
        assert rep.ok, rep.format()
        read = rate(Images(tmp / "cache", None, encoded=True), 0)
        decode = rate(Images(tmp / "cache", None), 0)
        augment = rate(Images(tmp / "cache", args.image_size), 0)
        many = rate(Images(tmp / "cache", args.image_size), args.workers)
        on_device = device_rate(tmp / "cache", args.image_size, args.device)
    print(f"loader_jpeg_bytes_images_per_s_one_process: {read:.0f}")
    print(f"loader_decode_images_per_s_one_process: {decode:.0f}")
    print(f"loader_decode_augment_{args.image_size}_images_per_s_one_process: {augment:.0f}")
    w = args.workers
    print(f"loader_decode_augment_{args.image_size}_images_per_s_{w}_workers: {many:.0f}")
    print(f"loader_scaling_{args.workers}_workers_vs_one: {many / augment:.2f}")
    print(f"loader_augment_share_of_time: {1 - augment / decode:.2f}")
    for mode, images in EPOCH_IMAGES.items():
        print(f"loader_epoch_{mode}_minutes_per_worker: {images / augment / 60:.1f}")
    for gpu in (1000, 2000, 4000):
        print(f"loader_workers_to_feed_{gpu}_images_per_s: {math.ceil(gpu / augment)}")
    dev = args.device.split(":")[0]
    print(f"device_decode_augment_{args.image_size}_images_per_s_{dev}: {on_device:.0f}")
    print(f"device_path_{dev}_vs_one_loader_worker: {on_device / augment:.2f}")
    # with train.decode_on_device a worker only reads JPEG bytes: how much further it goes
    print(f"loader_worker_bytes_only_vs_decode_augment: {read / augment:.1f}")
    for gpu in (2000, 4000):
        need = math.ceil(gpu / read)
        print(f"loader_workers_to_feed_{gpu}_images_per_s_decode_on_device: {need}")


if __name__ == "__main__":
    main()
