"""``avsc crossval``: one training per held-out fold, and the folds' table."""

from __future__ import annotations

import argparse
import sys

from avsc.cli import options


def add_parser(sub, cores: int) -> None:
    from avsc.config import FEATURE_KINDS

    cv = options.subcommand(
        sub,
        "crossval",
        "train a system once per held-out fold of the collection and tabulate the folds",
        "avsc crossval audio_only --cache runs/own/cache --out runs/own/crossval",
    )
    cv.add_argument("system", help="a registered system, e.g. audio_only")
    cv.add_argument("--cache", required=True, help="feature store of a collection with folds")
    cv.add_argument(
        "--out",
        required=True,
        help="results folder: fold K trains into OUT/foldK (as avsc train --out OUT/foldK "
        "-p data.test_fold=K would)",
    )
    cv.add_argument("--folds", help="comma list of the folds to hold out (default: all)")
    cv.add_argument(
        "--feature",
        default=None,
        help=f"acoustic feature, if it takes one: {', '.join(FEATURE_KINDS)} or one a --module "
        "registers",
    )
    cv.add_argument("--backbone", default=None, help="timm name, if it takes one")
    cv.add_argument(
        "--jobs",
        type=options.whole_number(1),
        default=1,
        help="folds trained at once, each in its own process with cores/JOBS torch threads "
        "(train.cpu_threads, unless set; the numbers are those of that setting). On 2 cores, "
        "--jobs 3 took 0.7x the time of one fold after the other (default: 1)",
    )
    options.module_option(cv, "it registers systems of its own")
    options.config_options(cv)
    cv.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import warnings

    from avsc.experiments.crossval import crossval, crossval_view, save_crossval

    spec, asked, cfg, _ = options.system_request(args, ("feature", "backbone"))
    folds = [f.strip() for f in args.folds.split(",") if f.strip()] if args.folds else None
    with warnings.catch_warnings(record=True) as caught:  # the store's settings win
        warnings.simplefilter("always")
        result = crossval(
            spec.name,
            args.cache,
            args.out,
            cfg,
            folds=folds,
            feature=args.feature,
            backbone=args.backbone,
            asked=set(asked),
            audio_checkpoint=None,
            jobs=args.jobs,
            modules=getattr(args, "module", None) or (),
        )
    for note in dict.fromkeys(str(w.message) for w in caught):
        print(f"avsc crossval: warning: {note}", file=sys.stderr)
    csv_path, md_path = save_crossval(result, args.out, f"avsc crossval {spec.name}, {args.cache}")
    import pandas as pd

    with pd.option_context("display.width", 220, "display.max_columns", 20):
        print(crossval_view(result.table).to_string(index=False))
    print(
        f"cross-validation of {result.name} over {len(result.folds)} fold(s): {csv_path}, {md_path}"
    )
    return 0
