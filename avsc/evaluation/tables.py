"""Results tables: one row per trained system beside the paper's figures (method.md section
9), per-class tables and confusion matrices of results. A result is anything with the
attributes of :class:`avsc.experiments.StrategyResult` (``system``, ``feature``,
``backbone``, ``metrics``, ``proba``, ``seconds``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from avsc.evaluation.metrics import confusion, per_class_table, probability_columns

#: The paper's numbers (method.md section 9): class-wise log loss and accuracy (%).
PAPER = pd.DataFrame(
    [
        ("audio_only", "fbank", None, 0.6968, 76.08),
        ("audio_only", "scalogram", None, 0.6325, 77.98),
        ("video_only", None, "resnet50", 0.3939, 87.03),
        ("video_only", None, "tf_efficientnetv2_s", 0.2731, 90.91),
        ("pipeline", "fbank", "resnet50", 0.3808, 88.87),
        ("pipeline", "fbank", "tf_efficientnetv2_s", 0.2146, 92.84),
        ("pipeline", "scalogram", "resnet50", 0.3506, 89.29),
        ("pipeline", "scalogram", "tf_efficientnetv2_s", 0.2055, 93.14),
        ("joint", "fbank", "resnet50", 0.2664, 91.13),
        ("joint", "fbank", "tf_efficientnetv2_s", 0.1788, 93.45),
        ("joint", "scalogram", "resnet50", 0.2495, 91.55),
        ("joint", "scalogram", "tf_efficientnetv2_s", 0.1517, 94.59),
        ("ablation_I", "scalogram", "tf_efficientnetv2_s", 0.2055, 93.14),
        ("ablation_II", "scalogram", "tf_efficientnetv2_s", 0.2144, 92.39),
        ("ablation_III", "scalogram", "tf_efficientnetv2_s", 0.1591, 94.31),
        ("ablation_IV", "scalogram", "tf_efficientnetv2_s", 0.1517, 94.59),
    ],
    columns=["system", "feature", "backbone", "paper_logloss", "paper_accuracy"],
)

#: Prior work on the same task (the paper's Table 5, evaluation-set figures where given).
PRIOR_WORK = pd.DataFrame(
    [
        ("DCASE 2021 Task 1B baseline (OpenL3 + MLP)", 0.658, 77.0),
        ("Best DCASE 2021 Task 1B system (evaluation set)", 0.195, 93.8),
        ("Chen, Wang, Zhang 2022 (joint, scalogram + EffNetV2-S)", 0.1517, 94.59),
    ],
    columns=["system", "logloss", "accuracy"],
)


def _labels(result) -> list[str]:
    return list(getattr(result, "labels", None) or probability_columns(result.proba))


def clip_columns(
    proba: pd.DataFrame, labels=None, n_resamples: int | None = None
) -> dict[str, float]:
    """The clip-level figures of a result's ``proba`` (a clip's decision: the mean of its
    segments' probabilities): class-wise log loss and accuracy (%) with their 95 % intervals
    (bootstrap over clips, stratified by class)."""
    from avsc.evaluation.metrics import clip_metrics
    from avsc.evaluation.uncertainty import interval

    labels = probability_columns(proba) if labels is None else list(labels)
    m = clip_metrics(proba, labels)
    kw = {} if n_resamples is None else {"n_resamples": n_resamples}
    ll = interval(proba, "logloss", level="clip", **kw)
    acc = interval(proba, "accuracy", level="clip", **kw)
    return {
        "clip_logloss": m["clip_logloss_classwise"],
        "clip_logloss_low": ll[0],
        "clip_logloss_high": ll[1],
        "clip_accuracy": 100 * m["clip_accuracy_classwise"],
        "clip_accuracy_low": 100 * acc[0],
        "clip_accuracy_high": 100 * acc[1],
    }


def results_table(results, paper: bool = True) -> pd.DataFrame:
    """One row per result: system, feature, backbone, class-wise log loss and accuracy (%)
    on 1-s segments (DCASE's official figures) with their 95 % intervals (bootstrap over
    evaluation clips, stratified by class: :mod:`avsc.evaluation.uncertainty`), the same at
    clip level (``clip_logloss``, ``clip_accuracy``: each clip decided by the mean of its
    segments' probabilities), training wall time, and (``paper``, for TAU Urban
    Audio-Visual Scenes 2021) the paper's figures beside them where the paper has that row.
    A result trained with several seeds (``train.seeds``) adds ``seeds`` and the mean and
    standard deviation (ddof 1) over them of both figures: the interval says how much the
    evaluation clips move a number, the standard deviation how much the training's
    randomness does."""
    from avsc.evaluation.uncertainty import interval

    rows = []
    for r in results:
        ll_low, ll_high = interval(r.proba, "logloss")
        acc_low, acc_high = interval(r.proba, "accuracy")
        rows.append(
            {
                "system": r.system,
                "feature": r.feature,
                "backbone": r.backbone,
                "logloss": r.metrics["logloss_classwise"],
                "logloss_low": ll_low,
                "logloss_high": ll_high,
                "accuracy": 100 * r.metrics["accuracy_classwise"],
                "accuracy_low": 100 * acc_low,
                "accuracy_high": 100 * acc_high,
                "logloss_overall": r.metrics["logloss_overall"],
                "accuracy_overall": 100 * r.metrics["accuracy_overall"],
                "train_seconds": round(r.seconds, 1),
                **_over_seeds(getattr(r, "seed_metrics", None) or {}),
                **clip_columns(r.proba, _labels(r)),
            }
        )
    df = pd.DataFrame(rows)
    if paper and len(df):
        df["paper_backbone"], df["paper_logloss"], df["paper_accuracy"] = zip(
            *[_paper_row(r.system, r.feature, r.backbone) for r in df.itertuples()], strict=True
        )
    return df


def _over_seeds(seed_metrics: dict) -> dict[str, float]:
    """Mean and standard deviation over seeds of the official figures (none for one seed)."""
    if len(seed_metrics) < 2:
        return {}
    ll = np.array([m["logloss_classwise"] for m in seed_metrics.values()])
    acc = 100 * np.array([m["accuracy_classwise"] for m in seed_metrics.values()])
    return {
        "seeds": len(ll),
        "logloss_seed_mean": ll.mean(),
        "logloss_seed_std": ll.std(ddof=1),
        "accuracy_seed_mean": acc.mean(),
        "accuracy_seed_std": acc.std(ddof=1),
    }


#: The comparisons the paper makes: (what, system A, system B, vary). ``vary`` says which
#: input differs between A and B ("feature": A on scalogram, B on fbank, and on every other
#: acoustic feature the results hold, a claim of its own; None: same inputs).
CLAIMS = (
    ("scalogram vs FBank", "audio_only", "audio_only", "feature"),
    ("scalogram vs FBank", "pipeline", "pipeline", "feature"),
    ("scalogram vs FBank", "joint", "joint", "feature"),
    ("joint vs pipeline", "joint", "pipeline", None),
    ("ablation II vs I", "ablation_II", "pipeline", None),
    ("ablation III vs II", "ablation_III", "ablation_II", None),
    ("ablation IV vs III", "joint", "ablation_III", None),
)


def claims_table(results, paper: bool = True) -> pd.DataFrame:
    """The paper's comparisons on this run: per pair of results (same evaluation clips), the
    difference A - B in class-wise log loss with its 95 % interval from resampling the same
    clips for both (:func:`avsc.evaluation.uncertainty.paired_interval`), the paper's
    difference, and a verdict: ``holds`` (same sign as the paper, interval excludes zero),
    ``reversed`` (opposite sign, interval excludes zero) or ``undecided`` (it includes zero).
    Without ``paper`` (another collection than TAU Urban Audio-Visual Scenes 2021) the
    paper's column is left out and the verdict says which is lower: ``A lower``, ``B lower``
    or ``undecided``."""

    by = {(r.system, r.feature, r.backbone): r for r in results}
    alias = {"pipeline": "ablation_I", "joint": "ablation_IV"}
    others = _other_features(results, "scalogram")
    rows = []
    for what, sa, sb, vary in CLAIMS:
        for (system, feature, backbone), a in by.items():
            if system != sa:
                continue
            if vary == "feature":
                if feature != "scalogram":
                    continue
                pairs = [(f, by.get((sb, f, backbone))) for f in others]
            else:
                pairs = [(feature, by.get((sb, feature, backbone)))]
            for feature_b, b in pairs:
                if b is None:
                    continue
                claim, ref = what, np.nan
                if vary == "feature" and feature_b != "fbank":  # a kind the paper never tried
                    claim = f"scalogram vs {_feature_short(feature_b)}"
                elif vary == "feature":
                    ref = _paper_row(sa, "scalogram", backbone)[1]
                    ref -= _paper_row(sb, "fbank", backbone)[1]
                else:
                    pa = _paper_row(
                        alias.get(sa, sa) if what.startswith("ablation") else sa, feature, backbone
                    )[1]
                    pb = _paper_row(
                        alias.get(sb, sb) if what.startswith("ablation") else sb, feature, backbone
                    )[1]
                    ref = pa - pb
                rows.append(_claim_row(claim, a, b, ref, paper))
    columns = ["claim", "A", "B", "logloss_diff", "diff_low", "diff_high"]
    columns += ["paper_diff", "verdict"] if paper else ["verdict"]
    return pd.DataFrame(rows, columns=columns)


def _claim_row(claim: str, a, b, ref: float, paper: bool) -> dict:
    """One row of :func:`claims_table`: A - B with its paired interval and the verdict
    (against the paper's difference ``ref`` where there is one)."""
    from avsc.evaluation.uncertainty import paired_interval

    diff, low, high = paired_interval(a.proba, b.proba, "logloss")
    if low <= 0 <= high:
        verdict = "undecided"
    elif not paper or np.isnan(ref):
        verdict = "A lower" if diff < 0 else "B lower"
    elif np.sign(diff) == np.sign(ref):
        verdict = "holds"
    else:
        verdict = "reversed"
    row = {
        "claim": claim,
        "A": a.name,
        "B": b.name,
        "logloss_diff": diff,
        "diff_low": low,
        "diff_high": high,
        "paper_diff": ref,
        "verdict": verdict,
    }
    if not paper:
        del row["paper_diff"]
    return row


def _other_features(results, a: str) -> list[str]:
    """The acoustic features of ``results`` other than ``a``: the registered order first
    (the paper's FBank), then any kind not registered in this process, by name."""
    from avsc.features.extractors import extractor_names

    have = {r.feature for r in results if isinstance(r.feature, str) and r.feature != a}
    order = [k for k in extractor_names() if k in have]
    return order + sorted(have - set(order))


def _feature_short(kind: str) -> str:
    """A feature kind's name in tables (its extractor's ``short``, else the kind)."""
    from avsc.features.extractors import extractor_names, get_extractor

    if kind not in extractor_names():
        return kind
    return get_extractor(kind).short or kind


def _paper_row(system: str, feature: str | None, backbone: str | None):
    """The paper's figures for the same system and feature: with the same backbone when the
    paper used it, else with its main backbone (EfficientNetV2-S), named in paper_backbone."""
    feature = None if pd.isna(feature) else feature
    backbone = None if pd.isna(backbone) else backbone
    ref = PAPER[(PAPER.system == system) & (PAPER.feature.fillna("") == (feature or ""))]
    if backbone is None:
        ref = ref[ref.backbone.isna()]
    else:
        same = ref[ref.backbone == backbone]
        ref = same if len(same) else ref[ref.backbone == "tf_efficientnetv2_s"]
    if not len(ref):
        return None, float("nan"), float("nan")
    row = ref.iloc[0]
    return row.backbone, row.paper_logloss, row.paper_accuracy


def confusion_of(result) -> np.ndarray:
    """The confusion matrix of a result's evaluate-subset segments."""
    p = result.proba[_labels(result)].to_numpy()
    return confusion(result.proba["label"].to_numpy(), p)


def per_class_of(results) -> pd.DataFrame:
    """Per-class log loss and accuracy (%) of each result with their 95 % intervals (bootstrap
    over the class's evaluation clips), on 1-s segments and (``clip_``) on the clips'
    decisions, one block of rows per system."""
    from avsc.evaluation.uncertainty import clip_table, per_class_intervals

    frames = []
    for r in results:
        labels = _labels(r)
        t = per_class_table(r.proba["label"].to_numpy(), r.proba[labels].to_numpy(), labels)
        ci = per_class_intervals(r.proba).set_index("label")
        t.insert(t.columns.get_loc("logloss") + 1, "logloss_low", t.index.map(ci["logloss_low"]))
        t.insert(t.columns.get_loc("logloss") + 2, "logloss_high", t.index.map(ci["logloss_high"]))
        t["accuracy"] *= 100  # %, like every table
        t["accuracy_low"] = 100 * t.index.map(ci["accuracy_low"])
        t["accuracy_high"] = 100 * t.index.map(ci["accuracy_high"])
        clips = clip_table(r.proba, labels, level="clip").groupby("label")
        cci = per_class_intervals(r.proba, level="clip").set_index("label")
        t["clip_logloss"] = t.index.map(clips["logloss"].mean())
        t["clip_logloss_low"] = t.index.map(cci["logloss_low"])
        t["clip_logloss_high"] = t.index.map(cci["logloss_high"])
        t["clip_accuracy"] = 100 * t.index.map(clips["correct"].mean())
        t["clip_accuracy_low"] = 100 * t.index.map(cci["accuracy_low"])
        t["clip_accuracy_high"] = 100 * t.index.map(cci["accuracy_high"])
        t.insert(0, "system", r.name)
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


#: how each known column reads in a table a person looks at (CSV files keep the raw names)
_NAMES = {
    "logloss_overall": "log loss (overall)",
    "accuracy_overall": "accuracy % (overall)",
    "paper_logloss": "paper log loss",
    "paper_accuracy": "paper accuracy %",
    "paper_backbone": "paper backbone",
    "train_seconds": "training s",
    "seconds": "s",
    "top1_before_ncm": "top-1 % before (nearest class mean)",
    "top1_after": "top-1 % after",
    "top1_after_ncm": "top-1 % after (nearest class mean)",
    "logloss_diff": "Δ log loss (A - B)",
    "paper_diff": "paper Δ log loss",
    "clip_logloss": "clip log loss (class-wise)",
    "clip_accuracy": "clip accuracy % (class-wise)",
}
OFFICIAL_LOGLOSS = "log loss (class-wise, official)"
OFFICIAL_ACCURACY = "accuracy % (class-wise, official)"


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """A table as a person reads it: log losses to 3 decimals, percentages to 1, absent
    values blank; in a results table the DCASE official figures (class-wise log loss and
    accuracy) named as such and first, each beside the paper's figure and the difference
    to it (``Δ``, this run minus the paper). The data itself (CSV) keeps every digit."""
    out = df.copy()
    if isinstance(out.columns, pd.MultiIndex):  # ("clips", "train") -> "clips: train"
        out.columns = [
            ": ".join(str(p) for p in c if str(p) and not str(p).startswith("Unnamed"))
            for c in out.columns
        ]
    results = "logloss_overall" in out.columns
    names = dict(_NAMES)
    names["logloss"] = OFFICIAL_LOGLOSS if results else "log loss"
    names["accuracy"] = OFFICIAL_ACCURACY if results else "accuracy %"
    intervals = (
        ("logloss", "{:.3f}"),
        ("accuracy", "{:.1f}"),
        ("diff", "{:+.3f}"),
        ("clip_logloss", "{:.3f}"),
        ("clip_accuracy", "{:.1f}"),
    )
    for metric, fmt in intervals:
        lo, hi = f"{metric}_low", f"{metric}_high"
        if {lo, hi} <= set(out.columns):
            name = {
                "logloss": "log loss",
                "accuracy": "accuracy",
                "diff": "Δ",
                "clip_logloss": "clip log loss",
                "clip_accuracy": "clip accuracy",
            }[metric]
            out[f"{name} 95 % CI"] = [
                f"{fmt.format(a)} to {fmt.format(b)}" for a, b in zip(out[lo], out[hi], strict=True)
            ]
            out = out.drop(columns=[lo, hi])
    for metric, fmt in (("logloss", "{:.3f}"), ("accuracy", "{:.1f}")):
        mean, std = f"{metric}_seed_mean", f"{metric}_seed_std"
        if {mean, std} <= set(out.columns):
            name = {"logloss": "log loss", "accuracy": "accuracy %"}[metric]
            out[f"{name} over seeds (mean ± std)"] = [
                f"{fmt.format(m)} ± {fmt.format(d)}" if pd.notna(m) else ""
                for m, d in zip(out[mean], out[std], strict=True)
            ]
            out = out.drop(columns=[mean, std])
    if {"logloss", "paper_logloss"} <= set(out.columns):
        out["Δ log loss"] = out["logloss"] - out["paper_logloss"]
    if {"accuracy", "paper_accuracy"} <= set(out.columns):
        out["Δ accuracy (points)"] = out["accuracy"] - out["paper_accuracy"]
    out = out.rename(columns=names)
    first = [
        OFFICIAL_LOGLOSS,
        "log loss 95 % CI",
        "paper log loss",
        "Δ log loss",
        "log loss over seeds (mean ± std)",
        OFFICIAL_ACCURACY,
        "accuracy 95 % CI",
        "accuracy % over seeds (mean ± std)",
        "paper accuracy %",
        "Δ accuracy (points)",
        "clip log loss (class-wise)",
        "clip log loss 95 % CI",
        "clip accuracy % (class-wise)",
        "clip accuracy 95 % CI",
    ]
    if results:
        ident = [
            c for c in out.columns if c not in first and not pd.api.types.is_numeric_dtype(out[c])
        ]
        ident = [c for c in ident if c != "paper backbone"]
        rest = [c for c in out.columns if c not in ident and c not in first]
        out = out[ident + [c for c in first if c in out.columns] + rest]
    if "verdict" in out.columns and "Δ 95 % CI" in out.columns:  # a claims table
        order = [
            "claim",
            "A",
            "B",
            "condition",
            "Δ log loss (A - B)",
            "Δ 95 % CI",
            "paper Δ log loss",
        ]
        out = out[
            [c for c in order if c in out.columns] + [c for c in out.columns if c not in order]
        ]
    shown = out.astype(object)
    for col in out.columns:
        if not pd.api.types.is_float_dtype(out[col]):
            continue
        signed = "Δ" in col
        if "log loss" in col:
            fmt = "{:+.3f}" if signed else "{:.3f}"
        elif "%" in col or "accuracy" in col or col == "training s" or col == "s":
            fmt = "{:+.1f}" if signed else "{:.1f}"
        else:
            fmt = "{:.3g}"
        shown[col] = [fmt.format(v) if pd.notna(v) else "" for v in out[col]]
    return shown.where(out.notna(), "")


def compare(results, a: str, b: str) -> list[str]:
    """One line per pair of results of systems ``a`` and ``b`` trained on the same feature and
    backbone: both official figures and the difference in log loss with its 95 % interval
    (the same clips resampled for both); a difference is called one only when the interval
    excludes zero."""
    by_key: dict[tuple, dict[str, object]] = {}
    for r in results:
        by_key.setdefault((r.feature, r.backbone), {})[r.system] = r
    lines = []
    for (feature, backbone), pair in by_key.items():
        if a not in pair or b not in pair:
            continue
        ra, rb = pair[a], pair[b]
        la, lb = ra.metrics["logloss_classwise"], rb.metrics["logloss_classwise"]
        aa, ab = 100 * ra.metrics["accuracy_classwise"], 100 * rb.metrics["accuracy_classwise"]
        what = " + ".join(v for v in (feature, backbone) if v)
        lines.append(
            f"{a} vs {b} ({what}): log loss {la:.3f} vs {lb:.3f}, "
            f"{_verdict(a, b, ra.proba, rb.proba)}; accuracy {aa:.1f} % vs {ab:.1f} %"
        )
    return lines


def compare_features(results, a: str = "scalogram", b: str | None = None) -> list[str]:
    """One line per system trained on both acoustic features ``a`` and ``b`` (same backbone):
    both official figures and the difference in log loss with its 95 % interval. Without
    ``b``, ``a`` against every other feature the results hold (FBank first, then any other
    registered kind)."""
    groups: dict[tuple, dict[str, object]] = {}
    for r in results:
        groups.setdefault((r.system, r.backbone), {})[r.feature] = r
    lines = []
    for other in [b] if b is not None else _other_features(results, a):
        for (system, backbone), pair in groups.items():
            if a not in pair or other not in pair:
                continue
            la = pair[a].metrics["logloss_classwise"]
            lb = pair[other].metrics["logloss_classwise"]
            aa = 100 * pair[a].metrics["accuracy_classwise"]
            ab = 100 * pair[other].metrics["accuracy_classwise"]
            where = f"{system}" + (f" ({backbone})" if backbone else "")
            verdict = _verdict(a, other, pair[a].proba, pair[other].proba)
            lines.append(
                f"{where}: {a} log loss {la:.3f} vs {other} {lb:.3f}, "
                f"{verdict}; accuracy {aa:.1f} % vs {ab:.1f} %"
            )
    return lines


def _verdict(a: str, b: str, proba_a, proba_b) -> str:
    """``difference -0.065 (95 % CI -0.090 to -0.041): joint lower`` or ``...: no clear
    difference`` when the interval includes zero."""
    from avsc.evaluation.uncertainty import paired_interval

    diff, low, high = paired_interval(proba_a, proba_b, "logloss")
    if low <= 0 <= high:
        call = "no clear difference"
    else:
        call = f"{a if diff < 0 else b} lower"
    return f"difference {diff:+.3f} (95 % CI {low:+.3f} to {high:+.3f}): {call}"


def robustness_view(table: pd.DataFrame, metric: str = "logloss") -> pd.DataFrame:
    """The robustness table (long form, :func:`avsc.experiments.robustness.robustness_table`)
    as a person reads it: one row per system, one column per condition, each cell the
    class-wise ``metric`` with its 95 % interval."""
    fmt = "{:.3f}" if metric == "logloss" else "{:.1f}"
    cell = [
        f"{fmt.format(v)} ({fmt.format(lo)} to {fmt.format(hi)})"
        for v, lo, hi in zip(
            table[metric], table[f"{metric}_low"], table[f"{metric}_high"], strict=True
        )
    ]
    wide = table.assign(cell=cell).pivot(index="name", columns="condition", values="cell")
    order = list(dict.fromkeys(table["condition"]))
    wide = wide.reindex(index=list(dict.fromkeys(table["name"])), columns=order)
    wide.columns.name = None
    return wide.reset_index().rename(columns={"name": "system"})
