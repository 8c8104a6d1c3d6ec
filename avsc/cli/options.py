"""What the subcommands share: argument types, the config options (``--config``, ``-p``),
the recipe and module options, and how a config is built from them."""

from __future__ import annotations

import argparse


def video_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from exc
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"size must be even and at least 16x16, got {text!r}")
    return w, h


def workers(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("--workers must be >= 1")
    return n


def whole_number(minimum: int, why: str = ""):
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


def seconds(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return x


def overrides(args: argparse.Namespace) -> dict:
    """The ``section.key`` values the user set: ``--config FILE`` first, then ``-p``."""
    from avsc.config import load_config_file, parse_overrides

    out = {}
    if getattr(args, "config", None):
        out.update(flat(load_config_file(args.config), args.config))
    out.update(parse_overrides(list(getattr(args, "param", None) or [])))
    return out


def config(args: argparse.Namespace):
    """The command's config: defaults < ``--config FILE`` < ``-p`` overrides."""
    from avsc.config import ExperimentConfig

    return ExperimentConfig().override(overrides(args))


def flat(sections: dict, where) -> dict:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}`` (a config file's sections)."""
    from avsc.config import ConfigError

    out = {}
    for section, values in sections.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: section {section!r} must be a mapping of keys to values")
        out.update({f"{section}.{k}": v for k, v in values.items()})
    return out


def import_modules(args: argparse.Namespace) -> None:
    """Import the user modules of ``--module`` (they register their own systems)."""
    import importlib

    for name in getattr(args, "module", None) or []:
        importlib.import_module(name)


def system_request(args: argparse.Namespace, inputs: tuple[str, ...]):
    """What ``avsc train`` / ``crossval`` ask for: the user modules imported, the registered
    system, the ``section.key`` values set, the config they make, and the system's inputs
    given on the command line (``--feature``, ...), each refused in one line where the
    system takes no such input. Returns ``(spec, asked, config, given)``."""
    from avsc.config import ExperimentConfig
    from avsc.experiments import get_system
    from avsc.experiments.registry import SystemUsageError

    import_modules(args)
    spec = get_system(args.system)
    asked = overrides(args)
    given = {}
    for what in inputs:
        value = getattr(args, what)
        if value is not None and not spec.takes(what):
            raise SystemUsageError(f"system {spec.name} takes no --{what.replace('_', '-')}")
        if value is not None:
            given[what] = value
    if given.get("feature") is not None:
        from avsc.features import extractor_names

        if given["feature"] not in extractor_names():
            raise SystemUsageError(
                f"--feature {given['feature']}: not a registered feature kind; registered: "
                f"{', '.join(extractor_names())} (a --module of yours can add one)"
            )
    return spec, asked, ExperimentConfig().override(asked), given


def data_config(args: argparse.Namespace):
    """The command's ``data`` section, with ``--recipe`` / ``--labels`` over ``-p``."""
    data = config(args).data
    changes = {}
    if getattr(args, "recipe", None):
        changes["recipe"] = args.recipe
    if getattr(args, "labels", None):
        changes["labels"] = args.labels
    return data.replace(**changes) if changes else data


def check_device(name: str) -> None:
    """``--device`` checked against this machine before any work (a :class:`DeviceError`)."""
    from avsc.training.loop import resolve_device

    resolve_device(name, "--device")


def config_options(parser: argparse.ArgumentParser, what: str = "config override") -> None:
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


def recipe_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipe",
        metavar="NAME",
        help="how the folder becomes a clip manifest: tau2021av, folders, csv or one of your "
        "own (default: data.recipe, auto: the one recipe that recognises it)",
    )
    parser.add_argument(
        "--labels", metavar="FILE", help="labels file fixing the class order (one per line)"
    )


def module_option(parser: argparse.ArgumentParser, why: str) -> None:
    parser.add_argument(
        "--module",
        action="append",
        metavar="NAME",
        help=f"import this Python module first ({why}; repeatable)",
    )


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option with a default shows it; descriptions and examples keep their lines."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = (None, False, argparse.SUPPRESS)
        if "default" in text or action.default in quiet or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def subcommand(sub, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=summary,
        description=f"{summary}.",
        epilog=f"example:\n  {example}",
        formatter_class=HelpFormatter,
    )
