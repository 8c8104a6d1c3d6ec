"""The paper's systems (method.md section 6) as registry entries.

=============  ==========================  ==============  ============================
system         SC input                    trained         visual input
=============  ==========================  ==============  ============================
audio_only     AE                          AE + SC         none
video_only     VE                          SC              raw, augmented images
pipeline (I)   [AE, VE] (AE frozen)        SC              embeddings, no augmentation
ablation_II    [AE, VE]                    AE + SC         embeddings, no augmentation
ablation_III   [AE, VE] (AE frozen)        SC              raw, augmented images
joint (IV)     [AE, VE]                    AE + SC         raw, augmented images
=============  ==========================  ==============  ============================

A frozen AE is the trained audio-only system's; a trainable one starts from scratch unless
``model.ae_init`` is ``audio_only``. ``ablation_I`` and ``ablation_IV`` train exactly as
``pipeline`` and ``joint`` do, under their Table 4 names.

Beyond the paper (method.md section 10):

=============  ==================================================================
late_fusion    ``w * p_audio + (1 - w) * p_video`` of the trained audio-only and
               video-only systems, ``w`` chosen on the validation split
joint_dropout  joint, trained with modality dropout (``robustness.drop_audio`` /
               ``drop_video``; learned embeddings stand in for a dropped branch)
joint_kd       joint_dropout as a student distilled from the trained joint system
               (``robustness.kd_temperature``, ``kd_weight``)
=============  ==================================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from avsc.evaluation.inference import decide_segments, encode_segments
from avsc.evaluation.metrics import dcase_metrics
from avsc.experiments.registry import Parts, TrainJob, register_system
from avsc.models.fusion import AVSystem, DistilledAVSystem, LateFusion
from avsc.training.checkpoint import load_checkpoint
from avsc.training.loop import FitResult
from avsc.training.runfolder import check_resumable, training_checkpoint, write_run_files

UNIMODAL = "03_unimodal_baselines"
FUSION = "04_pipeline_vs_joint"
ABLATIONS_NB = "05_ablations"
ROBUSTNESS_NB = "08_robustness"

#: Table 4: visual input and whether the AE trains, per ablation.
ABLATIONS = {
    "I": ("embedding", False),
    "II": ("embedding", True),
    "III": ("image", False),
    "IV": ("image", True),
}


@register_system("audio_only", inputs=("feature",), notebook=UNIMODAL)
def audio_only(p: Parts) -> AVSystem:
    """Audio-only: AE + SC trained on acoustic frames (Table 2, upper half)."""
    ae = p.acoustic_encoder()
    return AVSystem(ae, p.scene_classifier(ae.embedding_dim))


@register_system("video_only", inputs=("backbone",), notebook=UNIMODAL)
def video_only(p: Parts) -> AVSystem:
    """Video-only: frozen VE + SC trained on augmented segment images (Table 2, lower half)."""
    return AVSystem(
        None, p.scene_classifier(p.visual.num_features), ve=p.visual, visual_input="image"
    )


def fused_branches(p: Parts, ae_trainable: bool):
    """The AE (the audio-only system's when frozen or ``model.ae_init: audio_only``, else a new
    one) and the SC over [AE, VE] of an audio-visual system."""
    if not ae_trainable or p.config.model.ae_init == "audio_only":
        ae = p.pretrained_acoustic_encoder()
    else:
        ae = p.acoustic_encoder()
    return ae, p.scene_classifier(ae.embedding_dim + p.visual.num_features)


def fused(visual_input: str, ae_trainable: bool) -> Callable[[Parts], AVSystem]:
    """The factory of an audio-visual system of Table 4: SC on [AE, VE], the VE frozen and fed
    ``visual_input`` ("embedding": precomputed features of un-augmented frames; "image": raw
    augmented images), the AE trainable or the audio-only system's, frozen."""

    def build(p: Parts) -> AVSystem:
        ae, sc = fused_branches(p, ae_trainable)
        return AVSystem(ae, sc, ve=p.visual, visual_input=visual_input, ae_trainable=ae_trainable)

    build.__qualname__ = f"fused_{visual_input}_{'trainable' if ae_trainable else 'frozen'}"
    return build


FUSED_INPUTS = ("feature", "backbone", "audio_checkpoint")

register_system(
    "pipeline",
    inputs=FUSED_INPUTS,
    notebook=FUSION,
    description="Pipeline: SC on [AE, VE] embeddings extracted once (AE from the trained "
    "audio-only system, frozen; VE frames not augmented) = ablation I (Table 3).",
)(fused(*ABLATIONS["I"]))
register_system(
    "joint",
    inputs=FUSED_INPUTS,
    notebook=FUSION,
    description="Joint: AE + SC trained together on raw augmented images through the frozen "
    "VE = ablation IV (Table 3).",
)(fused(*ABLATIONS["IV"]))
for _which, (_visual, _trainable) in ABLATIONS.items():
    register_system(
        f"ablation_{_which}",
        inputs=FUSED_INPUTS,
        notebook=ABLATIONS_NB,
        description=f"Table 4, ablation {_which}: VE {_visual}s, AE "
        f"{'trainable' if _trainable else 'pre-trained and frozen'}.",
        in_results=False,
    )(fused(_visual, _trainable))


