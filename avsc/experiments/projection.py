"""What a full run would cost, projected from a rehearsal (``avsc run --profile paper
--rehearse``): the profile's code path run on a tiny synthetic dataset in the real formats,
one epoch, on this machine.

Measured in the rehearsal's run folder: preprocessing seconds per clip (notebook 01's
metrics), feature-store bytes per clip (the store on disk), each system's seconds per epoch
(its ``history.csv``) per training clip, fine-tuning seconds per Places365 image (notebook
02's table), the notebooks' peak host memory (the manifest) and, on a GPU, the peak device
memory of training (``history.csv``). Projected to the full run: TAU Urban Audio-Visual
Scenes 2021 development set (12,291 clips: 8,646 in fold1_train, 3,645 in fold1_evaluate),
every system at the profile's ``train.max_epochs``, fine-tuning at ``finetune.epochs`` over
Places365-Standard's 1,803,460 training images.

Every per-unit cost includes the rehearsal's fixed costs (process start-up, loader workers,
the first batch), so with a handful of clips the projection is an upper bound; a rehearsal
with more clips (``-p clips_per_class=20``) tightens it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

FULL_CLIPS = 12_291
FULL_CLIP_SECONDS = 10  # every clip of the development set; 1-s segments
FULL_TRAIN_CLIPS = 8_646  # fold1_train (training and validation subsets)
FULL_EVALUATE_CLIPS = 3_645  # fold1_evaluate
PLACES365_TRAIN_IMAGES = 1_803_460


def dev_set_bytes() -> int:
    """The development set's zips, summed from dcase_util's package list (what avsc download
    fetches), rather than a number typed again here."""
    from avsc.data.download import package_list

    return sum(p.size for p in package_list("dev"))


def folder_bytes(path: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def project(
    run_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    figures_dir: str | os.PathLike,
    max_epochs: int,
    finetune_epochs: int,
    device: str,
    clip_seconds: float = float(FULL_CLIP_SECONDS),
) -> dict[str, Any]:
    """The measurements of a finished rehearsal in ``run_dir`` (clips of ``clip_seconds``)
    and the full run's projected hours, disk and memory (``max_epochs`` /
    ``finetune_epochs``: the profile's own). Costs are per second of audio (1-s segments),
    so a rehearsal with shorter clips than the dataset's 10 s projects the same run."""
    run, cache = Path(run_dir), Path(cache_dir)
    manifest = json.loads((run / "manifest.json").read_text())
    nb_seconds = {n["notebook"]: n.get("seconds", 0.0) for n in manifest["notebooks"]}
    peak_rss = max((n.get("peak_rss_mb", 0.0) for n in manifest["notebooks"]), default=0.0)
    data = json.loads((run / "metrics" / "01_data_and_features.json").read_text())
    clips = int(data["in_store"])
    from avsc.features import FeatureStore

    subsets = FeatureStore(cache).subsets()["subset"].value_counts().to_dict()
    train_clips = int(subsets.get("train", 0) + subsets.get("val", 0))
    store = folder_bytes(cache)
    measured: dict[str, Any] = {
        "clips": clips,
        "train_clips": train_clips,
        "evaluate_clips": int(subsets.get("evaluate", 0)),
        "clip_seconds": clip_seconds,
        "preprocess_seconds": float(data["preprocess_seconds"]),
        "store_bytes": store,
        "notebook_seconds": nb_seconds,
        "peak_host_rss_mb": peak_rss,
        "device": device,
    }
    rows = [
        {
            "step": "preprocessing (notebook 01)",
            "measured_s": measured["preprocess_seconds"],
            "per_unit_s": measured["preprocess_seconds"] / (clips * clip_seconds),
            "unit": "clip-second",
            "units_full": FULL_CLIPS * FULL_CLIP_SECONDS,
        }
    ]
    ft = Path(figures_dir) / "02_visual_finetuning.csv"
    places = run / "places365-standin" / "places365_train_standard.txt"
    if ft.is_file() and places.is_file():
        images = sum(1 for line in places.read_text().splitlines() if line.strip())
        for r in pd.read_csv(ft).to_dict("records"):
            rows.append(
                {
                    "step": f"fine-tuning {r['backbone']} on Places365 (notebook 02)",
                    "measured_s": float(r["seconds"]),
                    "per_unit_s": float(r["seconds"]) / images,
                    "unit": "image-epoch",
                    "units_full": PLACES365_TRAIN_IMAGES * finetune_epochs,
                }
            )
    peak_gpu = 0.0
    for hist in sorted((run / "results").rglob("history.csv")):
        h = pd.read_csv(hist)
        meta = json.loads((hist.parent / "metrics.json").read_text())
        if "peak_gpu_mb" in h:
            peak_gpu = max(peak_gpu, float(h["peak_gpu_mb"].max()))
        epoch_s = float(h["seconds"].mean())
        rows.append(
            {
                "step": f"training {meta['name']} ({max_epochs} epochs)",
                "measured_s": epoch_s,
                "per_unit_s": epoch_s / (train_clips * clip_seconds),
                "unit": "segment-epoch",
                "units_full": FULL_TRAIN_CLIPS * FULL_CLIP_SECONDS * max_epochs,
            }
        )
    trained = sum(r["measured_s"] for r in rows[1:])
    other = max(0.0, sum(nb_seconds.values()) - trained - measured["preprocess_seconds"])
    rows.append(
        {
            "step": "everything else (evaluation, t-SNE, tables; scaled by evaluation segments)",
            "measured_s": other,
            "per_unit_s": other / max(measured["evaluate_clips"] * clip_seconds, 1),
            "unit": "evaluation segment",
            "units_full": FULL_EVALUATE_CLIPS * FULL_CLIP_SECONDS,
        }
    )
    for r in rows:
        r["projected_hours"] = r["per_unit_s"] * r["units_full"] / 3600
    store_full = store / (clips * clip_seconds) * FULL_CLIPS * FULL_CLIP_SECONDS
    results = folder_bytes(run / "results") if (run / "results").is_dir() else 0
    dataset = dev_set_bytes()
    return {
        "measured": {**measured, "peak_gpu_mb": peak_gpu or None},
        "full_run": {
            "clips": FULL_CLIPS,
            "clip_seconds": FULL_CLIP_SECONDS,
            "train_clips": FULL_TRAIN_CLIPS,
            "evaluate_clips": FULL_EVALUATE_CLIPS,
            "max_epochs": max_epochs,
            "finetune_epochs": finetune_epochs,
            "places365_images": PLACES365_TRAIN_IMAGES,
        },
        "steps": rows,
        "projected": {
            "hours": sum(r["projected_hours"] for r in rows),
            "store_bytes": store_full,
            "dataset_bytes": dataset,
            "disk_bytes": store_full + 2 * dataset + results,
            "peak_host_memory_mb": peak_rss,
            "peak_gpu_memory_mb": peak_gpu or None,
        },
        "note": (
            "upper bound: every per-unit cost includes the rehearsal's fixed costs (start-up, "
            "loader workers, first batch); disk counts the dataset's zips and its unpacked "
            "files (avsc download --remove-zips saves the zips' half), the feature store "
            "scaled by clips, and the results as measured; memory is the rehearsal's peak"
        ),
    }


