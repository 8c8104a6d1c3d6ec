"""Models, method.md section 5: acoustic encoder, visual encoder, scene classifier, systems."""

from avsc.models.acoustic import AcousticEncoder, ResidualBlock1d
from avsc.models.classifier import SceneClassifier
from avsc.models.fusion import AVSystem, DistilledAVSystem, LateFusion
from avsc.models.visual import (
    LITE0_WEIGHTS,
    VisualEncoder,
    WeightsError,
    create_backbone,
    load_imagenet_efficientnet_lite0,
    read_state_dict,
)

__all__ = [
    "LITE0_WEIGHTS",
    "AVSystem",
    "AcousticEncoder",
    "DistilledAVSystem",
    "LateFusion",
    "ResidualBlock1d",
    "SceneClassifier",
    "VisualEncoder",
    "WeightsError",
    "create_backbone",
    "load_imagenet_efficientnet_lite0",
    "read_state_dict",
]
