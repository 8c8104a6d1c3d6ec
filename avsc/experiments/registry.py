"""The registry of systems: one entry per system, the one place that lists them.

An entry (:class:`SystemSpec`) declares the system's name, the inputs it takes (an acoustic
``feature``, a visual ``backbone``, the ``audio_checkpoint`` of a trained audio-only system),
the notebook that makes it, and one factory that builds its model from :class:`Parts`.
Training (:func:`avsc.experiments.train.train_system`), ``avsc train``, ``avsc predict``
and the notebooks all read this registry, as timm's ``create_model`` reads the models that
``@register_model`` put there. A new system is one decorated function, in avsc or in user
code (a notebook cell, a module passed to ``avsc train --module``)::

    from avsc.experiments import Parts, register_system
    from avsc.models import AVSystem

    @register_system("wide_joint", inputs=("feature", "backbone"))
    def wide_joint(p: Parts) -> AVSystem:
        ae = p.acoustic_encoder()
        return AVSystem(ae, p.scene_classifier(ae.embedding_dim + p.visual.num_features),
                        ve=p.visual, visual_input="image")

A system built on other trained systems names them in ``needs`` and gets each with
:meth:`Parts.trained_system` (late fusion: the audio-only and video-only systems; the
distilled student: its joint teacher). A system that is not trained by the one fit loop
gives its own ``train`` procedure, which receives a :class:`TrainJob` (late fusion chooses
its weight on the validation split).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from avsc.config import ExperimentConfig
from avsc.models.acoustic import AcousticEncoder
from avsc.models.classifier import SceneClassifier
from avsc.models.fusion import AVSystem
from avsc.models.visual import VisualEncoder

#: What a system may take besides the feature store and the config.
INPUTS = ("feature", "backbone", "audio_checkpoint")


class SystemUsageError(ValueError):
    """A system asked for something it cannot do (an input it does not take, a name taken)."""


class UnknownSystem(SystemUsageError):
    """A system name that is not registered; the message lists the registered ones."""


@dataclass
class Parts:
    """What a system's factory builds its model from.

    ``n_bins`` is the feature's bin count (None: the system takes no acoustic feature);
    ``visual`` the frozen visual encoder of the chosen backbone (None: no backbone);
    ``pretrained`` returns the acoustic encoder of the trained audio-only system (for
    training), or is None when the weights will come from a checkpoint (``avsc predict``),
    in which case :meth:`pretrained_acoustic_encoder` gives a fresh encoder of that shape."""

    config: ExperimentConfig
    n_classes: int
    n_bins: int | None = None
    visual: VisualEncoder | None = None
    pretrained: Callable[[], AcousticEncoder] | None = field(default=None, repr=False)
    #: ``trained(name)``: the best checkpoint of the finished system ``name`` with these
    #: inputs (None when the weights will come from this system's own checkpoint)
    trained: Callable[[str], Path] | None = field(default=None, repr=False)

    @property
    def for_training(self) -> bool:
        """True when the model is built to be trained (False: to load a checkpoint into)."""
        return self.trained is not None

    def acoustic_encoder(self) -> AcousticEncoder:
        """A new acoustic encoder (method.md section 5), randomly initialised."""
        if self.n_bins is None:
            raise SystemUsageError(
                "this system takes no acoustic feature; declare inputs=('feature',)"
            )
        m = self.config.model
        return AcousticEncoder(
            self.n_bins, 2, m.ae_channels, m.ae_hidden, m.embedding_dim, m.ae_dropout, m.multiscale
        )

    def pretrained_acoustic_encoder(self) -> AcousticEncoder:
        """The trained audio-only system's acoustic encoder (its weights; the caller decides
        whether it stays frozen)."""
        if self.pretrained is None:
            return self.acoustic_encoder()
        return self.pretrained()

    def trained_system(self, name: str) -> nn.Module:
        """The registered system ``name`` built with these parts and, when training, loaded
        with the weights of its finished training (``needs`` must name it). For a
        checkpoint's rebuild (``avsc predict``) it stays untrained: the weights come from
        the checkpoint of the system that needs it."""
        model = get_system(name).build(self)
        if self.trained is not None:
            from avsc.training.checkpoint import load_checkpoint

            model.load_state_dict(load_checkpoint(self.trained(name))["model"])
        return model

    def scene_classifier(self, in_features: int) -> SceneClassifier:
        """A scene classifier over ``in_features`` inputs (method.md section 5)."""
        m = self.config.model
        return SceneClassifier(in_features, self.n_classes, m.sc_hidden, m.sc_dropout)


@dataclass
class TrainJob:
    """What a system's own ``train`` procedure gets (the default is the one fit loop,
    :func:`avsc.training.loop.fit`); it returns a :class:`avsc.training.loop.FitResult`
    whose ``best_checkpoint`` holds the model to evaluate."""

    model: nn.Module
    train_set: Any
    val_set: Any
    evaluate: Callable[[nn.Module], dict[str, float]]  # validation metrics of a model
    config: ExperimentConfig
    out: Path
    config_dict: dict[str, Any]
    extra: dict[str, Any]
    resume: bool
    name: str
    device: Any


@dataclass(frozen=True)
class SystemSpec:
    """One registered system (see the module docstring)."""

    name: str
    build: Callable[[Parts], AVSystem]
    inputs: tuple[str, ...] = ()
    notebook: str | None = None  # the notebook of the series that trains it
    description: str = ""
    in_results: bool = True  # a row of the results tables (results_all)
    needs: tuple[str, ...] = ()  # trained systems (same inputs) it builds on
    train: Callable[[TrainJob], Any] | None = None  # None: the one fit loop

    def takes(self, what: str) -> bool:
        return what in self.inputs

    @property
    def modalities(self) -> tuple[str, ...]:
        """The media the system needs: ``audio`` when it takes an acoustic feature, ``video``
        when it takes a visual backbone."""
        return tuple(
            m for m, inp in (("audio", "feature"), ("video", "backbone")) if inp in self.inputs
        )

    def result_name(self, feature: str | None = None, backbone: str | None = None) -> str:
        """Folder name of a trained instance: ``audio_only_scalogram``,
        ``video_only_resnet50``, ``joint_fbank_tf_efficientnetv2_s`` ..."""
        parts = [self.name]
        if self.takes("feature") and feature:
            parts.append(feature)
        if self.takes("backbone") and backbone:
            parts.append(backbone)
        return "_".join(parts)


_REGISTRY: dict[str, SystemSpec] = {}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*$")


def register_system(
    name: str,
    *,
    inputs: tuple[str, ...] | list[str] = (),
    notebook: str | None = None,
    description: str | None = None,
    in_results: bool = True,
    needs: tuple[str, ...] | list[str] = (),
    train: Callable[[TrainJob], Any] | None = None,
    replace: bool = False,
) -> Callable[[Callable[[Parts], AVSystem]], Callable[[Parts], AVSystem]]:
    """Decorator: register ``fn(parts) -> AVSystem`` as the factory of system ``name``.

    ``inputs`` is a subset of :data:`INPUTS`; ``needs`` names the systems (trained first,
    with the same inputs as far as they take them) whose trained models the factory uses
    through :meth:`Parts.trained_system`; ``train(job)`` replaces the fit loop. A name
    already registered by other code is an error unless ``replace``; running the same
    notebook cell again simply re-registers."""
    bad = sorted(set(inputs) - set(INPUTS))
    if bad:
        raise SystemUsageError(f"system {name!r}: unknown input(s) {bad}; known: {list(INPUTS)}")
    if not _NAME.match(name or ""):
        raise SystemUsageError(f"system name {name!r}: use letters, digits and single underscores")

    def deco(fn: Callable[[Parts], AVSystem]) -> Callable[[Parts], AVSystem]:
        old = _REGISTRY.get(name)
        same_code = old is not None and (
            (old.build.__module__, old.build.__qualname__) == (fn.__module__, fn.__qualname__)
        )
        if old is not None and not (replace or same_code):
            raise SystemUsageError(
                f"system {name!r} is already registered (by {old.build.__module__}."
                f"{old.build.__qualname__}); choose another name or pass replace=True"
            )
        doc = (fn.__doc__ or "").strip().split("\n\n")[0]
        _REGISTRY[name] = SystemSpec(
            name=name,
            build=fn,
            inputs=tuple(inputs),
            notebook=notebook,
            description=" ".join((description or doc).split()),
            in_results=in_results,
            needs=tuple(needs),
            train=train,
        )
        return fn

    return deco


def get_system(name: str) -> SystemSpec:
    """The registered system ``name``, or :class:`UnknownSystem` listing the known ones.
    (The paper's systems are registered when :mod:`avsc.experiments` is imported.)"""
    if name not in _REGISTRY:
        raise UnknownSystem(
            f"unknown system {name!r}; registered: {', '.join(_REGISTRY)} (a system of your "
            "own is registered with avsc.experiments.register_system; the command line "
            "imports its module with --module NAME)"
        )
    return _REGISTRY[name]


def systems() -> list[SystemSpec]:
    """Every registered system, in registration order (the paper's first)."""
    return list(_REGISTRY.values())


def unregister_system(name: str) -> None:
    """Remove a system registered by user code (tests, a notebook trying things)."""
    _REGISTRY.pop(name, None)
