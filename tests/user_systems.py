"""A system registered from user code, as a researcher would write it: imported by
``avsc train --module tests.user_systems`` and by tests/experiments/test_experiments.py.
Its own fusion: the visual embedding gated by the acoustic one (a new module of its own,
no avsc file touched), trained jointly like the paper's joint system."""

import torch
from torch import nn

from avsc.experiments import Parts, register_system
from avsc.models import AVSystem


class GatedFusion(AVSystem):
    """SC on [AE, sigmoid(W AE) * VE]: the acoustic embedding gates the visual one."""

    def __init__(self, p: Parts):
        ae = p.acoustic_encoder()
        ve = p.visual
        super().__init__(
            ae, p.scene_classifier(ae.embedding_dim + ve.num_features), ve=ve, visual_input="image"
        )
        self.gate = nn.Linear(ae.embedding_dim, ve.num_features)

    def fuse(self, acoustic: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return torch.cat([acoustic, torch.sigmoid(self.gate(acoustic)) * visual], dim=1)


@register_system("gated_fusion", inputs=("feature", "backbone"))
def gated_fusion(p: Parts) -> AVSystem:
    """Gated fusion: the acoustic embedding gates the visual features (a user's idea)."""
    return GatedFusion(p)
