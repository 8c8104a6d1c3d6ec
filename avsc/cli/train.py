"""``avsc train``: a registered system on a feature store."""

from __future__ import annotations

import argparse
import sys

from avsc.cli import options


def add_parser(sub) -> None:
    from avsc.config import FEATURE_KINDS

    t = options.subcommand(
        sub,
        "train",
        "train a registered system on a feature store",
        "avsc train joint --cache runs/demo/cache --out runs/demo/results --feature scalogram",
    )
    t.add_argument(
        "system", help="a registered system, e.g. joint (an unknown name lists the registered ones)"
    )
    t.add_argument("--cache", required=True, help="feature store (from avsc preprocess)")
    t.add_argument(
        "--out",
        required=True,
        help="results folder: the system trains into OUT/<name> (the notebooks' "
        "runs/<profile>/results, where they find it)",
    )
    t.add_argument(
        "--feature",
        default=None,
        help=f"acoustic feature, for systems that take one: {', '.join(FEATURE_KINDS)} or one "
        f"a --module registers (default: {FEATURE_KINDS[0]})",
    )
    t.add_argument(
        "--backbone",
        default=None,
        help="timm name, for systems that take one (default: visual.backbone)",
    )
    t.add_argument(
        "--audio-checkpoint",
        help="trained audio-only checkpoint for the acoustic encoder "
        "(default: OUT/audio_only_<feature>)",
    )
    t.add_argument(
        "--restart",
        action="store_true",
        help="start over: remove the checkpoints and results of an earlier run of this system "
        "in OUT (without it, a run resumes, and only with the same settings)",
    )
    options.module_option(t, "it registers systems of its own")
    options.config_options(t)
    t.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import json
    import warnings

    from avsc.experiments import Results, Workspace

    spec, asked, cfg, inputs = options.system_request(
        args, ("feature", "backbone", "audio_checkpoint")
    )
    with warnings.catch_warnings(record=True) as caught:  # the store's settings win
        warnings.simplefilter("always")
        ws = Workspace(args.cache, cfg, asked=set(asked))
    for w in caught:
        print(f"avsc train: warning: {w.message}", file=sys.stderr)
    results = Results(args.out, primary_seed=ws.config.train.seed, seeds=ws.config.seeds)
    if args.restart:
        from avsc.training.runfolder import clear_run

        feature, backbone = results.inputs(
            spec.name, inputs.get("feature"), inputs.get("backbone"), ws.config
        )
        for seed in results.seeds:
            for path in clear_run(results.folder(spec.name, feature, backbone, seed)):
                print(f"removed {path} (--restart)")
    result = results.train_seeds(spec.name, ws, **inputs)
    print(json.dumps(result.summary(), indent=2, ensure_ascii=False))
    return 0
