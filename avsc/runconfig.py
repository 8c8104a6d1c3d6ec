"""A run's config, resolved once: the profile, then ``-p`` / ``--config`` overrides, into
the parameters ``avsc run`` writes to the run's ``config.yaml``, which every notebook reads
(:meth:`avsc.workflow.Context.load`). A profile (``avsc/profiles/NAME.yaml``) has a
``description``, a ``series`` section (what the notebook series runs:
:class:`avsc.config.SeriesConfig`) and ``experiment`` (``section.key`` config values)."""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

from avsc.config import (
    ALIASES,
    SECTIONS,
    ConfigError,
    SeriesConfig,
    VisualConfig,
    config_of,
    safe_yaml,
)
from avsc.config import parse_overrides as _parse

REPO = Path(__file__).resolve().parents[1]
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
#: what a run's parameters hold beside the series settings: its profile, folders and config
COMMON = ("profile", "run_dir", "figures_dir", "data_dir", "cache_dir", "experiment")


#: what ``--rehearse`` changes in a profile: a tiny synthetic dataset in the real formats
#: (1280x720 24 fps H.264, 48 kHz 24-bit stereo), random visual weights, one epoch, a
#: Places365-layout stand-in; everything else (backbones, image sizes, batch size, loader
#: workers, fine-tuning, every notebook) stays the profile's. -p overrides still apply.
REHEARSAL_PARAMETERS = {
    "synthetic": True,
    "clips_per_class": 3,
    "video_size": [1280, 720],
    "synth_seed": 0,
}
REHEARSAL_EXPERIMENT = {"train.max_epochs": 1, "finetune.epochs": 1}
REHEARSAL = "rehearsal.json"  # the stamp in a rehearsal's run folder (see workflow.Context)


