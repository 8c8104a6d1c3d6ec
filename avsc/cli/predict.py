"""``avsc predict``: per-second scene probabilities of one clip."""

from __future__ import annotations

import argparse
import sys

from avsc.cli import options
from avsc.utils import TEXT_OUT


def add_parser(sub) -> None:
    pr = options.subcommand(
        sub,
        "predict",
        "per-second scene probabilities of a clip (settings: the checkpoint's)",
        "avsc predict clip.mp4 --checkpoint runs/demo/results/joint_scalogram_x/best.pt",
    )
    pr.add_argument("clip", help="an MP4 (its own audio track is used unless --audio), or a WAV")
    pr.add_argument("--audio", help="the clip's WAV (a TAU WAV + MP4 pair)")
    pr.add_argument("--checkpoint", required=True, help="a system's best.pt (from avsc train)")
    pr.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    pr.add_argument("--csv", help="also write the table to this CSV file")
    options.module_option(pr, "the checkpoint's system or feature kind is registered there")
    pr.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import warnings

    import pandas as pd

    from avsc.experiments.predict import predict_clip

    options.import_modules(args)
    options.check_device(args.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = predict_clip(args.clip, args.checkpoint, audio=args.audio, device=args.device)
    for note in dict.fromkeys(str(w.message) for w in caught):  # each once, in order
        print(f"avsc predict: note: {note}", file=sys.stderr)
    if args.csv:
        df.to_csv(args.csv, index=False, **TEXT_OUT)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df.round(3).to_string(index=False))
    return 0
