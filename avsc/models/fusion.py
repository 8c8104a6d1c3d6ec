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

Evaluation is two steps, so that the robustness protocol (missing or asynchronous
modalities, :mod:`avsc.experiments.robustness`) encodes a clip once and decides many times:
:meth:`AVSystem.encode` gives each branch's output (``audio``: the acoustic embeddings of a
segment's frames, ``video``: its visual features), :meth:`AVSystem.decide` the segment's
probabilities from them, with a per-segment mask of missing audio or video. A missing branch
is replaced by zeros, or by a learned embedding in a system trained with modality dropout
(``drop_audio`` / ``drop_video``); a system whose only branch is missing predicts the uniform
distribution (it has no evidence). Every system (:class:`LateFusion` too) has these two
methods, and :meth:`segment_outputs` is ``decide(encode(...))``.
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
        drop_audio: float = 0.0,
        drop_video: float = 0.0,
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
        if not (0 <= drop_audio <= 1 and 0 <= drop_video <= 1 and drop_audio + drop_video <= 1):
            raise ValueError(
                f"modality dropout: drop_audio {drop_audio} and drop_video {drop_video} must be "
                "probabilities summing to at most 1 (a sample never loses both)"
            )
        self.drop_audio, self.drop_video = float(drop_audio), float(drop_video)
        # the learned stand-ins for a dropped (or missing) branch; zeros without dropout
        self.missing_audio: nn.Parameter | None = None
        self.missing_video: nn.Parameter | None = None
        if (drop_audio or drop_video) and ae is not None and visual_input is not None:
            self.missing_audio = nn.Parameter(torch.zeros(ae.embedding_dim))
            self.missing_video = nn.Parameter(torch.zeros(self.visual_dim))

    def settings(self) -> dict[str, float]:
        """Training settings of this system beyond the config's sections every system uses
        (recorded in its checkpoint, compared when a run resumes): modality dropout."""
        if not (self.drop_audio or self.drop_video):
            return {}
        return {"drop_audio": self.drop_audio, "drop_video": self.drop_video}

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

    @staticmethod
    def _replace(x: torch.Tensor, missing: torch.Tensor, by: torch.Tensor | None) -> torch.Tensor:
        """Rows of ``x`` where ``missing`` replaced by ``by`` (zeros when None)."""
        stand_in = torch.zeros_like(x[:1]) if by is None else by.to(x.dtype).expand(1, -1)
        return torch.where(missing.view(-1, 1), stand_in, x)

    def _modality_dropout(self, acoustic, visual):
        """Training only: each sample loses its audio with probability ``drop_audio`` or else
        its video with probability ``drop_video`` (never both), replaced by the learned
        embedding of the missing branch."""
        if not self.training or acoustic is None or visual is None:
            return acoustic, visual
        if not (self.drop_audio or self.drop_video):
            return acoustic, visual
        u = torch.rand(acoustic.shape[0], device=acoustic.device)
        no_audio = u < self.drop_audio
        no_video = (u >= self.drop_audio) & (u < self.drop_audio + self.drop_video)
        return (
            self._replace(acoustic, no_audio, self.missing_audio),
            self._replace(visual, no_video, self.missing_video),
        )

    def sc_input(self, audio=None, image=None, vemb=None, visual=None) -> torch.Tensor:
        acoustic = None
        if self.ae is not None:
            if audio is None:
                raise ValueError("this system needs 'audio'")
            acoustic = self.acoustic(audio)
        if self.visual_input is not None and visual is None:
            visual = self.visual(image, vemb)
        visual = visual if self.visual_input is not None else None
        acoustic, visual = self._modality_dropout(acoustic, visual)
        return self.fuse(acoustic, visual)

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
    def encode(
        self, audio: torch.Tensor | None = None, image=None, vemb=None
    ) -> dict[str, torch.Tensor | None]:
        """The branches' outputs for whole segments: ``audio`` ``(B, T, E)`` (the AE output of
        each of a segment's T frames; None without an acoustic branch) and ``video`` ``(B, D)``
        (one visual feature vector per segment; None without a visual branch)."""
        video = self.visual(image, vemb) if self.visual_input is not None else None
        acoustic = None
        if self.ae is not None:
            b, t = audio.shape[:2]
            acoustic = self.ae(audio.reshape(b * t, *audio.shape[2:])).view(b, t, -1)
        return {"audio": acoustic, "video": video}

    @torch.no_grad()
    def decide(
        self,
        encoded: dict[str, torch.Tensor | None],
        audio_missing: torch.Tensor | None = None,
        video_missing: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Segment outputs from :meth:`encode`'s: ``proba`` (mean of the frame softmax
        outputs, method.md section 4), ``audio_visual`` (SC hidden layer, mean over frames)
        and, with an acoustic branch, ``acoustic`` (AE output, mean over frames).
        ``audio_missing`` / ``video_missing`` (bool ``(B,)``) mark segments whose audio / video
        is absent: that branch is replaced by zeros or the learned embedding, and a system left
        with no branch predicts the uniform distribution."""
        ac, visual = encoded.get("audio"), encoded.get("video")
        if ac is None:
            b, t = visual.shape[0], 1
        else:
            b, t = ac.shape[:2]
            ac = ac.reshape(b * t, -1)
            if audio_missing is not None:
                ac = self._replace(ac, audio_missing.repeat_interleave(t), self.missing_audio)
        if visual is not None:
            if video_missing is not None:
                visual = self._replace(visual, video_missing, self.missing_video)
            if ac is not None:
                visual = visual.repeat_interleave(t, dim=0)
        x = self.fuse(ac, visual)
        hidden = self.sc.embed(x)
        proba = self.sc.out(hidden).softmax(dim=1)
        out = {
            "proba": proba.view(b, t, -1).mean(dim=1),
            "audio_visual": hidden.view(b, t, -1).mean(dim=1),
        }
        if ac is not None:
            out["acoustic"] = ac.view(b, t, -1).mean(dim=1)
        blind = _no_evidence(
            [m for m, has in ((audio_missing, ac), (video_missing, visual)) if has is not None]
        )
        if blind is not None:
            out["proba"] = _uniform_where(out["proba"], blind)
        return out

    @torch.no_grad()
    def segment_outputs(
        self, audio: torch.Tensor | None = None, image=None, vemb=None
    ) -> dict[str, torch.Tensor]:
        """Evaluate whole segments: ``audio`` ``(B, T, 2, F)`` and one image / embedding per
        segment, ``decide(encode(...))``. The visual branch runs once per segment and is shared
        by its T frames."""
        return self.decide(self.encode(audio, image, vemb))


def _no_evidence(masks: list[torch.Tensor | None]) -> torch.Tensor | None:
    """Segments missing every branch a system has, given one mask per branch (None: that
    branch is present everywhere); None when there is no such segment."""
    if not masks or any(m is None for m in masks):
        return None
    blind = masks[0]
    for m in masks[1:]:
        blind = blind & m
    return blind if bool(blind.any()) else None


def _uniform_where(proba: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``proba`` with the rows ``rows`` replaced by the uniform distribution."""
    return torch.where(rows.view(-1, 1), torch.full_like(proba, 1.0 / proba.shape[1]), proba)


