"""Experiments: the systems registry and the strategies that train them (method.md section
6). Above training, evaluation and the models; below the notebooks and the command line,
which learn about systems from here."""

from avsc.experiments import systems as _builtin_systems  # noqa: F401 - registers the paper's
from avsc.experiments.collection import Results
from avsc.experiments.registry import (
    INPUTS,
    Parts,
    SystemSpec,
    SystemUsageError,
    UnknownSystem,
    get_system,
    register_system,
    systems,
    unregister_system,
)
from avsc.experiments.results import MissingArtifact, StrategyResult
from avsc.experiments.train import load_acoustic_encoder, train_system
from avsc.experiments.workspace import StoreSettingsWarning, Workspace

__all__ = [
    "INPUTS",
    "MissingArtifact",
    "Parts",
    "Results",
    "StoreSettingsWarning",
    "StrategyResult",
    "SystemSpec",
    "SystemUsageError",
    "UnknownSystem",
    "Workspace",
    "get_system",
    "load_acoustic_encoder",
    "register_system",
    "systems",
    "train_system",
    "unregister_system",
]
