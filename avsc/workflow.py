"""What the notebooks call: one :class:`Context` per notebook run, and nothing else.

A notebook stays thin: it sets parameters, builds a Context, calls the library and shows
the result. The Context resolves the config, knows where the run's artifacts, figures and
tables go, says what data produced them, and turns a missing artifact into a clear error that
names the notebook which makes it. The steps themselves live in the library: dataset
statistics in :mod:`avsc.data.stats`, systems in :mod:`avsc.experiments`, tables in
:mod:`avsc.evaluation.tables`, figures in :mod:`avsc.viz`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avsc.config import config_of
from avsc.experiments import MissingArtifact, Results, StrategyResult, SystemSpec, Workspace
from avsc.experiments.results import NotebookSkipped, skip_reason
from avsc.utils import TEXT_OUT, atomic_path, atomic_write_json

__all__ = ["Context", "MissingArtifact", "NotebookSkipped", "repo_root"]

#: the notebook that makes each artifact of the series other than a trained system (the
#: registry names the notebook of every system)
MADE_BY = {
    "dataset": "01_data_and_features",
    "store": "01_data_and_features",
    "visual_weights": "02_visual_encoder_finetuning",
}


def _log_to_output() -> None:
    """avsc's INFO messages (one line per training epoch, preprocessing progress) go to the
    notebook's output, where papermill keeps them."""
    logger = logging.getLogger("avsc")
    if not any(getattr(h, "_avsc", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        handler.addFilter(_NoEpochLines())
        handler._avsc = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class _NoEpochLines(logging.Filter):
    """Notebooks show a progress bar per training, not one log line per epoch."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "avsc_epoch", False)


def _short_errors() -> None:
    """In a notebook, a missing artifact is its one-line message, not a long traceback."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return

    def handler(shell, etype, value, tb, tb_offset=None):
        stb = [f"{etype.__name__}: {value}"]
        shell._showtraceback(etype, value, stb)
        return stb

    ip.set_custom_exc((MissingArtifact, NotebookSkipped), handler)


def _short(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)


def repo_root() -> Path:
    """The folder relative notebook paths start from: the nearest parent of the working
    directory holding ``pyproject.toml`` and ``notebooks/`` (so a notebook opened in
    ``notebooks/`` and one run by papermill from the repo agree), else the working directory."""
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file() and (d / "notebooks").is_dir():
            return d
    return here


@dataclass
class Context:
    """Paths, config and provenance of one notebook run (see the module docstring)."""

    profile: str
    run_dir: str
    figures_dir: str
    data_dir: str
    cache_dir: str
    experiment: dict | None = None

    def __post_init__(self) -> None:
        base = repo_root()
        self.run, self.figures, self.data, self.cache = (
            p if p.is_absolute() else base / p
            for p in map(Path, (self.run_dir, self.figures_dir, self.data_dir, self.cache_dir))
        )
        self.run.mkdir(parents=True, exist_ok=True)
        self.figures.mkdir(parents=True, exist_ok=True)
        self.config = config_of({"experiment": self.experiment})
        if self.series is None:
            from avsc.config import SeriesConfig

            self.series = SeriesConfig()
        self.results = Results(
            self.run / "results",
            hint=self._made_by_notebook,
            primary_seed=self.config.train.seed,
            seeds=self.config.seeds,
        )
        self._workspace: Workspace | None = None
        _log_to_output()
        _short_errors()
        from avsc.viz import set_style

        set_style()

    series: Any = None  # the series settings (avsc.config.SeriesConfig), from the run's config

    @classmethod
    def from_config(cls, config: str | os.PathLike, overrides: dict | None = None) -> Context:
        """The Context of a run from its ``config.yaml`` (written by ``avsc run``: the
        profile, ``-p`` and ``--config`` resolved once), with ``overrides`` for interactive
        use: a series setting (``series.key`` or the bare key), a ``section.key`` config
        value, or one of the run's folders (``figures_dir``, ...). A ``runs/<profile>/
        config.yaml`` that no run has written yet is resolved from that profile, as
        ``avsc run --profile <profile>`` would. Relative paths are from the repository."""
        import yaml

        from avsc.config import ALIASES
        from avsc.runconfig import (
            PATH_KEYS,
            SERIES_KEYS,
            apply_override,
            move_start_weights,
            resolve,
            series_of,
        )

        path = Path(config)
        path = path if path.is_absolute() else repo_root() / path
        if path.is_file():
            params = dict(yaml.safe_load(path.read_text(encoding="utf-8"))["parameters"])
        else:  # not run yet: the profile its folder is named after
            from avsc.runconfig import RunError, list_profiles

            if path.parent.name not in list_profiles():
                raise FileNotFoundError(
                    f"{path}: no such run config, and {path.parent.name!r} names no profile "
                    f"({', '.join(list_profiles())}); point config at a run's config.yaml"
                )
            try:
                params = resolve(path.parent.name, {}, path.parent.parent, repo_root() / "figures")
            except RunError as exc:
                raise FileNotFoundError(f"{path}: no such run config; {exc}") from exc
        params["experiment"] = dict(params.get("experiment") or {})
        folders = ("run_dir", "figures_dir", *PATH_KEYS)
        for key, value in (overrides or {}).items():
            key = ALIASES.get(key, key)
            if not apply_override(params, params["experiment"], key, value, folders):
                raise KeyError(
                    f"override {key!r}: not a series setting ({', '.join(SERIES_KEYS)}), a "
                    f"folder ({', '.join(folders)}) nor a config key (section.key)"
                )
        move_start_weights(params, params["experiment"], str(path))  # an older run's config
        series = series_of(params)
        return cls(
            params["profile"],
            params["run_dir"],
            params["figures_dir"],
            params["data_dir"],
            params["cache_dir"],
            params["experiment"],
            series,
        )

    # ------------------------------------------------------------------ provenance
    @property
    def source(self) -> str:
        """What data produced this run's numbers and figures, in words."""
        card = self.data / "synthetic.json"
        if card.is_file():
            info = json.loads(card.read_text())
            seed = info.get("seed", "?")
            text = f"SYNTHETIC data (avsc synth, seed {seed}); profile {self.profile}"
            if (self.run / "rehearsal.json").is_file():  # avsc run --rehearse
                epochs = self.config.train.max_epochs
                text = f"REHEARSAL, random weights, {epochs} epoch(s), not results: {text}"
            return text
        recipe = self.recipe
        if recipe is None:
            return f"no dataset at {_short(self.data)} yet; profile {self.profile}"
        if recipe == "tau2021av":
            return (
                f"{self.data.name} (TAU Urban Audio-Visual Scenes 2021, fold 1); "
                f"profile {self.profile}"
            )
        what = f"recipe {recipe}"
        if (self.cache / "store.json").is_file():
            store = self.store()
            what = f"{len(store.manifest())} clips, {len(store.labels)} labels, recipe {recipe}"
        return f"{self.data.name} ({what}); profile {self.profile}"

    @property
    def recipe(self) -> str | None:
        """The recipe of this run's collection: the feature store's, else the one that reads
        the data folder (None: no dataset there yet)."""
        if (self.cache / "store.json").is_file():
            from avsc.features import FeatureStore

            return FeatureStore(self.cache).recipe
        from avsc.data.manifest import DatasetError
        from avsc.data.recipes import guess_recipe

        asked = self.config.data.recipe
        if asked not in ("", "auto"):
            return asked if self.data.exists() else None
        try:
            return guess_recipe(self.data)
        except DatasetError:
            return None

    @property
    def is_synthetic(self) -> bool:
        return (self.data / "synthetic.json").is_file()

    @property
    def is_tau(self) -> bool:
        """Whether the collection is TAU Urban Audio-Visual Scenes 2021 (or the synthetic data
        in its layout): the paper's figures and Table 5 belong beside its results only."""
        return self.recipe == "tau2021av"

    @property
    def modalities(self) -> tuple[str, ...]:
        """What the feature store holds: ``audio`` and/or ``video``."""
        return self.store().modalities

    def needs(self, *what: str) -> None:
        """A :class:`NotebookSkipped` naming what is missing when the collection lacks one of
        ``what`` (``audio``, ``video``, ``folds``): the first cell of a notebook that has
        nothing to do without it (``avsc run`` skips that notebook, saying so)."""
        store = self.store()
        have = set(store.modalities) | ({"folds"} if store.folds else set())
        missing = [w for w in what if w not in have]
        if missing:
            raise NotebookSkipped(skip_reason(missing, what, store))

    def features(self, features: list[str]) -> list[str]:
        """The acoustic features of ``features`` this collection can give (none without
        audio, saying so)."""
        have = self.store().features
        if not have:
            print("this collection has no audio: no system with an acoustic feature is trained")
            return []
        missing = [f for f in features if f not in have]
        if missing:
            print(f"the feature store holds no {', '.join(missing)} features: left out")
        return [f for f in features if f in have]

    def backbones(self, backbones: list[str]) -> list[str]:
        """``backbones``, or none (saying so) when the collection has no video."""
        if "video" not in self.modalities:
            print("this collection has no video: no system with a visual backbone is trained")
            return []
        return list(backbones)

    def require_visual_weights(self) -> None:
        """Notebook 02's choice of visual weights must exist where the collection has video."""
        if "video" in self.modalities:
            self.require("visual/weights.json", "02_visual_encoder_finetuning")

    # ------------------------------------------------------------------ artifacts
    def _hint(self, notebook: str) -> str:
        """Which notebook makes an artifact, and a command that makes it: ``--from`` the
        first notebook up to that one which has not run to the end in this run folder."""
        rehearse = " --rehearse" if (self.run / "rehearsal.json").is_file() else ""
        return (
            f"it is made by notebook {notebook}; make it with: avsc run --profile "
            f"{self.profile}{rehearse} --from {self.first_to_run(notebook)[:2]}"
        )

    def first_to_run(self, notebook: str) -> str:
        """The first notebook of the series, up to ``notebook``, not recorded as finished
        in this run's ``manifest.json``."""
        done = set()
        manifest = self.run / "manifest.json"
        if manifest.is_file():
            done = {
                n["notebook"]
                for n in json.loads(manifest.read_text()).get("notebooks", [])
                if n.get("status") in ("ok", "skipped")
            }
        for nb in sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb")):
            if nb.stem not in done or nb.stem == notebook:
                return nb.stem
        return notebook

    def _made_by_notebook(
        self, spec: SystemSpec, feature: str | None, backbone: str | None, root: Path
    ) -> str:
        if spec.notebook:
            return self._hint(spec.notebook)
        return f"{spec.name} is registered by your code: train it with ctx.train({spec.name!r})"

    def require(self, path: str | os.PathLike, made_by: str) -> Path:
        """``path`` (relative to the run folder unless absolute) or a :class:`MissingArtifact`
        naming the notebook ``made_by`` that makes it."""
        p = Path(path)
        p = p if p.is_absolute() else self.run / p
        if not p.exists():
            raise MissingArtifact(f"{p} is missing: {self._hint(made_by)}")
        return p

    def dataset(
        self,
        synthetic: bool,
        clips_per_class: int,
        video_size: list[int] | tuple[int, int],
        seed: int,
        workers: int = 1,
    ):
        """The run's collection as a clip manifest (:func:`avsc.data.load_manifest`, with
        ``data.recipe``, ``data.labels`` and ``data.modalities``). Where the data folder is
        empty or absent and the profile is ``synthetic``, ``avsc synth`` builds the synthetic
        TAU-layout dataset there first (clips of ``data.clip_seconds``, default 10 s); a real
        dataset is never built, only read."""
        from avsc.data.manifest import DatasetError
        from avsc.data.recipes import load_manifest
        from avsc.data.synth import make_synthetic_dataset
        from avsc.data.tau import GET_DATASET

        data = self.config.data
        empty = not self.data.exists() or (self.data.is_dir() and not any(self.data.iterdir()))
        if empty and synthetic:
            make_synthetic_dataset(
                self.data,
                clips_per_class=clips_per_class,
                seconds=data.clip_seconds or 10.0,
                seed=seed,
                video_size=tuple(video_size),
                workers=workers,
                show_progress=False,
            )
        elif empty:
            hint = (
                GET_DATASET
                if data.recipe == "tau2021av"
                else "pass avsc run --data ROOT (a TAU root, class folders of audio or video "
                "files, or a manifest file)"
            )
            raise MissingArtifact(f"{self.data}: no dataset here. {hint}")
        try:
            return load_manifest(self.data, data.recipe, data.labels, data.modalities)
        except DatasetError as exc:
            raise MissingArtifact(str(exc)) from None

    def example_clip(self, manifest, clip: str = "") -> str:
        """``clip``, or the first training clip of ``manifest`` (the first clip where the
        collection names none)."""
        if clip:
            return clip
        split = manifest.column("split")
        train = manifest.clips.loc[split == "train", "clip"]
        return str((train if len(train) else manifest.clips["clip"]).iloc[0])

    def store(self):
        from avsc.features import FeatureStore

        self.require(self.cache / "store.json", MADE_BY["store"])
        return FeatureStore(self.cache)

    @property
    def visual_weights(self) -> dict[str, str]:
        """backbone -> weights file chosen by notebook 02 (empty before it ran)."""
        path = self.run / "visual" / "weights.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def workspace(self) -> Workspace:
        if self._workspace is None:
            self._workspace = Workspace(
                self.store(), self.config, self.visual_weights, asked=set(self.experiment or {})
            )
        return self._workspace

    def figure(self, fig, name: str) -> None:
        """Save ``fig`` as ``figures/<profile>/<name>.pdf|png`` and show that PNG once in the
        notebook (then close the figure, so it is not shown twice)."""
        import matplotlib.pyplot as plt

        from avsc.viz.plots import display_png, save_figure

        _, png = save_figure(fig, self.figures / name)
        plt.close(fig)
        display_png(png.read_bytes())

    def table(self, df: pd.DataFrame, name: str) -> pd.DataFrame:
        """Save ``df`` as CSV (every digit) and Markdown (readable) under
        ``figures/<profile>/``; return the readable view (:func:`avsc.evaluation.readable`:
        rounded, absent values blank, the official metrics named, the paper beside them)."""
        from avsc.evaluation.tables import readable

        with atomic_path(self.figures / f"{name}.csv") as tmp:
            df.to_csv(tmp, index=False, **TEXT_OUT)
        view = readable(df)
        md = view.to_markdown(index=False, disable_numparse=True)  # the digits as rounded
        md = f"<!-- {self.source} -->\n\n{md}\n"
        with atomic_path(self.figures / f"{name}.md") as tmp:
            tmp.write_text(md, **TEXT_OUT)
        return view

    def save_metrics(self, name: str, metrics: dict[str, Any]) -> None:
        """``runs/<profile>/metrics/<name>.json`` (the runner checks these are finite)."""
        path = self.run / "metrics" / f"{name}.json"
        atomic_write_json(path, {"source": self.source, **_plain(metrics)})
        print(f"metrics saved: {_short(path)}")

    # ------------------------------------------------------------------ systems
    def train(self, system: str, **inputs: Any) -> StrategyResult:
        """Train the registered ``system`` into ``results/<name>`` of this run, and once
        more per other seed of ``train.seeds`` into ``results/seed<s>/<name>`` (a finished
        run is reloaded; its checkpoints make an interrupted one resume). ``inputs``:
        ``feature``, ``backbone``, ``audio_checkpoint`` as the system takes them."""
        return self.results.train_seeds(system, self.workspace(), **inputs)

    def load(
        self, system: str, feature: str | None = None, backbone: str | None = None
    ) -> StrategyResult:
        """A finished system's result, or a :class:`MissingArtifact` naming its notebook."""
        return self.results.load(system, feature, backbone)

    def collect(
        self, features: list[str], backbones: list[str], everything: bool = False
    ) -> list[StrategyResult]:
        """Every trained system of the results tables (built-in and registered by user
        code) over ``features`` and ``backbones`` that this collection can train: see
        :meth:`avsc.experiments.Results.collect`."""
        return self.results.collect(
            self._quiet(self.store().features, features),
            backbones if "video" in self.modalities else [],
            everything=everything,
            modalities=self.modalities,
        )

    @staticmethod
    def _quiet(have, wanted: list[str]) -> list[str]:
        return [f for f in wanted if f in have]

    def main_results(self, feature: str, backbone: str) -> dict[str, StrategyResult]:
        """The systems shown in detail (confusion matrices, per-class figures, learning
        curves): audio-only, video-only, pipeline and joint on ``feature`` and ``backbone``,
        as far as the collection has their modalities."""
        mods = set(self.modalities)
        out: dict[str, StrategyResult] = {}
        if "audio" in mods:
            out["audio-only"] = self.load("audio_only", feature=feature)
        if "video" in mods:
            out["video-only"] = self.load("video_only", backbone=backbone)
        if {"audio", "video"} <= mods:
            out["pipeline"] = self.load("pipeline", feature, backbone)
            out["joint"] = self.load("joint", feature, backbone)
        return out

    def trainable(self, systems: list[str]) -> list[str]:
        """The systems of ``systems`` this collection has the modalities for (saying which
        are left out and why)."""
        from avsc.experiments import get_system

        have = set(self.modalities)
        out = []
        for name in systems:
            spec = get_system(name)
            lacking = [m for m in spec.modalities if m not in have]
            if lacking:
                print(f"{name} needs {' and '.join(spec.modalities)}; this collection has no "
                      f"{lacking[0]}: left out")  # fmt: skip
            else:
                out.append(name)
        return out

    def crossval(
        self,
        system: str,
        feature: str | None = None,
        backbone: str | None = None,
        jobs: int = 1,
    ):
        """Cross-validate ``system`` over the collection's folds into ``crossval/`` of this
        run (fold by fold, finished folds reloaded; ``feature`` and ``backbone`` where it
        takes them; ``jobs`` folds at once, each in its own process with cores/jobs threads);
        save its table as ``crossval_<name>`` beside the other tables and return
        the :class:`avsc.experiments.crossval.CrossvalResult` (its ``view()`` is the table
        as a person reads it)."""
        from avsc.experiments import get_system
        from avsc.experiments.crossval import crossval, save_crossval

        spec = get_system(system)
        result = crossval(
            system,
            self.store(),
            self.run / "crossval",
            self.config,
            feature=feature if spec.takes("feature") else None,
            backbone=backbone if spec.takes("backbone") else None,
            asked=set(self.experiment or {}),
            visual_weights=self.visual_weights,
            jobs=jobs,
        )
        save_crossval(result, self.figures, self.source)
        return result


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj
