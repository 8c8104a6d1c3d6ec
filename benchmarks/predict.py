#!/usr/bin/env python3
"""``avsc predict`` on long clips: peak memory flat in the clip's length, and cold start.

    python benchmarks/predict.py [--minutes 60] [--runs 5] [--feature scalogram]

Writes, in a temporary folder, a 48 kHz 24-bit stereo WAV of 1 minute and one of
``--minutes`` minutes (noise, written block by block) and a self-contained audio-only
checkpoint with random weights (what is measured is the streaming front end and the model's
forward pass, not its accuracy), then runs ``avsc predict`` as a fresh process on each:

- peak resident memory of the long clip over the 1-minute clip (goal <= 1.2);
- cold start: wall time of ``avsc predict`` on a 10-s clip in a new process over the bare
  import floor ``python -c "import torch, timm"`` (medians of ``--runs`` alternating runs;
  goal <= 1.3), for the audio-only checkpoint on a WAV and for a joint checkpoint (AE + SC
  + a frozen ``--backbone`` visual encoder, random weights) on a 1280x720 H.264 MP4 with its
  WAV, the TAU pair.

Ends with one ``name: value`` line per figure. ``--quick`` checks that it runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from _common import peak_rss_mb  # benchmarks/ is on sys.path when run as a script

from avsc.config import ExperimentConfig
from avsc.data.tau import LABELS
from avsc.features.audio import filterbank
from avsc.models.acoustic import AcousticEncoder
from avsc.models.classifier import SceneClassifier
from avsc.models.fusion import AVSystem
from avsc.training.checkpoint import save_checkpoint

AVSC = [sys.executable, "-m", "avsc"]


def write_video(path: Path, seconds: int, size=(1280, 720), fps: int = 24) -> Path:
    import av

    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i in range(seconds * fps):
            img = np.roll(base, i, axis=1).repeat(8, 0).repeat(8, 1)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def joint_checkpoint(path: Path, feature: str, backbone: str, image_size: int) -> Path:
    from avsc.models.visual import VisualEncoder

    ck = torch.load(audio_only_checkpoint(path, feature), weights_only=True)
    cfg = ExperimentConfig()
    m = cfg.model
    torch.manual_seed(0)
    ve = VisualEncoder(backbone, weights=None, image_size=image_size)
    n_bins = int(ck["extra"]["norm_mean"].shape[-1])
    ae = AcousticEncoder(
        n_bins, 2, m.ae_channels, m.ae_hidden, m.embedding_dim, m.ae_dropout, m.multiscale
    )
    sc = SceneClassifier(ae.embedding_dim + ve.num_features, len(LABELS), m.sc_hidden)
    model = AVSystem(ae, sc, ve=ve, visual_input="image", ae_trainable=True)
    extra = {
        **ck["extra"],
        "system": "joint",
        "name": f"joint_{feature}_{backbone}",
        "backbone": backbone,
        "visual_input": "image",
        "visual": {"name": backbone, "image_size": image_size, "crop_pct": ve.crop_pct},
    }
    return save_checkpoint(
        path, {"model": model.state_dict(), "config": cfg.to_dict(), "extra": extra, "epoch": 0}
    )


def write_noise_wav(path: Path, seconds: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with sf.SoundFile(str(path), "w", 48000, 2, "PCM_24") as fh:
        for _ in range(seconds):
            fh.write(0.1 * rng.standard_normal((48000, 2)))
    return path


def audio_only_checkpoint(path: Path, feature: str) -> Path:
    cfg = ExperimentConfig()
    m = cfg.model
    n_bins = filterbank(feature, cfg.audio).shape[0]
    torch.manual_seed(0)
    ae = AcousticEncoder(
        n_bins, 2, m.ae_channels, m.ae_hidden, m.embedding_dim, m.ae_dropout, m.multiscale
    )
    model = AVSystem(ae, SceneClassifier(ae.embedding_dim, len(LABELS), m.sc_hidden))
    extra = {
        "system": "audio_only",
        "name": f"audio_only_{feature}",
        "feature": feature,
        "backbone": None,
        "visual_input": None,
        "ae_trainable": True,
        "labels": list(LABELS),
        "norm_mean": torch.zeros(2, n_bins),
        "norm_std": torch.ones(2, n_bins),
    }
    return save_checkpoint(
        path, {"model": model.state_dict(), "config": cfg.to_dict(), "extra": extra, "epoch": 0}
    )


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--feature", choices=["scalogram", "fbank"], default="scalogram")
    ap.add_argument("--backbone", default="tf_efficientnetv2_s", help="joint system's encoder")
    ap.add_argument("--image-size", type=int, default=288)
    ap.add_argument("--quick", action="store_true", help="does it run? (the test command runs it)")
    args = ap.parse_args()
    if args.quick:  # a 2-min "long" clip, one run, no warm-up, a tiny encoder, a 2-s video;
        # the 2-s clip stands in for the 1-minute one, and its run is the audio cold start
        args.minutes, args.runs, args.backbone, args.image_size = 2, 1, "test_efficientnet", 64
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ck = audio_only_checkpoint(tmp / "audio_only.pt", args.feature)
        joint = joint_checkpoint(tmp / "joint.pt", args.feature, args.backbone, args.image_size)
        seconds = 2 if args.quick else 10
        short = write_noise_wav(tmp / "ten_seconds.wav", seconds)
        video = write_video(tmp / "ten_seconds.mp4", seconds)
        one = short if args.quick else write_noise_wav(tmp / "one_minute.wav", 60)
        t = time.perf_counter()
        long = write_noise_wav(tmp / "long.wav", 60 * args.minutes)
        print(
            f"wrote a {args.minutes}-min WAV ({long.stat().st_size / 1e9:.2f} GB) in "
            f"{time.perf_counter() - t:.0f} s",
            flush=True,
        )

        predict = [*AVSC, "predict", "--checkpoint", str(ck)]
        t = time.perf_counter()
        rss_one = peak_rss_mb([*predict, str(one)])
        one_s = time.perf_counter() - t
        t = time.perf_counter()
        rss_long = peak_rss_mb([*predict, str(long)])
        long_s = time.perf_counter() - t
        print(
            f"peak RSS: 1 min {rss_one:.0f} MB, {args.minutes} min {rss_long:.0f} MB "
            f"({long_s:.0f} s for the long clip)",
            flush=True,
        )

        floor_cmd = [sys.executable, "-c", "import torch, timm"]
        audio_cmd = [*predict, str(short)]
        joint_cmd = [
            *AVSC,
            "predict",
            str(video),
            "--audio",
            str(short),
            "--checkpoint",
            str(joint),
        ]
        for cmd in (audio_cmd, joint_cmd, floor_cmd) if not args.quick else ():
            wall(cmd)  # warm the file cache
        cold, cold_joint, floor = ([one_s] if args.quick else []), [], []
        for _ in range(args.runs):
            if not args.quick:
                cold.append(wall(audio_cmd))
            cold_joint.append(wall(joint_cmd))
            floor.append(wall(floor_cmd))
        ratios = [c / f for c, f in zip(cold, floor, strict=True)]
        ratios_joint = [c / f for c, f in zip(cold_joint, floor, strict=True)]
        print(
            f"cold start on a 10-s clip: audio-only {statistics.median(cold):.2f} s, joint "
            f"({args.backbone} at {args.image_size} px, 1280x720 MP4) "
            f"{statistics.median(cold_joint):.2f} s; import floor torch + timm: "
            f"{statistics.median(floor):.2f} s (medians of {args.runs})"
        )

    print(f"predict_peak_rss_{args.minutes}min_over_1min: {rss_long / rss_one:.3f}")
    print(f"predict_peak_rss_1min_mb: {rss_one:.0f}")
    print(f"predict_peak_rss_{args.minutes}min_mb: {rss_long:.0f}")
    print(f"predict_cold_start_audio_only_s: {statistics.median(cold):.2f}")
    print(f"predict_cold_start_joint_s: {statistics.median(cold_joint):.2f}")
    print(f"import_floor_torch_timm_s: {statistics.median(floor):.2f}")
    print(f"predict_cold_start_audio_only_over_import_floor: {statistics.median(ratios):.3f}")
    print(f"predict_cold_start_joint_over_import_floor: {statistics.median(ratios_joint):.3f}")


if __name__ == "__main__":
    main()
