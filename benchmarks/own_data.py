#!/usr/bin/env python3
"""A user's own collection on this machine (issue 20, section 5): 400 five-second mono
44.1 kHz Ogg Vorbis clips, 10 classes, 5 folds (synthetic sound, written here).

    python benchmarks/own_data.py [--part preprocess|crossval|threads|all] [--quick]

* ``preprocess``: ``avsc preprocess`` of the audio-only collection (2 workers) against two
  floors measured the same way (2 processes, nothing written): decoding every file alone,
  and decoding plus the acoustic features alone. No frames are extracted.
* ``crossval``: ``avsc crossval audio_only`` over the 5 folds, 10 epochs per fold, batch 32,
  with the settings of the ``own`` profile (``train.fused_optimizer``): ``--jobs 3`` (three
  folds at once, one thread each, as the profile's notebook 09), then ``--jobs 1`` (one fold
  after the other, torch's default threads).
* ``threads``: seconds per training epoch (one fold, 2 epochs) with torch's default threads
  and with ``train.cpu_threads`` 1, each with and without ``OMP_WAIT_POLICY=PASSIVE``.

``--quick`` shrinks everything (40 clips, 1 epoch) to check that the script runs. Ends with one
``name: value`` line per figure. The machine is shared: compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

SR = 44100
SECONDS = 5.0


def write_collection(root: Path, classes: int, per_class: int, folds: int, seed: int = 0) -> Path:
    """``root/<class>/<source>-<k>.ogg`` (mono, 44.1 kHz, Ogg Vorbis) and ``root.csv``, the
    manifest with ``group`` (the source: 10 per class) and ``fold`` (sources dealt round the
    folds, so no group spans two). Each class: a band of noise and a pair of tones of its
    own; each source and clip: other gains, levels and onsets."""
    rng = np.random.default_rng(seed)
    n = int(SR * SECONDS)
    t = np.arange(n) / SR
    rows = []
    sources = 10 if per_class >= 10 else max(1, per_class)
    for c in range(classes):
        label = f"class {c:02d}"
        lo, hi = 200 + 300 * c, 600 + 450 * c
        for k in range(per_class):
            src = k % sources
            g = np.random.default_rng([seed, c, src])
            noise = rng.standard_normal(n)
            spec = np.fft.rfft(noise)
            f = np.fft.rfftfreq(n, 1 / SR)
            spec *= ((f > lo) & (f < hi)) * (0.5 + g.random()) + 0.05
            x = np.fft.irfft(spec, n)
            x = 0.1 * x / x.std()
            x += 0.05 * np.sin(2 * np.pi * (lo + 37 * src) * t) * (t > rng.random())
            path = root / label / f"src{src}-{k:03d}.ogg"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), x.astype(np.float32), SR, format="OGG", subtype="VORBIS")
            rows.append(
                {
                    "clip": f"{label}/src{src}-{k:03d}",
                    "audio": f"{root.name}/{label}/src{src}-{k:03d}.ogg",
                    "label": label,
                    "group": f"{label}/src{src}",
                    "fold": str(1 + src % folds),
                }
            )
    manifest = root.parent / f"{root.name}.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def _decode(path: str) -> int:
    x, _ = sf.read(path, dtype="float32", always_2d=True)
    return x.shape[0]


def _features(path: str) -> int:
    import warnings

    from threadpoolctl import threadpool_limits

    from avsc.features.audio import features_from_waveform, read_audio

    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, sr = read_audio(path)
        return len(features_from_waveform(x, sr, ("scalogram", "fbank"))["scalogram"])


def timed_map(fn, paths: list[str], workers: int) -> float:
    with ProcessPoolExecutor(workers) as ex:
        list(ex.map(fn, paths[:workers]))  # start the workers (and numba/scipy imports)
        t0 = time.perf_counter()
        list(ex.map(fn, paths, chunksize=4))
        return time.perf_counter() - t0


def avsc(*args: str, env: dict | None = None) -> tuple[float, str]:
    """Run ``avsc ARGS``; its wall time (start-up included) and its output."""
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "avsc", *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if res.returncode:
        raise SystemExit(f"avsc {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0, res.stdout


def part_preprocess(manifest: Path, work: Path, workers: int) -> dict[str, float]:
    df = pd.read_csv(manifest)
    paths = [str(manifest.parent / a) for a in df["audio"]]
    decode = timed_map(_decode, paths, workers)
    features = timed_map(_features, paths, workers)
    cache = work / "cache"
    wall, out = avsc("preprocess", "--data", str(manifest), "--cache", str(cache),
                     "--workers", str(workers), "--no-progress")  # fmt: skip
    pre = float(re.search(r"failed \(([0-9.]+) s\)", out).group(1))  # preprocess's own timer
    frames = (cache / "frames").exists()
    return {
        "clips": len(paths),
        "decode_floor_s": decode,
        "audio_floor_s": features,
        "preprocess_s": pre,
        "preprocess_command_s": wall,  # with Python's start-up and imports
        "preprocess_vs_decode_floor": pre / decode,
        "preprocess_vs_audio_floor": pre / features,
        "frames_extracted": float(frames),
    }


def own_settings(epochs: int) -> list[str]:
    return ["-p", f"train.max_epochs={epochs}", "-p", "train.batch_size=32",
            "-p", f"train.t0_epochs={epochs}", "-p", "train.select_window=3",
            "-p", "train.fused_optimizer=true"]  # fmt: skip


def part_crossval(work: Path, epochs: int, threads: int | None, jobs: int) -> dict[str, float]:
    out = work / f"cv-{threads}-{jobs}"
    extra = ["-p", f"train.cpu_threads={threads}"] if threads else []
    wall, _ = avsc("crossval", "audio_only", "--cache", str(work / "cache"), "--out", str(out),
                "--jobs", str(jobs), *own_settings(epochs), *extra)  # fmt: skip
    epoch_s = []
    for h in sorted(out.glob("fold*/audio_only_scalogram/history.csv")):
        epoch_s += list(pd.read_csv(h)["seconds"])
    table = pd.read_csv(out / "crossval_audio_only_scalogram.csv").set_index("fold")
    pooled = table.loc["pooled (out of fold)"]
    tag = f"jobs{jobs}"
    return {
        f"crossval_5fold_s_{tag}": wall,
        f"crossval_epoch_median_s_{tag}": float(np.median(epoch_s)),  # per process
        f"crossval_pooled_clip_accuracy_pct_{tag}": float(pooled["clip_accuracy"]),
        f"crossval_pooled_segment_logloss_{tag}": float(pooled["logloss"]),
    }


def part_threads(work: Path, epochs: int) -> dict[str, float]:
    """Seconds per epoch of fold 1 under four thread settings, in one run."""
    out = {}
    for threads in (None, 1):
        for policy in ("", "PASSIVE"):
            env = {"OMP_WAIT_POLICY": policy} if policy else {}
            dest = work / f"threads-{threads}-{policy or 'default'}"
            extra = ["-p", f"train.cpu_threads={threads}"] if threads else []
            avsc("train", "audio_only", "--cache", str(work / "cache"), "--out", str(dest),
                 "-p", "data.test_fold=1", *own_settings(epochs), *extra, env=env)  # fmt: skip
            h = pd.read_csv(dest / "audio_only_scalogram" / "history.csv")
            out[f"epoch_s_threads_{threads or 'default'}_{policy.lower() or 'spin'}"] = float(
                np.median(h["seconds"])
            )
    base = out["epoch_s_threads_default_spin"]
    for k in list(out):
        out[f"speedup_{k.removeprefix('epoch_s_')}"] = base / out[k]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="all", choices=["preprocess", "crossval", "threads", "all"])
    ap.add_argument("--quick", action="store_true", help="40 clips, 1 epoch: does it run?")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="train.cpu_threads of crossval")
    ap.add_argument(
        "--jobs",
        type=lambda t: [int(j) for j in t.split(",")],
        default=[3, 1],
        help="crossval --jobs, each timed in turn (default 3,1: the own profile's, then one "
        "fold after the other)",
    )
    ap.add_argument("--keep", help="work in this folder (kept) instead of a temporary one")
    args = ap.parse_args()
    per_class, epochs = (4, 1) if args.quick else (40, 10)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        manifest = work / "clips.csv"
        if not manifest.is_file():
            t0 = time.perf_counter()
            manifest = write_collection(work / "clips", 10, per_class, 5)
            print(f"wrote {10 * per_class} clips in {time.perf_counter() - t0:.0f} s", flush=True)
        figures: dict[str, float] = {}
        if args.part in ("preprocess", "all") or not (work / "cache" / "store.json").is_file():
            figures.update(part_preprocess(manifest, work, args.workers))
        if args.part in ("crossval", "all"):
            for jobs in args.jobs:
                figures.update(part_crossval(work, epochs, args.threads, jobs))
            if len(args.jobs) > 1:
                first, *rest = args.jobs
                for jobs in rest:
                    figures[f"crossval_speedup_jobs{first}_vs_jobs{jobs}"] = (
                        figures[f"crossval_5fold_s_jobs{jobs}"]
                        / figures[f"crossval_5fold_s_jobs{first}"]
                    )
        if args.part in ("threads", "all"):
            figures.update(part_threads(work, 2 if not args.quick else 1))
    print(json.dumps({"machine_cores": os.cpu_count()}))
    for k, v in figures.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
