"""Missing and asynchronous modalities: one evaluation protocol for every system (method.md
section 10, the paper's section 5 and its open problem).

Conditions, on the evaluation split (fold1_evaluate):

* ``full``: both modalities; exactly the ordinary metrics (no mask is applied at all).
* ``video missing r``: the video of a fraction r of the evaluation **clips** is absent (every
  segment of those clips), for each r in ``robustness.missing_rates``; ``audio missing r``
  likewise. Which clips: a seeded permutation of the sorted clip names
  (``robustness.seed``), the same for every system, and nested (the clips of 25 % are among
  those of 50 %). Audio and video use independent permutations.
* ``asynchronous``: each segment's acoustic frames paired with the image of another segment
  of the same clip (segment ``s`` with ``(s + k) mod n``, a seeded shift ``k`` in
  ``1 .. n-1`` per clip).

What "absent" means is the system's: zeros in place of the branch (the paper's systems), its
learned missing-modality embedding (``joint_dropout``, ``joint_kd``), the other modality's
prediction (``late_fusion``); a system left with no modality predicts the uniform
distribution. Each condition's class-wise log loss and accuracy carry the 95 % bootstrap
interval over clips of :mod:`avsc.evaluation.uncertainty`. Branch outputs are computed once
per system and decided once per condition.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from avsc.config import RobustnessConfig
from avsc.evaluation.inference import decide_segments, encode_segments
from avsc.evaluation.metrics import dcase_metrics
from avsc.evaluation.tables import clip_columns
from avsc.evaluation.uncertainty import interval
from avsc.experiments.inputs import training_inputs
from avsc.experiments.predict import system_from_checkpoint
from avsc.experiments.results import StrategyResult
from avsc.experiments.train import probability_frame
from avsc.experiments.workspace import Workspace

_STREAM = {"audio": 1, "video": 2, "asynchronous": 3}  # independent seeded draws


@dataclass(frozen=True)
class Condition:
    """One evaluation condition: ``modality`` missing (``audio``/``video``) for a fraction
    ``rate`` of the clips, ``asynchronous``, or ``full``."""

    name: str
    modality: str | None = None
    rate: float = 0.0


def conditions(rates: Iterable[float] = RobustnessConfig().missing_rates) -> list[Condition]:
    """``full``, then video missing and audio missing at each nonzero rate, then
    ``asynchronous``."""
    out = [Condition("full")]
    for modality in ("video", "audio"):
        for r in sorted({float(r) for r in rates if r > 0}):
            out.append(Condition(f"{modality} missing {100 * r:g} %", modality, r))
    out.append(Condition("asynchronous", "asynchronous"))
    return out


def missing_clips(clips: Iterable[str], rate: float, modality: str, seed: int = 0) -> set[str]:
    """The clips whose ``modality`` is absent at missing rate ``rate``: the first
    ``round(rate * n)`` of a seeded permutation of the sorted clip names (nested in ``rate``,
    the same for every system)."""
    names = np.array(sorted(set(clips)))
    order = np.random.default_rng([seed, _STREAM[modality]]).permutation(len(names))
    return set(names[order[: int(round(rate * len(names)))]].tolist())


def asynchronous_order(clip: np.ndarray, segment: np.ndarray, seed: int = 0) -> np.ndarray:
    """For rows ``(clip, segment)``: the row whose video each row is paired with, the segment
    ``(s + k) mod n`` of the same clip (its n segments present here), ``k`` drawn per clip in
    ``1 .. n-1`` (a clip with one segment keeps its own)."""
    df = pd.DataFrame({"clip": clip, "segment": segment, "row": np.arange(len(clip))})
    order = np.arange(len(clip))
    rng = np.random.default_rng([seed, _STREAM["asynchronous"]])
    for _, g in df.sort_values(["clip", "segment"]).groupby("clip", sort=True):
        n = len(g)
        k = int(rng.integers(1, n)) if n > 1 else 0
        rows = g["row"].to_numpy()
        order[rows] = rows[(np.arange(n) + k) % n]
    return order


def evaluate_conditions(
    model,
    segments,
    seg_table: pd.DataFrame,
    config: RobustnessConfig,
    batch_size: int = 64,
    device="cpu",
    n_resamples: int | None = None,
    labels: tuple[str, ...] | list[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Every condition of :func:`conditions` for ``model`` on ``segments`` (a
    ``SegmentSamples`` whose rows are ``seg_table``'s: ``filename``, ``clip``, ``segment``,
    ``label``; ``labels`` names the model's outputs, default ``0 .. C-1``). Returns one
    row per condition (``condition``, ``modality``, ``rate``,
    ``clips_affected``, class-wise ``logloss`` and ``accuracy`` (%) with their 95 % intervals,
    overall figures) and each condition's per-segment probabilities."""
    enc = encode_segments(model, segments, batch_size, device)
    seg = seg_table.iloc[enc.index].reset_index(drop=True)
    clip = seg["clip"].to_numpy()
    kwargs = {} if n_resamples is None else {"n_resamples": n_resamples}
    rows, probas = [], {}
    for c in conditions(config.missing_rates):
        masks: dict[str, np.ndarray] = {}
        affected = 0
        if c.modality in ("audio", "video"):
            gone = missing_clips(clip, c.rate, c.modality, config.seed)
            masks[f"{c.modality}_missing"] = np.isin(clip, list(gone))
            affected = len(gone)
        elif c.modality == "asynchronous":
            masks["video_order"] = asynchronous_order(clip, seg["segment"].to_numpy(), config.seed)
            affected = len(set(clip))
        p = decide_segments(model, enc, device=device, **masks)
        names = list(labels) if labels is not None else [str(k) for k in range(p.shape[1])]
        proba = probability_frame(seg, p, names)
        m = dcase_metrics(enc.label, p, n_classes=len(names))
        lo, hi = interval(proba, "logloss", **kwargs)
        alo, ahi = interval(proba, "accuracy", **kwargs)
        rows.append(
            {
                "condition": c.name,
                "modality": c.modality or "",
                "rate": c.rate,
                "clips_affected": affected,
                "logloss": m["logloss_classwise"],
                "logloss_low": lo,
                "logloss_high": hi,
                "accuracy": 100 * m["accuracy_classwise"],
                "accuracy_low": 100 * alo,
                "accuracy_high": 100 * ahi,
                "logloss_overall": m["logloss_overall"],
                "accuracy_overall": 100 * m["accuracy_overall"],
                **clip_columns(proba, names, n_resamples),
            }
        )
        probas[c.name] = proba
    return pd.DataFrame(rows), probas


