"""``avsc run --profile paper --rehearse``: the paper profile's code path (its backbones,
batch 256, 8 loader workers, Places365 fine-tuning, every notebook) on a tiny synthetic
dataset in the real formats, random weights stamped on every output, and the projection of
the full run from what it measured. It is also the test suite's one run of the whole
notebook series end to end (``series_run`` in conftest.py, at the smallest sizes that run
every code path): what every series run must give is checked on it here."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch
import yaml

from avsc.runner import RunError, run_profile

from .conftest import ROOT, SERIES_OVERRIDES, SERIES_SIZES
from .test_notebooks import EXPECTED, FIGURES, SKIPPED, TABLES

pytestmark = pytest.mark.slow


def test_the_rehearsal_runs_the_paper_profiles_code_path(series_run):
    import av
    import soundfile as sf

    base, manifest, _ = series_run
    run = base / "runs" / "paper-rehearsal"
    assert manifest.run_dir == run
    assert [n["status"] for n in manifest.notebooks] == ["ok"] * 8 + ["skipped"]  # 09: no folds
    params = yaml.safe_load((run / "config.yaml").read_text())
    p = params["parameters"]
    assert p["backbones"] == ["tf_efficientnetv2_s", "resnet50"] and p["workers"] == 8
    exp = p["experiment"]
    assert exp["visual.weights"] == {"tf_efficientnetv2_s": "random", "resnet50": "random"}
    assert "start_weights" not in p
    assert exp["train.batch_size"] == 256 and exp["train.num_workers"] == 8
    assert exp["train.max_epochs"] == 1 and exp["finetune.epochs"] == 1
    # the real formats: 1280x720 24 fps H.264, 48 kHz 24-bit stereo
    mp4 = sorted((run / "data" / "video").glob("*.mp4"))[0]
    with av.open(str(mp4)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.width, s.height, s.average_rate) == ("h264", 1280, 720, 24)
    info = sf.info(str(sorted((run / "data" / "audio").glob("*.wav"))[0]))
    assert (info.samplerate, info.channels, info.subtype) == (48000, 2, "PCM_24")
    # the image sizes asked for reached the trained systems
    for backbone, size in SERIES_SIZES.items():
        ck = torch.load(
            run / "results" / f"joint_scalogram_{backbone}" / "best.pt", weights_only=True
        )
        assert ck["extra"]["visual"]["image_size"] == size
        assert ck["config"]["train"]["batch_size"] == 256
    # notebook 02 read the Places365 layout (365 classes) and fine-tuned from random weights
    ft = pd.read_csv(base / "figures" / "paper-rehearsal" / "02_visual_finetuning.csv")
    assert ft["classes"].tolist() == [365] and ft["start_weights"].tolist() == ["random"]
    assert json.loads((run / "visual" / "weights.json").read_text())["resnet50"] == "random"


def test_every_output_says_it_is_a_rehearsal(series_run):
    base, _, _ = series_run
    run = base / "runs" / "paper-rehearsal"
    metrics = sorted((run / "metrics").glob("*.json"))
    assert len(metrics) >= 8
    for path in metrics:
        assert json.loads(path.read_text())["source"].startswith("REHEARSAL, random weights")
    tables = sorted((base / "figures" / "paper-rehearsal").glob("*.md"))
    assert tables
    for path in tables:
        assert path.read_text().startswith("<!-- REHEARSAL, random weights"), path.name
    for nb in sorted(run.glob("0*.ipynb")):
        assert "REHEARSAL, random weights" in nb.read_text(), nb.name


def test_the_projection_follows_from_the_measurements(series_run):
    base, manifest, printed = series_run
    run = base / "runs" / "paper-rehearsal"
    p = json.loads((run / "projection.json").read_text())
    m, steps = p["measured"], p["steps"]
    # each trained system has its own row, from its own history
    histories = sorted((run / "results").rglob("history.csv"))
    trained = [s for s in steps if s["step"].startswith("training ")]
    assert len(trained) == len(histories) >= 15
    for s in trained:
        name = s["step"].split()[1]
        h = pd.read_csv(run / "results" / name / "history.csv")
        assert s["measured_s"] == pytest.approx(h["seconds"].mean())
        assert s["units_full"] == 8_646 * 10 * 150  # fold1_train segments x the paper's epochs
    # preprocessing per clip from notebook 01's own figures; the store's bytes counted anew
    nb01 = json.loads((run / "metrics" / "01_data_and_features.json").read_text())
    assert steps[0]["per_unit_s"] == pytest.approx(nb01["preprocess_seconds"] / nb01["clips"])
    assert steps[0]["units_full"] == 12_291 * 10  # seconds of audio in the development set
    store = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(run / "cache") for f in fs
    )
    assert m["store_bytes"] == store and m["clips"] == nb01["clips"] == 30
    assert p["projected"]["store_bytes"] == pytest.approx(store / 30 * 12_291 * 10)
    # hours are cost x units, and the total their sum
    for s in steps:
        assert s["projected_hours"] == pytest.approx(s["per_unit_s"] * s["units_full"] / 3600)
        assert s["per_unit_s"] > 0
    assert p["projected"]["hours"] == pytest.approx(sum(s["projected_hours"] for s in steps))
    assert p["projected"]["peak_host_memory_mb"] > 100
    assert max(n.get("peak_rss_mb", 0) for n in manifest.notebooks) == m["peak_host_rss_mb"]
    # printed and saved as a table
    assert "projected full run" in printed and "| step" in printed
    assert (run / "projection.md").read_text().count("training ") == len(trained)


def test_random_weights_are_refused_outside_a_rehearsal():
    from avsc.preflight import check_run

    params = {
        "synthetic": True,
        "data_dir": "runs/nowhere/data",
        "cache_dir": "runs/nowhere/cache",
        "backbones": ["resnet50"],
        "experiment": {"visual.weights": {"resnet50": "random"}},
    }
    problems = [str(p) for p in check_run(params, "paper", base=Path.cwd())]
    assert any("'random' weights are for rehearsals only" in p for p in problems), problems
    assert not any("random" in str(p) for p in check_run(params, "paper", rehearsal=True))


def test_random_weights_start_every_residual_block_as_the_identity():
    """Without this, a random tf_efficientnetv2_s fine-tuned for one step in the rehearsal
    gave NaN features and notebook 03 stopped (TrainingDiverged)."""
    from avsc.models.visual import RANDOM, create_backbone

    def identities(net):
        same = []
        hooks = [
            b.register_forward_hook(lambda m, i, o: same.append(torch.equal(i[0], o)))
            for b in net.modules()
            if getattr(b, "has_skip", False)
        ]
        with torch.no_grad():
            net.eval()(torch.rand(1, 3, 64, 64))
        for h in hooks:
            h.remove()
        return same

    torch.manual_seed(0)
    random = identities(create_backbone("tf_efficientnetv2_s", RANDOM))
    assert len(random) > 30 and all(random)  # each residual branch adds exactly zero
    torch.manual_seed(0)
    assert not any(identities(create_backbone("tf_efficientnetv2_s", None)))


def test_a_batch_run_shows_the_explorer_without_widgets(monkeypatch):
    """An Output widget receiving a display during nbclient's execution sometimes hangs it
    (nbclient issue 312): notebook 07 of the rehearsal waited forever at the explorer twice.
    Batch runs now display the first view's sound and picture directly."""
    import IPython.display
    import ipywidgets
    import matplotlib.pyplot as plt

    from avsc.utils import BATCH_ENV
    from avsc.viz import plots
    from avsc.viz.explorer import Explorer

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    monkeypatch.setattr(plots, "display_png", lambda data: shown.append(("png", len(data))))
    ex = Explorer.__new__(Explorer)
    ex.clips = ["airport-a-1-1", "bus-b-2-2"]
    ex.segments = dict.fromkeys(ex.clips, 3)
    ex.audio = lambda clip, seg: ("audio", clip, seg)
    ex.figure = lambda clip, seg: plt.figure(figsize=(1, 1))
    monkeypatch.setenv(BATCH_ENV, "1")
    ex.show()
    assert not any(isinstance(o, ipywidgets.Widget) for o in shown), shown
    assert shown[0] == ("audio", "airport-a-1-1", 0) and shown[1][0] == "png"
    monkeypatch.delenv(BATCH_ENV)
    shown.clear()
    ex.show()  # a live kernel: the widget
    assert any(isinstance(o, ipywidgets.Widget) for o in shown)


