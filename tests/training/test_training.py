"""Training: every system beats chance on synthetic data; frozen parts stay frozen; resume,
determinism, divergence, DistributedDataParallel; visual fine-tuning; prediction."""

import dataclasses
import json
import logging
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import avsc.experiments as S
from avsc.config import ExperimentConfig, TrainConfig
from avsc.data.tau import LABELS
from avsc.evaluation.inference import validation_metrics
from avsc.experiments.predict import predict_clip
from avsc.features import FeatureStore
from avsc.features.datasets import (
    ClipTable,
    FrameSamples,
    SegmentSamples,
    load_audio_bank,
    subset_clips,
)
from avsc.models import AcousticEncoder, AVSystem, SceneClassifier
from avsc.training import load_checkpoint
from avsc.training.loop import GlobalBatchSampler, TrainingDiverged, fit
from tests.conftest import REALDATA

OVERRIDES = {
    "visual.backbone": "test_efficientnet",
    "visual.image_size": 64,
    "train.batch_size": 32,
    "train.max_epochs": 4,
    "train.t0_epochs": 4,
    "train.lr": 0.02,
    "train.eval_batch_size": 32,
    "augment.crop_scale": [0.6, 1.0],
}
CHANCE = 0.1


@pytest.fixture(scope="module")
def cfg():
    return ExperimentConfig().override(OVERRIDES)


@pytest.fixture(scope="module")
def ws(synth_store, cfg):
    return S.Workspace(synth_store[1], cfg)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def audio_result(ws, cfg, runs):
    return S.train_system(
        "audio_only",
        cfg,
        ws.store,
        runs / "audio_only_scalogram",
        feature="scalogram",
        workspace=ws,
    )


@pytest.fixture(scope="module")
def joint_checkpoint(ws, cfg, runs, audio_result):
    """The online joint system's best checkpoint (trained once; reused when present)."""
    r = S.train_system(
        "joint",
        cfg,
        ws.store,
        runs / "joint",
        audio_checkpoint=audio_result.checkpoint,
        workspace=ws,
    )
    return r.checkpoint


def _val_accuracy(result):
    return max(row["val_accuracy"] for row in result.history.to_dict("records"))


def _check(result, n_eval):
    m = result.metrics
    for k in ("logloss_classwise", "logloss_overall", "accuracy_classwise", "accuracy_overall"):
        assert math.isfinite(m[k])
    assert len(result.proba) == n_eval
    p = result.proba[list(LABELS)].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    assert result.checkpoint.is_file()
    assert len(result.history) >= 4


def test_audio_only(audio_result, ws):
    n_eval = len(ws.tables["evaluate"]) * ws.tables["evaluate"].segments
    _check(audio_result, n_eval)
    assert _val_accuracy(audio_result) > CHANCE + 0.1
    assert audio_result.embeddings["acoustic"].shape == (n_eval, 1024)
    saved = json.loads((audio_result.checkpoint.parent / "metrics.json").read_text())
    assert saved["accuracy_classwise"] == pytest.approx(audio_result.metrics["accuracy_classwise"])
    hist = pd.read_csv(audio_result.checkpoint.parent / "history.csv")
    assert list(hist.epoch) == [1, 2, 3, 4] and "val_logloss" in hist


def test_video_only(ws, cfg, runs):
    # One image per segment, so few samples: small batches give the scene classifier's
    # BatchNorm running statistics enough steps to settle (the random test backbone's
    # features are tiny, far from BatchNorm's initial unit variance).
    small = cfg.override({"train.batch_size": 4, "train.max_epochs": 6, "train.t0_epochs": 6})
    r = S.train_system(
        "video_only", small, ws.store, runs / "video_only", workspace=S.Workspace(ws.store, small)
    )
    _check(r, len(ws.tables["evaluate"]) * ws.tables["evaluate"].segments)
    assert _val_accuracy(r) > CHANCE + 0.1
    assert "acoustic" not in r.embeddings and r.embeddings["audio_visual"].shape[1] == 1024


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_joint_trains_the_ae_and_leaves_the_visual_encoder_bit_identical(
    ws, cfg, runs, audio_result
):
    ve = ws.visual_encoder()
    before = _snapshot(ve)
    r = S.train_system(
        "joint",
        cfg,
        ws.store,
        runs / "joint",
        audio_checkpoint=audio_result.checkpoint,
        workspace=ws,
    )
    _check(r, len(ws.tables["evaluate"]) * ws.tables["evaluate"].segments)
    assert _val_accuracy(r) > CHANCE + 0.1
    after = _snapshot(ve)
    assert before.keys() == after.keys()
    for k in before:  # weights and BatchNorm buffers
        assert torch.equal(before[k], after[k]), k
    # the AE in the joint checkpoint moved from its (scratch) initialisation
    ck = load_checkpoint(r.checkpoint)
    torch.manual_seed(cfg.train.seed)
    fresh = AcousticEncoder(290).state_dict()
    assert any(
        not torch.equal(ck["model"][f"ae.{k}"], v)
        for k, v in fresh.items()
        if v.dtype.is_floating_point
    )
    assert r.embeddings["acoustic"].shape == r.embeddings["audio_visual"].shape


def test_ablation_iii_keeps_the_pretrained_ae(ws, cfg, runs, audio_result):
    r = S.train_system(
        "ablation_III",
        cfg,
        ws.store,
        runs / "iii",
        audio_checkpoint=audio_result.checkpoint,
        workspace=ws,
    )
    assert _val_accuracy(r) > CHANCE + 0.1
    ae_ref = load_checkpoint(audio_result.checkpoint)["model"]
    ae_iii = load_checkpoint(r.checkpoint)["model"]
    for k, v in ae_ref.items():
        if k.startswith("ae."):
            assert torch.equal(ae_iii[k], v), k


