"""``avsc validate``: every problem of a collection in one report."""

from __future__ import annotations

import argparse

from avsc.cli import options
from avsc.utils import TEXT_OUT


def add_parser(sub) -> None:
    v = options.subcommand(
        sub,
        "validate",
        "check a collection (a folder or a manifest file) and list every problem",
        "avsc validate /data/tau --deep --report problems.csv",
    )
    v.add_argument(
        "root",
        help="a collection: TAU root (audio/, video/, meta.csv), class folders, or a manifest file",
    )
    options.recipe_options(v)
    options.module_option(v, "it registers recipes of its own")
    v.add_argument("--deep", action="store_true", help="decode every file completely")
    v.add_argument("--workers", type=options.workers, default=4, help="parallel threads")
    v.add_argument("--limit", type=int, default=None, help="print at most this many problems")
    v.add_argument("--report", help="also write the problems as CSV to this file")
    options.config_options(
        v, "config override (data.clip_seconds, data.length_tolerance, data.split, ...)"
    )
    v.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from avsc.data.validate import validate_dataset

    options.import_modules(args)
    data = options.data_config(args)
    report = validate_dataset(
        args.root,
        deep=args.deep,
        clip_seconds=data.clip_seconds,
        length_tolerance=data.length_tolerance,
        workers=args.workers,
        recipe=data.recipe,
        data=data,
    )
    print(report.format(limit=args.limit))
    if args.report:
        from avsc.utils import atomic_path

        with atomic_path(args.report) as tmp:
            report.to_frame().to_csv(tmp, index=False, **TEXT_OUT)
        print(f"report written to {args.report}")
    return 0 if report.ok else 1
