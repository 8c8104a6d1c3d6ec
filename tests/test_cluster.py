"""``avsc run --launcher slurm``: the plan of the series' trainings, each after those it builds
on (the series run on a cluster end to end: tests/test_sweep.py, beside the Slurm cluster)."""

from __future__ import annotations

from pathlib import Path

from avsc.cluster import training_plan
from avsc.runconfig import resolve


def _plan(store, **over):
    params = resolve("smoke", {"cache_dir": str(store), **over}, Path("r"), Path("f"))
    return {t.name: set(t.after) for t in training_plan(params)}


def test_the_plan_orders_each_training_after_those_it_builds_on(synth_store):
    plan = _plan(synth_store[1], features=["fbank"])
    b = "test_efficientnet"
    assert plan == {
        "audio_only_fbank": set(),
        f"video_only_{b}": set(),
        f"pipeline_fbank_{b}": {"audio_only_fbank"},  # = ablation I: the audio-only AE, frozen
        f"joint_fbank_{b}": set(),  # a new AE (model.ae_init: random)
        f"late_fusion_fbank_{b}": {"audio_only_fbank", f"video_only_{b}"},
    }  # the ablations and robustness systems are on scalogram (ablation_ / main_feature)
    full = _plan(synth_store[1])
    assert full[f"ablation_III_scalogram_{b}"] == {"audio_only_scalogram"}
    assert full[f"ablation_II_scalogram_{b}"] == set()
    assert full[f"joint_kd_scalogram_{b}"] == {f"joint_scalogram_{b}"}
    assert full[f"joint_dropout_scalogram_{b}"] == set()
    assert len(full) == 13
    warm = _plan(synth_store[1], features=["fbank"], **{"model.ae_init": "audio_only"})
    assert warm[f"joint_fbank_{b}"] == {"audio_only_fbank"}
