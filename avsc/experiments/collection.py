"""Collecting results: :class:`Results`, a folder of trained systems (``<root>/<name>``
each, one folder per seed), which trains a missing one on request, reloads finished ones,
and gathers the rows of a results table."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from avsc.config import FEATURE_KINDS
from avsc.experiments.registry import SystemSpec, get_system, systems
from avsc.experiments.results import MissingArtifact, StrategyResult
from avsc.experiments.train import train_system


def command_hint(spec: SystemSpec, feature: str | None, backbone: str | None, root: Path) -> str:
    """How to make a missing result from the command line."""
    args = [f"avsc train {spec.name}"]
    if feature:
        args.append(f"--feature {feature}")
    if backbone:
        args.append(f"--backbone {backbone}")
    return f"train it first: {' '.join(args)} --cache STORE --out {root}"


class Results:
    """A folder of trained systems, ``<root>/<name>`` each (names from the registry): what
    ``avsc train --out ROOT`` writes and the notebooks read (``runs/<profile>/results``).
    ``hint(spec, feature, backbone, root)`` says how to make a missing one.

    Seeds: the run of ``primary_seed`` (the config's ``train.seed``) is ``<root>/<name>``, the
    run of any other seed ``s`` is ``<root>/seed<s>/<name>``, so that no seed's results ever
    overwrite another's. :meth:`load` attaches the metrics of every seed of ``seeds`` that has
    finished (``StrategyResult.seed_metrics``), for the tables' mean and standard deviation."""

    def __init__(
        self,
        root: str | os.PathLike,
        hint: Callable[[SystemSpec, str | None, str | None, Path], str] = command_hint,
        primary_seed: int = 0,
        seeds: Iterable[int] | None = None,
    ):
        self.root = Path(root)
        self.hint = hint
        self.primary_seed = int(primary_seed)
        self.seeds = [self.primary_seed] + [
            int(s) for s in seeds or () if int(s) != self.primary_seed
        ]

    def folder(
        self,
        system: str,
        feature: str | None = None,
        backbone: str | None = None,
        seed: int | None = None,
    ) -> Path:
        root = self.root
        if seed is not None and int(seed) != self.primary_seed:
            root = root / f"seed{int(seed)}"
        return root / StrategyResult.name_for(system, feature, backbone)

    def exists(
        self,
        system: str,
        feature: str | None = None,
        backbone: str | None = None,
        seed: int | None = None,
    ) -> bool:
        """Whether that system finished training here (its ``metrics.json`` is written last)."""
        return (self.folder(system, feature, backbone, seed) / "metrics.json").is_file()

    def load(
        self,
        system: str,
        feature: str | None = None,
        backbone: str | None = None,
        seed: int | None = None,
    ) -> StrategyResult:
        """A finished result (of ``seed``; default the primary one), or a
        :class:`MissingArtifact` saying what makes it."""
        spec = get_system(system)
        folder = self.folder(system, feature, backbone, seed)
        if not self.exists(system, feature, backbone, seed):
            which = "" if seed in (None, self.primary_seed) else f" with seed {seed}"
            raise MissingArtifact(
                f"{folder / 'metrics.json'} is missing: {spec.name} "
                f"({', '.join(v for v in (feature, backbone) if v) or 'no inputs'}) has not "
                f"finished training here{which}; {self.hint(spec, feature, backbone, self.root)}"
            )
        result = StrategyResult.load(folder)
        if seed in (None, self.primary_seed) and len(self.seeds) > 1:
            result.seed_metrics = {
                s: result.metrics
                if s == self.primary_seed
                else StrategyResult.load_metrics(self.folder(system, feature, backbone, s))
                for s in self.seeds
                if self.exists(system, feature, backbone, s)
            }
        return result

    def audio_checkpoint(self, feature: str, seed: int | None = None) -> Path:
        """The best checkpoint of the finished audio-only system for ``feature``: the
        pre-trained acoustic encoder of pipeline, joint and the ablations."""
        return self.load("audio_only", feature=feature, seed=seed).checkpoint

    @staticmethod
    def inputs(
        system: str, feature: str | None, backbone: str | None, config
    ) -> tuple[str | None, str | None]:
        """``(feature, backbone)`` with the defaults filled in (scalogram, the config's
        ``visual.backbone``) where ``system`` takes them, None where it does not."""
        spec = get_system(system)
        feature = (feature or FEATURE_KINDS[0]) if spec.takes("feature") else None
        backbone = (backbone or config.visual.backbone) if spec.takes("backbone") else None
        return feature, backbone

    def train(
        self,
        system: str,
        workspace,
        feature: str | None = None,
        backbone: str | None = None,
        audio_checkpoint: str | os.PathLike | None = None,
        resume: bool = True,
    ) -> StrategyResult:
        """Train ``system`` into its folder here (a finished run is reloaded; an interrupted
        one resumes). A pre-trained acoustic encoder, when the system needs one and
        ``audio_checkpoint`` is not given, is this folder's audio-only system for ``feature``
        (never trained behind the user's back: a missing one is a :class:`MissingArtifact`)."""
        spec = get_system(system)
        feature, backbone = self.inputs(system, feature, backbone, workspace.config)
        seed = workspace.config.train.seed
        if audio_checkpoint is None and spec.takes("audio_checkpoint"):
            feat = feature

            def audio_checkpoint() -> Path:  # looked up only if the factory asks for it
                return self.audio_checkpoint(feat, seed)

        def trained(other: str) -> Path:  # a system this one is built on, same seed, here
            f, b = self.inputs(other, feature, backbone, workspace.config)
            return self.load(other, f, b, seed).checkpoint

        return train_system(
            system,
            workspace.config,
            workspace.store,
            self.folder(system, feature, backbone, seed),
            feature=feature,
            backbone=backbone,
            audio_checkpoint=audio_checkpoint,
            workspace=workspace,
            resume=resume,
            trained=trained,
        )

    def train_seeds(
        self,
        system: str,
        workspace,
        seeds: Iterable[int] | None = None,
        feature: str | None = None,
        backbone: str | None = None,
        audio_checkpoint: str | os.PathLike | None = None,
        resume: bool = True,
    ) -> StrategyResult:
        """:meth:`train` once per seed of ``seeds`` (default this folder's), each into its
        own folder (finished seeds are reloaded); returns the primary seed's result with
        every seed's metrics attached."""
        done = {
            s: self.train(
                system, workspace.with_seed(s), feature, backbone, audio_checkpoint, resume
            )
            for s in (seeds if seeds is not None else self.seeds)
        }
        # the results as trained (under torchrun only rank 0 writes files: nothing re-read)
        first = done.get(self.primary_seed) or next(iter(done.values()))
        if len(done) > 1:
            first.seed_metrics = {s: r.metrics for s, r in done.items()}
        return first

    def collect(
        self,
        features: Iterable[str],
        backbones: Iterable[str],
        everything: bool = False,
        modalities: Iterable[str] = ("audio", "video"),
    ) -> list[StrategyResult]:
        """The results of a results table, in its order: the registered systems (only those
        ``in_results`` unless ``everything``) over ``features`` and ``backbones``, grouped by
        the inputs they take (audio-only, then video-only, then audio-visual systems), each
        group feature-major. A system the series makes (it names a notebook) must be there
        where the collection has its ``modalities``; one registered by user code appears when
        it has been trained."""
        features, backbones = list(features), list(backbones)
        have = set(modalities)
        groups: dict[tuple[bool, bool], list[SystemSpec]] = {}
        for spec in systems():
            if not set(spec.modalities) <= have:
                continue
            if spec.in_results or everything:
                key = (spec.takes("feature"), spec.takes("backbone"))
                groups.setdefault(key, []).append(spec)
        out = []
        for (by_feature, by_backbone), specs in groups.items():
            for f in features if by_feature else [None]:
                for b in backbones if by_backbone else [None]:
                    for spec in specs:
                        required = spec.notebook is not None and spec.in_results
                        if required or self.exists(spec.name, f, b):
                            out.append(self.load(spec.name, f, b))
        return out