def test_silhouette_leaves_out_panels_where_it_is_undefined():
    """The rehearsal with 1-s clips (one point per evaluation clip, one clip per class) made
    sklearn raise in notebook 06; such a panel is now left out, with a warning."""
    import numpy as np
    from sklearn.metrics import silhouette_score

    from avsc.viz import silhouette

    rng = np.random.default_rng(0)
    pts, y = rng.normal(size=(30, 2)), np.repeat(np.arange(10), 3)
    panels = {"ok": (pts, y), "one point per class": (pts[:10], np.arange(10))}
    with pytest.warns(UserWarning, match="'one point per class' left out: 10 points of 10"):
        scores = silhouette(panels)
    assert scores == {"ok": pytest.approx(silhouette_score(pts, y))}


def test_the_series_runs_end_to_end(series_run):
    """What every run of the notebook series gives: each notebook executed (or skipped,
    saying why), its metrics finite and stamped with the data that made them, every figure
    and table, the versions that decide the numbers, and one picture per figure cell."""
    base, manifest, _ = series_run
    assert [n["notebook"] for n in manifest.notebooks] == EXPECTED
    status = {n["notebook"]: n["status"] for n in manifest.notebooks}
    assert status == {nb: "skipped" if nb in SKIPPED else "ok" for nb in EXPECTED}
    why = next(n["why"] for n in manifest.notebooks if n["notebook"] == "09_crossval")
    assert why.startswith("this collection has no folds (no fold column in its manifest")
    run = base / "runs" / "paper-rehearsal"
    saved = json.loads((run / "manifest.json").read_text())
    assert saved["versions"]["torch"] and "commit" in saved["git"]
    # what else decides the numbers on a CPU (README: reproducing the demo)
    assert int(saved["versions"]["torch_threads"]) >= 1 and saved["versions"]["cpu_capability"]
    # the profile's frames and the command line's clip length reached preprocessing
    store = json.loads((run / "cache" / "store.json").read_text())["config"]
    assert store["frames"] == {"short_side": 320, "format": "jpeg", "jpeg_quality": 95}
    assert store["data"]["clip_seconds"] == 1.0
    for nb in EXPECTED:
        assert (run / f"{nb}.ipynb").is_file()
        if nb in SKIPPED:  # its copy says why it was not executed
            note = nbformat.read(run / f"{nb}.ipynb", as_version=4).cells[1].source
            assert note.startswith("> **Not executed by `avsc run --profile paper`:**"), note
            continue
        metrics = json.loads((run / "metrics" / f"{nb}.json").read_text())
        assert "SYNTHETIC" in metrics["source"]
        numbers = list(_numbers(metrics))
        assert all(math.isfinite(v) for v in numbers), nb
        if nb == "06_tsne":  # one clip per class: every silhouette undefined, left out
            assert metrics["silhouette"] == {}
        else:
            assert numbers, nb
    fig = base / "figures" / "paper-rehearsal"
    for name in FIGURES:
        assert (fig / f"{name}.pdf").stat().st_size > 1000 and (
            fig / f"{name}.png"
        ).stat().st_size > 1000
    for name in TABLES:
        assert (fig / f"{name}.csv").is_file() and "SYNTHETIC" in (fig / f"{name}.md").read_text()
    # executed notebooks hold their figures: one PNG per figure-making cell, no repr text
    for name in EXPECTED:
        nb = nbformat.read(run / f"{name}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            pngs = [o for o in cell.outputs if "image/png" in o.get("data", {})]
            texts = [str(o.get("data", {}).get("text/plain", "")) for o in cell.outputs]
            texts += ["".join(o.get("text", "")) for o in cell.outputs]
            assert not any("<Figure size" in t for t in texts), (name, cell.source[:60])
            if "ctx.figure(" in cell.source or "explorer.show()" in cell.source:
                assert len(pngs) == 1, (name, cell.source[:60], len(pngs))
            else:
                assert not pngs, (name, cell.source[:60])


def test_a_notebook_run_in_a_live_kernel_shows_its_figure(series_run):
    """The same in a live kernel (no avsc run: the inline backend, no batch flag)."""
    import papermill as pm

    base, _, _ = series_run
    live = dict(os.environ)
    for key in ("MPLBACKEND", "AVSC_BATCH"):
        os.environ.pop(key, None)
    try:
        pm.execute_notebook(
            str(ROOT / "notebooks" / "06_tsne.ipynb"),
            str(base / "06_live.ipynb"),
            parameters={
                "config": str(base / "runs" / "paper-rehearsal" / "config.yaml"),
                "overrides": {"figures_dir": str(base / "live_figures")},
            },
            progress_bar=False,
            cwd=str(ROOT),
        )
    finally:
        os.environ.clear()
        os.environ.update(live)
    nb = nbformat.read(base / "06_live.ipynb", as_version=4)
    pngs = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) == 1


