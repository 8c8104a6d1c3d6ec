"""Cross-validation over a collection's predefined folds: one training per held-out fold.

Fold ``K`` is exactly ``avsc train SYSTEM --cache C --out R/fold<K> -p data.test_fold=K``:
its own split (validation from the other folds, group-disjoint and class-stratified), its own
normalisation statistics (from its training clips, computed once in the feature store; no
clip is featurized again), its own results folder. Finished folds are reloaded, an
interrupted one resumes. The table (:func:`crossval_table`) gives each fold's figures at
segment and clip level, the pooled out-of-fold figures with their 95 % intervals (bootstrap
over clips, stratified by class), and the mean and standard deviation over folds.

``jobs`` > 1 trains that many folds at once, each in its own process with
``cores // jobs`` torch threads (``train.cpu_threads``, unless set; recorded in each fold's
config). On a small CPU machine two one-thread trainings finish sooner than one after the
other with two threads each: most of a step of the acoustic encoder is too small to share
between threads. The numbers are then those of ``train.cpu_threads`` = 1, not of torch's
default, and a fold is ``avsc train ... -p data.test_fold=K -p train.cpu_threads=1``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from avsc.config import ExperimentConfig
from avsc.evaluation.metrics import clip_metrics, dcase_metrics
from avsc.experiments.collection import Results
from avsc.experiments.registry import get_system
from avsc.experiments.results import MissingArtifact, StrategyResult
from avsc.experiments.workspace import Workspace
from avsc.features.store import FeatureStore, StoreError
from avsc.utils import TEXT_OUT, granted_cpus

log = logging.getLogger(__name__)


class FoldFailed(RuntimeError):
    """Folds of a parallel cross-validation failed; the message names each and why (the
    other folds finished and are kept: a rerun trains only the failed ones)."""


@dataclass
class CrossvalResult:
    """The trained system of every fold, and the table of their figures."""

    system: str
    name: str
    folds: dict[str, StrategyResult] = field(default_factory=dict)
    table: pd.DataFrame = field(default_factory=pd.DataFrame)

    def view(self) -> pd.DataFrame:
        """The table as a person reads it (:func:`crossval_view`)."""
        return crossval_view(self.table)

    def summary(self) -> dict[str, dict[str, float]]:
        """Each fold's and the pooled figures (finite numbers only), for a metrics file."""
        out = {}
        for row in self.table.to_dict("records"):
            if row["fold"] in ("mean over folds", "std over folds"):
                continue
            out[str(row["fold"])] = {
                k: float(row[k])
                for k in ("logloss", "accuracy", "clip_logloss", "clip_accuracy")
                if pd.notna(row.get(k))
            }
        return out

    def out_of_fold(self) -> pd.DataFrame:
        """Every fold's evaluation segments (each clip once: in its held-out fold), with a
        ``fold`` column."""
        return pd.concat([r.proba.assign(fold=k) for k, r in self.folds.items()], ignore_index=True)


def fold_root(out: str | os.PathLike, fold: str) -> Path:
    """The results folder of fold ``fold`` under a cross-validation's ``out``."""
    return Path(out) / f"fold{fold}"


