"""The experiment layer: the systems registry, results by name, one config object, the
store-settings warning, the command line reading the registry, and the import contract."""

import dataclasses
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import avsc.experiments as X
from avsc.cli import main
from avsc.config import SECTIONS, ConfigError, ExperimentConfig
from avsc.evaluation import results_table
from tests.forked import avsc_run

ROOT = Path(__file__).resolve().parents[2]
TRAIN = {
    "visual.backbone": "test_efficientnet",
    "visual.image_size": 32,
    "frames.short_side": 64,
    "data.clip_seconds": 3.0,
    "train.batch_size": 32,
    "train.max_epochs": 1,
    "train.t0_epochs": 1,
    "train.eval_batch_size": 32,
}
PARAMS = [f"-p{k}={v}" for k, v in TRAIN.items()]


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error: " in line]


# ------------------------------------------------------------------ the registry


def test_the_registry_lists_the_papers_systems_and_only_systems():
    names = [s.name for s in X.systems()]
    assert names[:4] == ["audio_only", "video_only", "pipeline", "joint"]
    assert {f"ablation_{w}" for w in ("I", "II", "III", "IV")} <= set(names)
    for spec in X.systems():
        assert spec.notebook and spec.description and set(spec.inputs) <= set(X.INPUTS)
    # public names of the package are not systems (dispatch used to be getattr(module, name))
    for name in ("Workspace", "load_result", "StrategyResult"):
        with pytest.raises(X.UnknownSystem, match=rf"unknown system '{name}'; registered: "):
            X.get_system(name)


def test_avsc_train_refuses_a_name_that_is_not_a_system(synth_store, tmp_path, capsys):
    code = main(["train", "Workspace", "--cache", str(synth_store[1]), "--out", str(tmp_path)])
    assert code == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "unknown system 'Workspace'; registered: audio_only" in lines[0]
    assert not any(tmp_path.iterdir())
    code = main(
        ["train", "video_only", "--feature", "fbank", "--cache", str(synth_store[1])]
        + ["--out", str(tmp_path)]
    )
    lines = _error_lines(capsys.readouterr().err)
    assert code == 2 and lines == ["avsc train: error: system video_only takes no --feature"]


def test_a_name_is_registered_once_unless_replaced():
    @X.register_system("tmp_sys", inputs=("backbone",))
    def tmp_sys(p):
        return None

    try:
        with pytest.raises(ValueError, match=r"system 'joint' is already registered"):
            X.register_system("joint")(tmp_sys)
        X.register_system("tmp_sys", inputs=("backbone",))(tmp_sys)  # a cell run again
        with pytest.raises(ValueError, match=r"unknown input\(s\) \['image'\]"):
            X.register_system("x", inputs=("image",))
    finally:
        X.unregister_system("tmp_sys")


def test_result_names_come_from_the_registry():
    name = X.StrategyResult.name_for
    assert name("audio_only", "fbank") == "audio_only_fbank"
    assert name("video_only", None, "resnet50") == "video_only_resnet50"
    assert name("joint", "scalogram", "resnet50") == "joint_scalogram_resnet50"
    assert name("ablation_II", "scalogram", "b") == "ablation_II_scalogram_b"


# ------------------------------------------------------------------ results by name


def test_a_missing_audio_only_system_is_an_error_not_a_silent_training(synth_store, tmp_path):
    """Joint with model.ae_init=audio_only and pipeline start from the audio-only system of
    the same results folder; absent, that is a MissingArtifact naming what makes it (it used
    to train a whole audio-only system behind the user's back)."""
    from avsc import workflow as wf

    ctx = wf.Context("t", str(tmp_path / "run"), str(tmp_path / "fig"), "", str(synth_store[1]))
    ctx.config = ExperimentConfig().override(TRAIN)
    with pytest.raises(X.MissingArtifact) as info:
        ctx.train("pipeline", feature="fbank", backbone="test_efficientnet")
    msg = str(info.value)
    assert "audio_only_fbank/metrics.json is missing" in msg
    assert "notebook 03_unimodal_baselines" in msg
    assert not (tmp_path / "run" / "results" / "audio_only_fbank").exists()
    assert not (tmp_path / "run" / "results" / "pipeline_fbank_test_efficientnet").exists()