def test_pipeline_and_ablation_ii(ws, cfg, runs, audio_result):
    r1 = S.train_system(
        "pipeline",
        cfg,
        ws.store,
        runs / "pipeline",
        audio_checkpoint=audio_result.checkpoint,
        workspace=ws,
    )
    r2 = S.train_system("ablation_II", cfg, ws.store, runs / "ii", workspace=ws)
    for r in (r1, r2):
        assert _val_accuracy(r) > CHANCE + 0.1
    ae_ref = load_checkpoint(audio_result.checkpoint)["model"]
    assert all(
        torch.equal(load_checkpoint(r1.checkpoint)["model"][k], v)
        for k, v in ae_ref.items()
        if k.startswith("ae.")
    )
    assert r1.system == "pipeline" and r2.system == "ablation_II"


# ------------------------------------------------------------------------------ the loop


def _small_problem(store_path):
    store = FeatureStore(store_path)
    stats = store.normalization("fbank")
    train = ClipTable(store, subset_clips(store, "train"))
    val = ClipTable(store, subset_clips(store, "val"))
    tr = FrameSamples(train, audio=load_audio_bank(train, "fbank", stats))
    va = SegmentSamples(val, audio=load_audio_bank(val, "fbank", stats))
    return tr, va


def _model():
    torch.manual_seed(0)
    ae = AcousticEncoder(256, hidden=64, embedding_dim=32)
    return AVSystem(ae, SceneClassifier(32, hidden=32))


TC = TrainConfig(batch_size=32, max_epochs=4, t0_epochs=1, lr=0.02, eval_batch_size=32)


def test_interrupted_run_resumes_to_the_same_weights_and_metrics(synth_store, tmp_path, caplog):
    tr, va = _small_problem(synth_store[1])
    ev = lambda m: validation_metrics(m, va, 32)  # noqa: E731
    full = fit(_model(), tr, ev, TC, tmp_path / "full")

    class Stop(Exception):
        pass

    def kill_after_epoch_2(epoch, row):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        fit(_model(), tr, ev, TC, tmp_path / "cut", callbacks=[kill_after_epoch_2])
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="avsc.training.loop"):
        resumed = fit(_model(), tr, ev, TC, tmp_path / "cut")
    said = [r.getMessage() for r in caplog.records]
    # two epochs were done: it resumes after epoch 2 and goes on with epoch 3 (not "after 1")
    assert any(m.endswith("last.pt after epoch 2") for m in said), said
    assert any(m.startswith("train epoch 3/4:") for m in said), said
    a, b = (
        load_checkpoint(full.last_checkpoint)["model"],
        load_checkpoint(resumed.last_checkpoint)["model"],
    )
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["val_logloss"] for r in full.history] == [r["val_logloss"] for r in resumed.history]
    assert full.best_epoch == resumed.best_epoch


def test_same_seed_same_metrics_other_seed_differs(synth_store, tmp_path):
    tr, va = _small_problem(synth_store[1])
    ev = lambda m: validation_metrics(m, va, 32)  # noqa: E731
    cfg = TC.replace(max_epochs=2)
    a = fit(_model(), tr, ev, cfg, tmp_path / "a").history
    b = fit(_model(), tr, ev, cfg, tmp_path / "b").history
    c = fit(_model(), tr, ev, cfg.replace(seed=1), tmp_path / "c").history
    key = lambda h: [(r["train_loss"], r["val_logloss"]) for r in h]  # noqa: E731
    assert key(a) == key(b)
    assert key(a) != key(c)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(
    synth_store, tmp_path
):
    tr, va = _small_problem(synth_store[1])

    class Poisoned(torch.utils.data.Dataset):
        on = False

        def __len__(self):
            return len(tr)

        def __getitem__(self, i):
            item = dict(tr[i])
            if Poisoned.on:
                item["audio"] = item["audio"] * float("nan")
            return item

    def poison(epoch, row):
        Poisoned.on = True

    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2.*last.pt"):
        fit(
            _model(),
            Poisoned(),
            lambda m: validation_metrics(m, va, 32),
            TC,
            tmp_path / "n",
            callbacks=[poison],
        )
    ck = load_checkpoint(tmp_path / "n" / "last.pt")
    assert ck["epoch"] == 0 and all(
        torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point()
    )


def test_early_stopping_after_patience_epochs_without_improvement(synth_store, tmp_path):
    tr, _ = _small_problem(synth_store[1])
    losses = iter([1.0, 0.9, 0.95, 0.91, 0.5, 0.4])  # best at epoch 2, then 2 bad epochs
    cfg = TrainConfig(batch_size=32, max_epochs=6, t0_epochs=6, patience=2, max_train_batches=1)
    res = fit(_model(), tr, lambda m: {"val_logloss": next(losses)}, cfg, tmp_path / "p")
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4]  # stopped, 0.5 never seen
    assert res.best_epoch == 1 and res.best_val_loss == pytest.approx(0.9)


