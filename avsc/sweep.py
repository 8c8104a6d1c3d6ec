"""``avsc sweep``: many runs that differ in a few config keys, each a normal run in its own
folder, run here (a pool of ``--jobs`` processes) or on a Slurm cluster (one job per point,
through submitit), with one summary table.

A sweep spec (YAML, read with ``yaml.safe_load``)::

    name: lr_window              # the folder runs/<name>/ (default: the spec file's name)
    profile: smoke               # the base: its series settings and config
    base: {train.max_epochs: 4}  # overrides of every point (optional)
    grid:                        # every combination of these values
      train.lr: [0.01, 0.03]
      train.seed: [0, 1]
    points:                      # and/or points listed one by one (optional)
      - {train.lr: 0.1}
    run:                         # what each point runs (default: the whole series)
      train: {system: audio_only, feature: scalogram, cache: runs/smoke/cache}
      # series: {only: ["03", "04"]}
    reference: {train.lr: 0.01}  # the point the differences are against (default: first)
    launcher: local              # or slurm
    jobs: 2                      # local: points at once
    slurm: {partition: gpu, time: 240, gpus: 1, cpus: 8, mem: 32}  # minutes, GB

Each point is ``avsc run --profile P --runs runs/<sweep> --name <point> -p ...`` (or
``avsc train SYSTEM --cache C --out runs/<sweep>/<point>/results -p ...``) with its overrides;
its folder, named by what differs from the base (``train.lr=0.03__train.seed=1``), holds the
resolved ``config.yaml``, ``point.json`` (its overrides, command, status and time) and
``log.txt``. Every point's keys and values are checked before anything runs or is
submitted. A finished point is skipped on a rerun; a failed one is reported by name and the
others go on. ``summary.csv`` / ``summary.md`` list every point's results (class-wise accuracy
and log loss with 95 % intervals), the spread over seeds (points that differ only in
``train.seed``) and the paired difference against the reference point."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from avsc.config import ALIASES, SECTIONS, ConfigError, config_of, load_config_file
from avsc.launch import (
    POINT_FILE,
    SLURM_KEYS,
    check_launcher,
    point_status,
    run_local,
    run_submitit,
    yaml_value,
)
from avsc.runconfig import RunError, list_profiles, load_profile, resolve
from avsc.utils import atomic_path, atomic_write_json, exclusive_lock, granted_cpus

log = logging.getLogger(__name__)

#: the spec's keys
SPEC_KEYS = (
    "name",
    "profile",
    "base",
    "grid",
    "points",
    "run",
    "reference",
    "launcher",
    "jobs",
    "slurm",
)
LAUNCHERS = ("local", "slurm", "submitit-local")


class SweepError(RuntimeError):
    """A sweep spec or grid that cannot run; names the key, point or setting."""


@dataclasses.dataclass
class Point:
    name: str
    differs: dict[str, Any]  # what differs from the base: the folder name
    overrides: dict[str, Any]  # the base's overrides and the point's


@dataclasses.dataclass
class Sweep:
    name: str
    profile: str
    base: dict[str, Any]
    points: list[Point]
    run: dict[str, Any]
    reference: str
    launcher: str = "local"
    jobs: int = 1
    slurm: dict[str, Any] = dataclasses.field(default_factory=dict)
    keys: tuple[str, ...] = ()  # the keys the points differ in

    @property
    def trains(self) -> dict[str, Any] | None:
        return self.run.get("train")


# ------------------------------------------------------------------------------ the spec


def parse_grid(items: list[str] | None) -> dict[str, list[Any]]:
    """``["train.lr=[0.01,0.03]", "train.seed=0"]`` -> ``{"train.lr": [0.01, 0.03],
    "train.seed": [0]}``: values as YAML, a single value a list of one."""
    grid: dict[str, list[Any]] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--grid {item!r}: expected KEY=[VALUE, ...]")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SweepError(f"--grid {key.strip()}: not YAML: {text!r}") from exc
        grid[key.strip()] = value if isinstance(value, list) else [value]
    return grid


def load_sweep(
    spec: str | os.PathLike | None = None,
    grid: dict[str, list[Any]] | None = None,
    base: dict[str, Any] | None = None,
    **settings: Any,
) -> Sweep:
    """The sweep of the spec file ``spec`` (or of ``settings`` alone), with ``grid`` (from
    ``--grid``) added to its grid, ``base`` (``-p``, ``--config``) over its base, and
    ``settings`` (``profile``, ``name``, ``run``, ``launcher``, ``jobs``...: the command
    line's) over its own. Every point's overrides are checked here, before anything runs:
    an unknown key or a value of the wrong type is a :class:`SweepError` naming the key (and
    the point)."""
    raw: dict[str, Any] = {}
    if spec is not None:
        try:
            raw = load_config_file(spec)
        except ConfigError as exc:
            raise SweepError(str(exc)) from exc
        unknown = sorted(set(raw) - set(SPEC_KEYS))
        if unknown:
            raise SweepError(f"{spec}: unknown key(s) {unknown}; a sweep spec has {SPEC_KEYS}")
    raw.update({k: v for k, v in settings.items() if v is not None})
    where = str(spec) if spec is not None else "avsc sweep"
    name = raw.get("name") or (Path(spec).stem if spec is not None else None)
    if not name:
        raise SweepError(f"{where}: name the sweep (name: in the spec, or --name)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(name)):
        raise SweepError(f"{where}: name {name!r}: use letters, digits, '.', '_' and '-'")
    profile = raw.get("profile") or "smoke"
    if profile not in list_profiles():
        raise SweepError(f"{where}: profile {profile!r}: not one of {', '.join(list_profiles())}")
    base = {**_mapping(raw.get("base"), f"{where}: base"), **(base or {})}
    full_grid = {**_mapping(raw.get("grid"), f"{where}: grid"), **(grid or {})}
    for key, values in full_grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{where}: grid key {key}: expected a list of values, got {values!r}")
    listed = raw.get("points") or []
    if not isinstance(listed, list) or not all(isinstance(p, dict) for p in listed):
        raise SweepError(f"{where}: points: expected a list of mappings {{key: value}}")
    run = _mapping(raw.get("run"), f"{where}: run") or {"series": {}}
    if set(run) - {"series", "train"} or len(run) != 1:
        raise SweepError(f"{where}: run: expected one of series: {{...}} or train: {{...}}")
    if "train" in run:
        t = _mapping(run["train"], f"{where}: run.train")
        if not t.get("system") or not t.get("cache"):
            raise SweepError(f"{where}: run.train: needs system and cache (a feature store)")
    launcher = raw.get("launcher") or "local"
    if launcher not in LAUNCHERS:
        raise SweepError(f"{where}: launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    jobs = raw.get("jobs") or 1
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise SweepError(f"{where}: jobs: expected a whole number >= 1, got {jobs!r}")
    slurm = _mapping(raw.get("slurm"), f"{where}: slurm")
    bad = sorted(set(slurm) - set(SLURM_KEYS))
    if bad:
        raise SweepError(f"{where}: slurm: unknown setting(s) {bad}; known: {sorted(SLURM_KEYS)}")

    combos = [dict(zip(full_grid, values, strict=True)) for values in _product(full_grid)]
    asked = [c for c in combos if c] + [dict(p) for p in listed]
    asked = [{ALIASES.get(k, k): v for k, v in p.items()} for p in asked] or [{}]  # {}: the base
    keys = tuple(dict.fromkeys(k for p in asked for k in p))
    points = [Point(point_name(d), d, {**base, **d}) for d in asked]
    names = [p.name for p in points]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SweepError(f"{where}: the same point twice: {', '.join(dup)}")
    ref = raw.get("reference")
    if ref is None:
        reference = points[0].name
    else:  # a point's name, or what differs in it (in any order)
        if not isinstance(ref, str):
            ref = {ALIASES.get(k, k): v for k, v in _mapping(ref, f"{where}: reference").items()}
        found = [p.name for p in points if ref in (p.name, p.differs)]
        if not found:
            raise SweepError(
                f"{where}: reference {ref!r} is not one of the points ({', '.join(names)})"
            )
        reference = found[0]
    sweep = Sweep(str(name), profile, base, points, run, reference, launcher, jobs, slurm, keys)
    for point in points:
        check_point(sweep, point)
    return sweep


def _product(grid: dict[str, list[Any]]):
    if not grid:
        return []
    return itertools.product(*grid.values())


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{where}: expected a mapping, got {value!r}")
    return dict(value)


def point_name(differs: dict[str, Any]) -> str:
    """A point's folder name: what differs from the base, ``key=value`` joined by ``__``
    (``train.lr=0.03__train.seed=1``), characters a file name should not hold as ``-``;
    ``base`` for none."""
    if not differs:
        return "base"
    parts = []
    for key, value in differs.items():
        if isinstance(value, list | tuple):
            text = "-".join(_text(v) for v in value)
        elif isinstance(value, dict):
            text = "-".join(f"{k}-{_text(v)}" for k, v in value.items())
        else:
            text = _text(value)
        parts.append(f"{key}={text}")
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", "__".join(parts))[:200]


def _text(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_point(sweep: Sweep, point: Point) -> dict[str, Any]:
    """The point's resolved config (what its ``config.yaml`` holds), or a
    :class:`SweepError` naming the point and the key that is unknown or of the wrong type."""
    try:
        if sweep.trains is None:
            return resolve(sweep.profile, point.overrides, Path("runs"), Path("figures"))
        experiment = dict(load_profile(sweep.profile)["experiment"])
        for key, value in point.overrides.items():
            section, _, rest = key.partition(".")
            if not rest or section not in SECTIONS:
                raise RunError(
                    f"unknown config key {key!r}: a sweep of trainings takes config keys "
                    f"(section.key with section in {sorted(SECTIONS)})"
                )
            experiment[key] = value
        return {"experiment": config_of({"experiment": experiment}).to_dict()}
    except (RunError, ValueError) as exc:
        raise SweepError(f"sweep {sweep.name}: point {point.name}: {exc}") from exc


# ------------------------------------------------------------------------------ running


def command(sweep: Sweep, point: Point, root: Path, figures: Path = Path("figures")) -> list[str]:
    """The ``avsc`` command line of one point (a series point's figures and tables go to
    ``<figures>/<sweep>/<point>``)."""
    folder = root / point.name
    params = [a for k, v in point.overrides.items() for a in ("-p", f"{k}={yaml_value(v)}")]
    cmd = [sys.executable, "-m", "avsc"]
    if sweep.trains is not None:
        t = sweep.trains
        cmd += ["train", str(t["system"]), "--cache", str(t["cache"])]
        cmd += ["--out", str(folder / "results")]
        for opt in ("feature", "backbone", "module"):
            if t.get(opt):
                cmd += [f"--{opt}", str(t[opt])]
        return cmd + params
    series = sweep.run.get("series") or {}
    cmd += ["run", "--profile", sweep.profile, "--runs", str(root), "--name", point.name]
    cmd += ["--figures", str(figures / sweep.name)]
    if series.get("only"):
        cmd += ["--only", *[str(n) for n in series["only"]]]
    for opt in ("data", "cache"):
        if series.get(opt):
            cmd += [f"--{opt}", str(series[opt])]
    return cmd + params


@dataclasses.dataclass
class SweepOutcome:
    folder: Path
    done: list[str]
    skipped: list[str]  # finished in an earlier run
    failed: dict[str, str]  # point -> its error
    summary: Any = None  # the summary table (pandas)


def run_sweep(
    sweep: Sweep, runs_root: str | os.PathLike = "runs", figures_root: str | os.PathLike = "figures"
) -> SweepOutcome:
    """Run every point not finished yet with the sweep's launcher, then write the summary.
    One sweep per folder at a time (a lock); a failed point is named and the others go on."""
    check_launcher(sweep.launcher)  # before anything is written
    root = (Path(runs_root) / sweep.name).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / ".sweep.lock", f"sweep folder {root}"):
        _check_same_sweep(root, sweep)
        todo, skipped = [], []
        for point in sweep.points:
            if point_status(root / point.name).get("status") == "done":
                skipped.append(point.name)
            else:
                todo.append(point)
        share = _thread_share(sweep)
        for point in todo:
            point.overrides = {**share, **point.overrides}
            _write_config(sweep, point, root / point.name)
        from avsc.training.tracking import HPARAMS_ENV

        env = {HPARAMS_ENV: ",".join(sweep.keys)}  # TensorBoard's HParams view lists them
        figures = Path(figures_root).resolve()
        commands = {p.name: command(sweep, p, root, figures) for p in todo}
        if todo:
            log.info(
                "sweep %s: %d point(s) to run, %d finished before (%s launcher)",
                sweep.name, len(todo), len(skipped), sweep.launcher,
            )  # fmt: skip
        if sweep.launcher == "local":
            records = run_local(commands, root, env, sweep.jobs)
        else:
            records = run_submitit(sweep.launcher, sweep.name, sweep.slurm, commands, root, env)
        failed = {
            n: r.get("error") or "failed" for n, r in records.items() if r["status"] != "done"
        }
        done = [n for n, r in records.items() if r["status"] == "done"]
        outcome = SweepOutcome(root, done, skipped, failed)
        outcome.summary = write_summary(root, sweep)
        return outcome


def _thread_share(sweep: Sweep) -> dict[str, Any]:
    """Points run at once on this machine share its cores: ``train.cpu_threads`` = cores /
    jobs for each (unless the sweep sets it; recorded in each point's config), as ``avsc
    crossval --jobs`` does."""
    if sweep.launcher != "local" or sweep.jobs < 2:
        return {}
    if any("train.cpu_threads" in p.overrides for p in sweep.points):
        return {}
    return {"train.cpu_threads": max(1, granted_cpus() // sweep.jobs)}


def _write_config(sweep: Sweep, point: Point, folder: Path) -> None:
    """A training point's resolved ``config.yaml`` (a series point's is written by its
    ``avsc run``, as for any run) and the point's overrides in ``point.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    if sweep.trains is not None:
        resolved = {"profile": sweep.profile, **check_point(sweep, point)}
        with atomic_path(folder / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(resolved, sort_keys=True), encoding="utf-8")
    record = point_status(folder)
    record.update(point=point.name, differs=point.differs, overrides=point.overrides)
    record.setdefault("status", "pending")
    atomic_write_json(folder / POINT_FILE, record)


def _check_same_sweep(root: Path, sweep: Sweep) -> None:
    """A sweep folder holds one sweep: a second, other one into it is refused."""
    meta = root / "sweep.json"
    mine = {
        "name": sweep.name,
        "profile": sweep.profile,
        "run": sweep.run,
        "base": sweep.base,
    }
    if meta.is_file():
        theirs = json.loads(meta.read_text(encoding="utf-8"))
        if {k: theirs.get(k) for k in mine} != json.loads(json.dumps(mine)):
            raise SweepError(
                f"{root} holds another sweep (profile {theirs.get('profile')}, run "
                f"{theirs.get('run')}, base {theirs.get('base')}); choose another name or --runs"
            )
        earlier = [p for p in theirs.get("points", []) if p not in {q.name for q in sweep.points}]
    else:
        earlier = []
    points = earlier + [p.name for p in sweep.points]  # a grid extended keeps the points run
    atomic_write_json(meta, {**mine, "points": points, "reference": sweep.reference})


# ------------------------------------------------------------------------------ summary


def write_summary(root: str | os.PathLike, sweep: Sweep | None = None):
    """``summary.csv`` and ``summary.md`` in the sweep folder ``root`` (see
    :func:`summary_table`); returns the table."""
    table = summary_table(root, sweep)
    root = Path(root)
    with atomic_path(root / "summary.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(root / "summary.md") as tmp:
        tmp.write_text(_markdown(table, root), encoding="utf-8")
    return table


def summary_table(root: str | os.PathLike, sweep: Sweep | None = None):
    """One row per point and trained result (``results/<name>``): the values of the keys
    the points differ in, the class-wise accuracy (%) and log loss with their 95 % intervals
    (bootstrap over evaluation clips), the mean and standard deviation over seeds (points
    that differ only in ``train.seed``), and the paired difference against the reference
    point's result of the same name (its 95 % interval resamples the same clips for both).
    A point that has no result yet is listed with its status."""
    import numpy as np
    import pandas as pd

    from avsc.evaluation.uncertainty import interval, paired_interval

    root = Path(root)
    meta = json.loads((root / "sweep.json").read_text(encoding="utf-8"))
    names = meta["points"]
    reference = sweep.reference if sweep is not None else meta.get("reference", names[0])
    records = {n: point_status(root / n) for n in names}
    keys = list(dict.fromkeys(k for r in records.values() for k in r.get("differs", {})))

    def results(name: str) -> dict[str, Path]:
        folder = root / name / "results"
        found = sorted(p.parent for p in folder.glob("*/metrics.json"))
        return {p.name: p for p in found}

    ref_results = results(reference)
    ref_probas: dict[str, Any] = {}  # each reference result's proba.csv, read once
    rows = []
    for name in names:
        rec = records[name]
        found = results(name)
        base_row = {"point": name, **{k: rec.get("differs", {}).get(k) for k in keys}}
        if not found:
            rows.append({**base_row, "status": rec.get("status", "pending")})
            continue
        for result, folder in found.items():
            metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
            proba = pd.read_csv(folder / "proba.csv")
            row = {**base_row, "status": rec.get("status", "done"), "result": result}
            row["accuracy"] = 100 * metrics["accuracy_classwise"]
            lo, hi = interval(proba, "accuracy")
            row["accuracy_low"], row["accuracy_high"] = 100 * lo, 100 * hi
            row["logloss"] = metrics["logloss_classwise"]
            row["logloss_low"], row["logloss_high"] = interval(proba, "logloss")
            ref = ref_results.get(result)
            if ref is not None and name != reference:
                if result not in ref_probas:
                    ref_probas[result] = pd.read_csv(ref / "proba.csv")
                ref_proba = ref_probas[result]
                try:
                    d, lo, hi = paired_interval(proba, ref_proba, "accuracy")
                    row.update(vs_reference_accuracy=100 * d, vs_ref_acc_low=100 * lo)
                    row["vs_ref_acc_high"] = 100 * hi
                    d, lo, hi = paired_interval(proba, ref_proba, "logloss")
                    row.update(vs_reference_logloss=d, vs_ref_ll_low=lo, vs_ref_ll_high=hi)
                except ValueError:  # other evaluation clips: no pairing
                    pass
            row["seconds"] = rec.get("seconds")
            rows.append(row)
    table = pd.DataFrame(rows)
    for key in keys:  # the values as given (a whole seed stays 1, not 1.0 beside blanks)
        table[key] = pd.Series([row.get(key) for row in rows], dtype=object)
    if "train.seed" in table.columns and "accuracy" in table.columns:
        group = [k for k in keys if k != "train.seed"] + ["result"]
        filled = table[group].astype(str)
        spread = table.groupby([filled[c] for c in group], dropna=False, sort=False)
        for metric in ("accuracy", "logloss"):
            table[f"{metric}_seed_mean"] = spread[metric].transform("mean")
            table[f"{metric}_seed_sd"] = spread[metric].transform(
                lambda s: float(np.std(s, ddof=1)) if s.notna().sum() > 1 else np.nan
            )
        table["seeds"] = spread["accuracy"].transform(lambda s: int(s.notna().sum()))
    table.attrs["reference"] = reference
    return table


def sweep_view(table_or_root):
    """The summary to read (a notebook cell: ``sweep_view("runs/lr")``): the intervals as
    ``value [low, high]``, keys a point leaves at the base's value blank."""
    import pandas as pd

    table = table_or_root
    if not isinstance(table, pd.DataFrame):
        table = summary_table(table_or_root)
    if table.empty:
        return table
    show = pd.DataFrame({"point": table["point"]})
    for col in table.columns:
        if col in ("point",) or col.endswith(("_low", "_high")) or col.startswith("vs_ref_"):
            continue
        if col in ("accuracy", "logloss"):
            fmt = "{:.1f}" if col == "accuracy" else "{:.3f}"
            show[col] = [
                "" if pd.isna(v) else f"{fmt.format(v)} [{fmt.format(lo)}, {fmt.format(hi)}]"
                for v, lo, hi in zip(
                    table[col], table[f"{col}_low"], table[f"{col}_high"], strict=True
                )
            ]
        elif col in ("vs_reference_accuracy", "vs_reference_logloss"):
            short = "acc" if col.endswith("accuracy") else "ll"
            fmt = "{:+.1f}" if short == "acc" else "{:+.3f}"
            show[col] = [
                "" if pd.isna(v) else f"{fmt.format(v)} [{fmt.format(lo)}, {fmt.format(hi)}]"
                for v, lo, hi in zip(
                    table[col],
                    table[f"vs_ref_{short}_low"],
                    table[f"vs_ref_{short}_high"],
                    strict=True,
                )
            ]
        else:
            show[col] = table[col]
    show = show.astype(object).where(show.notna(), "")
    show.attrs = dict(table.attrs)
    return show


def _markdown(table, root: Path) -> str:
    """The summary as Markdown (:func:`sweep_view`), with what produced it."""
    if table.empty:
        return f"# Sweep {root.name}\n\n(no points)\n"
    show = sweep_view(table)
    ref = table.attrs.get("reference", "")
    head = (
        f"# Sweep {root.name}\n\nClass-wise accuracy (%) and log loss on the evaluation "
        "subset with 95 % intervals (bootstrap over clips); `vs_reference_*`: the paired "
        f"difference against point `{ref}` (same clips resampled for both); `*_seed_*`: "
        "mean and standard deviation over the points that differ only in `train.seed`.\n\n"
    )
    return head + show.to_markdown(index=False, floatfmt=".3g") + "\n"
