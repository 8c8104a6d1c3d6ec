"""``avsc preprocess``: a collection into an on-disk feature store."""

from __future__ import annotations

import argparse
import sys

from avsc.cli import options


def add_parser(sub, cores: int) -> None:
    from avsc.config import FEATURE_KINDS

    pp = options.subcommand(
        sub,
        "preprocess",
        "featurize a dataset into an on-disk feature store",
        "avsc preprocess --data /data/tau --cache runs/paper/cache -p frames.short_side=320",
    )
    pp.add_argument("--data", required=True, help="a collection's folder or a manifest file")
    options.recipe_options(pp)
    options.module_option(pp, "it registers recipes or feature kinds of its own")
    pp.add_argument("--cache", required=True, help="feature store folder")
    pp.add_argument(
        "--features",
        default=",".join(FEATURE_KINDS),
        help=f"comma list of {', '.join(FEATURE_KINDS)} or kinds a --module registers",
    )
    pp.add_argument("--workers", type=options.workers, default=cores, help="parallel processes")
    pp.add_argument("--strict", action="store_true", help="stop at the first bad clip")
    pp.add_argument(
        "--verify",
        action="store_true",
        help="compare every finished entry's checksum with the index and rebuild damaged ones "
        "(a plain rerun compares sizes only)",
    )
    pp.add_argument("--no-progress", action="store_true", help="no progress bar")
    options.config_options(pp, "config override of the audio, frames and data sections")
    pp.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from avsc.features.store import PreprocessError, StoreError, preprocess

    options.import_modules(args)
    features = tuple(f.strip() for f in args.features.split(",") if f.strip())
    cfg = options.config(args)
    config = cfg.replace(data=options.data_config(args)).preprocess_config(features)
    try:
        report = preprocess(
            args.data,
            args.cache,
            config,
            workers=args.workers,
            strict=args.strict,
            show_progress=False if args.no_progress else None,
            verify=args.verify,
        )
    except (PreprocessError, StoreError) as exc:
        print(f"avsc preprocess: error: {exc}", file=sys.stderr)
        return 1
    print(report.format())
    return 0 if report.ok else 3
