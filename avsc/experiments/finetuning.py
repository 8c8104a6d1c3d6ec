"""Notebook 02's step: fine-tune the series' visual backbones and record which weights every
later system uses (``visual/weights.json`` in the run folder)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from avsc.config import ExperimentConfig
from avsc.data.standin import make_places_standin
from avsc.training.finetune import finetune_visual
from avsc.utils import atomic_write_json

_UNSET: Any = object()


def finetune_backbones(
    run_dir: str | os.PathLike,
    config: ExperimentConfig,
    backbones: list[str],
    finetune: list[str],
    *args: Any,
    places_root: Any = _UNSET,
    use_finetuned: Any = _UNSET,
    start_weights: dict[str, str] | None = None,
) -> pd.DataFrame:
    """``finetune_backbones(run_dir, config, backbones, finetune, places_root="",
    use_finetuned=True)``: fine-tune the ``finetune`` backbones on Places365 at
    ``places_root`` (or, when it is empty, the synthetic stand-in written under ``run_dir``)
    with the ``finetune`` section of ``config``, each from its ``visual.weights``; record in
    ``run_dir/visual/weights.json`` which weights every backbone of ``backbones`` uses from
    now on (the fine-tuned ones with ``use_finetuned``, else the starting ones); return top-1
    before / after per fine-tuned backbone. ``start_weights`` (deprecated; also the old
    fifth positional argument, before ``places_root``) is read into ``visual.weights`` for
    this release."""
    args = list(args)
    if args and isinstance(args[0], dict):  # the old order: start_weights, places_root, ...
        start_weights = args.pop(0)
    if places_root is _UNSET:
        places_root = args.pop(0) if args else ""
    if use_finetuned is _UNSET:
        use_finetuned = args.pop(0) if args else True
    if args:
        raise TypeError(f"finetune_backbones: {len(args)} positional argument(s) too many")
    if start_weights:
        warnings.warn(
            "finetune_backbones(start_weights=...) is deprecated: the starting weights are "
            "the config's visual.weights ({backbone: weights})",
            DeprecationWarning,
            stacklevel=2,
        )
        v = config.visual
        weights = v.weights_by_backbone(v.weights, v.backbone)
        config = config.override({"visual.weights": {**weights, **start_weights}})
    run = Path(run_dir)
    fc = config.finetune
    rows = []
    chosen = {b: w for b in backbones if (w := config.visual.weights_for(b))}
    images = places_root
    if finetune and not images:
        images = make_places_standin(
            run / "places_standin",
            images_per_class=fc.standin_images,
            size=max(64, fc.image_size or 96),
            seed=0,
        )
    for b in finetune:
        r = finetune_visual(
            images,
            b,
            run / "visual" / f"{b}.pt",
            weights=config.visual.weights_for(b),
            config=fc,
            device=config.train.device,
            tensorboard=config.train.tensorboard,
            num_workers=config.train.num_workers,
        )
        if use_finetuned:
            chosen[b] = str(r.checkpoint)
        rows.append(
            {
                "backbone": b,
                "images": r.source if places_root else "SYNTHETIC stand-in for Places365",
                "classes": len(r.classes),
                "start_weights": config.visual.weights_for(b) or "random init",
                "top1_before_ncm": 100 * r.top1_before,  # %, like every table
                "top1_after": 100 * r.top1_after,
                "top1_after_ncm": 100 * r.top1_after_ncm,
                "seconds": round(r.seconds, 1),
            }
        )
    atomic_write_json(run / "visual" / "weights.json", chosen)
    return pd.DataFrame(rows)
