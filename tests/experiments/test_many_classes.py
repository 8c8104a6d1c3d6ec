"""2 to 1,000 classes (issue 20, section 2): labels travel with the results into every table,
figure and metric, and nothing assumes TAU's ten."""

import time

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, log_loss

from avsc.evaluation.metrics import clip_metrics, dcase_metrics
from avsc.evaluation.tables import claims_table, confusion_of, per_class_of, results_table
from avsc.experiments.results import StrategyResult


def _result(n_labels: int, clips_per_label: int = 2, segments: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = [f"class {k} · ü" for k in range(n_labels)]
    rows, probas = [], []
    for k in range(n_labels):
        for c in range(clips_per_label):
            logits = rng.normal(0, 1, n_labels)
            logits[k] += 3.0
            for s in range(segments):
                z = logits + rng.normal(0, 0.5, n_labels)
                p = np.exp(z - z.max())
                probas.append(p / p.sum())
                clip = f"{labels[k]}/clip{c}"
                rows.append((clip, s, k, clip, f"{clip}_{s}.wav"))
    seg = pd.DataFrame(rows, columns=["clip", "segment", "label", "identifier", "filename"])
    proba = pd.concat([seg, pd.DataFrame(np.array(probas), columns=labels)], axis=1)
    m = dcase_metrics(proba["label"], np.array(probas), n_classes=n_labels)
    m.update(clip_metrics(proba, labels))
    return StrategyResult(
        "audio_only_scalogram", "audio_only", "scalogram", None, m, "best.pt", proba,
        labels=tuple(labels),
    )  # fmt: skip


@pytest.mark.parametrize("n", [2, 1000])
def test_metrics_tables_and_figures_take_the_labels_of_the_results(n, tmp_path):
    from avsc.viz import plot_confusion, plot_per_class_accuracy, plot_tsne_panels, save_figure

    r = _result(n)
    p = r.proba[list(r.labels)].to_numpy()
    y = r.proba["label"].to_numpy()
    assert r.metrics["accuracy_classwise"] == pytest.approx(balanced_accuracy_score(y, p.argmax(1)))
    assert r.metrics["logloss_overall"] == pytest.approx(log_loss(y, p, labels=range(n)))
    clip = r.proba.groupby("clip")[list(r.labels)].mean()
    clip_y = r.proba.groupby("clip")["label"].first()
    assert r.metrics["clip_accuracy_overall"] == pytest.approx(
        float((clip.to_numpy().argmax(1) == clip_y.to_numpy()).mean())
    )
    t0 = time.perf_counter()
    table = results_table([r], paper=False)
    assert not {"paper_logloss", "paper_accuracy"} & set(table.columns)
    row = table.iloc[0]
    assert row["clip_logloss_low"] <= row["clip_logloss"] <= row["clip_logloss_high"]
    per_class = per_class_of([r])
    assert list(per_class["scene_label"]) == list(r.labels)
    cm = confusion_of(r)
    assert cm.shape == (n, n) and cm.sum() == len(y)
    fig = plot_confusion(cm, "many", labels=r.labels)
    save_figure(fig, tmp_path / "cm")
    save_figure(plot_per_class_accuracy(per_class), tmp_path / "pc")
    pts = np.random.default_rng(0).normal(size=(len(y), 2))
    save_figure(plot_tsne_panels({"a": (pts, y)}, r.labels), tmp_path / "tsne")
    assert (tmp_path / "cm.png").stat().st_size > 1000
    assert time.perf_counter() - t0 < 120  # a thousand classes stay practical
    assert claims_table([r], paper=False).empty  # no pair to compare: an empty table


def test_a_thousand_class_classifier_trains_a_step():
    import torch

    from avsc.config import ExperimentConfig
    from avsc.experiments import Parts, get_system

    model = get_system("audio_only").build(Parts(ExperimentConfig(), 1000, n_bins=64))
    x = torch.randn(8, 2, 64)
    logits = model(audio=x)
    assert logits.shape == (8, 1000)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 1000, (8,))).backward()
