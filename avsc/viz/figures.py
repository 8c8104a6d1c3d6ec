"""Figures of the notebooks that need a little computing first: one clip's audio features,
the t-SNE panels of the paper's Figure 2 and their silhouette scores."""

from __future__ import annotations

import numpy as np


def clip_feature_figure(dataset, clip: str, config, source: str, kinds=None):
    """Waveform, STFT and every feature kind of ``kinds`` (default: every registered one,
    the paper's scalogram and FBank first) of one clip (mid channel) as one figure;
    ``dataset`` is the collection's :class:`avsc.data.Manifest`."""
    from avsc.features.audio import (
        features_from_waveform,
        prepare_waveform,
        read_audio,
        segment,
        stft_magnitude,
    )
    from avsc.features.extractors import extractor_names, get_extractor
    from avsc.viz.plots import FeaturePanel, plot_feature_panels

    path = dataset.audio_path(clip)
    if path is None:
        raise ValueError(f"clip {clip!r} has no audio")
    x, sr = read_audio(path)
    ac = config.audio
    kinds = tuple(extractor_names() if kinds is None else kinds)
    feats = features_from_waveform(x, sr, kinds, ac)
    ms = prepare_waveform(x, sr, ac)
    mag = stft_magnitude(segment(ms, ac), ac.n_fft, ac.hop_length)[:, 0]  # (S, T, bins) mid
    stft_db = 20 * np.log10(mag.reshape(-1, mag.shape[-1]) + 1e-6)
    panels = []
    for kind in kinds:
        values = feats[kind][:, :, 0].reshape(-1, feats[kind].shape[-1])
        ex = get_extractor(kind, ac)
        panels.append(
            FeaturePanel(
                values,
                f"{ex.title} ({values.shape[1]} {ex.unit})",
                ex.band_label,
                high_first=ex.high_first,
                ticks=ex.band_ticks(values.shape[1]),
            )
        )
    return plot_feature_panels(ms[0], ac.sample_rate, stft_db, panels, title=clip, source=source)


def tsne_panels(
    pipeline_result, joint_result, perplexity: float = 30.0, max_points: int = 2000, seed: int = 0
):
    """The four panels of the paper's Figure 2 (t-SNE of evaluate-fold segment embeddings):
    audio-visual and acoustic embeddings of the pipeline and the joint system."""
    from avsc.viz.plots import tsne_embed

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
    """Silhouette score of each t-SNE panel by class (sklearn): how well classes separate.
    A panel where it is undefined (fewer than 2 classes, or no class with two points: as many
    classes as points) is left out, with a warning naming it."""
    import warnings

    from sklearn.metrics import silhouette_score

    out = {}
    for title, (pts, y) in panels.items():
        k = len(np.unique(y))
        if not 2 <= k <= len(y) - 1:
            warnings.warn(
                f"silhouette of {title!r} left out: {len(y)} points of {k} classes (it needs 2 "
                "to points - 1 classes)",
                stacklevel=2,
            )
            continue
        out[title] = float(silhouette_score(pts, y))
    return out
