"""The interactive explorer: pick a clip and a segment; see its frame, hear its audio, see its
scalogram, and compare every system's predicted probabilities with the truth.

Lives in the library so that notebooks only call ``Explorer(...).show()``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from avsc.data.tau import LABELS
from avsc.viz.plots import SHORT


class Explorer:
    """ipywidgets explorer over the evaluate-fold segments of a run.

    ``dataset`` is the :class:`avsc.data.TAUDataset`, ``store`` the feature store, ``results``
    the :class:`avsc.experiments.StrategyResult` objects to compare; ``source`` is printed
    under every view. ``feature`` is the acoustic feature shown (default: the first the
    results use, else the store's first).
    """

    def __init__(
        self, dataset, store, results: Sequence, source: str = "", feature: str | None = None
    ):
        self.dataset = dataset
        self.store = store
        used = [r.feature for r in results if getattr(r, "feature", None)]
        self.feature = feature or (used[0] if used else store.config.features[0])
        self.results = list(results)
        self.source = source
        if not self.results:
            raise ValueError("the explorer needs at least one trained system's results")
        self.clips = sorted(set(self.results[0].proba["clip"]))
        self.segments = int(self.results[0].proba["segment"].max()) + 1
        self._meta = dataset.meta.set_index("clip")

    def probabilities(self, clip: str, segment: int):
        """``{system name: (C,) probabilities}`` and the true label index of one segment."""
        out, label = {}, None
        for r in self.results:
            p = r.proba
            row = p[(p["clip"] == clip) & (p["segment"] == segment)]
            if len(row):
                out[r.name] = row[list(LABELS)].to_numpy()[0]
                label = int(row["label"].iloc[0])
        return out, label

    def figure(self, clip: str, segment: int):
        """Frame, acoustic feature and per-system probability bars of one segment."""
        probs, label = self.probabilities(clip, segment)
        # a figure of its own, outside pyplot: it is drawn from widget callbacks, where
        # pyplot's global state (the inline backend's list of figures to show) does not belong
        fig = Figure(figsize=(14, 3.4))
        axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.2, 1, 1.6]})
        axes[0].imshow(self.store.load_frames(clip, [segment])[0])
        axes[0].set_title(f"{clip}, {segment}-{segment + 1} s")
        axes[0].axis("off")
        feat = self.store.load_audio(clip, self.feature)[segment, :, 0]  # (frames, F), mid
        high_first = self.feature == "scalogram"  # its filters run from high to low
        axes[1].imshow(
            (feat[:, ::-1] if high_first else feat).T, aspect="auto", origin="lower", cmap="magma"
        )
        axes[1].set(
            title=f"{self.feature} (mid), {feat.shape[0]} frames",
            xlabel="frame",
            ylabel="filter (high -> low)" if high_first else "filter (low -> high)",
        )
        axes[1].grid(False)
        names = list(probs)
        width = 0.8 / max(1, len(names))
        x = np.arange(len(LABELS))
        for i, name in enumerate(names):
            axes[2].bar(x + i * width, probs[name], width=width, label=name)
        if label is not None:
            axes[2].axvspan(label - 0.1, label + 0.9, color="0.85", zorder=0, label="truth")
        axes[2].set_xticks(x + 0.4 - width / 2)
        axes[2].set_xticklabels([SHORT[n] for n in LABELS], rotation=45, ha="right", fontsize=7)
        axes[2].set(ylim=(0, 1), ylabel="probability", title="predicted probabilities")
        axes[2].legend(fontsize=6)
        fig.text(0.995, 0.005, self.source, ha="right", va="bottom", fontsize=7, color="0.35")
        fig.tight_layout()
        return fig

    def audio(self, clip: str, segment: int):
        """The segment's audio (both channels) as an IPython Audio player."""
        from IPython.display import Audio

        from avsc.features.audio import read_audio

        x, sr = read_audio(self.dataset.audio_path(self._meta.loc[clip, "filename_audio"]))
        seg = x[:, segment * sr : (segment + 1) * sr]
        return Audio(seg, rate=sr)

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
            display(self.audio(self.clips[0], 0))
            show_figure(self.figure(self.clips[0], 0))
            return

        clip = w.Dropdown(options=self.clips, description="clip", layout=w.Layout(width="420px"))
        seg = w.IntSlider(0, 0, self.segments - 1, description="segment")
        out = w.Output()

        def update(*_) -> bytes:
            out.clear_output(wait=True)
            with out:
                display(self.audio(clip.value, seg.value))
                return show_figure(self.figure(clip.value, seg.value))

        clip.observe(update, "value")
        seg.observe(update, "value")
        display(w.VBox([w.HBox([clip, seg]), out]))
        update()