# ----------------------------------------------------------------------------- late fusion

#: the late-fusion weights tried on the validation split (weight of the audio system)
FUSION_WEIGHTS = np.round(np.linspace(0.0, 1.0, 21), 2)


def choose_fusion_weight(job: TrainJob) -> FitResult:
    """Late fusion's training: the audio weight of :data:`FUSION_WEIGHTS` with the lowest
    validation log loss (segment level, the fit loop's criterion; the first on a tie). Both
    systems' validation outputs are computed once. A finished choice with the same settings
    is reloaded."""
    model, out = job.model, job.out
    best_path, last_path = out / "best.pt", out / "last.pt"
    if job.resume and best_path.is_file():
        ck = load_checkpoint(best_path)
        check_resumable(ck, out, job.config.train, job.config_dict, job.extra)
        model.load_state_dict(ck["model"])
        st = ck["state"]
        return FitResult(
            best_path, last_path, list(st["history"]), int(st["best_epoch"]),
            float(st["best_loss"]), info={"fusion_weight_audio": float(model.weight)},
        )  # fmt: skip
    t0 = time.perf_counter()
    bs = job.config.train.eval_batch_size
    enc = encode_segments(model, job.val_set, bs, job.device)
    history = []
    for i, w in enumerate(FUSION_WEIGHTS):
        model.weight.fill_(float(w))
        proba = decide_segments(model, enc, device=job.device)
        m = dcase_metrics(enc.label, proba)
        history.append(
            {
                "epoch": i + 1,
                "weight_audio": float(w),
                "val_logloss": m["logloss_overall"],
                "val_logloss_classwise": m["logloss_classwise"],
                "val_accuracy": m["accuracy_overall"],
                "val_accuracy_classwise": m["accuracy_classwise"],
            }
        )
    best = int(np.argmin([row["val_logloss"] for row in history]))
    for i, row in enumerate(history):
        row["best"] = i == best
        row["seconds"] = round((time.perf_counter() - t0) / len(history), 3)
    model.weight.fill_(float(FUSION_WEIGHTS[best]))
    ck = training_checkpoint(
        model, 0, history[best], job.config_dict, job.extra, history[best]["val_logloss"],
        best, 0, history,
    )  # fmt: skip
    write_run_files(out, ck, history, best=True, tensorboard=job.config.train.tensorboard)
    return FitResult(
        best_path,
        last_path,
        history,
        best,
        history[best]["val_logloss"],
        seconds=time.perf_counter() - t0,
        info={"fusion_weight_audio": float(FUSION_WEIGHTS[best])},
    )


@register_system(
    "late_fusion",
    inputs=("feature", "backbone"),
    notebook=FUSION,
    needs=("audio_only", "video_only"),
    train=choose_fusion_weight,
)
def late_fusion(p: Parts) -> LateFusion:
    """Late fusion: a weighted mean of the audio-only and video-only systems' probabilities,
    the weight chosen on the validation split (most DCASE 2021 Task 1B systems' other fusion)."""
    return LateFusion(p.trained_system("audio_only"), p.trained_system("video_only"))


# ----------------------------------------------------------------------------- robustness


@register_system("joint_dropout", inputs=FUSED_INPUTS, notebook=ROBUSTNESS_NB, in_results=False)
def joint_dropout(p: Parts) -> AVSystem:
    """Joint with modality dropout: each training sample loses its audio (probability
    ``robustness.drop_audio``) or its video (``drop_video``), a learned embedding standing in."""
    ae, sc = fused_branches(p, ae_trainable=True)
    r = p.config.robustness
    return AVSystem(
        ae, sc, ve=p.visual, visual_input="image",
        drop_audio=r.drop_audio, drop_video=r.drop_video,
    )  # fmt: skip


@register_system(
    "joint_kd",
    inputs=FUSED_INPUTS,
    notebook=ROBUSTNESS_NB,
    in_results=False,
    needs=("joint",),
)
def joint_kd(p: Parts) -> DistilledAVSystem:
    """Cross-modal distillation: joint_dropout as a student of the trained joint system (its
    outputs on the full inputs, softened by ``robustness.kd_temperature``, weighted by
    ``kd_weight`` against the labels' cross-entropy)."""
    ae, sc = fused_branches(p, ae_trainable=True)
    r = p.config.robustness
    teacher = p.trained_system("joint") if p.for_training else None
    return DistilledAVSystem(
        ae, sc, ve=p.visual, visual_input="image",
        drop_audio=r.drop_audio, drop_video=r.drop_video,
        teacher=teacher, temperature=r.kd_temperature, weight=r.kd_weight,
    )  # fmt: skip
