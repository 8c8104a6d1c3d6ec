"""``avsc sweep``: runs over a grid of config keys, here or on a Slurm cluster."""

from __future__ import annotations

import argparse
import sys

from avsc.cli import options


def add_parser(sub) -> None:
    s = options.subcommand(
        sub,
        "sweep",
        "run the series or one training at every point of a grid of config keys, here "
        "(--jobs N at once) or on Slurm, and tabulate the points",
        "avsc sweep lr.yaml   or   avsc sweep --name lr --profile smoke --train audio_only "
        "--cache runs/smoke/cache --grid train.lr=[0.01,0.03] --grid train.seed=[0,1]",
    )
    s.add_argument("spec", nargs="?", help="sweep spec (YAML; see avsc/sweep.py or the README)")
    s.add_argument(
        "--grid",
        action="append",
        metavar="KEY=[A,B,...]",
        help="a config key or series setting and its values, added to the spec's grid "
        "(repeatable: every combination)",
    )
    s.add_argument("--name", help="the sweep's folder under --runs (default: the spec's name)")
    s.add_argument("--profile", help="the base profile (default: the spec's, or smoke)")
    s.add_argument("--only", nargs="+", metavar="NN", help="each point runs only these notebooks")
    s.add_argument("--train", metavar="SYSTEM", help="each point trains SYSTEM on --cache")
    s.add_argument("--cache", help="feature store of --train (or of the series' points)")
    s.add_argument("--feature", help="acoustic feature of --train")
    s.add_argument("--backbone", help="timm backbone of --train")
    s.add_argument(
        "--launcher",
        choices=("local", "slurm", "submitit-local"),
        help="where the points run: local (a pool of --jobs processes), slurm (one job per "
        "point, through submitit), submitit-local (submitit's local executor); default: the "
        "spec's, or local",
    )
    s.add_argument(
        "--jobs", type=options.whole_number(1), help="local: points run at once (default 1)"
    )
    options.config_options(s, "an override of every point (over the spec's base)")
    s.add_argument("--runs", default="runs", help="folder of runs: the sweep is runs/<name>/")
    s.add_argument(
        "--figures", default="figures", help="series points' figures: figures/<name>/<point>/"
    )
    s.add_argument(
        "--dry-run",
        action="store_true",
        help="check the spec and every point, print the points and their commands, run nothing",
    )
    s.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from avsc.sweep import command, load_sweep, parse_grid, run_sweep

    run = None
    if args.train:
        train = {"system": args.train, "cache": args.cache}
        train.update({k: v for k in ("feature", "backbone") if (v := getattr(args, k))})
        run = {"train": train}
    elif args.only or args.cache:
        run = {"series": {k: v for k, v in (("only", args.only), ("cache", args.cache)) if v}}
    if not args.spec and not args.grid:
        print("avsc sweep: error: give a sweep spec or --grid KEY=[...]", file=sys.stderr)
        return 2
    from avsc.config import load_config_file, parse_overrides

    base = options.flat(load_config_file(args.config), args.config) if args.config else {}
    base.update(parse_overrides(args.param))
    sweep = load_sweep(
        args.spec,
        parse_grid(args.grid),
        base,
        name=args.name,
        profile=args.profile,
        run=run,
        launcher=args.launcher,
        jobs=args.jobs,
    )
    root = (Path(args.runs) / sweep.name).resolve()
    if args.dry_run:
        for p in sweep.points:
            cmd = command(sweep, p, root, Path(args.figures).resolve())
            print(f"{p.name}: {' '.join(cmd[1:])}")
        print(f"{len(sweep.points)} point(s) checked; reference {sweep.reference}")
        return 0
    import signal

    # a kill (SIGTERM) stops the points running as Ctrl-C does: finished ones are kept
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    out = run_sweep(sweep, args.runs, args.figures)
    import pandas as pd

    with pd.option_context("display.width", 220, "display.max_columns", 30):
        print(out.summary.to_string(index=False))
    print(
        f"sweep {sweep.name}: {len(out.done)} point(s) done, {len(out.skipped)} finished before, "
        f"{len(out.failed)} failed; {root / 'summary.csv'}, {root / 'summary.md'}"
    )
    for name, error in out.failed.items():
        print(f"avsc sweep: error: point {name}: {error}", file=sys.stderr)
    return 1 if out.failed else 0
