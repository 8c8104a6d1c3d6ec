#!/usr/bin/env python3
"""Are two runs of a profile the same? The proof that a change of code changes no result.

    python benchmarks/compare_runs.py BASE NEW [--profile demo]

BASE and NEW are checkouts (or any folders) holding ``runs/<profile>/`` and
``figures/<profile>/`` of the same profile, run on the same machine (the numbers depend on
the CPU's instruction set and the thread count: README, "Reproducing the demo"). Compared:

* every trained system: ``metrics.json`` (every key BASE has, times aside), ``proba.csv``
  byte for byte, ``history.csv`` (every column but seconds);
* every table (CSV): every column BASE has, times aside (NEW may add columns: listed);
* every figure (PNG) byte for byte; every notebook's ``metrics/*.json``.

Prints one line per difference and ends with ``name: value`` lines; exit status 1 when
anything BASE has differs in NEW.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import sys
from pathlib import Path

import pandas as pd

TIME = {"train_seconds", "seconds", "s", "preprocess_seconds", "checkpoint"}


def _strip(d):
    if isinstance(d, dict):
        return {k: _strip(v) for k, v in d.items() if k not in TIME}
    return d


def compare(base: Path, new: Path, profile: str) -> dict[str, str]:
    diffs: list[str] = []
    added: set[str] = set()
    runs, figs = Path("runs") / profile, Path("figures") / profile
    results = sorted((base / runs / "results").rglob("metrics.json"))
    same = 0
    for m in results:
        rel = m.relative_to(base)
        a, b = json.loads(m.read_text()), json.loads((new / rel).read_text())
        ok = all(a[k] == b.get(k) for k in a if k not in TIME)
        ok &= filecmp.cmp(m.parent / "proba.csv", new / rel.parent / "proba.csv", shallow=False)
        ha = pd.read_csv(m.parent / "history.csv")
        hb = pd.read_csv(new / rel.parent / "history.csv")
        cols = [c for c in ha.columns if c != "seconds"]
        ok &= list(hb.columns[: len(ha.columns)]) == list(ha.columns) and ha[cols].equals(hb[cols])
        added |= set(b) - set(a)
        same += ok
        if not ok:
            diffs.append(f"result differs: {rel.parent}")
    tables = sorted((base / figs).glob("*.csv"))
    same_t = 0
    for f in tables:
        a, b = pd.read_csv(f), pd.read_csv(new / figs / f.name)
        cols = [c for c in a.columns if c not in TIME]
        ok = set(cols) <= set(b.columns) and a[cols].equals(b[cols])
        same_t += ok
        if not ok:
            diffs.append(f"table differs: {f.name}")
        extra = [c for c in b.columns if c not in a.columns]
        if extra:
            print(f"{f.name}: {len(extra)} new column(s): {', '.join(extra)}")
    figures = sorted((base / figs).glob("*.png"))
    same_f = sum(filecmp.cmp(f, new / figs / f.name, shallow=False) for f in figures)
    diffs += [
        f"figure differs: {f.name}"
        for f in figures
        if not filecmp.cmp(f, new / figs / f.name, shallow=False)
    ]
    metrics = sorted((base / runs / "metrics").glob("*.json"))
    same_m = 0
    for f in metrics:
        a = _strip(json.loads(f.read_text()))
        b = _strip(json.loads((new / runs / "metrics" / f.name).read_text()))
        ok = _subset(a, b)
        same_m += ok
        if not ok:
            diffs.append(f"notebook metrics differ: {f.name}")
    for d in diffs:
        print(d)
    if added:
        print(f"new keys in metrics.json: {', '.join(sorted(added))}")
    return {
        "results_identical": f"{same}/{len(results)}",
        "tables_identical": f"{same_t}/{len(tables)}",
        "figures_identical": f"{same_f}/{len(figures)}",
        "notebook_metrics_identical": f"{same_m}/{len(metrics)}",
        "differences": str(len(diffs)),
    }


def _subset(a, b) -> bool:
    """Whether every key of ``a`` (recursively) has the same value in ``b``."""
    if isinstance(a, dict):
        return isinstance(b, dict) and all(k in b and _subset(v, b[k]) for k, v in a.items())
    return a == b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--profile", default="demo")
    args = ap.parse_args()
    out = compare(args.base, args.new, args.profile)
    for k, v in out.items():
        print(f"{k}: {v}")
    sys.exit(1 if out["differences"] != "0" else 0)


if __name__ == "__main__":
    main()
