"""The paper's figures. Functions return matplotlib figures; :func:`save_figure` writes them
as PDF and PNG with stable bytes (no timestamps). Every figure takes a ``source`` string
that is printed on it, so a figure always says what data produced it."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

if "MPLBACKEND" not in os.environ and "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # scripts, tests, the command line: no window (a notebook keeps its own)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

#: shorter names for long labels in crowded axes (TAU's; any other label shows as it is, cut
#: to :data:`TICK_CHARS` characters)
SHORT = {
    "airport": "airport",
    "bus": "bus",
    "metro": "metro",
    "metro_station": "metro st.",
    "park": "park",
    "public_square": "square",
    "shopping_mall": "mall",
    "street_pedestrian": "st. ped.",
    "street_traffic": "st. traffic",
    "tram": "tram",
}
TICK_CHARS = 14
#: above this many classes a figure leaves out what would be unreadable per class (cell
#: numbers of a confusion matrix, legend entries)
MANY_CLASSES = 20


def short_label(name: str) -> str:
    """A label as an axis shows it: TAU's abbreviations, else cut to a few characters."""
    if name in SHORT:
        return SHORT[name]
    return name if len(name) <= TICK_CHARS else name[: TICK_CHARS - 1] + "…"


def set_style() -> None:
    """One look for every figure (seaborn's paper context, a colour-blind palette)."""
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "axes.titlesize": 10})


def _stamp(fig, source: str | None) -> None:
    if source:
        fig.text(0.995, 0.005, source, ha="right", va="bottom", fontsize=7, color="0.35")


def display_png(data: bytes) -> None:
    """Show PNG bytes once in a notebook: a bare ``image/png`` output (no ``<Figure size``
    text beside it); nothing outside a Jupyter kernel or IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    if get_ipython() is None:
        return
    from IPython.display import display

    display({"image/png": data}, raw=True)


def show_figure(fig) -> bytes:
    """Display ``fig`` once as a PNG and close it, so that the inline backend does not show it
    a second time at the end of the cell (live and papermill runs alike); returns the PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    display_png(buf.getvalue())
    return buf.getvalue()


def save_figure(fig, path_stem: str | os.PathLike) -> list[Path]:
    """Write ``<stem>.pdf`` and ``<stem>.png`` atomically, without creation dates, so that the
    same figure gives the same bytes; returns the two paths."""
    from avsc.utils import atomic_path

    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext, meta in (
        ("pdf", {"CreationDate": None, "ModDate": None}),
        ("png", {"Software": None}),
    ):
        path = stem.with_suffix(f".{ext}")
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fig.savefig(fh, format=ext, metadata=meta, bbox_inches="tight")
        out.append(path)
    return out


def plot_clip_features(
    waveform: np.ndarray,
    sr: int,
    stft_db: np.ndarray,
    scalogram: np.ndarray,
    fbank: np.ndarray,
    centres_hz: np.ndarray,
    title: str = "",
    source: str | None = None,
):
    """Waveform, STFT, long-term scalogram and FBank of one clip side by side (mid channel).

    ``stft_db`` is ``(frames, bins)``; ``scalogram`` / ``fbank`` are ``(frames, F)``, all
    frames of the clip in time order. Any registered feature kinds: :func:`plot_feature_panels`."""
    ticks = list(range(0, scalogram.shape[1], 40))
    panels = [
        FeaturePanel(
            scalogram,
            f"long-term scalogram ({scalogram.shape[1]} filters)",
            "centre (Hz)",
            high_first=True,
            ticks=(
                [scalogram.shape[1] - 1 - k for k in ticks],
                [f"{centres_hz[k]:.0f}" for k in ticks],
            ),
        ),
        FeaturePanel(fbank, f"long-term FBank ({fbank.shape[1]} mel)", "mel band"),
    ]
    return plot_feature_panels(waveform, sr, stft_db, panels, title, source)


@dataclass
class FeaturePanel:
    """One acoustic feature of a clip as a figure panel: ``(frames, F)`` values, the panel's
    title and y label, whether its rows run from high to low frequencies (drawn flipped),
    and the y ticks ``(rows, labels)`` in display order (None: matplotlib's)."""

    values: np.ndarray
    title: str
    ylabel: str
    high_first: bool = False
    ticks: tuple[list[int], list[str]] | None = None


def plot_feature_panels(
    waveform: np.ndarray,
    sr: int,
    stft_db: np.ndarray,
    panels: list[FeaturePanel],
    title: str = "",
    source: str | None = None,
):
    """Waveform, STFT and every feature panel of one clip side by side (mid channel), each
    panel 3.75 inches wide; ``stft_db`` is ``(frames, bins)``, in time order."""
    n = 2 + len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.75 * n, 3.2))
    t = np.arange(waveform.shape[-1]) / sr
    axes[0].plot(t, waveform, lw=0.3)
    axes[0].set(title="waveform (mid)", xlabel="time (s)", ylabel="amplitude")
    axes[1].imshow(
        stft_db.T,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=[0, t[-1], 0, sr / 2 / 1000 if sr else 1],
    )
    axes[1].set(title="magnitude STFT (dB)", xlabel="time (s)", ylabel="kHz")
    for ax, panel in zip(axes[2:], panels, strict=True):
        values = panel.values[:, ::-1] if panel.high_first else panel.values
        ax.imshow(
            values.T,
            origin="lower",
            aspect="auto",
            cmap="magma",
            extent=[0, t[-1], 0, panel.values.shape[1]],
        )
        if panel.ticks is not None:
            ax.set_yticks(panel.ticks[0])
            ax.set_yticklabels(panel.ticks[1])
        ax.set(title=panel.title, xlabel="time (s)", ylabel=panel.ylabel)
    for ax in axes[1:]:
        ax.grid(False)
    fig.suptitle(title)
    fig.tight_layout()
    _stamp(fig, source)
    return fig


