"""The interactive explorer: pick a clip and a segment; see its frame, hear its audio, see its
scalogram, and compare every system's predicted probabilities with the truth.

Lives in the library so that notebooks only call ``Explorer(...).show()``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from avsc.viz.plots import short_label

#: classes shown in the probability bars (the most probable, and the truth) of a collection
#: with more
MAX_BARS = 12


class Explorer:
    """ipywidgets explorer over the evaluation segments of a run.

    ``store`` is the feature store (its manifest finds each clip's audio), ``results`` the
    :class:`avsc.experiments.StrategyResult` objects to compare (their ``labels`` name the
    classes); ``source`` is printed under every view. ``feature`` is the acoustic feature
    shown (default: the first the results use, else the store's first).
    """

    def __init__(self, store, results: Sequence, source: str = "", feature: str | None = None):
        self.store = store
        used = [r.feature for r in results if getattr(r, "feature", None)]
        have = store.features
        self.feature = feature or (used[0] if used else (have[0] if have else None))
        self.results = list(results)
        self.source = source
        if not self.results:
            raise ValueError("the explorer needs at least one trained system's results")
        self.labels = list(self.results[0].labels)
        self.clips = sorted(set(self.results[0].proba["clip"]))
        seg = self.results[0].proba.groupby("clip")["segment"].max()
        self.segments = {c: int(n) + 1 for c, n in seg.items()}
        self.segment_seconds = store.config.audio.segment_seconds

    def _high_first(self) -> bool:
        """Whether the shown feature's rows run from high to low frequencies (the
        scalogram's do); False for a kind not registered in this process."""
        from avsc.features.extractors import extractor_names, get_extractor

        if self.feature not in extractor_names():
            return False
        return get_extractor(self.feature, self.store.config.audio).high_first

    def probabilities(self, clip: str, segment: int):
        """``{system name: (C,) probabilities}`` and the true label index of one segment."""
        out, label = {}, None
        for r in self.results:
            p = r.proba
            row = p[(p["clip"] == clip) & (p["segment"] == segment)]
            if len(row):
                out[r.name] = row[list(r.labels)].to_numpy()[0]
                label = int(row["label"].iloc[0])
        return out, label

    def figure(self, clip: str, segment: int):
        """Frame, acoustic feature and per-system probability bars of one segment."""
        probs, label = self.probabilities(clip, segment)
        # a figure of its own, outside pyplot: it is drawn from widget callbacks, where
        # pyplot's global state (the inline backend's list of figures to show) does not belong
        fig = Figure(figsize=(14, 3.4))
        axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.2, 1, 1.6]})
        s0 = segment * self.segment_seconds
        title = f"{clip}, {s0:g}-{s0 + self.segment_seconds:g} s"
        if "video" in self.store.modalities:
            axes[0].imshow(self.store.load_frames(clip, [segment])[0])
        else:
            axes[0].text(0.5, 0.5, "no video", ha="center", va="center")
        axes[0].set_title(title)
        axes[0].axis("off")
        if self.feature is not None:
            feat = self.store.load_audio(clip, self.feature)[segment, :, 0]  # (frames, F), mid
            high_first = self._high_first()
            axes[1].imshow(
                (feat[:, ::-1] if high_first else feat).T,
                aspect="auto",
                origin="lower",
                cmap="magma",
            )
            axes[1].set(
                title=f"{self.feature} (mid), {feat.shape[0]} frames",
                xlabel="frame",
                ylabel="filter (high -> low)" if high_first else "filter (low -> high)",
            )
        else:
            axes[1].text(0.5, 0.5, "no audio", ha="center", va="center")
            axes[1].axis("off")
        axes[1].grid(False)
        names = list(probs)
        shown = list(range(len(self.labels)))
        if len(shown) > MAX_BARS:  # the most probable classes, and the truth
            top = np.max(np.stack(list(probs.values())), axis=0) if probs else np.zeros(0)
            shown = sorted(np.argsort(-top)[: MAX_BARS - 1].tolist())
            if label is not None and label not in shown:
                shown = sorted([*shown, label])
        width = 0.8 / max(1, len(names))
        x = np.arange(len(shown))
        for i, name in enumerate(names):
            axes[2].bar(x + i * width, probs[name][shown], width=width, label=name)
        if label is not None and label in shown:
            at = shown.index(label)
            axes[2].axvspan(at - 0.1, at + 0.9, color="0.85", zorder=0, label="truth")
        axes[2].set_xticks(x + 0.4 - width / 2)
        axes[2].set_xticklabels(
            [short_label(self.labels[k]) for k in shown], rotation=45, ha="right", fontsize=7
        )
        axes[2].set(ylim=(0, 1), ylabel="probability", title="predicted probabilities")
        axes[2].legend(fontsize=6)
        fig.text(0.995, 0.005, self.source, ha="right", va="bottom", fontsize=7, color="0.35")
        fig.tight_layout()
        return fig

    def audio(self, clip: str, segment: int):
        """The segment's audio (both channels) as an IPython Audio player."""
        from IPython.display import Audio

        from avsc.features.audio import read_audio

        path = self.store.manifest().audio_path(clip) if "audio" in self.store.modalities else None
        if path is None:
            return None
        x, sr = read_audio(path)
        n = int(round(self.segment_seconds * sr))
        return Audio(x[:, segment * n : (segment + 1) * n], rate=sr)

    def show(self) -> None:
        """Display the widget (once). Widget state is not saved in an executed notebook, so a
        batch run (papermill under ``avsc run``) shows the first view as a static picture and
        its sound instead, without widgets: an Output widget receiving a display while
        nbclient executes the cell sometimes leaves the execution waiting forever (nbclient
        issue 312; it hung the paper profile's rehearsal at this cell twice in three runs)."""
        import ipywidgets as w
        from IPython.display import display

        from avsc.utils import in_batch_run
        from avsc.viz.plots import show_figure

        if in_batch_run():
            print(f"(a static picture of the explorer's first view: {self.clips[0]}, segment 0)")
            sound = self.audio(self.clips[0], 0)
            if sound is not None:
                display(sound)
            show_figure(self.figure(self.clips[0], 0))
            return

        clip = w.Dropdown(options=self.clips, description="clip", layout=w.Layout(width="420px"))
        seg = w.IntSlider(0, 0, self.segments[self.clips[0]] - 1, description="segment")
        out = w.Output()

        def update(*_) -> bytes:
            seg.max = self.segments[clip.value] - 1
            out.clear_output(wait=True)
            with out:
                sound = self.audio(clip.value, seg.value)
                if sound is not None:
                    display(sound)
                return show_figure(self.figure(clip.value, seg.value))

        clip.observe(update, "value")
        seg.observe(update, "value")
        display(w.VBox([w.HBox([clip, seg]), out]))
        update()
