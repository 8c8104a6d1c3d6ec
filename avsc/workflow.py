"""What the notebooks call: one :class:`Context` per notebook run.

A notebook stays thin: it sets parameters, builds a Context, calls the library and shows
the result. The Context resolves the config, knows where the run's artifacts, figures and
tables go, says what data produced them, and turns a missing artifact into a clear error that
names the notebook which makes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avsc.config import ExperimentConfig, PreprocessConfig
from avsc.utils import atomic_path, atomic_write_json

#: The paper's numbers (method.md section 9): class-wise log loss and accuracy (%).
PAPER = pd.DataFrame(
    [
        ("audio_only", "fbank", None, 0.6968, 76.08),
        ("audio_only", "scalogram", None, 0.6325, 77.98),
        ("video_only", None, "resnet50", 0.3939, 87.03),
        ("video_only", None, "tf_efficientnetv2_s", 0.2731, 90.91),
        ("pipeline", "fbank", "resnet50", 0.3808, 88.87),
        ("pipeline", "fbank", "tf_efficientnetv2_s", 0.2146, 92.84),
        ("pipeline", "scalogram", "resnet50", 0.3506, 89.29),
        ("pipeline", "scalogram", "tf_efficientnetv2_s", 0.2055, 93.14),
        ("joint", "fbank", "resnet50", 0.2664, 91.13),
        ("joint", "fbank", "tf_efficientnetv2_s", 0.1788, 93.45),
        ("joint", "scalogram", "resnet50", 0.2495, 91.55),
        ("joint", "scalogram", "tf_efficientnetv2_s", 0.1517, 94.59),
        ("ablation_I", "scalogram", "tf_efficientnetv2_s", 0.2055, 93.14),
        ("ablation_II", "scalogram", "tf_efficientnetv2_s", 0.2144, 92.39),
        ("ablation_III", "scalogram", "tf_efficientnetv2_s", 0.1591, 94.31),
        ("ablation_IV", "scalogram", "tf_efficientnetv2_s", 0.1517, 94.59),
    ],
    columns=["system", "feature", "backbone", "paper_logloss", "paper_accuracy"],
)

#: Prior work on the same task (the paper's Table 5, evaluation-set figures where given).
PRIOR_WORK = pd.DataFrame(
    [
        ("DCASE 2021 Task 1B baseline (OpenL3 + MLP)", 0.658, 77.0),
        ("Best DCASE 2021 Task 1B system (evaluation set)", 0.195, 93.8),
        ("Chen, Wang, Zhang 2022 (joint, scalogram + EffNetV2-S)", 0.1517, 94.59),
    ],
    columns=["system", "logloss", "accuracy"],
)

NOTEBOOK_OF = {
    "dataset": "01_data_and_features",
    "store": "01_data_and_features",
    "visual_weights": "02_visual_encoder_finetuning",
    "audio_only": "03_unimodal_baselines",
    "video_only": "03_unimodal_baselines",
    "pipeline": "04_pipeline_vs_joint",
    "joint": "04_pipeline_vs_joint",
    "ablation": "05_ablations",
    "tsne": "06_tsne",
}


def _log_to_output() -> None:
    """avsc's INFO messages (one line per training epoch, preprocessing progress) go to the
    notebook's output, where papermill keeps them."""
    import logging
    import sys

    logger = logging.getLogger("avsc")
    if not any(getattr(h, "_avsc", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        handler._avsc = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def repo_root() -> Path:
    """The folder relative notebook paths start from: the nearest parent of the working
    directory holding ``pyproject.toml`` and ``notebooks/`` (so a notebook opened in
    ``notebooks/`` and one run by papermill from the repo agree), else the working directory."""
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file() and (d / "notebooks").is_dir():
            return d
    return here


class MissingArtifact(FileNotFoundError):
    """An artifact a notebook needs is absent; names the notebook that makes it."""


@dataclass
class Context:
    """Paths, config and provenance of one notebook run (see the module docstring)."""

    profile: str
    run_dir: str
    figures_dir: str
    data_dir: str
    cache_dir: str
    experiment: dict | None = None
    notebook: str = ""

    def __post_init__(self) -> None:
        base = repo_root()
        self.run, self.figures, self.data, self.cache = (
            p if p.is_absolute() else base / p
            for p in map(Path, (self.run_dir, self.figures_dir, self.data_dir, self.cache_dir))
        )
        self.run.mkdir(parents=True, exist_ok=True)
        self.figures.mkdir(parents=True, exist_ok=True)
        self.config = ExperimentConfig().override(dict(self.experiment or {}))
        self._workspace = None
        _log_to_output()
        from avsc.viz import set_style

        set_style()

    # ------------------------------------------------------------------ provenance
    @property
    def source(self) -> str:
        """What data produced this run's numbers and figures, in words."""
        card = self.data / "synthetic.json"
        if card.is_file():
            info = json.loads(card.read_text())
            seed = info.get("seed", "?")
            return f"SYNTHETIC data (avsc synth, seed {seed}); profile {self.profile}"
        return (
            f"{self.data.name} (TAU Urban Audio-Visual Scenes 2021, fold 1); profile {self.profile}"
        )

    @property
    def is_synthetic(self) -> bool:
        return (self.data / "synthetic.json").is_file()

    # ------------------------------------------------------------------ artifacts
    def require(self, path: str | os.PathLike, made_by: str) -> Path:
        """``path`` (relative to the run folder unless absolute) or a :class:`MissingArtifact`
        naming the notebook ``made_by`` that makes it."""
        p = Path(path)
        p = p if p.is_absolute() else self.run / p
        if not p.exists():
            raise MissingArtifact(
                f"{p} is missing: it is made by notebook {made_by} (run it first, e.g. "
                f"avsc run --profile {self.profile} --from {made_by[:2]})"
            )
        return p

    def store(self):
        from avsc.features import FeatureStore

        self.require(self.cache / "store.json", NOTEBOOK_OF["store"])
        return FeatureStore(self.cache)

    @property
    def visual_weights(self) -> dict[str, str]:
        """backbone -> weights file chosen by notebook 02 (empty before it ran)."""
        path = self.run / "visual" / "weights.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def workspace(self):
        from avsc.training.strategies import Workspace

        if self._workspace is None:
            self._workspace = Workspace(self.store(), self.config, self.visual_weights)
        return self._workspace

    def result_dir(self, name: str) -> Path:
        return self.run / "results" / name

    def figure(self, fig, name: str):
        """Save ``fig`` as ``figures/<profile>/<name>.pdf|png``; return it for display."""
        from avsc.viz import save_figure

        save_figure(fig, self.figures / name)
        return fig

    def table(self, df: pd.DataFrame, name: str, floatfmt: str = ".4f") -> pd.DataFrame:
        """Save ``df`` as CSV and Markdown under ``figures/<profile>/``; return it."""
        with atomic_path(self.figures / f"{name}.csv") as tmp:
            df.to_csv(tmp, index=False)
        shown = df.astype(object).where(df.notna(), "")  # blanks, not "nan", for absent values
        md = (
            f"<!-- {self.source} -->\n\n" + shown.to_markdown(index=False, floatfmt=floatfmt) + "\n"
        )
        with atomic_path(self.figures / f"{name}.md") as tmp:
            tmp.write_text(md)
        return df

    def save_metrics(self, name: str, metrics: dict[str, Any]) -> Path:
        """``runs/<profile>/metrics/<name>.json`` (the runner checks these are finite)."""
        path = self.run / "metrics" / f"{name}.json"
        atomic_write_json(path, {"source": self.source, **_plain(metrics)})
        return path

    # ------------------------------------------------------------------ steps
    def preprocess_config(self, short_side: int | None, clip_seconds: float) -> PreprocessConfig:
        from avsc.config import DataConfig, FrameConfig

        return PreprocessConfig(
            audio=self.config.audio,
            frames=FrameConfig(short_side=short_side, format=self.config.frames.format),
            data=DataConfig(
                clip_seconds=clip_seconds,
                val_fraction=self.config.data.val_fraction,
                split=self.config.data.split,
                seed=self.config.data.seed,
            ),
        )

    def train(self, strategy: str, **kwargs: Any):
        """Run a strategy of :mod:`avsc.training.strategies` into ``results/<name>``; a
        finished run is reloaded (its checkpoints make training resume where it stopped)."""
        from avsc.training import strategies as S

        fn = getattr(S, strategy)
        name = result_name(strategy, **kwargs)
        return fn(
            self.config, self.store(), self.result_dir(name), workspace=self.workspace(), **kwargs
        )

    def load(self, strategy: str, **kwargs: Any):
        """A finished strategy's result, or a :class:`MissingArtifact` naming its notebook."""
        name = result_name(strategy, **kwargs)
        key = strategy if strategy != "ablation" else "ablation"
        d = self.require(self.result_dir(name) / "metrics.json", NOTEBOOK_OF[key]).parent
        return load_strategy_result(d)


def result_name(
    strategy: str,
    feature: str | None = None,
    backbone: str | None = None,
    which: str | None = None,
    **_: Any,
) -> str:
    """Folder name of a strategy's results: ``audio_only_scalogram``, ``joint_fbank_resnet50``..."""
    parts = [strategy if strategy != "ablation" else f"ablation_{which}"]
    if strategy != "video_only" and feature:
        parts.append(feature)
    if strategy != "audio_only" and backbone:
        parts.append(backbone)
    return "_".join(parts)


def load_strategy_result(out_dir: str | os.PathLike):
    """Rebuild a :class:`avsc.training.strategies.StrategyResult` from its folder."""
    from avsc.training.strategies import StrategyResult

    d = Path(out_dir)
    meta = json.loads((d / "metrics.json").read_text())
    emb = {}
    if (d / "embeddings.npz").is_file():
        with np.load(d / "embeddings.npz", allow_pickle=False) as z:
            emb = {k: z[k] for k in z.files if k != "label"}
    keys = (
        "logloss_classwise",
        "logloss_overall",
        "accuracy_classwise",
        "accuracy_overall",
        "best_epoch",
        "best_val_logloss",
    )
    return StrategyResult(
        name=meta["name"],
        system=meta["system"],
        feature=meta["feature"],
        backbone=meta["backbone"],
        metrics={k: meta[k] for k in keys if k in meta},
        checkpoint=Path(meta["checkpoint"]),
        proba=pd.read_csv(d / "proba.csv"),
        embeddings=emb,
        history=pd.read_csv(d / "history.csv") if (d / "history.csv").is_file() else pd.DataFrame(),
        seconds=float(meta.get("seconds", 0.0)),
    )


def results_table(results, paper: bool = True) -> pd.DataFrame:
    """One row per result: system, feature, backbone, class-wise log loss and accuracy (%),
    training wall time, and the paper's figures beside them where the paper has that row."""
    rows = []
    for r in results:
        rows.append(
            {
                "system": r.system,
                "feature": r.feature,
                "backbone": r.backbone,
                "logloss": r.metrics["logloss_classwise"],
                "accuracy": 100 * r.metrics["accuracy_classwise"],
                "logloss_overall": r.metrics["logloss_overall"],
                "accuracy_overall": 100 * r.metrics["accuracy_overall"],
                "train_seconds": round(r.seconds, 1),
            }
        )
    df = pd.DataFrame(rows)
    if paper and len(df):
        df["paper_backbone"], df["paper_logloss"], df["paper_accuracy"] = zip(
            *[_paper_row(r.system, r.feature, r.backbone) for r in df.itertuples()], strict=True
        )
    return df


def _paper_row(system: str, feature: str | None, backbone: str | None):
    """The paper's figures for the same system and feature: with the same backbone when the
    paper used it, else with its main backbone (EfficientNetV2-S), named in paper_backbone."""
    feature = None if pd.isna(feature) else feature
    backbone = None if pd.isna(backbone) else backbone
    ref = PAPER[(PAPER.system == system) & (PAPER.feature.fillna("") == (feature or ""))]
    if backbone is None:
        ref = ref[ref.backbone.isna()]
    else:
        same = ref[ref.backbone == backbone]
        ref = same if len(same) else ref[ref.backbone == "tf_efficientnetv2_s"]
    if not len(ref):
        return None, float("nan"), float("nan")
    row = ref.iloc[0]
    return row.backbone, row.paper_logloss, row.paper_accuracy


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


# ---------------------------------------------------------------------------------------
# steps of the notebooks


def ensure_dataset(
    ctx: Context,
    synthetic: bool,
    clips_per_class: int,
    seconds: float,
    video_size: list[int] | tuple[int, int],
    seed: int,
    workers: int = 1,
) -> Path:
    """The dataset root of the run: built with ``avsc synth`` when ``synthetic`` and absent,
    else it must already hold a TAU layout (the real dataset, ``AVSC_DATA_ROOT``)."""
    from avsc.data.tau import DatasetError, find_meta_dir

    root = ctx.data
    try:
        find_meta_dir(root)
        return root
    except DatasetError:
        if not synthetic:
            raise MissingArtifact(
                f"{root}: no TAU Urban Audio-Visual Scenes 2021 root here. Download it (Zenodo "
                "4477542), unzip it and set AVSC_DATA_ROOT or pass -p data_dir=PATH"
            ) from None
    from avsc.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(
        root,
        clips_per_class=clips_per_class,
        seconds=seconds,
        seed=seed,
        video_size=tuple(video_size),
        workers=workers,
        show_progress=False,
    )


def dataset_statistics(dataset) -> dict[str, pd.DataFrame]:
    """Clips per fold and class, per city, and locations per class."""
    rows = []
    for fold, df in dataset.folds.items():
        if "scene_label" not in df:
            continue
        rows.append(df.groupby("scene_label").size().rename(fold))
    per_class = pd.concat(rows, axis=1).fillna(0).astype(int) if rows else pd.DataFrame()
    per_class.loc["total"] = per_class.sum()
    meta = dataset.meta
    per_city = (
        meta.groupby("city")
        .agg(
            clips=("clip", "size"),
            locations=("identifier", "nunique"),
            classes=("scene_label", "nunique"),
        )
        .reset_index()
    )
    per_loc = (
        meta.groupby("scene_label")
        .agg(
            clips=("clip", "size"), locations=("identifier", "nunique"), cities=("city", "nunique")
        )
        .reset_index()
    )
    return {
        "per_class": per_class.reset_index(names="scene_label"),
        "per_city": per_city,
        "per_location": per_loc,
    }


def split_summary(store) -> pd.DataFrame:
    """Clips and locations per class in each subset of the store's split."""
    split = store.subsets().merge(store.index[["clip", "scene_label", "identifier"]], on="clip")
    out = split.groupby(["scene_label", "subset"]).agg(
        clips=("clip", "size"), locations=("identifier", "nunique")
    )
    return out.unstack("subset").fillna(0).astype(int).reset_index()


def clip_feature_figure(dataset, clip: str, config, source: str):
    """Waveform, STFT, scalogram and FBank of one clip (mid channel) as one figure."""
    from avsc.features.audio import (
        features_from_waveform,
        prepare_waveform,
        read_audio,
        segment,
        stft_magnitude,
    )
    from avsc.features.filterbanks import scalogram_centre_frequencies
    from avsc.viz import plot_clip_features

    row = dataset.meta.set_index("clip").loc[clip]
    x, sr = read_audio(dataset.audio_path(row["filename_audio"]))
    ac = config.audio
    feats = features_from_waveform(x, sr, ("scalogram", "fbank"), ac)
    ms = prepare_waveform(x, sr, ac)
    mag = stft_magnitude(segment(ms, ac), ac.n_fft, ac.hop_length)[:, 0]  # (S, T, bins) mid
    stft_db = 20 * np.log10(mag.reshape(-1, mag.shape[-1]) + 1e-6)
    scal = feats["scalogram"][:, :, 0].reshape(-1, feats["scalogram"].shape[-1])
    fb = feats["fbank"][:, :, 0].reshape(-1, feats["fbank"].shape[-1])
    centres = scalogram_centre_frequencies(ac.sample_rate, ac.scalogram_q, ac.scalogram_j)
    return plot_clip_features(
        ms[0], ac.sample_rate, stft_db, scal, fb, centres, title=clip, source=source
    )


def finetune_visual_encoders(
    ctx: Context,
    backbones: list[str],
    finetune: list[str],
    start_weights: dict,
    places_root: str,
    epochs: int,
    batch_size: int,
    lr: float,
    image_size: int,
    standin_images: int,
    use_finetuned: bool = True,
) -> pd.DataFrame:
    """Notebook 02: fine-tune the listed backbones on Places365 (or the synthetic stand-in
    when ``places_root`` is empty), record in ``visual/weights.json`` which weights every
    backbone uses from now on (the fine-tuned ones with ``use_finetuned``, else the starting
    ones), and return top-1 before / after per fine-tuned backbone."""
    from avsc.training.finetune import finetune_visual, make_places_standin

    rows = []
    chosen = {b: start_weights[b] for b in backbones if start_weights.get(b)}
    images = places_root
    if finetune and not images:
        images = make_places_standin(
            ctx.run / "places_standin",
            images_per_class=standin_images,
            size=max(64, image_size or 96),
            seed=0,
        )
    for b in finetune:
        r = finetune_visual(
            images,
            b,
            ctx.run / "visual" / f"{b}.pt",
            weights=start_weights.get(b),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            image_size=image_size or None,
        )
        if use_finetuned:
            chosen[b] = str(r.checkpoint)
        rows.append(
            {
                "backbone": b,
                "images": r.source if places_root else "SYNTHETIC stand-in for Places365",
                "classes": len(r.classes),
                "start_weights": start_weights.get(b) or "random init",
                "top1_before_ncm": r.top1_before,
                "top1_after": r.top1_after,
                "top1_after_ncm": r.top1_after_ncm,
                "seconds": round(r.seconds, 1),
            }
        )
    atomic_write_json(ctx.run / "visual" / "weights.json", chosen)
    return pd.DataFrame(rows)


def confusion_of(result) -> np.ndarray:
    from avsc.data.tau import LABELS
    from avsc.evaluation import confusion

    p = result.proba[list(LABELS)].to_numpy()
    return confusion(result.proba["label"].to_numpy(), p)


def per_class_of(results) -> pd.DataFrame:
    from avsc.data.tau import LABELS
    from avsc.evaluation import per_class_table

    frames = []
    for r in results:
        t = per_class_table(r.proba["label"].to_numpy(), r.proba[list(LABELS)].to_numpy())
        t.insert(0, "system", r.name)
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def tsne_panels(
    pipeline_result, joint_result, perplexity: float = 30.0, max_points: int = 2000, seed: int = 0
):
    """The four panels of the paper's Figure 2 (t-SNE of evaluate-fold segment embeddings):
    audio-visual and acoustic embeddings of the pipeline and the joint system."""
    from avsc.viz import tsne_embed

    rng = np.random.default_rng(seed)
    n = len(pipeline_result.proba)
    idx = np.sort(rng.choice(n, size=min(n, max_points), replace=False))
    y = pipeline_result.proba["label"].to_numpy()[idx]
    panels = {}
    for title, res, key in (
        ("(a) audio-visual embeddings, pipeline", pipeline_result, "audio_visual"),
        ("(b) audio-visual embeddings, joint", joint_result, "audio_visual"),
        ("(c) acoustic embeddings, pipeline", pipeline_result, "acoustic"),
        ("(d) acoustic embeddings, joint", joint_result, "acoustic"),
    ):
        panels[title] = (tsne_embed(res.embeddings[key][idx], perplexity, seed), y)
    return panels


def silhouette(panels) -> dict[str, float]:
    """Silhouette score of each t-SNE panel by class (sklearn): how well classes separate."""
    from sklearn.metrics import silhouette_score

    return {title: float(silhouette_score(pts, y)) for title, (pts, y) in panels.items()}
