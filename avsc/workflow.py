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

from avsc.config import ExperimentConfig
from avsc.experiments import MissingArtifact, Results, StrategyResult, SystemSpec, Workspace
from avsc.utils import atomic_path, atomic_write_json

__all__ = ["Context", "MissingArtifact", "repo_root"]

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

    ip.set_custom_exc((MissingArtifact,), handler)


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
        self.config = ExperimentConfig().override(dict(self.experiment or {}))
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

    # ------------------------------------------------------------------ provenance
    @property
    def source(self) -> str:
        """What data produced this run's numbers and figures, in words."""
        from avsc.data.tau import DatasetError, find_meta_dir

        card = self.data / "synthetic.json"
        if card.is_file():
            info = json.loads(card.read_text())
            seed = info.get("seed", "?")
            text = f"SYNTHETIC data (avsc synth, seed {seed}); profile {self.profile}"
            if (self.run / "rehearsal.json").is_file():  # avsc run --rehearse
                epochs = self.config.train.max_epochs
                text = f"REHEARSAL, random weights, {epochs} epoch(s), not results: {text}"
            return text
        try:
            find_meta_dir(self.data)
        except DatasetError:
            return f"no dataset at {_short(self.data)} yet; profile {self.profile}"
        return (
            f"{self.data.name} (TAU Urban Audio-Visual Scenes 2021, fold 1); profile {self.profile}"
        )

    @property
    def is_synthetic(self) -> bool:
        return (self.data / "synthetic.json").is_file()

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
                if n.get("status") == "ok"
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
    ) -> Path:
        """The dataset root of the run: built with ``avsc synth`` (clips of
        ``data.clip_seconds``) when ``synthetic`` and absent, else it must already hold a TAU
        layout (the real dataset, ``AVSC_DATA_ROOT``)."""
        from avsc.data.synth import make_synthetic_dataset
        from avsc.data.tau import GET_DATASET, DatasetError, find_meta_dir

        try:
            find_meta_dir(self.data)
            return self.data
        except DatasetError:
            if not synthetic:
                raise MissingArtifact(
                    f"{self.data}: no TAU Urban Audio-Visual Scenes 2021 root here. {GET_DATASET}"
                ) from None
        return make_synthetic_dataset(
            self.data,
            clips_per_class=clips_per_class,
            seconds=self.config.data.clip_seconds,
            seed=seed,
            video_size=tuple(video_size),
            workers=workers,
            show_progress=False,
        )

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
            df.to_csv(tmp, index=False)
        view = readable(df)
        md = view.to_markdown(index=False, disable_numparse=True)  # the digits as rounded
        md = f"<!-- {self.source} -->\n\n{md}\n"
        with atomic_path(self.figures / f"{name}.md") as tmp:
            tmp.write_text(md)
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

    def collect(self, features: list[str], backbones: list[str]) -> list[StrategyResult]:
        """Every trained system of the results tables (built-in and registered by user
        code) over ``features`` and ``backbones``: see :meth:`avsc.experiments.Results.collect`."""
        return self.results.collect(features, backbones)


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