def robustness_of(
    result: StrategyResult, ws: Workspace, n_resamples: int | None = None
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The protocol for one trained system (its best checkpoint, the workspace's evaluation
    split and ``robustness`` settings): :func:`evaluate_conditions`' rows with the system's
    ``name``, ``system``, ``feature`` and ``backbone`` in front, and its probabilities per
    condition."""
    model, _, _ = system_from_checkpoint(result.checkpoint)
    model.to(ws.device)
    _, evals = training_inputs(ws, model, result.feature, result.backbone)
    cfg = ws.config
    table, probas = evaluate_conditions(
        model,
        evals["evaluate"],
        ws.tables["evaluate"].segment_frame(),
        cfg.robustness,
        cfg.train.eval_batch_size,
        ws.device,
        n_resamples,
        ws.labels,
    )
    ident = {
        "name": result.name,
        "system": result.system,
        "feature": result.feature,
        "backbone": result.backbone,
    }
    for i, (k, v) in enumerate(ident.items()):
        table.insert(i, k, v)
    return table, probas


def robustness_table(
    results: Iterable[StrategyResult], ws: Workspace, n_resamples: int | None = None
) -> tuple[pd.DataFrame, dict[str, dict[str, pd.DataFrame]]]:
    """:func:`robustness_of` for each result: one table (systems x conditions, long form)
    and ``{result name: {condition: probabilities}}`` for :func:`robustness_comparisons`."""
    tables, probas = [], {}
    for r in results:
        t, p = robustness_of(r, ws, n_resamples)
        tables.append(t)
        probas[r.name] = p
    return pd.concat(tables, ignore_index=True), probas


def robustness_comparisons(
    table: pd.DataFrame,
    probas: dict[str, dict[str, pd.DataFrame]],
    against: str = "joint",
    conditions: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Each other audio-visual system minus ``against`` (same feature and backbone) in
    class-wise log loss, per condition (default: full, and each modality missing for every
    clip), with the 95 % interval from resampling the same clips for both, and a verdict:
    ``lower`` / ``higher`` (the interval excludes zero) or ``undecided``."""
    from avsc.evaluation.uncertainty import paired_interval

    names = table.drop_duplicates("name").set_index("name")
    wanted = list(conditions) if conditions is not None else None
    if wanted is None:
        top = table.loc[table["rate"] == table["rate"].max(), "condition"].unique().tolist()
        wanted = ["full", *top]
    rows = []
    for name, info in names.iterrows():
        if info["system"] == against or not (info["feature"] and info["backbone"]):
            continue
        base = names[
            (names["system"] == against)
            & (names["feature"] == info["feature"])
            & (names["backbone"] == info["backbone"])
        ]
        if base.empty:
            continue
        other = base.index[0]
        for c in wanted:
            diff, low, high = paired_interval(probas[name][c], probas[other][c], "logloss")
            verdict = "undecided" if low <= 0 <= high else ("lower" if diff < 0 else "higher")
            rows.append(
                {
                    "A": name,
                    "B": other,
                    "condition": c,
                    "logloss_diff": diff,
                    "diff_low": low,
                    "diff_high": high,
                    "verdict": verdict,
                }
            )
    return pd.DataFrame(rows)