@pytest.mark.slow
def test_a_user_system_trains_evaluates_predicts_and_joins_the_tables(synth_store, tmp_path):
    """A system registered by user code (tests/user_systems.py, a new fusion module) is
    trained by ``avsc train --module``, found by the notebooks' Context, listed in the
    results tables beside the built-ins, and classifies a clip with ``avsc predict``."""
    from avsc import workflow as wf

    data, cache = synth_store
    run = tmp_path / "run"
    args = ["gated_fusion", "--module", "tests.user_systems", "--feature", "scalogram"]
    res = avsc_run("train", *args, "--cache", cache, "--out", run / "results", *PARAMS, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout[res.stdout.index("{") :])
    assert summary["name"] == "gated_fusion_scalogram_test_efficientnet"

    import tests.user_systems  # noqa: F401 - the notebook cell that registers it

    ctx = wf.Context("t", str(run), str(tmp_path / "fig"), str(data), str(cache), TRAIN)
    ctx.train("audio_only", feature="scalogram")  # the built-ins it joins in the tables
    ctx.train("video_only", backbone="test_efficientnet")
    mine = ctx.load("gated_fusion", "scalogram", "test_efficientnet")
    assert mine.system == "gated_fusion" and np.isfinite(mine.metrics["logloss_classwise"])
    assert len(mine.proba) == len(ctx.load("audio_only", feature="scalogram").proba)
    # the tables: built-ins first, the user's system where its inputs put it
    with pytest.raises(X.MissingArtifact, match=r"pipeline.*notebook 04_pipeline_vs_joint"):
        ctx.collect(["scalogram"], ["test_efficientnet"])  # the series' systems are required
    for system in ("pipeline", "joint", "late_fusion"):
        ctx.train(system, feature="scalogram", backbone="test_efficientnet")
    table = results_table(ctx.collect(["scalogram"], ["test_efficientnet"]))
    assert table["system"].tolist() == [
        "audio_only",
        "video_only",
        "pipeline",
        "joint",
        "late_fusion",  # built in, beside pipeline and joint
        "gated_fusion",
    ]
    row = table.set_index("system").loc["gated_fusion"]
    assert row["logloss"] == pytest.approx(mine.metrics["logloss_classwise"])
    assert np.isnan(row["paper_logloss"])  # the paper has no such row
    # avsc predict rebuilds it from the registry
    clip = mine.proba["clip"].iloc[0]
    res = avsc_run(
        "predict", data / "video" / f"{clip}.mp4", "--audio", data / "audio" / f"{clip}.wav",
        "--checkpoint", mine.checkpoint, "--module", "tests.user_systems",
        "--csv", tmp_path / "p.csv", cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    import pandas as pd

    pred = pd.read_csv(tmp_path / "p.csv")
    mine_clip = mine.proba[mine.proba["clip"] == clip]
    np.testing.assert_allclose(
        pred[["airport", "bus"]].to_numpy(), mine_clip[["airport", "bus"]].to_numpy(), atol=2e-3
    )
    # without the module, the checkpoint's system is unknown: one line that says what to do
    res = avsc_run(
        "predict", data / "video" / f"{clip}.mp4", "--checkpoint", mine.checkpoint, cwd=ROOT
    )
    assert res.returncode == 2
    assert "unknown system 'gated_fusion'" in res.stderr and "--module NAME" in res.stderr


# ------------------------------------------------------------------ one config object


def test_the_config_is_the_preprocess_config():
    """Every key of audio / frames / data reaches preprocessing (short_side, clip_seconds,
    jpeg_quality and length_tolerance were ignored or reset before)."""
    cfg = ExperimentConfig().override(
        {
            "frames.short_side": 48,
            "frames.jpeg_quality": 80,
            "data.clip_seconds": 3.0,
            "data.length_tolerance": 0.5,
            "audio.n_mels": 64,
        }
    )
    pc = cfg.preprocess_config(("fbank",))
    assert (pc.frames.short_side, pc.frames.jpeg_quality) == (48, 80)
    assert (pc.data.clip_seconds, pc.data.length_tolerance) == (3.0, 0.5)
    assert pc.audio.n_mels == 64 and pc.features == ("fbank",)


def test_preprocess_takes_config_and_overrides(tmp_path, capsys):
    from avsc.features import FeatureStore
    from tests.media import make_tiny_dataset

    root = make_tiny_dataset(tmp_path / "root")
    (tmp_path / "c.yaml").write_text("frames:\n  jpeg_quality: 80\ndata:\n  clip_seconds: 2.0\n")
    args = ["preprocess", "--data", str(root), "--cache", str(tmp_path / "s"), "--workers", "1"]
    args += ["--features", "fbank", "--no-progress", "--config", str(tmp_path / "c.yaml")]
    assert main([*args, "-p", "frames.short_side=32"]) == 0
    sc = FeatureStore(tmp_path / "s").config
    assert (sc.frames.jpeg_quality, sc.frames.short_side, sc.data.clip_seconds) == (80, 32, 2.0)
    capsys.readouterr()
    assert main([*args, "-p", "frames.shortside=32"]) == 2
    assert "unknown config key 'shortside' in section 'frames'" in capsys.readouterr().err


def test_one_override_parser():
    from avsc.config import parse_overrides
    from avsc.runner import RunError
    from avsc.runner import parse_overrides as run_parse

    assert parse_overrides(["seeds=[0, 1]", "train.lr=0.001", "x=null"]) == {
        "seeds": [0, 1],
        "train.lr": 0.001,
        "x": None,
    }
    assert run_parse(["a.b=3"]) == parse_overrides(["a.b=3"])
    with pytest.raises(ConfigError, match=r"'x: \[' : the value is not YAML|is not YAML"):
        parse_overrides(["x=["])
    with pytest.raises(RunError, match=r"parameter 'x' is not key=value"):
        run_parse(["x"])


def test_no_series_setting_repeats_a_config_key():
    """The config is the single source: a series setting never shadows a config key
    (short_side, seconds and finetune_* used to, as notebook parameters)."""
    from avsc.config import SeriesConfig

    keys = {f.name for cls in SECTIONS.values() for f in cls.__dataclass_fields__.values()}
    keys |= {f"{s}_{k}" for s, cls in SECTIONS.items() for k in cls.__dataclass_fields__}
    keys |= {"seconds"}  # the old name of data.clip_seconds
    clash = {f.name for f in dataclasses.fields(SeriesConfig)} & keys
    assert not clash, f"series settings {sorted(clash)} repeat config keys"


def test_a_store_made_with_other_settings_warns_naming_the_keys(synth_store, tmp_path, capsys):
    store = synth_store[1]  # made with frames.short_side 64, data.clip_seconds 3
    asked = ExperimentConfig().override({**TRAIN, "frames.short_side": 320})
    with pytest.warns(X.StoreSettingsWarning, match=r"frames\.short_side: 320 asked, 64 used"):
        ws = X.Workspace(store, asked)
    assert ws.config.frames.short_side == 64  # the store's settings are used
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X.Workspace(store, asked, asked={"train.lr"})  # the user did not ask for short_side
        X.Workspace(store, ExperimentConfig().override(TRAIN))  # the same settings
    code = main(
        ["train", "audio_only", "--cache", str(store), "--out", str(tmp_path), *PARAMS]
        + ["-p", "frames.short_side=320", "-p", "train.max_epochs=1"]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "avsc train: warning: feature store" in err and "320 asked, 64 used" in err


def test_finetune_reads_its_config_section(tmp_path, capsys):
    args = ["finetune", "--standin", str(tmp_path / "st"), "--backbone", "test_resnet"]
    args += ["--out", str(tmp_path / "ft.pt"), "-p", "finetune.epochs=1"]
    args += ["-p", "finetune.image_size=32", "-p", "finetune.standin_images=3"]
    assert main(args) == 0
    from avsc.training import load_checkpoint

    ck = load_checkpoint(tmp_path / "ft.pt")
    assert (ck["config"]["epochs"], ck["config"]["image_size"]) == (1, 32)
    assert len(list((tmp_path / "st" / "beach").iterdir())) == 3
    with pytest.raises(SystemExit):  # --images and --standin exclude each other
        main(["finetune", "--images", "a", "--standin", "b", "--backbone", "x", "--out", "y"])
    assert "not allowed with argument" in capsys.readouterr().err


# ------------------------------------------------------------------ layers


def test_the_import_contract_covers_every_package_of_avsc():
    """Every top-level module of avsc sits in a layer of the contract, so a new one cannot
    escape it; lint-imports (in the test command) checks the contract itself."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = {
        name.strip()
        for layer in contract["contracts"][0]["layers"]
        for name in layer.replace(":", "|").split("|")
    }
    here = {p.stem for p in (ROOT / "avsc").glob("*.py")} | {
        p.parent.name for p in (ROOT / "avsc").glob("*/__init__.py")
    }
    assert here - {"__init__", "__main__"} <= layers, sorted(here - layers)


def test_lint_imports_keeps_the_contract():
    res = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout[-2000:]
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert f"{len(contracts['contracts'])} kept, 0 broken" in res.stdout  # every one checked


def test_the_old_strategies_module_still_imports_with_a_warning():
    """``avsc.experiments.strategies`` (split into ``train``, ``inputs`` and ``collection``)
    keeps working for a release: the same functions, and a DeprecationWarning naming the
    new modules."""
    import importlib

    import avsc.experiments.collection as collection
    import avsc.experiments.inputs as inputs
    import avsc.experiments.train as train

    sys.modules.pop("avsc.experiments.strategies", None)
    with pytest.warns(DeprecationWarning, match=r"split into avsc\.experiments\.train"):
        old = importlib.import_module("avsc.experiments.strategies")
    assert old.train_system is train.train_system and old.Results is collection.Results
    assert old.training_inputs is inputs.training_inputs
    assert [p.name for p in inputs.input_providers()][:4] == [
        "audio",
        "embeddings",
        "augmentation_bank",
        "frames",
    ]
