"""Figures: one style, saving as PDF and PNG with stable bytes, the paper's plots, t-SNE, and
the interactive explorer (``avsc.viz.explorer``)."""

from avsc.viz.figures import clip_feature_figure, silhouette, tsne_panels
from avsc.viz.plots import (
    plot_clip_features,
    plot_confusion,
    plot_frame_strip,
    plot_learning_curves,
    plot_per_class_accuracy,
    plot_results,
    plot_robustness,
    plot_tsne_panels,
    save_figure,
    set_style,
    tsne_embed,
)

__all__ = [
    "clip_feature_figure",
    "silhouette",
    "tsne_panels",
    "plot_clip_features",
    "plot_confusion",
    "plot_frame_strip",
    "plot_learning_curves",
    "plot_per_class_accuracy",
    "plot_results",
    "plot_robustness",
    "plot_tsne_panels",
    "save_figure",
    "set_style",
    "tsne_embed",
]