def test_a_selection_window_keeps_the_end_of_the_best_run_of_epochs(synth_store, tmp_path):
    import pandas as pd

    from avsc.training.checkpoint import load_checkpoint

    tr, _ = _small_problem(synth_store[1])
    # one lucky epoch (2) among bad ones, then a steady good stretch (5-7)
    val = [0.9, 0.2, 1.5, 1.2, 0.5, 0.45, 0.5, 1.4]
    for window in (1, 3):
        losses = iter(val)
        cfg = TrainConfig(
            batch_size=32, max_epochs=8, t0_epochs=8, max_train_batches=1, select_window=window
        )
        out = tmp_path / f"w{window}"
        res = fit(_model(), tr, lambda m, it=losses: {"val_logloss": next(it)}, cfg, out)
        # reference: pandas' rolling mean (window 1: the values themselves)
        expected = int(np.nanargmin(pd.Series(val).rolling(window).mean().to_numpy()))
        assert res.best_epoch == expected, window
        assert load_checkpoint(out / "best.pt")["epoch"] == expected
        assert res.best_val_loss == pytest.approx(val[expected])
    assert expected == 6  # window 3: epochs 5-7 (0-based 4-6), not the lucky epoch 2


def test_global_batches_are_the_same_for_any_process_count():
    one = list(GlobalBatchSampler(100, 32, 1, 0, seed=5))
    two = [list(GlobalBatchSampler(100, 32, 2, r, seed=5)) for r in (0, 1)]
    assert len(one) == 3 and all(len(b) == 32 for b in one)
    for i, batch in enumerate(one):
        assert two[0][i] + two[1][i] == batch


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun2(*args: str) -> list[str]:
    """The command line running ``args`` as two gloo processes on this machine."""
    port = str(_free_port())
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        *args,
    ]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(synth_store, tmp_path):
    cache = synth_store[1]
    args = [
        "-m",
        "avsc",
        "train",
        "audio_only",
        "--cache",
        str(cache),
        "--feature",
        "fbank",
        "-p",
        "train.batch_size=64",
        "-p",
        "train.max_epochs=3",
        "-p",
        "train.t0_epochs=3",
        "-p",
        "model.ae_dropout=0.0",
        "-p",
        "model.sc_dropout=0.0",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", AVSC_PROGRESS="0")
    one = subprocess.run(
        [sys.executable, *args, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        _torchrun2(*args, "--out", str(tmp_path / "two")), capture_output=True, text=True, env=env
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one_dir, two_dir = (tmp_path / d / "audio_only_fbank" for d in ("one", "two"))
    h1 = pd.read_csv(one_dir / "history.csv")
    h2 = pd.read_csv(two_dir / "history.csv")
    assert len(h1) == len(h2) == 3
    # Same global batches and gradients averaged over the ranks: the validation losses agree
    # closely. Training losses are measured with per-rank (half-batch) BatchNorm statistics.
    np.testing.assert_allclose(h2.val_logloss, h1.val_logloss, rtol=0.02)
    np.testing.assert_allclose(h2.train_loss, h1.train_loss, atol=0.1)
    m1 = json.loads((one_dir / "metrics.json").read_text())
    m2 = json.loads((two_dir / "metrics.json").read_text())
    assert abs(m1["accuracy_overall"] - m2["accuracy_overall"]) <= 0.15

    # Two "nodes": two torchrun launchers of one process each, meeting at a c10d rendezvous on
    # 127.0.0.1 (as README's torchrun --nnodes 2 on a cluster): the same two ranks, so the
    # same weights as the two processes of one launcher, bit for bit.
    port = str(_free_port())
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc_per_node=1",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint=127.0.0.1:{port}",
                "--rdzv_id=avsc-test",
                f"--node_rank={k}",
                *args,
                "--out",
                str(tmp_path / "nodes"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )  # fmt: skip
        for k in range(2)
    ]
    outs = [n.communicate(timeout=600)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    nodes_dir = tmp_path / "nodes" / "audio_only_fbank"
    a = torch.load(two_dir / "last.pt", weights_only=True)["model"]
    b = torch.load(nodes_dir / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    pd.testing.assert_frame_equal(
        h2.drop(columns="seconds"), pd.read_csv(nodes_dir / "history.csv").drop(columns="seconds")
    )


DDP_NAN_SCRIPT = """
import os, sys, torch
from avsc.config import TrainConfig
from avsc.models import AcousticEncoder, AVSystem, SceneClassifier
from avsc.training.loop import TrainingDiverged, fit

class Data(torch.utils.data.Dataset):
    poisoned = False
    def __len__(self):
        return 64
    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        audio = torch.randn(2, 256, generator=g)
        if Data.poisoned:
            audio = audio * float("nan")
        return {"audio": audio, "label": i % 10}

def poison(epoch, row):  # only the second process sees NaN, from epoch 2 on
    Data.poisoned = os.environ["RANK"] == "1"

torch.manual_seed(0)
model = AVSystem(AcousticEncoder(256, hidden=16, embedding_dim=8), SceneClassifier(8, hidden=8))
cfg = TrainConfig(batch_size=16, max_epochs=3, t0_epochs=1, device="cpu")
try:
    fit(model, Data(), lambda m: {"val_logloss": 1.0}, cfg, sys.argv[1], callbacks=[poison])
except TrainingDiverged as exc:
    print("DIVERGED", exc, flush=True)
    sys.exit(3)
"""


@pytest.mark.slow
def test_nan_on_one_process_stops_every_process(tmp_path):
    script = tmp_path / "nan_ddp.py"
    script.write_text(DDP_NAN_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", AVSC_PROGRESS="0")
    run = subprocess.run(
        _torchrun2(str(script), str(tmp_path / "out")),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,  # a rank left waiting in all-reduce would hang here
    )
    assert run.returncode != 0
    # both processes raised the clear error (neither was left waiting for the other)
    assert run.stdout.count("DIVERGED") == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert "epoch 2" in run.stdout


# ------------------------------------------------------------------------- prediction


def test_predict_a_synthetic_wav_mp4_pair(synth_store, ws, audio_result, joint_checkpoint):
    root = synth_store[0]
    clip = ws.tables["evaluate"].clips[0]
    ck = joint_checkpoint
    df = predict_clip(root / "video" / f"{clip}.mp4", ck, audio=root / "audio" / f"{clip}.wav")
    assert list(df.segment) == [0, 1, 2] and list(df.start_s) == [0.0, 1.0, 2.0]
    np.testing.assert_allclose(df[list(LABELS)].sum(axis=1), 1, atol=1e-5)
    # the same clip through the training-time path gives the same probabilities (up to JPEG)
    ref = audio_result.proba[audio_result.proba["clip"] == clip]
    a = predict_clip(root / "audio" / f"{clip}.wav", audio_result.checkpoint)
    np.testing.assert_allclose(a[list(LABELS)].to_numpy(), ref[list(LABELS)].to_numpy(), atol=1e-4)


@pytest.mark.realdata
def test_predict_a_real_tau_mp4_with_its_own_audio(joint_checkpoint):
    path = REALDATA / "tau_av2021_video" / "lyon1045_40062_md.mp4"
    if not path.is_file():
        pytest.skip("real TAU videos absent")
    ck = joint_checkpoint
    with pytest.warns(UserWarning, match="44100 Hz"):
        df = predict_clip(path, ck)
    assert len(df) == 10 and set(df.scene_label) <= set(LABELS)
    np.testing.assert_allclose(df[list(LABELS)].sum(axis=1), 1, atol=1e-5)


def test_visual_fine_tuning_writes_a_checkpoint_the_encoder_loads(tmp_path):
    from avsc.config import FinetuneConfig
    from avsc.data.standin import make_places_standin
    from avsc.models import VisualEncoder
    from avsc.training.finetune import finetune_visual

    root = make_places_standin(
        tmp_path / "standin",
        images_per_class=6,
        size=48,
        classes=("beach", "corridor", "forest_path", "harbor"),
    )
    assert "NOT Places365" in (root / "README.md").read_text()
    fc = FinetuneConfig(epochs=2, batch_size=8, image_size=48)
    r = finetune_visual(root, "test_resnet", tmp_path / "ft.pt", config=fc)
    assert 0 <= r.top1_before <= 1 and 0 <= r.top1_after <= 1 and len(r.history) == 2
    assert r.classes == ["beach", "corridor", "forest_path", "harbor"]
    ve = VisualEncoder("test_resnet", weights=r.checkpoint)
    ck = load_checkpoint(r.checkpoint)
    for k, v in ve.backbone.state_dict().items():
        assert torch.equal(v, ck["model"][f"backbone.{k}"])


def test_interrupted_fine_tuning_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from avsc.config import FinetuneConfig
    from avsc.data.standin import make_places_standin
    from avsc.training import finetune as FT
    from avsc.training import loop as L  # fine-tuning's epochs are the fit loop's

    root = make_places_standin(
        tmp_path / "standin", images_per_class=6, size=48, classes=("beach", "harbor", "tunnel")
    )
    kw = dict(config=FinetuneConfig(epochs=3, batch_size=8, image_size=48))
    full = FT.finetune_visual(root, "test_resnet", tmp_path / "full.pt", **kw)

    real = L.progress

    def interrupting(it, desc="", **k):  # Ctrl-C in the middle of the second epoch
        for i, batch in enumerate(real(it, desc=desc, **k)):
            if "epoch 2" in desc and i == 1:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(L, "progress", interrupting)
    with pytest.raises(KeyboardInterrupt):
        FT.finetune_visual(root, "test_resnet", tmp_path / "cut.pt", **kw)
    assert (tmp_path / "cut.pt.last.pt").is_file() and not (tmp_path / "cut.pt").exists()
    monkeypatch.setattr(L, "progress", real)
    resumed = FT.finetune_visual(root, "test_resnet", tmp_path / "cut.pt", **kw)
    assert not (tmp_path / "cut.pt.last.pt").exists()
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    a, b = load_checkpoint(full.checkpoint)["model"], load_checkpoint(resumed.checkpoint)["model"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    assert resumed.top1_after == full.top1_after
    # the fit loop's checkpoint dict, written by the run folder's writer
    monkeypatch.setattr(L, "progress", interrupting)
    with pytest.raises(KeyboardInterrupt):
        FT.finetune_visual(root, "test_resnet", tmp_path / "old.pt", **kw)
    ck = load_checkpoint(tmp_path / "old.pt.last.pt")
    assert ck["config"]["momentum"] == 0.9 and ck["state"]["history"][0]["epoch"] == 1
    assert ck["epoch"] == 0 and set(ck) >= {"optimizer", "scheduler", "versions", "rng"}
    # one left by an older avsc (its own dict, without the settings that were fixed then)
    from avsc.training.runfolder import ADDED_SETTINGS

    run = {k: v for k, v in ck["config"].items() if f"finetune.{k}" not in ADDED_SETTINGS}
    old = {k: ck[k] for k in ("model", "optimizer", "scheduler", "rng", "epoch")}
    old.update(history=ck["state"]["history"], before=ck["extra"]["before"], run=run)
    FT.save_checkpoint(tmp_path / "old.pt.last.pt", old)
    monkeypatch.setattr(L, "progress", real)
    resumed = FT.finetune_visual(root, "test_resnet", tmp_path / "old.pt", **kw)
    a, b = load_checkpoint(full.checkpoint)["model"], load_checkpoint(resumed.checkpoint)["model"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    # a leftover from other settings is not silently mixed in
    FT.save_checkpoint(tmp_path / "x.pt.last.pt", {"run": {"epochs": 99}})
    with pytest.raises(
        FT.RunMismatch, match=r"x.pt.last.pt: an interrupted fine-tuning .*epochs: 99 stored, 3 now"
    ):
        FT.finetune_visual(root, "test_resnet", tmp_path / "x.pt", **kw)
    FT.save_checkpoint(tmp_path / "y.pt.last.pt", ck)
    other = dict(config=FinetuneConfig(epochs=3, batch_size=8, image_size=48, momentum=0.5))
    with pytest.raises(FT.RunMismatch, match=r"momentum: 0.9 stored, 0.5 now"):
        FT.finetune_visual(root, "test_resnet", tmp_path / "y.pt", **other)


def _places_layout(root, classes=("airfield", "bakery/shop", "canyon"), per_class=3):
    from PIL import Image

    root.mkdir(parents=True)
    (root / "categories_places365.txt").write_text(
        "".join(f"/{c[0]}/{c} {i}\n" for i, c in enumerate(classes))
    )
    lines = {"train": [], "val": []}
    rng = np.random.default_rng(0)
    for i, c in enumerate(classes):
        for j in range(per_class):
            rel = f"{c[0]}/{c}/{j + 1:08d}.jpg"
            p = root / "data_256" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(p)
            lines["train"].append(f"/{rel} {i}")
            name = f"Places365_val_{i * per_class + j + 1:08d}.jpg"
            (root / "val_256").mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
                root / "val_256" / name
            )
            lines["val"].append(f"{name} {i}")
    (root / "places365_train_standard.txt").write_text("\n".join(lines["train"]) + "\n")
    (root / "places365_val.txt").write_text("\n".join(lines["val"]) + "\n")
    return root


def test_places365_root_in_the_csail_layout(tmp_path):
    from avsc.data.places import open_image_dataset

    root = _places_layout(tmp_path / "places")
    train, val, classes, desc = open_image_dataset(root)
    assert classes == ["airfield", "bakery/shop", "canyon"] and "data_256" in desc
    assert len(train) == len(val) == 9 and train.targets == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    img, label = train[4]
    assert img.size == (50, 40) and img.mode == "RGB" and label == 1
    # problems name the file
    (root / "val_256" / "Places365_val_00000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"Places365_val_00000002.jpg: listed in"):
        open_image_dataset(root)
    (root / "places365_val.txt").write_text("Places365_val_00000001.jpg 7\n")
    with pytest.raises(ValueError, match=r"places365_val.txt, line 1"):
        open_image_dataset(root)
    with pytest.raises(FileNotFoundError, match=r"no Places365 train image folder"):
        open_image_dataset(root, places_size="large")


# ------------------------------------------------------- augmentation bank, image-major


def test_augmentation_bank_holds_encoded_augmented_views(synth_store, cfg):
    from avsc.features.datasets import train_transform

    bank_cfg = cfg.override({"train.aug_bank": 3})
    ws = S.Workspace(synth_store[1], bank_cfg)
    bank = ws.augmentation_bank("train", 3)
    table = ws.tables["train"]
    ve = ws.visual_encoder()
    assert bank.shape == (table.total_segments, 3, ve.num_features) and bank.dtype == torch.float16
    # independent recomputation of view 1 of the first clips
    tf = train_transform(ve.input_size[-1], bank_cfg.augment)
    frames = ws.frames("train")
    torch.manual_seed(bank_cfg.train.seed * 1_000_003 + 7_919 * 1 + 1)
    imgs = torch.stack(
        [tf(frames.get(c, s)) for c in range(len(table)) for s in range(table.segments)]
    )
    with torch.inference_mode():
        ref = ve(imgs[: table.segments * 2])
    torch.testing.assert_close(bank[: table.segments * 2, 1].float(), ref, atol=2e-3, rtol=2e-2)
    assert not torch.equal(bank[:, 0], bank[:, 1])  # views differ
    # stored in the feature store and reused as is
    again = S.Workspace(synth_store[1], bank_cfg).augmentation_bank("train", 3)
    assert torch.equal(again, bank)
    assert list((ws.store.path / "bank").glob("*/train.npy"))


def test_bank_views_are_drawn_per_epoch_deterministically(ws):
    bank = torch.randn(ws.tables["train"].total_segments, 4, 8).half()
    ds = FrameSamples(ws.tables["train"], audio=ws.audio("train", "fbank"), vemb_bank=bank)
    ds.set_epoch(11)
    a = ds.views.clone()
    ds.set_epoch(12)
    b = ds.views.clone()
    ds.set_epoch(11)
    assert torch.equal(a, ds.views) and not torch.equal(a, b)
    c, s, _ = ds.locate(5)
    row = int(ds.table.offsets[c]) + s
    assert torch.equal(ds[5]["vemb"], bank[row, int(a[5])].float())


@pytest.mark.parametrize("mode", ["bank", "image_major"])
def test_bank_and_image_major_train_the_same_joint_system(ws, cfg, runs, mode, joint_checkpoint):
    extra = (
        {"train.aug_bank": 4}
        if mode == "bank"
        else {"train.image_major": True, "train.batch_size": 36}
    )
    c = cfg.override(extra)
    w = S.Workspace(ws.store, c)
    ve = w.visual_encoder()
    before = _snapshot(ve)
    r1 = S.train_system("joint", c, w.store, runs / f"joint_{mode}", workspace=w)
    r2 = S.train_system("joint", c, w.store, runs / f"joint_{mode}_again", workspace=w)
    assert r1.metrics == pytest.approx({k: r2.metrics[k] for k in r1.metrics})  # deterministic
    assert _val_accuracy(r1) > CHANCE + 0.1
    for k, v in _snapshot(ve).items():
        assert torch.equal(v, before[k]), k
    online = load_checkpoint(joint_checkpoint)  # the paper's online joint system
    mine = load_checkpoint(r1.checkpoint)
    # same model family: the same tensors and shapes, and the very same frozen encoder
    assert {k: v.shape for k, v in mine["model"].items()} == {
        k: v.shape for k, v in online["model"].items()
    }
    ve_keys = [k for k in online["model"] if k.startswith("ve.")]
    assert ve_keys and all(torch.equal(mine["model"][k], online["model"][k]) for k in ve_keys)
    assert mine["extra"]["visual_input"] == "image"  # classifies raw clips at inference


def test_image_major_batches_share_one_image_per_segment(ws):
    ve = ws.visual_encoder()
    ae = AcousticEncoder(256)
    model = AVSystem(
        ae, SceneClassifier(1024 + ve.num_features), ve=ve, visual_input="image"
    ).eval()
    audio = ws.audio("train", "fbank")[:2]  # (2 segments, 6 frames, 2, 256)
    image = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    logits = model(audio=audio, image=image)
    assert logits.shape == (12, 10)
    per_frame = model(audio=audio.reshape(12, 2, 256), image=image.repeat_interleave(6, dim=0))
    torch.testing.assert_close(logits, per_frame)


def test_streamed_audio_and_bank_match_in_memory_and_train_identically(synth_store, cfg, tmp_path):
    """``train.audio_in_memory: no`` reads samples from the store (flat memory as data
    grows): the same values as the in-memory tensors and the same trained model."""
    from avsc.features.datasets import NpyRows, StoreAudio

    base = cfg.override({"train.aug_bank": 2, "train.max_epochs": 2, "train.t0_epochs": 2})
    mem = S.Workspace(synth_store[1], base.override({"train.audio_in_memory": "yes"}))
    disk = S.Workspace(synth_store[1], base.override({"train.audio_in_memory": "no"}))
    a_mem, a_disk = mem.audio("train", "fbank"), disk.audio("train", "fbank")
    assert isinstance(a_disk, StoreAudio) and a_disk.shape == tuple(a_mem.shape)
    last = mem.tables["train"].total_segments - 1
    for idx in [(0, 0), (3, 2), (last, 1), (4,)]:  # (segment row, acoustic frame)
        torch.testing.assert_close(a_disk[idx], a_mem[idx], rtol=1e-6, atol=1e-6)
    b_mem, b_disk = mem.augmentation_bank("train", 2), disk.augmentation_bank("train", 2)
    assert isinstance(b_disk, NpyRows) and b_disk.shape == tuple(b_mem.shape)
    assert torch.equal(b_disk[5, 1], b_mem[5, 1].float())
    r_mem = S.train_system("joint", mem.config, mem.store, tmp_path / "mem", workspace=mem)
    r_disk = S.train_system("joint", disk.config, disk.store, tmp_path / "disk", workspace=disk)
    assert r_disk.metrics == pytest.approx(r_mem.metrics)


def test_the_fused_optimizer_takes_the_steps_of_the_default_one_to_rounding():
    """``train.fused_optimizer``: torch's fused SGD, the same update as the default loop's
    (momentum, weight decay) within float32 rounding after 30 steps, and off by default."""
    from avsc.training.loop import make_optimizer

    torch.manual_seed(0)
    x, y = torch.randn(64, 2, 290), torch.randint(0, 10, (64,))
    runs = []
    for fused in (False, True):
        torch.manual_seed(1)
        model = AcousticEncoder(n_bins=290, hidden=64, embedding_dim=10)
        cfg = TrainConfig(fused_optimizer=fused)
        opt = make_optimizer(model, cfg)
        assert opt.defaults.get("fused") is (True if fused else None)
        for step in range(30):
            torch.manual_seed(step)  # the same dropout masks
            loss = torch.nn.functional.cross_entropy(model(x[step % 2 :: 2]), y[step % 2 :: 2])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert TrainConfig().fused_optimizer is False
    assert not torch.equal(runs[0], torch.zeros_like(runs[0]))
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
    reason="glibc's malloc only",
)
def test_training_on_the_cpu_reuses_freed_memory_instead_of_fresh_pages():
    """After ``retain_freed_memory`` (called by the fit loop on the CPU), a 40 MB block freed
    and allocated again comes from the process's own heap: no new pages from the kernel
    (glibc's default maps every block over 32 MB afresh: about 10,000 page faults each)."""
    probe = """
import ctypes, resource, sys
from avsc.utils import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory() and retain_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def step():  # what a training step does with a gradient: allocate, write, free
    block = libc.malloc(40 << 20)
    ctypes.memset(block, 1, 40 << 20)
    libc.free(block)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""
    faults = {}
    for mode in ("default", "retain"):
        res = subprocess.run(
            [sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True
        )
        faults[mode] = float(res.stdout)
    assert faults["default"] > 5000  # 10,240 pages of 4 KiB per block
    assert faults["retain"] < 100, faults


def test_evaluation_builds_no_autograd_graph():
    """``predict_segments`` runs under ``torch.no_grad`` (a class defined above it once took
    its decorator, and evaluation then recorded a graph for every batch)."""
    from avsc.evaluation.inference import predict_segments

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return {
                "audio": torch.randn(2, 290),
                "label": torch.tensor(i % 2),
                "index": torch.tensor(i),
            }

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(580, 2)
            self.grad_modes = []

        def segment_outputs(self, audio):
            self.grad_modes.append(torch.is_grad_enabled())
            return {"proba": self.lin(audio.flatten(1)).softmax(1)}

    model = Probe()
    out = predict_segments(model, Items(), batch_size=4)
    assert out["proba"].shape == (6, 2) and model.grad_modes == [False, False]


def test_training_takes_no_more_threads_than_the_cpus_granted(synth_store, tmp_path, monkeypatch):
    """With ``train.cpu_threads`` unset, a training on the CPU uses torch's own thread count
    but no more than the CPUs granted (here ``LOKY_MAX_CPU_COUNT``, one of the limits
    ``granted_cpus`` reads beside the affinity mask and a cgroup quota); a value set wins."""
    import avsc.utils

    before = torch.get_num_threads()
    avsc.utils.training_threads(1)  # captures torch's own count, if no training did yet
    own = avsc.utils._TORCH_DEFAULT_THREADS  # what an earlier training in this process set
    if own < 2:  # does not change it
        pytest.skip("needs torch to see 2 cores or more")
    tr, va = _small_problem(synth_store[1])
    ev = lambda m: validation_metrics(m, va, 32)  # noqa: E731
    seen = []
    cfg = TrainConfig(batch_size=32, max_epochs=1, max_train_batches=1, eval_batch_size=32)
    try:
        monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "1")
        fit(_model(), tr, ev, cfg, tmp_path / "granted",
            callbacks=[lambda e, r: seen.append(torch.get_num_threads())])  # fmt: skip
        monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "64")
        fit(_model(), tr, ev, cfg, tmp_path / "free",
            callbacks=[lambda e, r: seen.append(torch.get_num_threads())])  # fmt: skip
        fit(_model(), tr, ev, dataclasses.replace(cfg, cpu_threads=1), tmp_path / "set",
            callbacks=[lambda e, r: seen.append(torch.get_num_threads())])  # fmt: skip
    finally:
        torch.set_num_threads(before)
    assert seen == [1, own, 1]


def _cgroup_v1_cpu() -> str | None:
    """Why a real CPU quota cannot be set up here, or None where it can (root, cgroup v1's
    cpu controller, unshare)."""
    import shutil

    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "needs root on Linux"
    if not os.path.exists("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"):
        return "no cgroup v1 cpu controller at /sys/fs/cgroup/cpu"
    if shutil.which("unshare") is None:
        return "no unshare"
    return None


@pytest.mark.skipif(_cgroup_v1_cpu() is not None, reason=str(_cgroup_v1_cpu()))
def test_a_real_cgroup_cpu_quota_limits_the_training_threads():
    """In a real cgroup with a quota of half a CPU, shown at /sys/fs/cgroup the way a
    container sees its own (a private mount namespace), torch still sees every core, and
    avsc's training thread count is 1."""
    group = f"/sys/fs/cgroup/cpu/avsc-test-{os.getpid()}"
    try:
        os.mkdir(group)
    except OSError as e:
        pytest.skip(f"cannot make a cgroup: {e}")
    try:
        with open(f"{group}/cpu.cfs_period_us", "w") as f:
            f.write("100000")
        with open(f"{group}/cpu.cfs_quota_us", "w") as f:
            f.write("50000")
        probe = (
            "import torch; from avsc.utils import granted_cpus, training_threads; "
            "print(torch.get_num_threads(), granted_cpus(), training_threads(None))"
        )
        inner = (
            f"mount --bind {group} /sys/fs/cgroup/cpu && echo $$ > /sys/fs/cgroup/cpu/cgroup.procs"
            f" && exec {sys.executable} -c '{probe}'"
        )
        env = {k: v for k, v in os.environ.items() if k != "LOKY_MAX_CPU_COUNT"}  # the quota only
        res = subprocess.run(
            ["unshare", "-m", "sh", "-c", inner], capture_output=True, text=True, env=env
        )
        if res.returncode != 0 and "mount" in res.stderr:
            pytest.skip(f"no private mount namespace here: {res.stderr.strip()[-200:]}")
        assert res.returncode == 0, res.stderr
        torch_sees, granted, threads = map(int, res.stdout.split())
        assert granted == 1 and threads == 1
        outside = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
        )
        assert torch_sees == int(outside.stdout.split()[0])  # torch does not see the quota
    finally:
        os.rmdir(group)


def test_importing_avsc_makes_torchs_openmp_threads_sleep_while_they_wait():
    """``import avsc`` before torch sets ``OMP_WAIT_POLICY=PASSIVE`` (threads that spin hold
    the cores a busy machine's other work needs), and torch's OpenMP takes it: GNU OpenMP's
    own report (``OMP_DISPLAY_ENV=verbose``) shows a spin count of 0, not its default
    300000. A setting of the user's own is kept."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["OMP_DISPLAY_ENV"] = "verbose"

    def spin_count(code: str, **extra: str) -> str:
        res = subprocess.run([sys.executable, "-c", code], env={**env, **extra},
                             capture_output=True, text=True, check=True)  # fmt: skip
        found = [ln.split("=")[1].strip(" '") for ln in res.stderr.splitlines()
                 if ln.strip().startswith("GOMP_SPINCOUNT")]  # fmt: skip
        if not found:
            pytest.skip("torch's OpenMP here is not GNU OpenMP (no GOMP_SPINCOUNT report)")
        return found[0]

    assert spin_count("import torch") == "300000"  # OpenMP's default: spin about 3 ms
    assert spin_count("import avsc, torch") == "0"
    assert spin_count("import avsc, torch", OMP_WAIT_POLICY="ACTIVE") == "30000000000"
    assert spin_count("import avsc, torch", GOMP_SPINCOUNT="300000") == "300000"


def test_one_epoch_of_the_fit_loop_is_plain_sgd_on_its_batches():
    """train_one_epoch, the fit loop's epoch (also visual fine-tuning's), against the
    textbook loop written out: the same weights, mean loss and last rate."""
    from avsc.config import TrainConfig
    from avsc.training.loop import train_one_epoch

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(5, 3)

        def forward(self, x):
            return self.fc(x)

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 5, generator=g), torch.randint(0, 3, (4,), generator=g))]
    batches.append((torch.randn(2, 5, generator=g), torch.randint(0, 3, (2,), generator=g)))
    torch.manual_seed(1)
    ours, ref = Linear(), Linear()
    ref.load_state_dict(ours.state_dict())

    def sgd(m):
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    opt, sched = sgd(ours)
    loader = [{"x": x.clone(), "label": y.clone()} for x, y in batches]
    loss, lr = train_one_epoch(ours, loader, opt, sched, torch.device("cpu"), TrainConfig(), 0)
    opt_r, sched_r = sgd(ref)
    total = 0.0
    for x, y in batches:
        out = torch.nn.functional.cross_entropy(ref(x), y)
        opt_r.zero_grad()
        out.backward()
        opt_r.step()
        sched_r.step()
        total += out.item() * len(y)
    assert loss == pytest.approx(total / 6, rel=1e-6) and lr == pytest.approx(0.05)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------------------ tracking


def _board(folder):
    """What TensorBoard's own reader makes of the event files in ``folder`` (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_curves_equal_history_csv_after_a_crash_and_resume(
    synth_store, tmp_path, monkeypatch
):
    from avsc.training.tracking import TensorBoardTracker, scalar_tag

    tr, va = _small_problem(synth_store[1])
    ev = lambda m: validation_metrics(m, va, 32)  # noqa: E731
    cfg = dataclasses.replace(TC, max_epochs=3)
    logged = TensorBoardTracker.epochs

    class Crash(Exception):
        pass

    def dies_after_checkpoint_2(self, rows, config):  # last.pt of epoch 2 is written, not its event
        if len(rows) == 2:
            raise Crash
        logged(self, rows, config)

    monkeypatch.setattr(TensorBoardTracker, "epochs", dies_after_checkpoint_2)
    with pytest.raises(Crash):
        fit(_model(), tr, ev, cfg, tmp_path, config_dict={"train": {"lr": cfg.lr}})
    monkeypatch.setattr(TensorBoardTracker, "epochs", logged)
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    fit(_model(), tr, ev, cfg, tmp_path, config_dict={"train": {"lr": cfg.lr}})
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2  # the resumed process's own

    history = pd.read_csv(tmp_path / "history.csv")
    board = _board(tmp_path)
    columns = [c for c in history.columns if scalar_tag(c)]
    assert {"train_loss", "lr", "val_logloss", "val_accuracy", "seconds"} <= set(columns)
    assert sorted(board.Tags()["scalars"]) == sorted(scalar_tag(c) for c in columns)
    for c in columns:
        events = board.Scalars(scalar_tag(c))
        assert [e.step for e in events] == [1, 2, 3], c  # each epoch once, in order
        # TensorBoard keeps scalars as float32
        assert [e.value for e in events] == [float(np.float32(v)) for v in history[c]], c
    (text,) = board.Tensors("config/text_summary")
    assert "lr: 0.02" in text.tensor_proto.string_val[0].decode()


def test_tensorboard_off_writes_no_events(synth_store, tmp_path):
    tr, va = _small_problem(synth_store[1])
    cfg = dataclasses.replace(TC, max_epochs=1, tensorboard=False)
    fit(_model(), tr, lambda m: validation_metrics(m, va, 32), cfg, tmp_path)
    assert (tmp_path / "history.csv").is_file()
    assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_a_trained_system_lists_its_settings_and_test_metrics_for_the_hparams_view(
    audio_result, runs, cfg
):
    from tensorboard.plugins.hparams import plugin_data_pb2

    folder = runs / "audio_only_scalogram"
    board = _board(folder)
    content = board.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    hp = {
        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in start.hparams.items()
    }
    assert hp["system"] == "audio_only" and hp["feature"] == "scalogram"
    assert hp["train.max_epochs"] == cfg.train.max_epochs  # differs from the default 150
    assert "train.momentum" not in hp  # at its default
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    tags = {m.name.tag for m in experiment.metric_infos}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {"test/accuracy_classwise", "test/logloss_classwise"} <= tags
    epochs = len(pd.read_csv(folder / "history.csv"))
    for key in ("accuracy_classwise", "logloss_classwise"):
        (event,) = board.Scalars(f"test/{key}")
        assert event.step == epochs + 1
        assert event.value == float(np.float32(metrics[key]))
