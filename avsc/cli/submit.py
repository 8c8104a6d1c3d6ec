"""``avsc submit``: a DCASE evaluation set classified into a submission file."""

from __future__ import annotations

import argparse

from avsc.cli import options


def add_parser(sub) -> None:
    sb = options.subcommand(
        sub,
        "submit",
        "classify a DCASE evaluation set (1-s files, no labels) into a submission file",
        "avsc submit /data/tau-eval --checkpoint runs/paper/results/joint_x/best.pt "
        "--out submission.csv",
    )
    sb.add_argument(
        "root", help="evaluation set root: evaluation_setup/fold1_test.csv, audio/, video/"
    )
    sb.add_argument("--checkpoint", required=True, help="a system's best.pt (from avsc train)")
    sb.add_argument("--out", required=True, help="the submission file to write (tab-separated)")
    sb.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    options.module_option(sb, "the checkpoint's system or feature kind is registered there")
    sb.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from avsc.experiments.predict import predict_folder

    options.import_modules(args)
    options.check_device(args.device)
    print(predict_folder(args.root, args.checkpoint, args.out, device=args.device))
    return 0
