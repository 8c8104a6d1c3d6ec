#!/usr/bin/env python3
"""Preprocessing speed: seconds per clip for audio features and for frames, and the ratio of
full preprocessing time to the bare floor (reading and decoding only, no features).

    python benchmarks/preprocess.py [--clips-per-class 3] [--workers 1] [--quick]

Measures, in one run, on N synthetic 10-s clips (made by ``avsc synth``) and on the real
1280x720 TAU clips of ../shared/realdata/tau_av2021_video (their MP3 track is rewritten as a
48 kHz 24-bit WAV so that they go through the real TAU code path), and the filterbank
products of one synthetic clip, sparse (as avsc applies them) against dense, and the
resampling of a 10-s stereo clip from 44.1 and 48 kHz against scipy's resample_poly. Ends with one
``name: value`` line per figure. ``--quick`` (3 clips of 2 s per class, one timed run, no
real clips, no doubled set) checks that the script runs; the test command runs it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import av
import numpy as np
import pandas as pd
import soundfile as sf
from _common import peak_rss_mb  # benchmarks/ is on sys.path when run as a script

from avsc.config import ExperimentConfig, PreprocessConfig
from avsc.data.synth import make_synthetic_dataset
from avsc.data.tau import TAUDataset, write_metadata
from avsc.features.audio import features_from_waveform, read_audio, resample
from avsc.features.store import preprocess
from avsc.features.video import extract_frames

REAL = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "tau_av2021_video"


def floor_audio(path: Path) -> float:
    t = time.perf_counter()
    sf.read(str(path), dtype="float32", always_2d=True)
    return time.perf_counter() - t


def floor_video(path: Path) -> float:
    """Decode every frame (threaded, no colour conversion): the least any extractor must do."""
    t = time.perf_counter()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for _ in c.decode(s):
            pass
    return time.perf_counter() - t


def per_clip(root: Path, config: PreprocessConfig) -> dict[str, float]:
    """Median seconds per clip of each stage over every clip of ``root``."""
    ds = TAUDataset(root)
    rows = {"floor_audio": [], "floor_video": [], "audio_features": [], "frames": []}
    for r in ds.meta.itertuples(index=False):
        a, v = ds.audio_path(r.filename_audio), ds.video_path(r.filename_video)
        rows["floor_audio"].append(floor_audio(a))
        rows["floor_video"].append(floor_video(v))
        t = time.perf_counter()
        x, sr = read_audio(a)
        features_from_waveform(x, sr, tuple(config.features), config.audio)
        rows["audio_features"].append(time.perf_counter() - t)
        t = time.perf_counter()
        extract_frames(v, config.frames.short_side)
        rows["frames"].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in rows.items()}


def products(root: Path, config: PreprocessConfig, repeats: int) -> dict[str, float]:
    """Seconds per clip of the filterbank products of every kind on the first clip's
    magnitude rows: as avsc applies them (sparse for band filterbanks) and dense
    (``numpy.matmul`` per segment, as before 2026-12-07), both on one BLAS thread."""
    from threadpoolctl import threadpool_limits

    from avsc.features.audio import prepare_waveform, segment, stft_magnitude
    from avsc.features.extractors import filterbank_product, get_extractor

    ds = TAUDataset(root)
    x, sr = read_audio(ds.audio_path(ds.meta["filename_audio"].iloc[0]))
    a = config.audio
    mag = stft_magnitude(segment(prepare_waveform(x, sr, a), a), a.n_fft, a.hop_length)
    rows = np.ascontiguousarray(np.moveaxis(mag, 2, 1)).reshape(mag.shape[0], -1, mag.shape[-1])
    banks = [get_extractor(k, a).filterbank() for k in config.features]
    out = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for name, fn in (
            ("sparse", lambda w: filterbank_product(rows, w)),
            ("dense", lambda w: np.matmul(rows, w.T)),
        ):
            for w in banks:
                fn(w)  # warm: the sparse form is built once per filterbank
            t = time.perf_counter()
            for _ in range(repeats):
                for w in banks:
                    fn(w)
            out[name] = (time.perf_counter() - t) / repeats
    return out


def resampling(repeats: int) -> dict[str, float]:
    """Seconds to resample a 10-s stereo float32 clip to 16 kHz from 44.1 kHz and from TAU's
    48 kHz: avsc's resample_poly (a CSR matrix per block of outputs) against scipy's, whose
    bits it reproduces (checked here too)."""
    from scipy.signal import resample_poly as scipy_poly

    from avsc.features.resampling import resample_poly

    out = {}
    rng = np.random.default_rng(0)
    for name, sr, up, down in (("44k1", 44100, 160, 441), ("48k", 48000, 1, 3)):
        x = (0.1 * rng.standard_normal((2, 10 * sr))).astype(np.float32)
        if not np.array_equal(resample_poly(x, up, down), scipy_poly(x, up, down, axis=-1)):
            raise SystemExit(f"resampling from {sr} Hz differs from scipy's resample_poly")
        for who, fn in (
            ("avsc", resample_poly),
            ("scipy", lambda x, u, d: scipy_poly(x, u, d, axis=-1)),
        ):
            t = time.perf_counter()
            for _ in range(repeats):
                fn(x, up, down)
            out[f"{name}_{who}"] = (time.perf_counter() - t) / repeats
    return out


def full_run(root: Path, cache: Path, config: PreprocessConfig, workers: int) -> float:
    """Wall seconds per clip of a whole ``preprocess`` run (features, frames, writes, stats)."""
    t = time.perf_counter()
    report = preprocess(root, cache, config, workers=workers, show_progress=False)
    if not report.ok:
        raise SystemExit(report.format())
    return (time.perf_counter() - t) / report.total


def real_root(tmp: Path) -> Path | None:
    """A TAU-layout root around the real 1280x720 clips (their audio rewritten as TAU WAVs)."""
    clips = [  # the Barcelona clip twice, as a second location: a validation split needs two
        ("street_traffic-barcelona-161-4901", "barcelona161_4901.mp4"),
        ("street_traffic-barcelona-162-4901", "barcelona161_4901.mp4"),
        ("street_traffic-helsinki-164-5009", "helsinki164_5009.mp4"),
    ]
    if not all((REAL / f).is_file() for _, f in clips):
        return None
    root = tmp / "real"
    (root / "audio").mkdir(parents=True)
    (root / "video").mkdir()
    rows = []
    for clip, name in clips:
        (root / "video" / f"{clip}.mp4").symlink_to(REAL / name)
        x, sr = read_audio(REAL / name)
        y = resample(x, sr, 48000)[:, :480000]
        sf.write(str(root / "audio" / f"{clip}.wav"), y.T, 48000, subtype="PCM_24")
        rows.append((f"audio/{clip}.wav", f"video/{clip}.mp4", "street_traffic"))
    # the second clip's location is the evaluation fold (an empty fold is refused)
    write_metadata(
        root,
        pd.DataFrame(rows, columns=["filename_audio", "filename_video", "scene_label"]),
        ["helsinki-164"],
    )
    return root


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clips-per-class", type=int, default=3, help="synthetic clips per class")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny sizes: does it run?")
    a = p.parse_args()
    warnings.simplefilter("ignore")
    seconds = 2.0 if a.quick else 10.0
    config = PreprocessConfig()  # the defaults; --quick: the same but for the clip length
    if a.quick:
        quick = ExperimentConfig().override({"data.clip_seconds": seconds})
        config = quick.preprocess_config(tuple(config.features))
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t = time.perf_counter()
        synth = make_synthetic_dataset(
            tmp / "synth", clips_per_class=a.clips_per_class, seconds=seconds, seed=0, workers=2,
            show_progress=False,
        )  # fmt: skip
        n = len(TAUDataset(synth).meta)
        print(
            f"synthetic: {n} clips of {seconds:g} s generated in {time.perf_counter() - t:.1f} s",
            file=sys.stderr,
        )
        sets = [("synthetic", synth)]
        real = None if a.quick else real_root(tmp)
        if real is not None:
            sets.append(("real_1280x720", real))
        else:
            print("real TAU clips absent: skipping them", file=sys.stderr)
        for name, root in sets:
            s = per_clip(root, config)
            floor = s["floor_audio"] + s["floor_video"]
            # one untimed run first: the floor is measured warm, so is the full run (one-off
            # imports such as scikit-learn's would otherwise count per clip of a tiny set)
            full_run(root, tmp / f"warm-{name}", config, a.workers)
            full = statistics.median(
                full_run(root, tmp / f"cache-{name}-{i}", config, a.workers)
                for i in range(1 if a.quick else 3)
            )
            out[f"{name}_audio_features_s_per_clip"] = s["audio_features"]
            out[f"{name}_frames_s_per_clip"] = s["frames"]
            out[f"{name}_floor_s_per_clip"] = floor
            out[f"{name}_full_preprocess_s_per_clip_workers{a.workers}"] = full
            out[f"{name}_full_over_floor"] = full / floor
            out[f"{name}_frames_over_video_decode_floor"] = s["frames"] / s["floor_video"]
        prod = products(synth, config, 3 if a.quick else 30)
        out["audio_products_sparse_ms_per_clip"] = 1000 * prod["sparse"]
        out["audio_products_dense_over_sparse"] = prod["dense"] / prod["sparse"]
        res = resampling(3 if a.quick else 20)
        for name in ("44k1", "48k"):
            out[f"resample_{name}_ms_per_10s_stereo"] = 1000 * res[f"{name}_avsc"]
            out[f"resample_{name}_scipy_over_avsc"] = res[f"{name}_scipy"] / res[f"{name}_avsc"]
        # parallel speed-up and memory when the dataset doubles (whole preprocess runs). The
        # speed-up is measured on the doubled set: each spawned worker first spends a fixed
        # ~2 s importing numpy/scipy/PyAV, which a handful of clips cannot amortise.
        if a.quick:
            synth2 = synth
        else:
            synth2 = make_synthetic_dataset(
                tmp / "synth2",
                clips_per_class=2 * a.clips_per_class,
                seed=1,
                workers=2,
                show_progress=False,
            )
        one = full_run(synth2, tmp / "w1", config, 1)
        two = full_run(synth2, tmp / "w2", config, 2)
        out["synthetic_speedup_1_to_2_workers"] = one / two
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import avsc.features.store, av, soundfile"], check=True
        )
        out["worker_start_s"] = time.perf_counter() - t
        mem = {}
        for name, root in (("1x", synth), ("2x", synth2)):
            cmd = [
                sys.executable,
                "-m",
                "avsc",
                "preprocess",
                "--data",
                str(root),
                "--cache",
                str(tmp / f"mem{name}"),
                "--workers",
                "2",
                "--no-progress",
                *(["-p", f"data.clip_seconds={seconds}"] if a.quick else []),
            ]
            mem[name] = peak_rss_mb(cmd)
        out["preprocess_peak_rss_mb_1x"] = mem["1x"]
        out["preprocess_peak_rss_mb_2x"] = mem["2x"]
        out["preprocess_peak_rss_2x_over_1x"] = mem["2x"] / mem["1x"]
    width = max(len(k) for k in out)
    for k, v in out.items():
        print(f"{k:{width}s}: {v:.3f}")


if __name__ == "__main__":
    main()