def plot_frame_strip(frames: np.ndarray, title: str = "", source: str | None = None):
    """The 1-fps frames of a clip in a row, labelled by segment."""
    n = len(frames)
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 1.6 * frames.shape[1] / frames.shape[2] + 0.5))
    for i, ax in enumerate(np.atleast_1d(axes)):
        ax.imshow(frames[i])
        ax.set_title(f"{i + 0.5:g} s", fontsize=8)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    _stamp(fig, source)
    return fig


def plot_confusion(
    cm: np.ndarray,
    title: str = "",
    labels: Sequence[str] | None = None,
    source: str | None = None,
    ax=None,
):
    """Row-normalised confusion matrix (true class in rows) as a heat map; the cells carry
    their values up to :data:`MANY_CLASSES` classes, the axes their labels up to 60."""
    import seaborn as sns

    n = cm.shape[0]
    labels = list(labels) if labels is not None else [str(k) for k in range(n)]
    own = ax is None
    if own:
        size = (5.2, 4.6) if n <= MANY_CLASSES else (9.0, 8.0)
        fig, ax = plt.subplots(figsize=size)
    else:
        fig = ax.figure
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    if n > MANY_CLASSES:  # an image, not a million vector cells
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        if n <= 60:
            short = [short_label(name) for name in labels]
            ax.set_xticks(range(n), short, rotation=90, fontsize=6)
            ax.set_yticks(range(n), short, fontsize=6)
        ax.grid(False)
    else:
        short = [short_label(name) for name in labels]
        sns.heatmap(
            norm,
            ax=ax,
            vmin=0,
            vmax=1,
            cmap="Blues",
            annot=True,
            fmt=".2f",
            annot_kws={"size": 6},
            xticklabels=short,
            yticklabels=short,
            cbar=False,
            square=True,
        )
    ax.set(xlabel="predicted", ylabel="true", title=title)
    ax.tick_params(labelsize=7)
    if own:
        fig.tight_layout()
        _stamp(fig, source)
    return fig


def plot_per_class_accuracy(table: pd.DataFrame, source: str | None = None):
    """Per-class accuracy (%) of several systems; ``table`` has columns ``system``,
    ``scene_label``, ``accuracy``: grouped bars, or beyond :data:`MANY_CLASSES` classes each
    system's per-class accuracies sorted (how many classes reach which accuracy)."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(10, 3.4))
    if table["scene_label"].nunique() > MANY_CLASSES:
        for name, g in table.groupby("system", sort=False):
            acc = np.sort(g["accuracy"].dropna().to_numpy())[::-1]
            ax.plot(np.arange(1, len(acc) + 1), acc, label=name)
        ax.set(xlabel="classes, best first", ylabel="accuracy (%)", ylim=(0, 100))
        ax.legend(fontsize=7)
        fig.tight_layout()
        _stamp(fig, source)
        return fig
    df = table.assign(scene=table["scene_label"].map(short_label))
    sns.barplot(df, x="scene", y="accuracy", hue="system", ax=ax)
    ax.set(xlabel="", ylabel="accuracy (%)", ylim=(0, 100))
    ax.legend(fontsize=7, ncols=3)
    fig.tight_layout()
    _stamp(fig, source)
    return fig


def plot_learning_curves(histories: Mapping[str, pd.DataFrame], source: str | None = None):
    """Training loss and validation log loss per epoch for each system."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharex=True)
    for name, h in histories.items():
        axes[0].plot(h["epoch"], h["train_loss"], label=name)
        axes[1].plot(h["epoch"], h["val_logloss"], label=name)
    axes[0].set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    axes[1].set(title="validation log loss (segments)", xlabel="epoch")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    _stamp(fig, source)
    return fig


def _errors(value, low, high) -> np.ndarray:
    """Error-bar lengths below and above ``value`` for the interval ``[low, high]``. A
    percentile bootstrap interval need not contain the figure itself (small, skewed
    samples): the bar then stops at the figure."""
    v = np.asarray(value, float)
    return np.clip(np.stack([v - np.asarray(low, float), np.asarray(high, float) - v]), 0, None)


