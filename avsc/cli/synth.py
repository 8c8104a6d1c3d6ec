"""``avsc synth``: a synthetic dataset in the exact TAU layout."""

from __future__ import annotations

import argparse

from avsc.cli import options


def add_parser(sub, cores: int) -> None:
    s = options.subcommand(
        sub,
        "synth",
        "write a synthetic dataset in the exact TAU layout",
        "avsc synth --out data/synth --clips-per-class 10 -p data.clip_seconds=10",
    )
    s.add_argument("--out", required=True, help="output folder (the dataset root)")
    s.add_argument(
        "--clips-per-class",
        type=options.whole_number(
            3, "each class needs clips for training, validation and evaluation"
        ),
        default=10,
        help="clips per scene class (>= 3)",
    )
    s.add_argument("--seed", type=int, default=0, help="seed: the same seed, the same bytes")
    s.add_argument(
        "--size", type=options.video_size, default=None, help="video WIDTHxHEIGHT (default 480x270)"
    )
    s.add_argument("--fps", type=int, default=24, help="video frame rate")
    s.add_argument("--workers", type=options.workers, default=cores, help="parallel processes")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    options.config_options(s, "config override (data.clip_seconds sets the clip length)")
    s.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from avsc.data.synth import make_synthetic_dataset

    kwargs = {}
    if args.size is not None:
        kwargs["video_size"] = args.size
    root = make_synthetic_dataset(
        args.out,
        clips_per_class=args.clips_per_class,
        seconds=options.config(args).data.clip_seconds or 10.0,
        seed=args.seed,
        fps=args.fps,
        workers=args.workers,
        show_progress=False if args.no_progress else None,
        **kwargs,
    )
    print(f"synthetic TAU-layout dataset written to {root}")
    return 0