class DistilledAVSystem(AVSystem):
    """An :class:`AVSystem` trained by cross-modal knowledge distillation: its training loss
    is ``(1 - weight) * CE(logits, label) + weight * T^2 * KL(teacher_T || student_T)``, the
    teacher (a trained system that sees both modalities, kept out of this model's weights
    and frozen) and the student's logits both softened by the temperature ``T`` (Hinton et
    al., 2015). The student usually trains with modality dropout, so it learns to predict
    what the full audio-visual teacher would from one modality."""

    def __init__(
        self,
        *args,
        teacher: nn.Module | None = None,
        temperature: float = 2.0,
        weight: float = 0.5,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if temperature <= 0 or not 0 <= weight <= 1:
            raise ValueError(
                f"distillation: temperature {temperature} > 0, weight {weight} in [0, 1]"
            )
        self.temperature, self.kd_weight = float(temperature), float(weight)
        self._teacher = [freeze(teacher)] if teacher is not None else []  # not a submodule

    def settings(self) -> dict[str, float]:
        return {
            **super().settings(),
            "kd_temperature": self.temperature,
            "kd_weight": self.kd_weight,
        }

    def training_loss(
        self, logits: torch.Tensor, label: torch.Tensor, inputs: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The fit loop's loss for this model (see the class docstring)."""
        ce = nn.functional.cross_entropy(logits, label)
        if not self._teacher or self.kd_weight == 0:
            return ce
        teacher = self._teacher[0].to(logits.device)
        with torch.no_grad():
            target = teacher(**inputs).float()
        t = self.temperature
        kd = nn.functional.kl_div(
            (logits / t).log_softmax(dim=1),
            (target / t).log_softmax(dim=1),
            log_target=True,
            reduction="batchmean",
        )
        return (1 - self.kd_weight) * ce + self.kd_weight * t * t * kd


class LateFusion(nn.Module):
    """Late fusion of two trained unimodal systems: ``w * p_audio + (1 - w) * p_video``, the
    weight ``w`` (a buffer, saved with the model) chosen on the validation split. A segment
    missing one modality gets the other's prediction; asynchrony pairs an audio prediction
    with the video prediction of another segment."""

    def __init__(self, audio: AVSystem, video: AVSystem, weight: float = 0.5):
        super().__init__()
        if audio.ae is None or audio.visual_input is not None:
            raise ValueError("LateFusion: the audio system must be audio-only")
        if video.ae is not None or video.visual_input is None:
            raise ValueError("LateFusion: the video system must be video-only")
        self.audio_system, self.video_system = audio, video
        self.register_buffer("weight", torch.tensor(float(weight)))
        for m in (audio, video):
            freeze(m)

    # the attributes the data pipeline reads off a system
    @property
    def ae(self):
        return self.audio_system.ae

    @property
    def ve(self):
        return self.video_system.ve

    @property
    def visual_input(self):
        return self.video_system.visual_input

    ae_trainable = False

    def train(self, mode: bool = True) -> LateFusion:
        super().train(mode)
        self.audio_system.eval()
        self.video_system.eval()
        return self

    @torch.no_grad()
    def encode(self, audio=None, image=None, vemb=None) -> dict[str, torch.Tensor]:
        """Each unimodal system's segment probabilities: ``audio`` and ``video``, ``(B, C)``."""
        return {
            "audio": self.audio_system.segment_outputs(audio)["proba"],
            "video": self.video_system.segment_outputs(image=image, vemb=vemb)["proba"],
        }

    @torch.no_grad()
    def decide(self, encoded, audio_missing=None, video_missing=None) -> dict[str, torch.Tensor]:
        pa, pv = encoded["audio"], encoded["video"]
        w = self.weight.to(pa.dtype)
        proba = w * pa + (1 - w) * pv
        if video_missing is not None:
            proba = torch.where(video_missing.view(-1, 1), pa, proba)
        if audio_missing is not None:
            proba = torch.where(audio_missing.view(-1, 1), pv, proba)
            if video_missing is not None:
                proba = _uniform_where(proba, audio_missing & video_missing)
        return {"proba": proba}

    @torch.no_grad()
    def segment_outputs(self, audio=None, image=None, vemb=None) -> dict[str, torch.Tensor]:
        return self.decide(self.encode(audio, image, vemb))
