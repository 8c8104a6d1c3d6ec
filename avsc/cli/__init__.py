"""``avsc`` command line: each subcommand is a thin wrapper over one library function, in
its own module here (its options and its ``main``); ``options`` holds what they share."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from avsc import __version__
from avsc.cli import (
    crossval,
    download,
    finetune,
    manifest,
    options,
    predict,
    preprocess,
    run,
    submit,
    sweep,
    synth,
    train,
    validate,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="avsc",
        description="Audio-visual scene classification (Chen, Wang, Zhang, ICASSP 2022).",
        epilog="each subcommand has its own help: avsc SUBCOMMAND --help",
        formatter_class=options.HelpFormatter,
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
    synth.add_parser(sub, cores)
    manifest.add_parser(sub)
    validate.add_parser(sub)
    preprocess.add_parser(sub, cores)
    train.add_parser(sub)
    crossval.add_parser(sub, cores)
    predict.add_parser(sub)
    download.add_parser(sub)
    submit.add_parser(sub)
    finetune.add_parser(sub)
    run.add_parser(sub)
    sweep.add_parser(sub)
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
