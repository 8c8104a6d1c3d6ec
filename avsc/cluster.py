"""``avsc run --launcher slurm``: the notebook series with its trainings as cluster jobs.

Three steps, each through submitit (:mod:`avsc.launch`), from one waiting ``avsc run``:

1. **prepare**: one job runs the notebooks before the first training (01 data and
   features, 02 visual fine-tuning), as ``avsc run --only 01 02`` with the same settings.
2. **trainings**: one job per system of the series (:func:`training_plan`: what notebooks
   03, 04, 05 and 08 train, for the collection's features, backbones and modalities), each
   training exactly as its notebook would (:meth:`avsc.workflow.Context.train` on the run's
   ``config.yaml``: every seed of ``train.seeds``, into ``results/``). A training is
   submitted once those it builds on are done: the audio-only system before the ones that
   start from its acoustic encoder (pipeline, ablations I and III, joint with
   ``model.ae_init: audio_only``), both unimodal systems before late fusion, joint before
   its distilled student. A training that fails is named; those built on it are not run.
3. **collect**: once all are done, one job runs the series from 03 (``avsc run --from 03``):
   the notebooks find every training finished and reload it, and make the tables and
   figures.

Every job's output and record is in ``runs/<profile>/jobs/<step>/`` (``log.txt``,
``point.json``). A rerun skips what finished (the prepare step's notebooks reload their
store; finished trainings are not submitted again)."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from avsc.launch import check_launcher, point_status, run_submitit, yaml_value
from avsc.runconfig import RunError, resolve, series_of

#: the notebooks before the first one that trains (the prepare step)
PREPARE = ("01", "02")
#: the first notebook of the collect step
COLLECT_FROM = "03"


@dataclasses.dataclass(frozen=True)
class Training:
    system: str
    feature: str | None
    backbone: str | None
    after: tuple[str, ...] = ()  # the trainings (names) it builds on

    @property
    def name(self) -> str:
        from avsc.experiments import get_system

        return get_system(self.system).result_name(self.feature, self.backbone)


def training_plan(params: dict[str, Any]) -> list[Training]:
    """The trainings of the series under ``params`` (a run's resolved parameters), in the
    order its notebooks train them, for the features, backbones and modalities of its
    feature store (made by the prepare step), each with the trainings it builds on."""
    from avsc.config import config_of
    from avsc.experiments import get_system
    from avsc.features import FeatureStore

    s = series_of(params)
    store = FeatureStore(params["cache_dir"])
    have = set(store.modalities)
    feats = [f for f in s.features if f in store.features] if "audio" in have else []
    backs = list(s.backbones) if "video" in have else []
    wanted: list[tuple[str, str | None, str | None]] = []
    wanted += [("audio_only", f, None) for f in feats]  # notebook 03
    wanted += [("video_only", None, b) for b in backs]
    for f in feats:  # 04
        for b in backs:
            wanted += [("pipeline", f, b), ("joint", f, b), ("late_fusion", f, b)]
    if s.ablation_feature in feats and s.ablation_backbone in backs:  # 05
        f, b = s.ablation_feature, s.ablation_backbone
        wanted += [("ablation_II", f, b), ("ablation_III", f, b)]
    if s.main_feature in feats and s.main_backbone in backs:  # 08
        wanted += [(n, s.main_feature, s.main_backbone) for n in ("joint_dropout", "joint_kd")]
    cfg = config_of({"experiment": params.get("experiment") or {}})
    plan: list[Training] = []
    names: set[str] = set()
    for system, f, b in wanted:
        spec = get_system(system)
        if not set(spec.modalities) <= have:
            continue
        deps = list(spec.needs)
        if spec.takes("audio_checkpoint") and _starts_from_audio_only(spec, cfg):
            deps.append("audio_only")
        after = []
        for dep in dict.fromkeys(deps):
            other = get_system(dep)
            dep_name = other.result_name(f, b)
            if dep_name in names:
                after.append(dep_name)
        t = Training(system, f, b, tuple(after))
        if t.name not in names:
            plan.append(t)
            names.add(t.name)
    return plan


class _FromAudioOnly(Exception):
    pass


def _starts_from_audio_only(spec, cfg) -> bool:
    """Whether the system's factory asks for the trained audio-only system's acoustic
    encoder under ``cfg`` (asked of the factory itself: no visual encoder is built)."""
    from avsc.experiments.registry import Parts

    def pretrained():
        raise _FromAudioOnly

    try:
        spec.build(Parts(cfg, 2, n_bins=8, visual=None, pretrained=pretrained))
    except _FromAudioOnly:
        return True
    except Exception:  # got past that choice (e.g. to the visual encoder it was not given)
        return False
    return False


def run_series_on_cluster(
    profile: str,
    overrides: dict[str, Any],
    launcher: str,
    slurm: dict[str, Any],
    runs_root: str | os.PathLike = "runs",
    figures_root: str | os.PathLike = "figures",
    data_dir: str | None = None,
    cache_dir: str | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    preflight: bool = True,
    name: str | None = None,
) -> dict[str, dict[str, Any]]:
    """The three steps of the module docstring; each job's record by step name (``prepare``,
    the trainings' names, ``collect``). A step that fails stops the run with a
    :class:`RunError` naming it (and, for trainings, every one that failed)."""
    check_launcher(launcher)  # before anything is written
    params = resolve(
        profile, overrides, Path(runs_root), Path(figures_root), data_dir, cache_dir, name=name
    )
    run_dir = Path(params["run_dir"])
    jobs_root = run_dir / "jobs"
    base = [sys.executable, "-m", "avsc", "run", "--profile", profile]
    base += [
        "--runs",
        str(Path(runs_root).resolve()),
        "--figures",
        str(Path(figures_root).resolve()),
    ]
    for opt, value in (("--name", name), ("--data", data_dir), ("--cache", cache_dir),
                       ("--notebooks", notebooks_dir)):  # fmt: skip
        if value:
            base += [opt, str(Path(value).resolve()) if opt != "--name" else value]
    if not preflight:
        base.append("--no-preflight")
    params_args = [a for k, v in overrides.items() for a in ("-p", f"{k}={yaml_value(v)}")]
    env: dict[str, str] = {}
    records: dict[str, dict[str, Any]] = {}

    def step(items: dict[str, list[str]], after=None, what="step") -> None:
        done = [k for k in items if point_status(jobs_root / k).get("status") == "done"]
        todo = {k: v for k, v in items.items() if k not in done}
        for k in done:
            print(f"[avsc run {profile}] {k}: finished before", flush=True)
        got = run_submitit(launcher, f"{profile}", slurm, todo, jobs_root, env, after, what)
        records.update(got)
        failed = {k: r.get("error") for k, r in got.items() if r["status"] != "done"}
        if failed:
            listed = "; ".join(f"{k}: {e}" for k, e in failed.items())
            raise RunError(
                f"{what}(s) failed: {listed} (logs in {jobs_root}/<name>/log.txt; rerun the "
                "same command to go on: finished ones are kept)"
            )

    step({"prepare": [*base, "--only", *PREPARE, *params_args]}, what="step")
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise RunError(f"{config}: missing after the prepare step (see {jobs_root}/prepare)")
    plan = training_plan(params)
    code = "from avsc.workflow import Context; Context.from_config({c!r}).train({s!r}, **{i!r})"
    trainings = {}
    for t in plan:
        inputs = {k: v for k, v in (("feature", t.feature), ("backbone", t.backbone)) if v}
        trainings[t.name] = [sys.executable, "-c", code.format(c=str(config), s=t.system, i=inputs)]
    step(trainings, {t.name: list(t.after) for t in plan}, what="training")
    step({"collect": [*base, "--from", COLLECT_FROM, *params_args]}, what="step")
    return records
