"""The systems of method.md section 6 as one module: acoustic and/or visual branch + SC.

=============  ==========================  ==============  ============================
system         SC input                    trained         visual input
=============  ==========================  ==============  ============================
audio-only     AE                          AE + SC         none
video-only     VE                          SC              raw, augmented images
pipeline (I)   [AE, VE] (AE frozen)        SC              embeddings, no augmentation
II             [AE, VE]                    AE + SC         embeddings, no augmentation
III            [AE, VE] (AE frozen)        SC              raw, augmented images
joint (IV)     [AE, VE]                    AE + SC         raw, augmented images
=============  ==========================  ==============  ============================

Inputs travel as keyword tensors: ``audio`` ``(B, 2, F)`` (one acoustic frame per sample),
``image`` ``(B, 3, H, W)`` uint8, ``vemb`` ``(B, D)`` precomputed visual embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from avsc.models.acoustic import AcousticEncoder
from avsc.models.classifier import SceneClassifier
from avsc.models.visual import VisualEncoder

VISUAL_INPUTS = (None, "image", "embedding")


def freeze(module: nn.Module) -> nn.Module:
    """No gradients; stays in eval mode (see :class:`AVSystem.train`)."""
    module.requires_grad_(False)
    module.eval()
    return module


class AVSystem(nn.Module):
    """Scene classifier over the concatenation of the acoustic embedding (if ``ae``) and the
    visual features (if ``visual_input``): ``image`` runs the frozen ``ve`` on raw images,
    ``embedding`` takes precomputed features of ``ve`` (and still encodes raw images with it,
    so such a system also classifies raw clips)."""

    def __init__(
        self,
        ae: AcousticEncoder | None,
        sc: SceneClassifier,
        ve: VisualEncoder | None = None,
        visual_input: str | None = None,
        ae_trainable: bool = True,
    ):
        super().__init__()
        if visual_input not in VISUAL_INPUTS:
            raise ValueError(f"visual_input must be one of {VISUAL_INPUTS}, got {visual_input!r}")
        if visual_input is not None and ve is None:
            raise ValueError(f"visual_input={visual_input!r} needs a VisualEncoder")
        if ae is None and visual_input is None:
            raise ValueError("a system needs an acoustic or a visual branch")
        self.ae = ae
        self.ve = ve
        self.sc = sc
        self.visual_input = visual_input
        self.ae_trainable = ae_trainable
        self.visual_dim = ve.num_features if visual_input else 0
        expected = (ae.embedding_dim if ae is not None else 0) + self.visual_dim
        if sc.in_features != expected:
            raise ValueError(
                f"SceneClassifier takes {sc.in_features} inputs, the branches give {expected}"
            )
        if ae is not None and not ae_trainable:
            freeze(ae)

    def train(self, mode: bool = True) -> AVSystem:
        super().train(mode)
        if self.ae is not None and not self.ae_trainable:
            self.ae.eval()
        if self.ve is not None:
            self.ve.train(mode)  # VisualEncoder keeps its frozen backbone in eval mode
        return self

    def visual(
        self, image: torch.Tensor | None = None, vemb: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Visual features: ``vemb`` when given (precomputed embeddings, or views of the
        augmentation bank), else the frozen VE on ``image`` (so an embedding system that
        carries its VE also classifies raw clips)."""
        if vemb is not None:
            return vemb
        if image is None:
            raise ValueError(
                f"this system needs {'vemb or ' if self.visual_input == 'embedding' else ''}'image'"
            )
        if self.ve is None:
            raise ValueError("this system has no VisualEncoder to encode raw images")
        return self.ve(image)

    def acoustic(self, audio: torch.Tensor) -> torch.Tensor:
        if self.ae_trainable:
            return self.ae(audio)
        with torch.no_grad():
            return self.ae(audio)

    def fuse(self, acoustic: torch.Tensor | None, visual: torch.Tensor | None) -> torch.Tensor:
        """The SC's input from the branches' outputs (one row per acoustic frame): their
        concatenation. A system with another fusion overrides this one method."""
        parts = [x for x in (acoustic, visual) if x is not None]
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def sc_input(self, audio=None, image=None, vemb=None, visual=None) -> torch.Tensor:
        acoustic = None
        if self.ae is not None:
            if audio is None:
                raise ValueError("this system needs 'audio'")
            acoustic = self.acoustic(audio)
        if self.visual_input is not None and visual is None:
            visual = self.visual(image, vemb)
        return self.fuse(acoustic, visual if self.visual_input is not None else None)

    def forward(self, audio=None, image=None, vemb=None, visual=None) -> torch.Tensor:
        """Logits ``(B, n_classes)``.

        Image-major batches: with ``audio`` of shape ``(B, T, 2, F)`` (the T acoustic frames of
        B segments) and one image / embedding per segment, each image is encoded once and
        shared by its T frames; the logits are ``(B * T, n_classes)`` in frame order."""
        if audio is not None and audio.dim() == 4:
            b, t = audio.shape[:2]
            if self.visual_input is not None and visual is None:
                visual = self.visual(image, vemb).repeat_interleave(t, dim=0)
            return self.sc(self.sc_input(audio.reshape(b * t, *audio.shape[2:]), visual=visual))
        return self.sc(self.sc_input(audio, image, vemb, visual))

    @torch.no_grad()
    def segment_outputs(
        self, audio: torch.Tensor | None = None, image=None, vemb=None
    ) -> dict[str, torch.Tensor]:
        """Evaluate whole segments: ``audio`` ``(B, T, 2, F)`` and one image / embedding per
        segment. The visual branch runs once per segment and is shared by its T frames.
        Returns ``proba`` (mean of the frame softmax outputs, method.md section 4),
        ``audio_visual`` (SC hidden layer, mean over frames) and, with an acoustic branch,
        ``acoustic`` (AE output, mean over frames)."""
        visual = None
        if self.visual_input is not None:
            visual = self.visual(image, vemb)  # (B, D)
        if self.ae is None:
            x = self.fuse(None, visual)
            t = 1
            ac = None
        else:
            b, t = audio.shape[:2]
            ac = self.ae(audio.reshape(b * t, *audio.shape[2:]))
            x = self.fuse(ac, None if visual is None else visual.repeat_interleave(t, dim=0))
        hidden = self.sc.embed(x)
        proba = self.sc.out(hidden).softmax(dim=1)
        b = proba.shape[0] // t
        out = {
            "proba": proba.view(b, t, -1).mean(dim=1),
            "audio_visual": hidden.view(b, t, -1).mean(dim=1),
        }
        if ac is not None:
            out["acoustic"] = ac.view(b, t, -1).mean(dim=1)
        return out
