#!/usr/bin/env python3
"""Training throughput of the joint system at the paper's scale (issue 13, section 5):
tf_efficientnetv2_s at 288 px as the frozen visual encoder, batch 256, bf16 autocast and
channels_last on CUDA (``train.amp``, ``train.channels_last``), in the three ways of feeding
it images:

- ``online``: every training sample (one acoustic frame) has its own augmented image, so each
  step encodes 256 images (the paper's method);
- ``image_major``: batches of whole segments, each image encoded once for its 6 acoustic
  frames (``train.image_major``): 43 images per step;
- ``bank``: precomputed embeddings of augmented views (``train.aug_bank``): no image encoded.

Random weights and random inputs already on the device (the loader is measured by
``benchmarks/loader.py``): this is the step time of the model alone. Projects one joint epoch
of the full development set (7,907 training clips x 10 segments x 6 acoustic frames) and 150
epochs; reports the peak device memory of a step at batch 256.

    python benchmarks/gpu_throughput.py [--device cuda] [--steps 20] [--batch-size 256]

Ends with one ``name: value`` line per figure.
"""

from __future__ import annotations

import argparse
import time

import torch

import avsc.experiments as S
from avsc.config import ExperimentConfig
from avsc.experiments.registry import Parts
from avsc.models.visual import RANDOM, VisualEncoder

TRAIN_CLIPS, SEGMENTS, FRAMES = 7_907, 10, 6  # fold1 training clips; 1-s segments; per segment
EPOCHS = 150


def build(cfg: ExperimentConfig, backbone: str, size: int, device: torch.device):
    ve = VisualEncoder(backbone, weights=RANDOM, image_size=size)
    parts = Parts(cfg, 10, n_bins=cfg.audio.n_mels, visual=ve, trained=lambda name: None)
    parts.pretrained = parts.acoustic_encoder  # a random acoustic encoder of the right shape
    model = S.get_system("joint").build(parts).to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def batch_for(mode: str, model, b: int, size: int, n_bins: int, device: torch.device) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)
    label = torch.randint(10, (b,), generator=g)
    if mode == "online":
        image = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g)
        batch = {"audio": torch.randn(b, 2, n_bins, generator=g), "image": image}
    elif mode == "image_major":
        segs = b // FRAMES
        image = torch.randint(0, 256, (segs, 3, size, size), dtype=torch.uint8, generator=g)
        batch = {"audio": torch.randn(segs, FRAMES, 2, n_bins, generator=g), "image": image}
        label = torch.randint(10, (segs * FRAMES,), generator=g)
    else:
        d = model.ve.num_features
        batch = {"audio": torch.randn(b, 2, n_bins, generator=g), "vemb": torch.randn(b, d)}
    out = {k: v.to(device) for k, v in batch.items()}
    if "image" in out and device.type == "cuda":
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out, label.to(device)


def samples_per_s(model, batch, label, steps: int, device: torch.device, amp: bool) -> float:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    cast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if amp and device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        with cast:
            loss = torch.nn.functional.cross_entropy(model(**batch).float(), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    step()  # warm up (cuDNN autotuning, allocator)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * len(label) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backbone", default="tf_efficientnetv2_s")
    ap.add_argument("--image-size", type=int, default=288)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--modes", nargs="+", default=["online", "image_major", "bank"])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="does it run? the CPU, timm's tiny test_efficientnet, 2 steps of 8",
    )
    args = ap.parse_args()
    if args.quick:
        args.device, args.backbone, args.image_size = "cpu", "test_efficientnet", 64
        args.batch_size, args.steps = 8, 2
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    cfg = ExperimentConfig().override({"train.batch_size": args.batch_size})
    model = build(cfg, args.backbone, args.image_size, device)
    epoch_samples = TRAIN_CLIPS * SEGMENTS * FRAMES
    name = "gpu" if device.type == "cuda" else device.type
    if device.type == "cuda":
        print(f"{name}_device: {torch.cuda.get_device_name(device)}")
    for mode in args.modes:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        batch, label = batch_for(
            mode, model, args.batch_size, args.image_size, cfg.audio.n_mels, device
        )
        rate = samples_per_s(model, batch, label, args.steps, device, cfg.train.amp)
        epoch_min = epoch_samples / rate / 60
        tag = f"{name}_{args.backbone}_{args.image_size}_{mode}"
        print(f"{tag}_samples_per_s: {rate:.0f}")
        print(f"{tag}_joint_epoch_minutes_full_dataset: {epoch_min:.1f}")
        print(f"{tag}_joint_{EPOCHS}_epochs_hours: {epoch_min * EPOCHS / 60:.1f}")
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**30
            print(f"{tag}_peak_memory_gib_batch_{args.batch_size}: {peak:.1f}")
        del batch


if __name__ == "__main__":
    main()
