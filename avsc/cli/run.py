"""``avsc run``: the notebook series under a profile, executed with papermill."""

from __future__ import annotations

import argparse
import sys

from avsc.cli import options


def add_parser(sub) -> None:
    r = options.subcommand(
        sub,
        "run",
        "execute the notebook series with papermill under a profile",
        "avsc run --profile demo --from 03 -p train.max_epochs=5",
    )
    r.add_argument(
        "--profile", default="demo", help="smoke, demo or paper (avsc/profiles/NAME.yaml)"
    )
    r.add_argument("--from", dest="start", metavar="NN", help="start at notebook NN (resume)")
    r.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks")
    r.add_argument(
        "--config", metavar="FILE", help="YAML file of config sections, over the profile's"
    )
    r.add_argument(
        "-p",
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="notebook parameter or section.key config override (repeatable)",
    )
    r.add_argument("--runs", default="runs", help="folder of run outputs (runs/<profile>/)")
    r.add_argument(
        "--name",
        default=None,
        help="the run's folder under --runs and --figures (default: the profile's name)",
    )
    r.add_argument("--figures", default="figures", help="folder of figures (figures/<profile>/)")
    r.add_argument("--notebooks", default=None, help="notebook folder (default: the repo's)")
    r.add_argument(
        "--data",
        default=None,
        help="a collection's folder or manifest file (recipe guessed, or -p data.recipe=NAME; "
        "default: AVSC_DATA_ROOT or runs/<profile>/data)",
    )
    r.add_argument("--cache", default=None, help="feature store (default: runs/<profile>/cache)")
    r.add_argument(
        "--no-preflight",
        action="store_true",
        help="skip the checks made before any work (data, weights, Places365, disk, GPU)",
    )
    r.add_argument(
        "--rehearse",
        action="store_true",
        help="run the profile's code path on a tiny synthetic dataset in the real formats "
        "(random weights, 1 epoch, in runs/<profile>-rehearsal) and project the full run's "
        "hours, disk and memory (projection.json)",
    )
    r.add_argument(
        "--launcher",
        choices=("local", "slurm", "submitit-local"),
        default="local",
        help="where the trainings run: local (here, notebook by notebook), slurm (01-02 as "
        "one job, then one job per training as those it builds on finish, then 03 on as one "
        "job; through submitit) or submitit-local (the same with submitit's local executor)",
    )
    r.add_argument(
        "--slurm",
        action="append",
        metavar="KEY=VALUE",
        help="a setting of the jobs: partition, time (minutes), gpus, cpus, mem (GB), "
        "account, qos, constraint (repeatable)",
    )
    r.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from avsc.config import load_config_file
    from avsc.runner import RunError, parse_overrides, run_profile

    try:
        overrides = options.flat(load_config_file(args.config), args.config) if args.config else {}
        overrides.update(parse_overrides(args.param))
        if args.launcher != "local":
            return _on_cluster(args, overrides)
        manifest = run_profile(
            args.profile,
            overrides,
            start=args.start,
            only=args.only,
            runs_root=args.runs,
            figures_root=args.figures,
            notebooks_dir=args.notebooks,
            data_dir=args.data,
            cache_dir=args.cache,
            preflight=not args.no_preflight,
            rehearse=args.rehearse,
            name=args.name,
        )
    except RunError as exc:
        print(f"avsc run: error: {exc}", file=sys.stderr)
        return 1
    ok = [n for n in manifest.notebooks if n.get("status") == "ok"]
    skipped = [n["notebook"][:2] for n in manifest.notebooks if n.get("status") == "skipped"]
    total = sum(n.get("seconds", 0) for n in ok)
    also = f", {len(skipped)} skipped ({', '.join(skipped)}: see why in each)" if skipped else ""
    print(
        f"profile {args.profile}: {len(ok)} notebook(s) ok in {total:.0f} s{also}; "
        f"outputs in {manifest.run_dir}"
    )
    return 0


def _on_cluster(args: argparse.Namespace, overrides: dict) -> int:
    from avsc.cluster import run_series_on_cluster
    from avsc.launch import SLURM_KEYS
    from avsc.runner import RunError, parse_overrides

    if args.rehearse or args.start or args.only:
        raise RunError(f"--launcher {args.launcher} runs the whole series; --rehearse, --from "
                       "and --only run here (--launcher local)")  # fmt: skip
    slurm = parse_overrides(args.slurm)
    unknown = sorted(set(slurm) - set(SLURM_KEYS))
    if unknown:
        raise RunError(f"--slurm {unknown[0]}: not a setting ({', '.join(SLURM_KEYS)})")
    records = run_series_on_cluster(
        args.profile,
        overrides,
        args.launcher,
        slurm,
        runs_root=args.runs,
        figures_root=args.figures,
        data_dir=args.data,
        cache_dir=args.cache,
        notebooks_dir=args.notebooks,
        preflight=not args.no_preflight,
        name=args.name,
    )
    print(f"profile {args.profile}: {len(records)} job(s) done through {args.launcher}")
    return 0
