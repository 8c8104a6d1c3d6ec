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
"""

from __future__ import annotations

from collections.abc import Callable

from avsc.experiments.registry import Parts, register_system
from avsc.models.systems import AVSystem

UNIMODAL = "03_unimodal_baselines"
FUSION = "04_pipeline_vs_joint"
ABLATIONS_NB = "05_ablations"

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


def fused(visual_input: str, ae_trainable: bool) -> Callable[[Parts], AVSystem]:
    """The factory of an audio-visual system of Table 4: SC on [AE, VE], the VE frozen and fed
    ``visual_input`` ("embedding": precomputed features of un-augmented frames; "image": raw
    augmented images), the AE trainable or the audio-only system's, frozen."""

    def build(p: Parts) -> AVSystem:
        if not ae_trainable or p.config.model.ae_init == "audio_only":
            ae = p.pretrained_acoustic_encoder()
        else:
            ae = p.acoustic_encoder()
        sc = p.scene_classifier(ae.embedding_dim + p.visual.num_features)
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