def plot_robustness(table: pd.DataFrame, source: str | None = None):
    """Class-wise log loss against the missing rate, video missing (left) and audio missing
    (middle), one line per system with its 95 % intervals as error bars (rate 0: the full
    condition), and full vs asynchronous (right). ``table``: the long robustness table."""
    fig, axes = plt.subplots(
        1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [2, 2, 1.4]}, sharey=True
    )
    names = list(dict.fromkeys(table["name"]))
    colors = dict(zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3, strict=False))
    for ax, modality in zip(axes[:2], ("video", "audio"), strict=True):
        for name in names:
            t = table[(table["name"] == name) & table["modality"].isin(["", modality])]
            t = t.sort_values("rate")
            err = _errors(t["logloss"], t["logloss_low"], t["logloss_high"])
            ax.errorbar(
                100 * t["rate"], t["logloss"], yerr=err, marker="o", ms=4, capsize=3,
                label=name, color=colors[name],
            )  # fmt: skip
        ax.set(title=f"{modality} missing", xlabel=f"clips without {modality} (%)")
    axes[0].set_ylabel("log loss (class-wise)")
    axes[0].legend(fontsize=7)
    ax = axes[2]
    for i, cond in enumerate(("full", "asynchronous")):
        t = table[table["condition"] == cond]
        for j, name in enumerate(names):
            r = t[t["name"] == name].iloc[0]
            x = i + (j - (len(names) - 1) / 2) * 0.8 / max(len(names), 1)
            ax.errorbar(
                x, r["logloss"], yerr=_errors([r["logloss"]], [r["logloss_low"]],
                [r["logloss_high"]]), marker="o", ms=4, capsize=2, color=colors[name],
            )  # fmt: skip
    ax.set(xticks=[0, 1], xticklabels=["full", "asynchronous"], title="asynchrony")
    fig.tight_layout()
    _stamp(fig, source)
    return fig


def plot_results(table: pd.DataFrame, source: str | None = None):
    """Class-wise log loss and accuracy per system (a results table), each with its 95 %
    bootstrap interval as an error bar; with several seeds, the mean over seeds and its
    standard deviation beside it (hollow marker)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(table) + 1.4), sharey=True)
    label = [
        " ".join(str(v) for v in (r.system, r.feature, r.backbone) if isinstance(v, str) and v)
        for r in table.itertuples()
    ]
    y = np.arange(len(table))
    for ax, metric, name in zip(
        axes, ("logloss", "accuracy"), ("log loss (class-wise)", "accuracy % (class-wise)"),
        strict=True,
    ):  # fmt: skip
        v = table[metric].to_numpy(float)
        err = _errors(v, table[f"{metric}_low"], table[f"{metric}_high"])
        ax.errorbar(v, y, xerr=err, fmt="o", capsize=3, label="this run, 95 % CI (clips)")
        if f"{metric}_seed_mean" in table.columns:
            m = table[f"{metric}_seed_mean"].to_numpy(float)
            sd = table[f"{metric}_seed_std"].to_numpy(float)
            ax.errorbar(
                m, y + 0.25, xerr=sd, fmt="o", mfc="none", capsize=3,
                label="mean over seeds ± std",
            )  # fmt: skip
        ax.set(xlabel=name)
    axes[0].set(yticks=y, yticklabels=label)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    _stamp(fig, source)
    return fig


def tsne_embed(x: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (``sklearn.manifold.TSNE``, PCA init) of ``(N, D)`` embeddings; the
    perplexity is capped below N."""
    from sklearn.manifold import TSNE

    perp = float(min(perplexity, max(2.0, (len(x) - 1) / 3)))
    return TSNE(
        n_components=2, perplexity=perp, init="pca", random_state=seed, learning_rate="auto"
    ).fit_transform(np.asarray(x, dtype=np.float32))


def plot_tsne_panels(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]],
    labels: Sequence[str] | None = None,
    source: str | None = None,
):
    """Figure 2 of the paper: one t-SNE panel per entry ``title -> (points (N, 2), y (N,))``,
    coloured by class (a legend up to :data:`MANY_CLASSES` classes), two columns."""
    import seaborn as sns

    n = len(panels)
    if labels is None:
        top = max(int(np.max(y)) for _, y in panels.values()) + 1
        labels = [str(k) for k in range(top)]
    cols = 2
    rows = (n + 1) // 2
    fig, axes = plt.subplots(rows, cols, figsize=(9, 4.2 * rows))
    axes = np.atleast_1d(axes).ravel()
    palette = sns.color_palette(
        "tab10" if len(labels) <= 10 else "tab20" if len(labels) <= 20 else "husl", len(labels)
    )
    for ax, (title, (pts, y)) in zip(axes, panels.items(), strict=False):
        for k, name in enumerate(labels):
            m = y == k
            if not m.any() and len(labels) > MANY_CLASSES:
                continue
            ax.scatter(
                pts[m, 0], pts[m, 1], s=5, color=palette[k], label=short_label(name), alpha=0.8
            )
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[n:]:
        ax.axis("off")
    handles, names = axes[0].get_legend_handles_labels()
    if len(labels) <= MANY_CLASSES:
        fig.legend(
            handles, names, loc="lower left", ncols=5, fontsize=8, markerscale=3, frameon=False
        )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    _stamp(fig, source)
    return fig
