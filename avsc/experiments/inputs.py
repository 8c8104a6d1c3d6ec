"""What a system's branches are fed: one registered provider per input kind (acoustic
frames, frozen-VE embeddings, the augmentation bank, raw frames through the augmentation),
chosen by the model's branches and the config instead of an if-chain. A provider gives the
training set's arguments and those of each evaluation subset (``val``, ``evaluate``);
:func:`training_inputs` asks every provider that applies, in registration order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from avsc.experiments.workspace import Workspace
from avsc.features.datasets import FrameSamples, SegmentSamples, eval_transform, train_transform

EVAL_SUBSETS = ("val", "evaluate")


class InputProvider:
    """One input kind. ``applies(model, config)`` says whether a model takes it;
    ``train(...)`` and ``evaluate(..., subset, ...)`` return keyword arguments of
    :class:`FrameSamples` and :class:`SegmentSamples`."""

    name = ""

    def applies(self, model, config) -> bool:
        raise NotImplementedError

    def train(self, ws: Workspace, model, feature: str | None, backbone: str | None) -> dict:
        return {}

    def evaluate(
        self, ws: Workspace, model, subset: str, feature: str | None, backbone: str | None
    ) -> dict:
        return {}


_PROVIDERS: dict[str, InputProvider] = {}


def register_input(name: str) -> Callable[[type[InputProvider]], type[InputProvider]]:
    """Class decorator: register an :class:`InputProvider` under ``name`` (asked after the
    ones registered before it)."""

    def add(cls: type[InputProvider]) -> type[InputProvider]:
        provider = cls()
        provider.name = name
        _PROVIDERS[name] = provider
        return cls

    return add


def input_providers() -> list[InputProvider]:
    return list(_PROVIDERS.values())


@register_input("audio")
class AcousticFrames(InputProvider):
    """The normalised acoustic features of ``feature``, one frame per sample (image-major:
    the frames of one segment), for a model with an acoustic encoder."""

    def applies(self, model, config) -> bool:
        return model.ae is not None

    def train(self, ws, model, feature, backbone):
        return {"audio": ws.audio("train", feature)}

    def evaluate(self, ws, model, subset, feature, backbone):
        return {"audio": ws.audio(subset, feature)}


@register_input("embeddings")
class Embeddings(InputProvider):
    """Frozen-VE features of un-augmented (centre-crop) frames, computed once."""

    def applies(self, model, config) -> bool:
        return model.visual_input == "embedding"

    def train(self, ws, model, feature, backbone):
        return {"vemb": ws.visual_embeddings("train", backbone)}

    def evaluate(self, ws, model, subset, feature, backbone):
        return {"vemb": ws.visual_embeddings(subset, backbone)}


@register_input("augmentation_bank")
class AugmentationBank(Embeddings):
    """``train.aug_bank`` K > 0: one of K precomputed augmented views per sample; evaluation
    on the precomputed centre-crop embeddings (:class:`Embeddings`' own)."""

    def applies(self, model, config) -> bool:
        return model.visual_input == "image" and config.train.aug_bank > 0

    def train(self, ws, model, feature, backbone):
        out: dict[str, Any] = {
            "vemb_bank": ws.augmentation_bank("train", ws.config.train.aug_bank, backbone)
        }
        if model.ae is None:
            out["unit"] = "segment"
        return out


@register_input("frames")
class AugmentedFrames(InputProvider):
    """Raw frames, augmented online and put through the frozen VE (method.md section 7);
    evaluation on the eval transform's centre crop."""

    def applies(self, model, config) -> bool:
        return model.visual_input == "image" and config.train.aug_bank == 0

    def train(self, ws, model, feature, backbone):
        cfg = ws.config
        out: dict[str, Any] = {
            "frames": ws.frames("train", encoded=cfg.train.decode_on_device),
            "transform": train_transform(model.ve.input_size[-1], cfg.augment),
        }
        if model.ae is None:
            out["unit"] = "segment"
        elif cfg.train.image_major:
            out["unit"] = "segment_frames"
        return out

    def evaluate(self, ws, model, subset, feature, backbone):
        return {
            "frames": ws.frames(subset),
            "transform": eval_transform(model.ve.input_size[-1], model.ve.crop_pct),
        }


def training_inputs(
    ws: Workspace, model, feature: str | None, backbone: str | None
) -> tuple[FrameSamples, dict[str, SegmentSamples]]:
    """The training set and the ``val`` / ``evaluate`` sets a model's branches need: every
    registered provider that applies gives its part of each."""
    train: dict[str, Any] = {}
    evals: dict[str, dict[str, Any]] = {s: {} for s in EVAL_SUBSETS}
    for provider in input_providers():
        if not provider.applies(model, ws.config):
            continue
        train.update(provider.train(ws, model, feature, backbone))
        for s in EVAL_SUBSETS:
            evals[s].update(provider.evaluate(ws, model, s, feature, backbone))
    tables = ws.tables
    return (
        FrameSamples(tables["train"], **train),
        {s: SegmentSamples(tables[s], **kw) for s, kw in evals.items()},
    )