class RunError(RuntimeError):
    """A notebook failed or the run was asked for something impossible."""


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name: str) -> dict[str, Any]:
    """A profile: ``description``, ``series`` (:class:`avsc.config.SeriesConfig` keys) and
    ``experiment`` (``section.key`` config overrides). The ``series`` section's old name,
    ``parameters``, is read too, with a DeprecationWarning."""
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise RunError(f"unknown profile {name!r}; available: {', '.join(list_profiles())}")
    prof = safe_yaml(path.read_text(encoding="utf-8")) or {}  # plain data, no aliases
    unknown = set(prof) - {"description", "series", "parameters", "experiment"}
    if unknown:
        raise RunError(f"{path}: unknown top-level key(s) {sorted(unknown)}")
    if "parameters" in prof:
        if "series" in prof:
            raise RunError(f"{path}: both series and parameters (its old name); keep series")
        warnings.warn(
            f"{path}: the section `parameters` is now called `series`; the old name is read "
            "for this release",
            DeprecationWarning,
            stacklevel=2,
        )
        prof["series"] = prof.pop("parameters")
    prof["series"] = dict(prof.get("series") or {})
    prof.setdefault("experiment", {})
    return prof


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict, values parsed as YAML (:func:`avsc.config.parse_overrides`,
    the one parser; a malformed item is a :class:`RunError` here)."""
    try:
        return _parse(items)
    except ConfigError as exc:
        raise RunError(str(exc).replace("override", "parameter", 1)) from exc


#: folders a profile or ``-p`` may set beside the series settings
PATH_KEYS = ("data_dir", "cache_dir")
#: the series settings' names (:class:`avsc.config.SeriesConfig`), also valid bare in ``-p``
SERIES_KEYS = tuple(f.name for f in dataclasses.fields(SeriesConfig))


def apply_override(
    params: dict[str, Any], experiment: dict[str, Any], key: str, value: Any, folders=()
) -> bool:
    """Set one override: ``series.key`` or a bare series key (or one of ``folders``) in
    ``params``, a ``section.key`` config value in ``experiment``. False for an unknown key."""
    section, _, rest = key.partition(".")
    if section == "series" and rest:
        params[rest] = value
    elif rest and section in SECTIONS:
        experiment[key] = value
    elif key in SERIES_KEYS or key in folders:
        params[key] = value
    else:
        return False
    return True


def resolve(
    profile: str,
    overrides: dict[str, Any],
    runs_root: Path,
    figures_root: Path,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    rehearse: bool = False,
    name: str | None = None,
) -> dict[str, Any]:
    """A run's parameters, resolved once: the profile's ``series`` settings with the
    overrides (``series.key`` or the bare key), the run's folders, and ``experiment``, the
    ``section.key`` config values (the profile's, then the overrides). Every value is
    checked here, before any notebook runs: an unknown key is refused naming the known ones,
    a value of the wrong type naming its key. With ``rehearse``, the profile with
    :data:`REHEARSAL_PARAMETERS` and :data:`REHEARSAL_EXPERIMENT` (under the overrides), in
    ``<runs>/<profile>-rehearsal``. ``name``: the run's folder under ``runs_root`` (and
    ``figures_root``) in place of the profile's name (a sweep's points)."""
    prof = load_profile(profile)
    params = dict(prof["series"])
    experiment = dict(prof["experiment"])
    if rehearse:
        from avsc.models.visual import RANDOM

        params.update(REHEARSAL_PARAMETERS)
        params.pop("start_weights", None)
        backbones = [*params.get("backbones", []), *params.get("finetune", [])]
        experiment["visual.weights"] = dict.fromkeys(backbones, RANDOM)  # random weights
        experiment.update(REHEARSAL_EXPERIMENT)
    for key, value in overrides.items():
        key = ALIASES.get(key, key)
        if not apply_override(params, experiment, key, value, PATH_KEYS):
            raise RunError(
                f"unknown parameter {key!r}: not a series setting (series.key, or the bare "
                f"key: {', '.join(SERIES_KEYS)}) nor a config key (section.key with section "
                f"in {sorted(SECTIONS)})"
            )
    move_start_weights(params, experiment, f"profile {profile}")
    try:  # names and types, before any notebook runs
        SeriesConfig.from_dict({k: v for k, v in params.items() if k not in PATH_KEYS})
    except ConfigError as exc:
        raise RunError(f"profile {profile}: {exc}") from exc
    try:
        config_of({"experiment": experiment})
    except ValueError as exc:
        raise RunError(f"profile {profile}: {exc}") from exc
    for key in PATH_KEYS:
        if params.get(key) is not None and not isinstance(params[key], str):
            raise RunError(f"parameter {key}: expected a folder path, got {params[key]!r}")
    name = name or (f"{profile}-rehearsal" if rehearse else profile)
    run_dir = runs_root / name
    env_root = None if rehearse else os.environ.get("AVSC_DATA_ROOT")  # never the real data
    if rehearse:
        params.pop("data_dir", None)
        if params.get("finetune") and "places_root" in params:
            params["places_root"] = str((run_dir / "places365-standin").resolve())
    params.update(
        profile=profile,
        run_dir=str(run_dir.resolve()),
        figures_dir=str((figures_root / name).resolve()),
        data_dir=str(
            Path(
                (None if rehearse else data_dir)
                or params.get("data_dir")
                or env_root
                or run_dir / "data"
            ).resolve()
        ),
        cache_dir=str(Path(cache_dir or params.get("cache_dir") or run_dir / "cache").resolve()),
        experiment=experiment,
    )
    return params


def move_start_weights(params: dict[str, Any], experiment: dict[str, Any], where: str) -> None:
    """The series setting ``start_weights`` (deprecated) becomes the config's
    ``visual.weights`` mapping, with a DeprecationWarning: the visual weights have one
    source. Its entries win over ``visual.weights``, as they did when both were read."""
    start = params.pop("start_weights", None)
    if not start:
        return
    if not isinstance(start, dict):
        raise RunError(f"{where}: start_weights: expected a mapping {{backbone: weights}}")
    warnings.warn(
        f"{where}: the series setting start_weights is deprecated; give the weights as the "
        "config key visual.weights, a mapping {backbone: weights} (read as such for this "
        "release)",
        DeprecationWarning,
        stacklevel=3,
    )
    weights = VisualConfig.weights_by_backbone(
        experiment.get("visual.weights"),
        experiment.get("visual.backbone", VisualConfig.backbone),
    )
    start = {b: None if w is None else str(w) for b, w in start.items()}  # Path values too
    experiment["visual.weights"] = {**weights, **start}


def series_of(params: dict[str, Any]) -> SeriesConfig:
    """The series settings of a run's parameters (defaults where they set none)."""
    return SeriesConfig.from_dict(
        {k: v for k, v in params.items() if k in SERIES_KEYS and k not in PATH_KEYS}
    )