def crossval(
    system: str,
    store: FeatureStore | str | os.PathLike,
    out: str | os.PathLike,
    config: ExperimentConfig,
    folds: Iterable[str | int] | None = None,
    feature: str | None = None,
    backbone: str | None = None,
    asked: Iterable[str] | None = None,
    visual_weights: dict[str, str] | None = None,
    audio_checkpoint: str | os.PathLike | None = None,
    jobs: int = 1,
    modules: Iterable[str] = (),
) -> CrossvalResult:
    """Train ``system`` once per held-out fold of the store's collection (``folds``, default
    all) into ``out/fold<K>``, resuming fold by fold, and tabulate the results. A collection
    without folds is a :class:`StoreError` saying how to give it folds.

    ``jobs`` folds train at once in worker processes (module docstring); ``modules`` are
    imported there first (the user modules that registered ``system``)."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    have = store.folds
    if not have:
        raise StoreError(
            f"{store.path}: its collection has no folds (a fold column in the manifest); "
            "cross-validation needs them: write the manifest with avsc manifest, add a fold "
            "column (clips of one group in one fold), and preprocess it"
        )
    wanted = [str(f) for f in folds] if folds is not None else have
    unknown = [f for f in wanted if f not in have]
    if unknown:
        raise StoreError(f"--folds: {store.path} has folds {', '.join(have)}, not {unknown[0]}")
    parallel = jobs > 1 and len(wanted) > 1
    home = getattr(get_system(system).build, "__module__", "") or ""
    if parallel and home == "__main__":
        log.warning(
            "system %s is defined in this script or notebook, which worker processes cannot "
            "import: its folds train one after the other (put it in a module to use jobs)",
            system,
        )
        parallel = False
    if parallel:
        modules = [*modules, *([] if home.startswith("avsc.") else [home])]
        config = _train_in_parallel(
            system, store, out, config, wanted, jobs, feature, backbone, asked, visual_weights,
            audio_checkpoint, modules,
        )  # fmt: skip
    result = None
    for k in wanted:  # (folds trained in parallel are reloaded here)
        cfg = config.override({"data.test_fold": k})
        ws = Workspace(store, cfg, visual_weights, asked=asked)
        results = Results(
            fold_root(out, k), primary_seed=ws.config.train.seed, seeds=ws.config.seeds
        )
        try:
            if parallel:  # trained (and checked against these settings) by the workers
                f, b = results.inputs(system, feature, backbone, ws.config)
                r = results.load(system, f, b)
            else:
                log.info(
                    "cross-validation of %s: fold %s of %s held out", system, k, ", ".join(wanted)
                )
                r = results.train_seeds(
                    system, ws, feature=feature, backbone=backbone,
                    audio_checkpoint=audio_checkpoint,
                )  # fmt: skip
        except MissingArtifact as exc:
            raise MissingArtifact(
                f"fold {k}: {exc} (cross-validate it first: avsc crossval ... --out {out})"
            ) from None
        if result is None:
            result = CrossvalResult(system, r.name)
        result.folds[k] = r
    assert result is not None
    result.table = crossval_table(result.folds)
    return result


def _train_in_parallel(
    system, store, out, config, wanted, jobs, feature, backbone, asked, visual_weights,
    audio_checkpoint, modules,
) -> ExperimentConfig:  # fmt: skip
    """Train the folds ``wanted`` in ``jobs`` worker processes (a finished fold is reloaded
    there at once, an interrupted one resumes); returns the config they trained with. A fold
    that fails stops no other; the first failure is raised once all have ended."""
    from avsc.parallel import WorkerDied, process_map

    jobs = min(jobs, len(wanted))
    if config.train.cpu_threads is None:
        config = config.override({"train.cpu_threads": max(1, granted_cpus() // jobs)})
    level = logging.getLogger().getEffectiveLevel()
    tasks = [
        {
            "fold": k,
            "system": system,
            "store": str(store.path),
            "out": str(out),
            "config": config,
            "feature": feature,
            "backbone": backbone,
            "asked": None if asked is None else sorted(asked),
            "visual_weights": visual_weights,
            "audio_checkpoint": None if audio_checkpoint is None else str(audio_checkpoint),
            "modules": list(modules),
            "log_level": level,
        }
        for k in wanted
    ]
    log.info(
        "cross-validation of %s: folds %s, %d at a time, %d thread(s) each",
        system, ", ".join(wanted), jobs, config.train.cpu_threads,
    )  # fmt: skip
    failed: dict[str, str] = {}
    for task, outcome in process_map(_train_fold, tasks, jobs, name=lambda t: f"fold {t['fold']}"):
        if isinstance(outcome, WorkerDied):
            failed[task["fold"]] = str(outcome)
        elif outcome is not None:
            failed[task["fold"]] = outcome
        else:
            log.info("cross-validation of %s: fold %s done", system, task["fold"])
    if failed:
        raise FoldFailed("; ".join(failed[k] for k in wanted if k in failed))
    return config


_FOLD_HANDLER: logging.Handler | None = None  # in a worker: its log handler, fold named


def _log_as_fold(fold: str, level: int) -> None:
    """In a spawned worker: log as the parent does, each line naming the fold it trains now
    (a worker may train several folds one after the other)."""
    global _FOLD_HANDLER
    root = logging.getLogger()
    if _FOLD_HANDLER is None:
        if root.handlers:  # logging set up by someone else: leave it as it is
            return
        _FOLD_HANDLER = logging.StreamHandler()
        root.addHandler(_FOLD_HANDLER)
        root.setLevel(level)
    _FOLD_HANDLER.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s fold {fold} %(name)s: %(message)s", "%H:%M:%S"
        )
    )


def _train_fold(task: dict) -> str | None:
    """In a worker process: train (or reload) one fold, as the sequential loop would. A
    failure comes back as one line naming the fold (a string: it always crosses back to the
    parent), so the other folds go on."""
    import importlib
    import warnings

    k = task["fold"]
    _log_as_fold(k, task["log_level"])
    log.info("cross-validation of %s: fold %s held out", task["system"], k)
    try:
        for name in task["modules"]:
            importlib.import_module(name)
        cfg = task["config"].override({"data.test_fold": k})
        asked = None if task["asked"] is None else set(task["asked"])
        with warnings.catch_warnings():  # the parent says them once, on reloading the folds
            warnings.simplefilter("ignore")
            ws = Workspace(task["store"], cfg, task["visual_weights"], asked=asked)
        results = Results(
            fold_root(task["out"], k), primary_seed=ws.config.train.seed, seeds=ws.config.seeds
        )
        results.train_seeds(
            task["system"], ws, feature=task["feature"], backbone=task["backbone"],
            audio_checkpoint=task["audio_checkpoint"],
        )  # fmt: skip
    except MissingArtifact as exc:
        return f"fold {k}: {exc} (cross-validate it first: avsc crossval ... --out {task['out']})"
    except Exception as exc:  # noqa: BLE001 - named by fold, raised in the parent
        log.debug("fold %s failed", k, exc_info=True)  # --verbose: the worker's traceback
        own = type(exc).__module__.split(".")[0] == "avsc" or isinstance(exc, OSError)
        text = " ".join(str(exc).split())
        return f"fold {k}: {text if own else f'{type(exc).__name__}: {text}'}"
    return None


def crossval_table(
    folds: dict[str, StrategyResult], n_resamples: int | None = None
) -> pd.DataFrame:
    """One row per fold, then ``pooled`` (every fold's evaluation clips together, with 95 %
    intervals: bootstrap over clips, stratified by class) and ``mean ± std`` over folds (std
    ddof 1). Figures: class-wise log loss and accuracy (%) of the 1-s segments (DCASE's
    official figures) and of the clips (a clip decided by the mean of its segments'
    probabilities)."""
    from avsc.evaluation.tables import clip_columns
    from avsc.evaluation.uncertainty import interval

    rows = []
    for k, r in folds.items():
        labels = list(r.labels)
        seg = dcase_metrics(r.proba["label"], r.proba[labels].to_numpy(), n_classes=len(labels))
        clip = clip_metrics(r.proba, labels)
        rows.append(
            {
                "fold": str(k),
                "clips": int(r.proba["clip"].nunique()),
                "segments": len(r.proba),
                "logloss": seg["logloss_classwise"],
                "accuracy": 100 * seg["accuracy_classwise"],
                "clip_logloss": clip["clip_logloss_classwise"],
                "clip_accuracy": 100 * clip["clip_accuracy_classwise"],
                "best_epoch": r.metrics.get("best_epoch"),
            }
        )
    per_fold = pd.DataFrame(rows)
    first = next(iter(folds.values()))
    labels = list(first.labels)
    pooled = pd.concat([r.proba for r in folds.values()], ignore_index=True)
    kw = {} if n_resamples is None else {"n_resamples": n_resamples}
    seg = dcase_metrics(pooled["label"], pooled[labels].to_numpy(), n_classes=len(labels))
    ll, acc = interval(pooled, "logloss", **kw), interval(pooled, "accuracy", **kw)
    clip = clip_columns(pooled, labels, n_resamples)
    pooled_row = {
        "fold": "pooled (out of fold)",
        "clips": int(pooled["clip"].nunique()),
        "segments": len(pooled),
        "logloss": seg["logloss_classwise"],
        "logloss_low": ll[0],
        "logloss_high": ll[1],
        "accuracy": 100 * seg["accuracy_classwise"],
        "accuracy_low": 100 * acc[0],
        "accuracy_high": 100 * acc[1],
        **clip,
    }
    figures = ["logloss", "accuracy", "clip_logloss", "clip_accuracy"]
    mean_row = {"fold": "mean over folds", "clips": float(per_fold["clips"].mean())}
    std_row = {"fold": "std over folds"}
    for f in figures:
        mean_row[f] = float(per_fold[f].mean())
        std_row[f] = float(per_fold[f].std(ddof=1)) if len(per_fold) > 1 else float("nan")
    out = pd.concat([per_fold, pd.DataFrame([pooled_row, mean_row, std_row])], ignore_index=True)
    cols = ["fold", "clips", "segments", "best_epoch"]
    for f in figures:
        cols += [f, f"{f}_low", f"{f}_high"]
    return out[[c for c in cols if c in out.columns]]


def crossval_view(table: pd.DataFrame) -> pd.DataFrame:
    """The cross-validation table as a person reads it: one cell per figure, ``value`` for a
    fold, ``value (low to high)`` (95 % interval) pooled, ``mean ± std`` over folds."""
    rows = []
    means = table[table["fold"] == "mean over folds"]
    stds = table[table["fold"] == "std over folds"]
    for r in table.to_dict("records"):
        if r["fold"] in ("mean over folds", "std over folds"):
            continue
        row = {
            "fold": r["fold"],
            "clips": str(int(r["clips"])),
            "segments": "" if pd.isna(r.get("segments")) else str(int(r["segments"])),
        }
        for f, fmt in _FIGURES:
            cell = fmt.format(r[f])
            lo, hi = r.get(f"{f}_low"), r.get(f"{f}_high")
            if lo is not None and not pd.isna(lo):
                cell += f" ({fmt.format(lo)} to {fmt.format(hi)})"
            row[_TITLES[f]] = cell
        be = r.get("best_epoch")
        row["best epoch"] = "" if be is None or pd.isna(be) else str(int(be))
        rows.append(row)
    if len(means):
        m, sd = means.iloc[0], stds.iloc[0]
        row = {"fold": "mean ± std over folds", "clips": f"{m['clips']:.1f}", "segments": ""}
        for f, fmt in _FIGURES:
            row[_TITLES[f]] = f"{fmt.format(m[f])} ± {fmt.format(sd[f])}"
        row["best epoch"] = ""
        rows.append(row)
    return pd.DataFrame(rows)


_FIGURES = (
    ("logloss", "{:.3f}"),
    ("accuracy", "{:.1f}"),
    ("clip_logloss", "{:.3f}"),
    ("clip_accuracy", "{:.1f}"),
)
_TITLES = {
    "logloss": "segment log loss (official)",
    "accuracy": "segment accuracy % (official)",
    "clip_logloss": "clip log loss",
    "clip_accuracy": "clip accuracy %",
}


def save_crossval(
    result: CrossvalResult, out: str | os.PathLike, source: str = ""
) -> tuple[Path, Path]:
    """``out/crossval_<name>.csv`` (every digit) and ``.md`` (readable, headed by ``source``:
    what data produced it); written atomically. Returns both paths."""
    from avsc.utils import atomic_path

    out = Path(out)
    csv_path, md_path = out / f"crossval_{result.name}.csv", out / f"crossval_{result.name}.md"
    with atomic_path(csv_path) as tmp:
        result.table.to_csv(tmp, index=False, **TEXT_OUT)
    md = crossval_view(result.table).to_markdown(index=False, disable_numparse=True)
    head = f"<!-- {source} -->\n\n" if source else ""
    with atomic_path(md_path) as tmp:
        tmp.write_text(f"{head}{md}\n", **TEXT_OUT)
    return csv_path, md_path


__all__ = [
    "CrossvalResult",
    "FoldFailed",
    "crossval",
    "crossval_table",
    "crossval_view",
    "fold_root",
    "save_crossval",
]
