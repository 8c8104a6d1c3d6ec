"""Deprecated: :mod:`avsc.experiments.strategies` is split into
:mod:`avsc.experiments.train` (training a system), :mod:`avsc.experiments.inputs` (what its
branches are fed) and :mod:`avsc.experiments.collection` (:class:`Results`). Kept for one
release; import from ``avsc.experiments`` or the new modules."""

import warnings

from avsc.experiments.collection import Results, command_hint
from avsc.experiments.inputs import training_inputs
from avsc.experiments.train import (
    check_modalities,
    load_acoustic_encoder,
    probability_frame,
    train_system,
    trainable_systems,
)

warnings.warn(
    "avsc.experiments.strategies is split into avsc.experiments.train, .inputs and "
    ".collection (or import from avsc.experiments); the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "Results",
    "check_modalities",
    "command_hint",
    "load_acoustic_encoder",
    "probability_frame",
    "train_system",
    "trainable_systems",
    "training_inputs",
]