def format_projection(p: dict[str, Any]) -> str:
    """The projection as a Markdown table and a summary line, for the terminal and README."""
    from tabulate import tabulate

    rows = [
        [r["step"], f"{r['measured_s']:.1f}", f"{r['per_unit_s']:.3g} s / {r['unit']}",
         f"{r['units_full']:,}", f"{r['projected_hours']:,.1f}"]
        for r in p["steps"]
    ]  # fmt: skip
    table = tabulate(
        rows,
        headers=["step", "rehearsal s", "cost", "full-run units", "projected hours"],
        tablefmt="github",
        disable_numparse=True,
    )
    m, pr = p["measured"], p["projected"]
    gpu = f"{pr['peak_gpu_memory_mb'] / 1024:.1f} GiB" if pr["peak_gpu_memory_mb"] else "n/a"
    per_clip = m["store_bytes"] / (m["clips"] * m["clip_seconds"]) * FULL_CLIP_SECONDS / 1e6
    return (
        f"{table}\n\n"
        f"Full run on this machine ({m['device']}): about {pr['hours']:,.0f} hours "
        f"({pr['hours'] / 24:,.1f} days); disk about {pr['disk_bytes'] / 1e9:,.0f} GB "
        f"(feature store {pr['store_bytes'] / 1e9:,.1f} GB, "
        f"{per_clip:.2f} MB per 10-s clip; dataset zips and files "
        f"2 x {pr['dataset_bytes'] / 1e9:.0f} GB); peak "
        f"host memory {pr['peak_host_memory_mb'] / 1024:.1f} GiB; peak GPU memory {gpu}. "
        f"Measured on {m['clips']} clips of {m['clip_seconds']:g} s ({m['train_clips']} for "
        f"training): {p['note']}."
    )
