"""Notebook 02's step: fine-tune the series' visual backbones and record which weights every
later system uses (``visual/weights.json`` in the run folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from avsc.config import ExperimentConfig
from avsc.data.standin import make_places_standin
from avsc.training.finetune import finetune_visual
from avsc.utils import atomic_write_json


def finetune_backbones(
    run_dir: str | os.PathLike,
    config: ExperimentConfig,
    backbones: list[str],
    finetune: list[str],
    start_weights: dict[str, str],
    places_root: str = "",
    use_finetuned: bool = True,
) -> pd.DataFrame:
    """Fine-tune the ``finetune`` backbones on Places365 at ``places_root`` (or, when it is
    empty, the synthetic stand-in written under ``run_dir``) with the ``finetune`` section of
    ``config``; record in ``run_dir/visual/weights.json`` which weights every backbone of
    ``backbones`` uses from now on (the fine-tuned ones with ``use_finetuned``, else the
    starting ones); return top-1 before / after per fine-tuned backbone."""
    run = Path(run_dir)
    fc = config.finetune
    rows = []
    chosen = {b: start_weights[b] for b in backbones if start_weights.get(b)}
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
            weights=start_weights.get(b),
            config=fc,
            device=config.train.device,
            num_workers=config.train.num_workers,
        )
        if use_finetuned:
            chosen[b] = str(r.checkpoint)
        rows.append(
            {
                "backbone": b,
                "images": r.source if places_root else "SYNTHETIC stand-in for Places365",
                "classes": len(r.classes),
                "start_weights": start_weights.get(b) or "random init",
                "top1_before_ncm": 100 * r.top1_before,  # %, like every table
                "top1_after": 100 * r.top1_after,
                "top1_after_ncm": 100 * r.top1_after_ncm,
                "seconds": round(r.seconds, 1),
            }
        )
    atomic_write_json(run / "visual" / "weights.json", chosen)
    return pd.DataFrame(rows)