def test_a_failing_notebook_stops_the_run_and_only_reruns_one(series_run):
    """A failing notebook stops the run, naming it and its error; ``--only`` reruns one
    notebook and keeps the others' records. Last in this file: it reruns notebook 06 in the
    shared run folder."""
    base, _, _ = series_run
    run = base / "runs" / "paper-rehearsal"
    where = {"runs_root": base / "runs", "figures_root": base / "figures", "rehearse": True}
    with pytest.raises(  # a backbone this run did not train (a bad value is refused earlier)
        RunError,
        match=r"06_tsne failed: MissingArtifact: .*_resnet18/metrics.json is missing.*--from 06",
    ):
        run_profile(
            "paper", {**SERIES_OVERRIDES, "tsne_backbone": "resnet18"}, only=["06"], **where
        )
    after_fail = json.loads((run / "manifest.json").read_text())["notebooks"]
    assert [n["notebook"] for n in after_fail] == EXPECTED  # earlier records kept
    assert [n["status"] for n in after_fail if n["notebook"] == "06_tsne"] == ["failed"]
    again = run_profile("paper", SERIES_OVERRIDES, only=["06"], **where)
    assert [n["notebook"] for n in again.notebooks] == EXPECTED
    assert all(n["status"] == ("skipped" if n["notebook"] in SKIPPED else "ok")
               for n in again.notebooks)  # fmt: skip


def _numbers(obj):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
