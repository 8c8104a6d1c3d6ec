"""``avsc download``: TAU Urban Audio-Visual Scenes 2021, checked and unpacked."""

from __future__ import annotations

import argparse

from avsc.cli import options


def add_parser(sub) -> None:
    dl = options.subcommand(
        sub,
        "download",
        "download TAU Urban Audio-Visual Scenes 2021 (resumable, size and MD5 checked), unpacked",
        "avsc download --dataset dev --out /data/tau2021av",
    )
    dl.add_argument(
        "--dataset",
        required=True,
        choices=["dev", "eval"],
        help="dev: the development set (Zenodo 4477542, 108 GB); eval: the 2021 challenge "
        "evaluation set (Zenodo 4767103, 61 GB, 1-s files, no labels)",
    )
    dl.add_argument("--out", required=True, help="the dataset root to fill (zips in packages/)")
    dl.add_argument(
        "--content",
        default="documentation,meta,audio,video",
        help="content types of dcase_util's package list to fetch (comma-separated; also examples)",
    )
    dl.add_argument(
        "--mirror", metavar="URL", help="fetch the zips from URL/<zip name> instead of Zenodo"
    )
    dl.add_argument(
        "--remove-zips", action="store_true", help="delete each zip once checked and unpacked"
    )
    dl.add_argument(
        "--list", action="store_true", help="print the packages and what --out holds; fetch none"
    )
    dl.add_argument(
        "--timeout",
        type=options.seconds,
        default=60,
        metavar="SECONDS",
        help="give up on a connection silent for this long, then resume (default: 60)",
    )
    dl.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from avsc.data.download import DATASETS, describe, download, package_list

    content = [c.strip() for c in args.content.split(",") if c.strip()]
    pkgs = package_list(args.dataset, content, args.mirror)
    if args.list:
        print(describe(pkgs, args.out))
        return 0
    root = download(
        args.dataset, args.out, remove_zips=args.remove_zips, packages=pkgs, timeout=args.timeout
    )
    kind = "development" if args.dataset == "dev" else "evaluation"
    use = f"AVSC_DATA_ROOT={root}" if args.dataset == "dev" else f"avsc submit {root} ..."
    print(f"TAU Urban Audio-Visual Scenes 2021 {kind} set ({DATASETS[args.dataset][1]}) in "
          f"{root}: {len(pkgs)} package(s) checked and unpacked; next: avsc validate {root}, "
          f"then {use}")  # fmt: skip
    return 0
