"""A synthetic dataset in the exact TAU Urban Audio-Visual Scenes 2021 layout (``avsc synth``).

:func:`make_synthetic_dataset` writes ``audio/<clip>.wav`` (48 kHz, 24-bit, stereo),
``video/<clip>.mp4`` (H.264, yuv420p), ``meta.csv`` and ``evaluation_setup/fold1_*.csv``
(method.md section 1), plus ``SYNTHETIC.md`` / ``synthetic.json`` saying how the data was made.
The data exists so that the whole pipeline can run, and be tested, without the 108 GB corpus.

Design. Every class has one latent vector per modality; each coordinate maps continuously
(through ``tanh``) onto one generation parameter (:data:`AUDIO_PARAMS`, :data:`VIDEO_PARAMS`):
spectral envelope, hum, modulation, event rates (bird-like chirps, horn / chime bursts,
footstep / door transients, pass-bys, babble) and stereo width for audio; colour layout,
oriented texture, structures and moving shapes for video. The prototypes start from a
hand-made table (a park is bright with birds; a bus rumbles and hums), are spread apart by a
fixed random direction per class, and then the two classes of each pair in
:data:`AUDIO_CONFUSED_PAIRS` (resp. :data:`VIDEO_CONFUSED_PAIRS`) are pulled close together.
The modalities pair different classes, so each alone confuses its pairs and fusing them
helps. A recording location draws an offset in both latent spaces plus nuisance (audio EQ,
level, background noise, hum pitch; video exposure, white balance, hue, camera placement and
sway), every clip adds its own offset, and events, shapes, camera shake and grain are drawn
per clip, so the classes of a pair overlap across locations. Nothing names the class: every
parameter is continuous with overlapping distributions, and every file has the same format
and length.

Reproducibility: every clip draws from its own ``numpy.random.Generator`` seeded by
``SeedSequence([seed, 2, clip index])`` (locations and cities likewise), so a seed gives
byte-identical WAVs and identical decoded frames whatever the number of workers (libx264
runs single-threaded).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from avsc.config import MIN_SYNTH_CLIPS_PER_CLASS
from avsc.data.tau import LABELS, ClipName, write_metadata
from avsc.parallel import WorkerDied, process_map
from avsc.utils import atomic_path, atomic_write_bytes, atomic_write_json, progress

__all__ = [
    "AUDIO_CONFUSED_PAIRS",
    "AUDIO_PARAMS",
    "CITIES",
    "DEFAULT_VIDEO_SIZE",
    "SAMPLE_RATE",
    "VIDEO_CONFUSED_PAIRS",
    "VIDEO_PARAMS",
    "SynthClip",
    "make_synthetic_dataset",
    "plan_dataset",
]

#: Audio sample rate of the TAU corpus (and of every synthetic WAV).
SAMPLE_RATE = 48000
#: Default frame size (width, height): 16:9 like the GoPro footage, small enough to be fast.
DEFAULT_VIDEO_SIZE: tuple[int, int] = (480, 270)
#: Cities of the TAU recordings, over which the synthetic locations are spread.
CITIES: tuple[str, ...] = (
    "amsterdam",
    "barcelona",
    "helsinki",
    "lisbon",
    "london",
    "lyon",
    "madrid",
    "milan",
    "prague",
    "paris",
    "stockholm",
    "vienna",
)

#: Class pairs that lie close in the audio latent space (audio alone confuses them).
AUDIO_CONFUSED_PAIRS: tuple[tuple[str, str], ...] = (
    ("bus", "tram"),
    ("metro", "metro_station"),
    ("park", "public_square"),
    ("shopping_mall", "street_pedestrian"),
)
#: Class pairs that lie close in the video latent space (video alone confuses them).
VIDEO_CONFUSED_PAIRS: tuple[tuple[str, str], ...] = (
    ("bus", "metro"),
    ("street_traffic", "tram"),
    ("airport", "shopping_mall"),
    ("park", "street_pedestrian"),
    ("metro_station", "public_square"),
)

# Strength of the latent structure, in tanh units: coordinate z of a latent maps to
# lo + (hi - lo) * (1 + tanh z) / 2 of its parameter. SPREAD scales the hand-made prototypes
# about their mean, DISTINCT adds a fixed random direction per class, PAIR_SHRINK pulls the
# two classes of a confused pair towards each other (0: identical, 1: untouched), LOC_SIGMA
# and CLIP_SIGMA are the per-location and per-clip offsets, NUISANCE scales the location and
# city nuisance (EQ, level, colour cast, camera placement). Tuned with
# benchmarks/synth_separability.py: a location-disjoint linear probe reaches roughly 60-80 %
# per modality and 80-90 % fused.
_AUDIO_SPREAD = 1.5
_VIDEO_SPREAD = 1.5
_AUDIO_DISTINCT = 3.0
_VIDEO_DISTINCT = 3.0
_AUDIO_PAIR_SHRINK = 0.2
_VIDEO_PAIR_SHRINK = 0.2
_AUDIO_LOC_SIGMA = 0.12
_AUDIO_CLIP_SIGMA = 0.12
_VIDEO_LOC_SIGMA = 0.13
_VIDEO_CLIP_SIGMA = 0.18
_AUDIO_NUISANCE = 0.3
_VIDEO_NUISANCE = 0.3
# Seeds of the DISTINCT directions (part of the class definitions, not of a dataset): of 40
# candidates, the ones under which the designed pairs are the nearest classes in the probe's
# feature space (mean log-mel; colour thumbnail + histograms).
_AUDIO_KEY = 33
_VIDEO_KEY = 29

# name: (low, high, log scale). Class prototypes below are fractions of the range.
AUDIO_PARAMS: dict[str, tuple[float, float, bool]] = {
    "level_db": (-36.0, -20.0, False),  # RMS level of mid, dBFS
    "tilt": (-7.5, -1.5, False),  # spectral slope above 250 Hz, dB/octave
    "rumble_db": (-20.0, 14.0, False),  # low-frequency bump gain
    "rumble_hz": (30.0, 160.0, True),
    "bump_hz": (250.0, 4000.0, True),  # mid-frequency resonance
    "bump_db": (-2.0, 14.0, False),
    "lp_hz": (2500.0, 16000.0, True),  # high-frequency roll-off corner
    "hum_db": (0.0, 20.0, False),  # narrow-band harmonic hum above the bed
    "hum_f0": (40.0, 160.0, True),
    "mod_hz": (0.25, 6.0, True),  # periodic amplitude modulation of the bed
    "mod_depth": (0.0, 0.8, False),
    "drift": (0.0, 0.7, False),  # slow random level changes (non-stationarity)
    "chirp_rate": (0.01, 1.2, True),  # bird-like songs per second
    "horn_rate": (0.01, 0.5, True),  # horn / announcement-chime harmonic bursts per second
    "horn_f0": (180.0, 800.0, True),
    "step_rate": (0.05, 4.0, True),  # footstep / door-like transients per second
    "step_hz": (400.0, 5000.0, True),
    "passby_rate": (0.01, 0.4, True),  # vehicle pass-by rumbles per second
    "babble_db": (-30.0, 3.0, False),  # speech-like babble relative to the bed
    "decorr": (0.05, 0.6, False),  # inter-channel decorrelation of the bed
    "width": (0.15, 1.0, False),  # azimuth spread of events
}

VIDEO_PARAMS: dict[str, tuple[float, float, bool]] = {
    "horizon": (0.2, 0.75, False),  # height fraction where the upper region ends
    "top_r": (0.12, 0.85, False),
    "top_g": (0.12, 0.85, False),
    "top_b": (0.12, 0.85, False),
    "bot_r": (0.12, 0.85, False),
    "bot_g": (0.12, 0.85, False),
    "bot_b": (0.12, 0.85, False),
    "gradient": (-0.5, 0.5, False),  # vertical brightness gradient
    "tex_angle": (0.0, math.pi, False),  # orientation of the band-pass texture
    "tex_freq": (4.0, 60.0, True),  # cycles per frame width
    "tex_contrast": (0.0, 0.35, False),
    "tex_top": (0.0, 1.0, False),  # share of the texture in the upper region
    "struct_count": (2.0, 18.0, True),  # vertical structures (windows, pillars, trees)
    "struct_contrast": (0.0, 0.45, False),
    "struct_height": (0.05, 0.5, False),
    "n_shapes": (1.0, 20.0, True),  # moving shapes (people, vehicles)
    "shape_size": (0.05, 0.3, True),  # height fraction
    "shape_aspect": (0.35, 3.0, True),  # width / height
    "shape_speed": (0.02, 0.5, True),  # frame widths per second
    "shape_dir": (0.0, 1.0, False),  # 0: horizontal lanes, 1: any direction
    "shape_lum": (0.1, 0.9, False),
    "vignette": (0.0, 0.7, False),
    "flicker": (0.0, 0.05, False),
    "grain": (0.5, 4.0, False),  # per-frame noise, grey levels
}

# Parameters that only show over time (not in one 0.5-s spectrum or one frame).
_AUDIO_TEMPORAL = frozenset({"mod_hz", "mod_depth", "drift", "width"})
_VIDEO_TEMPORAL = frozenset({"shape_speed", "shape_dir", "flicker"})

# Class prototypes: each parameter's value per class, in LABELS order, as a fraction of the
# parameter's range (0.5 = the middle). Columns: airport, bus, metro, metro_station, park,
# public_square, shopping_mall, street_pedestrian, street_traffic, tram.
# fmt: off
_AUDIO_PROTO: dict[str, tuple[float, ...]] = {
    #                    air  bus  met  mst  prk  squ  mal  ped  trf  trm
    "level_db":         (.40, .60, .80, .70, .20, .35, .45, .45, .70, .60),
    "tilt":             (.55, .25, .15, .25, .70, .60, .55, .50, .60, .30),
    "rumble_db":        (.30, .75, .85, .65, .15, .35, .25, .35, .45, .70),
    "rumble_hz":        (.50, .35, .55, .50, .40, .45, .60, .45, .25, .45),
    "bump_hz":          (.55, .30, .60, .60, .80, .65, .50, .55, .50, .45),
    "bump_db":          (.45, .60, .80, .65, .35, .45, .50, .40, .65, .70),
    "lp_hz":            (.60, .35, .55, .55, .80, .70, .65, .60, .65, .45),
    "hum_db":           (.35, .75, .50, .40, .10, .20, .45, .25, .15, .55),
    "hum_f0":           (.60, .35, .55, .45, .50, .45, .75, .55, .30, .50),
    "mod_hz":           (.40, .30, .55, .45, .25, .35, .60, .50, .20, .40),
    "mod_depth":        (.20, .45, .55, .40, .15, .30, .25, .35, .60, .55),
    "drift":            (.30, .50, .65, .70, .25, .40, .20, .45, .80, .45),
    "chirp_rate":       (.05, .05, .05, .05, .85, .55, .15, .25, .15, .05),
    "horn_rate":        (.75, .15, .20, .50, .05, .20, .40, .25, .50, .25),
    "horn_f0":          (.60, .40, .35, .50, .50, .45, .75, .55, .40, .55),
    "step_rate":        (.50, .20, .20, .50, .25, .45, .70, .75, .15, .25),
    "step_hz":          (.60, .40, .35, .50, .70, .60, .65, .55, .50, .45),
    "passby_rate":      (.08, .35, .55, .60, .15, .35, .05, .25, .90, .30),
    "babble_db":        (.70, .40, .30, .45, .20, .50, .85, .70, .10, .30),
    "decorr":           (.75, .30, .25, .55, .85, .80, .60, .65, .45, .30),
    "width":            (.80, .40, .30, .70, .95, .90, .75, .80, .85, .45),
}
_VIDEO_PROTO: dict[str, tuple[float, ...]] = {
    #                    air  bus  met  mst  prk  squ  mal  ped  trf  trm
    "horizon":          (.40, .45, .50, .52, .35, .50, .40, .38, .45, .50),
    "top_r":            (.85, .55, .60, .52, .55, .58, .88, .60, .60, .55),
    "top_g":            (.85, .60, .62, .54, .70, .62, .80, .70, .70, .65),
    "top_b":            (.80, .65, .55, .62, .90, .72, .68, .85, .85, .75),
    "bot_r":            (.65, .30, .35, .50, .30, .52, .72, .42, .40, .40),
    "bot_g":            (.60, .28, .33, .50, .55, .50, .62, .52, .40, .38),
    "bot_b":            (.55, .30, .36, .50, .25, .46, .50, .36, .42, .40),
    "gradient":         (.55, .70, .65, .45, .35, .40, .55, .40, .45, .55),
    "tex_angle":        (.80, .50, .55, .55, .30, .45, .70, .40, .20, .25),
    "tex_freq":         (.70, .40, .50, .50, .60, .45, .65, .55, .45, .50),
    "tex_contrast":     (.30, .40, .45, .30, .50, .35, .30, .45, .30, .35),
    "tex_top":          (.40, .30, .35, .45, .20, .40, .45, .30, .40, .35),
    "struct_count":     (.70, .40, .55, .45, .35, .40, .75, .50, .35, .30),
    "struct_contrast":  (.50, .60, .50, .35, .50, .30, .55, .45, .35, .45),
    "struct_height":    (.40, .60, .50, .35, .50, .30, .45, .55, .45, .50),
    "n_shapes":         (.70, .30, .40, .70, .35, .75, .75, .55, .60, .50),
    "shape_size":       (.35, .70, .65, .38, .35, .35, .35, .40, .50, .50),
    "shape_aspect":     (.30, .30, .35, .30, .30, .30, .30, .30, .75, .70),
    "shape_speed":      (.30, .15, .20, .35, .20, .30, .25, .25, .75, .70),
    "shape_dir":        (.80, .50, .55, .70, .90, .80, .85, .80, .10, .15),
    "shape_lum":        (.50, .40, .35, .48, .45, .50, .55, .45, .50, .45),
    "vignette":         (.20, .60, .55, .35, .10, .20, .20, .15, .15, .35),
    "flicker":          (.40, .50, .60, .40, .10, .15, .40, .10, .10, .25),
    "grain":            (.30, .50, .55, .45, .40, .40, .30, .40, .45, .50),
}

# fmt: on


def _to_z(fractions: Sequence[float]) -> np.ndarray:
    f = np.clip(np.asarray(fractions, dtype=np.float64), 0.02, 0.98)
    return np.arctanh(2.0 * f - 1.0)


def _prototypes(
    table: dict[str, tuple[float, ...]],
    pairs: Sequence[tuple[str, str]],
    spread: float,
    distinct: float,
    shrink: float,
    key: int,
    temporal: frozenset[str],
) -> dict[str, np.ndarray]:
    """Class latents (tanh units), one vector per label.

    The table's fractions, their spread about the mean of all classes scaled by ``spread``,
    plus a fixed class-specific random direction of length ``distinct`` (which keeps every
    two classes apart) over the parameters that one audio frame or one image can show (not
    those in ``temporal``), then the classes of each pair pulled towards their mean by
    ``shrink``. ``key`` seeds the fixed directions: they define the classes, not a dataset.
    """
    z = _to_z(np.array(list(table.values())).T)  # (classes, parameters)
    centre = z.mean(axis=0)
    u = np.random.default_rng(key).standard_normal(z.shape)
    u[:, [name in temporal for name in table]] = 0.0
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    z = centre + spread * (z - centre) + distinct * u
    protos = dict(zip(LABELS, z, strict=True))
    for a, b in pairs:
        mean = 0.5 * (protos[a] + protos[b])
        protos[a] = mean + shrink * (protos[a] - mean)
        protos[b] = mean + shrink * (protos[b] - mean)
    return protos


def _decode(z: np.ndarray, params: dict[str, tuple[float, float, bool]]) -> dict[str, float]:
    """Map a latent vector onto generation parameters, continuously and within range."""
    out = {}
    for (name, (lo, hi, log)), zi in zip(params.items(), z, strict=True):
        u = 0.5 * (1.0 + math.tanh(float(zi)))
        out[name] = lo * (hi / lo) ** u if log else lo + (hi - lo) * u
    return out


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class SynthClip:
    """One planned clip: its name parts, fold and the indices its random streams derive from."""

    index: int
    scene: str
    city: str
    city_index: int
    location: int
    location_index: int
    segment: int
    fold: str

    @property
    def name(self) -> ClipName:
        return ClipName(self.scene, self.city, str(self.location), str(self.segment))

    @property
    def clip(self) -> str:
        return self.name.clip

    @property
    def identifier(self) -> str:
        return self.name.identifier


def _locations_per_class(clips_per_class: int) -> int:
    """At least 4 locations (about 2.5 clips each), never more locations than clips."""
    return min(clips_per_class, max(4, round(clips_per_class / 2.5)))


def plan_dataset(
    clips_per_class: int = 10,
    classes: Sequence[str] = LABELS,
    seed: int = 0,
    evaluate_share: float = 0.3,
) -> list[SynthClip]:
    """Plan the clips of a synthetic dataset: names, cities, locations and folds.

    Every class gets ``max(4, round(N / 2.5))`` locations (at most N), each in one city; the
    clips are spread evenly over them. A location-disjoint subset holding about
    ``evaluate_share`` of the class's clips (at least one location, leaving at least two in
    train) forms fold1_evaluate. Location ids are unique over the dataset, segments run.
    """
    classes = _check_classes(classes)
    _check_int("clips_per_class", clips_per_class, MIN_SYNTH_CLIPS_PER_CLASS)
    _check_int("seed", seed, 0)
    if not 0.0 < evaluate_share < 1.0:
        raise ValueError(f"evaluate_share must lie in (0, 1), got {evaluate_share!r}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    n_loc = _locations_per_class(clips_per_class)
    total_locations = n_loc * len(classes)
    location_ids = rng.permutation(total_locations) + 1
    plan: list[SynthClip] = []
    loc_index = 0
    for scene in classes:
        counts = np.full(n_loc, clips_per_class // n_loc)
        counts[: clips_per_class % n_loc] += 1
        counts = rng.permutation(counts)
        cities = rng.permutation(len(CITIES))
        evaluate = _choose_evaluate(counts, evaluate_share * clips_per_class, rng)
        for j in range(n_loc):
            city_index = int(cities[j % len(CITIES)])
            for _ in range(int(counts[j])):
                plan.append(
                    SynthClip(
                        index=len(plan),
                        scene=scene,
                        city=CITIES[city_index],
                        city_index=city_index,
                        location=int(location_ids[loc_index]),
                        location_index=loc_index,
                        segment=len(plan),
                        fold="evaluate" if j in evaluate else "train",
                    )
                )
            loc_index += 1
    return plan


def _choose_evaluate(counts: np.ndarray, target: float, rng: np.random.Generator) -> set[int]:
    """Locations whose clip count comes closest to ``target``: >= 1 chosen, >= 2 left."""
    order = [int(j) for j in rng.permutation(len(counts))]
    chosen = {order[0]}
    total = int(counts[order[0]])
    for j in order[1:]:
        if len(chosen) >= len(counts) - 2:
            break
        if abs(total + counts[j] - target) < abs(total - target):
            chosen.add(j)
            total += int(counts[j])
    return chosen


# --------------------------------------------------------------------------- public entry


def make_synthetic_dataset(
    out: str | os.PathLike,
    clips_per_class: int = 10,
    seconds: float = 10.0,
    seed: int = 0,
    video_size: tuple[int, int] = DEFAULT_VIDEO_SIZE,
    fps: int = 24,
    classes: Sequence[str] = LABELS,
    workers: int = 1,
    show_progress: bool | None = None,
) -> Path:
    """Write a synthetic audio-visual scene dataset in the TAU 2021 layout to ``out``.

    ``clips_per_class`` clips (>= 3) of ``seconds`` each per class in ``classes``; video
    frames of ``video_size = (width, height)`` (even numbers) at ``fps``. ``seed`` fixes
    every byte of the audio and every decoded frame, for any ``workers`` (processes).
    Existing files of the same names are replaced atomically; other files are left alone.
    ``workers > 1`` uses spawned processes, so a calling script needs the usual
    ``if __name__ == "__main__":`` guard. Returns the dataset root (``out``), ready for
    :class:`avsc.data.tau.TAUDataset`. Raises ``ValueError`` on bad arguments.
    """
    classes = _check_classes(classes)
    _check_int("clips_per_class", clips_per_class, MIN_SYNTH_CLIPS_PER_CLASS)
    _check_int("seed", seed, 0)
    _check_int("fps", fps, 1)
    _check_int("workers", workers, 1)
    seconds = float(seconds)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")
    if round(seconds * fps) < 1:
        raise ValueError(f"seconds={seconds} at fps={fps} gives no video frame")
    try:
        width, height = (int(v) for v in video_size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"video_size must be (width, height), got {video_size!r}") from exc
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(
            f"video_size must be even numbers >= 16 (H.264 yuv420p), got {width}x{height}"
        )

    root = Path(out)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "video").mkdir(parents=True, exist_ok=True)
    plan = plan_dataset(clips_per_class, classes, seed)
    jobs = [
        _Job(
            root=str(root),
            clip=asdict(c),
            name=c.clip,
            seed=seed,
            seconds=seconds,
            width=width,
            height=height,
            fps=fps,
        )
        for c in plan
    ]
    done = process_map(_render_job, jobs, workers, name=lambda job: job.name)
    for _, result in progress(done, total=len(jobs), desc="synth", enabled=show_progress):
        if isinstance(result, WorkerDied):
            raise RuntimeError(f"{root}: synthesizing clip {result}") from result

    import pandas as pd

    clips_df = pd.DataFrame(
        {
            "filename_audio": [f"audio/{c.clip}.wav" for c in plan],
            "filename_video": [f"video/{c.clip}.mp4" for c in plan],
            "scene_label": [c.scene for c in plan],
        }
    )
    evaluate_ids = sorted({c.identifier for c in plan if c.fold == "evaluate"})
    write_metadata(root, clips_df, evaluate_ids)
    settings = {
        "generator": "avsc.data.synth.make_synthetic_dataset",
        "seed": seed,
        "clips_per_class": clips_per_class,
        "seconds": seconds,
        "video_size": [width, height],
        "fps": fps,
        "classes": list(classes),
        "sample_rate": SAMPLE_RATE,
        "audio_confused_pairs": [list(p) for p in AUDIO_CONFUSED_PAIRS],
        "video_confused_pairs": [list(p) for p in VIDEO_CONFUSED_PAIRS],
        "locations_per_class": _locations_per_class(clips_per_class),
        "clips": len(plan),
        "train_clips": sum(c.fold == "train" for c in plan),
        "evaluate_clips": sum(c.fold == "evaluate" for c in plan),
    }
    atomic_write_json(root / "synthetic.json", settings)
    atomic_write_bytes(root / "SYNTHETIC.md", _readme(settings).encode())
    return root


def _readme(s: dict[str, Any]) -> str:
    pairs_a = ", ".join(f"{a}~{b}" for a, b in s["audio_confused_pairs"])
    pairs_v = ", ".join(f"{a}~{b}" for a, b in s["video_confused_pairs"])
    w, h = s["video_size"]
    return (
        "# Synthetic data\n\n"
        "This folder holds SYNTHETIC audio-visual scenes generated by "
        "`avsc.data.synth.make_synthetic_dataset` (`avsc synth`), in the layout of TAU Urban "
        "Audio-Visual Scenes 2021. It contains no real recordings: results computed on it "
        "say nothing about real scenes.\n\n"
        f"- seed: {s['seed']}\n"
        f"- classes: {len(s['classes'])} ({', '.join(s['classes'])})\n"
        f"- clips: {s['clips']} ({s['clips_per_class']} per class, "
        f"{s['locations_per_class']} locations per class; fold1_train {s['train_clips']}, "
        f"fold1_evaluate {s['evaluate_clips']}, location-disjoint)\n"
        f"- clip length: {s['seconds']:g} s\n"
        f"- audio: {s['sample_rate']} Hz, 24-bit PCM, stereo WAV\n"
        f"- video: H.264 yuv420p MP4, {w}x{h}, {s['fps']} fps\n"
        f"- classes close in the audio latent space: {pairs_a}\n"
        f"- classes close in the video latent space: {pairs_v}\n\n"
        "Regenerate with:\n\n"
        "    from avsc.data.synth import make_synthetic_dataset\n"
        f"    make_synthetic_dataset(DIR, clips_per_class={s['clips_per_class']}, "
        f"seconds={s['seconds']:g}, seed={s['seed']}, video_size=({w}, {h}), "
        f"fps={s['fps']}, classes={tuple(s['classes'])})\n"
    )


class SynthError(ValueError):
    """A setting of the synthetic dataset out of its range (the message names it)."""


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SynthError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(classes, str):
        classes = [classes]
    classes = tuple(classes)
    unknown = [c for c in classes if c not in LABELS]
    if unknown:
        raise ValueError(f"unknown class(es) {unknown}; expected names from {list(LABELS)}")
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be at least two distinct labels, got {list(classes)}")
    return classes


# --------------------------------------------------------------------------- per-clip work


@dataclass(frozen=True)
class _Job:
    root: str
    clip: dict[str, Any]
    name: str
    seed: int
    seconds: float
    width: int
    height: int
    fps: int


_AUDIO_PROTOS = _prototypes(
    _AUDIO_PROTO, AUDIO_CONFUSED_PAIRS, _AUDIO_SPREAD, _AUDIO_DISTINCT, _AUDIO_PAIR_SHRINK,
    key=_AUDIO_KEY, temporal=_AUDIO_TEMPORAL,
)  # fmt: skip
_VIDEO_PROTOS = _prototypes(
    _VIDEO_PROTO, VIDEO_CONFUSED_PAIRS, _VIDEO_SPREAD, _VIDEO_DISTINCT, _VIDEO_PAIR_SHRINK,
    key=_VIDEO_KEY, temporal=_VIDEO_TEMPORAL,
)  # fmt: skip


def _render_job(job: _Job) -> None:
    clip = SynthClip(**job.clip)
    loc_rng = np.random.default_rng(np.random.SeedSequence([job.seed, 1, clip.location_index]))
    city_rng = np.random.default_rng(np.random.SeedSequence([job.seed, 3, clip.city_index]))
    clip_rng = np.random.default_rng(np.random.SeedSequence([job.seed, 2, clip.index]))
    audio_rng, video_rng = clip_rng.spawn(2)

    # Latents: class prototype + location offset + clip offset, then decoded parameters.
    za = _AUDIO_PROTOS[clip.scene] + _AUDIO_LOC_SIGMA * loc_rng.standard_normal(len(AUDIO_PARAMS))
    zv = _VIDEO_PROTOS[clip.scene] + _VIDEO_LOC_SIGMA * loc_rng.standard_normal(len(VIDEO_PARAMS))
    za = za + _AUDIO_CLIP_SIGMA * audio_rng.standard_normal(len(AUDIO_PARAMS))
    zv = zv + _VIDEO_CLIP_SIGMA * video_rng.standard_normal(len(VIDEO_PARAMS))
    pa = _decode(za, AUDIO_PARAMS)
    pv = _decode(zv, VIDEO_PARAMS)
    loc_audio = _location_audio(loc_rng, city_rng)
    loc_video = _location_video(loc_rng, city_rng)

    audio = _synth_audio(pa, loc_audio, job.seconds, audio_rng)
    wav = Path(job.root) / "audio" / f"{job.name}.wav"
    import soundfile as sf

    with atomic_path(wav) as tmp:
        sf.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_24", format="WAV")

    mp4 = Path(job.root) / "video" / f"{job.name}.mp4"
    n_frames = round(job.seconds * job.fps)
    frames = _render_video(pv, loc_video, job.width, job.height, job.fps, n_frames, video_rng)
    with atomic_path(mp4) as tmp:
        _encode_mp4(tmp, frames, job.width, job.height, job.fps)


# --------------------------------------------------------------------------- audio


def _location_audio(loc_rng: np.random.Generator, city_rng: np.random.Generator) -> dict:
    """Per-location acoustic nuisance: EQ bumps, level, a stationary background noise."""
    k = _AUDIO_NUISANCE
    lo, hi = np.log2(80.0), np.log2(12000.0)
    eq = [(float(loc_rng.uniform(lo, hi)), float(loc_rng.normal(0, 4.0 * k))) for _ in range(3)]
    eq += [(float(city_rng.uniform(lo, hi)), float(city_rng.normal(0, 2.0 * k))) for _ in range(2)]
    bg = [(float(loc_rng.uniform(lo, hi)), float(loc_rng.normal(0, 8.0 * k))) for _ in range(3)]
    return {
        "eq": eq,
        "level_db": float(loc_rng.normal(0, 3.0 * k)),
        "bg_db": float(loc_rng.normal(-12.0, 3.0)),
        "bg_bumps": bg,
        "bg_tilt": float(loc_rng.uniform(-5.0, -1.0)),
        "hum_detune": float(loc_rng.normal(0, 0.25)),  # engines and mains differ per place
    }


def _bumps_db(log2f: np.ndarray, bumps: list[tuple[float, float]], width: float) -> np.ndarray:
    out = np.zeros_like(log2f)
    for centre, gain in bumps:
        out += gain * np.exp(-0.5 * ((log2f - centre) / width) ** 2)
    return out


def _noise_spectrum(rng: np.random.Generator, nbins: int) -> np.ndarray:
    re, im = rng.standard_normal((2, nbins))
    return re + 1j * im


def _control_noise(rng: np.random.Generator, n: int, rate: float, smooth_s: float) -> np.ndarray:
    """``n`` samples of slow Gaussian noise at a control ``rate``, unit standard deviation."""
    x = rng.standard_normal(n + 64)
    k = max(1, int(smooth_s * rate))
    win = np.hanning(2 * k + 1)
    y = np.convolve(x, win / win.sum(), mode="same")[32 : 32 + n]
    sd = float(y.std())
    return y / sd if sd > 1e-9 else np.zeros(n)


def _synth_audio(
    p: dict[str, float], loc: dict, seconds: float, rng: np.random.Generator
) -> np.ndarray:
    sr = SAMPLE_RATE
    n = round(seconds * sr)
    nb = n // 2 + 1
    f = np.fft.rfftfreq(n, 1.0 / sr)
    fsafe = np.maximum(f, 1.0)
    l2 = np.log2(fsafe)

    # Bed: class envelope x location/city EQ, with narrow-band harmonic hum.
    db = p["tilt"] * np.maximum(l2 - np.log2(250.0), 0.0)
    db += p["rumble_db"] * np.exp(-0.5 * ((l2 - np.log2(p["rumble_hz"])) / 0.7) ** 2)
    db += p["bump_db"] * np.exp(-0.5 * ((l2 - np.log2(p["bump_hz"])) / 0.6) ** 2)
    db -= 6.0 * np.log2(1.0 + (fsafe / p["lp_hz"]) ** 2)
    db -= 6.0 * np.log2(1.0 + (25.0 / fsafe) ** 2)
    db += _bumps_db(l2, loc["eq"], 0.8)
    mag = 10.0 ** (db / 20.0)
    power = mag**2
    f0 = p["hum_f0"] * float(np.exp(loc["hum_detune"] + rng.normal(0, 0.05)))
    df = sr / n
    for k in range(1, 7):
        fk = k * f0
        if fk >= sr / 2 - 100:
            break
        bw = 1.5 + 0.01 * fk
        lo, hi = int((fk - 6 * bw) / df), int((fk + 6 * bw) / df) + 1
        sl = slice(max(lo, 0), min(hi, nb))
        gain = 10.0 ** ((p["hum_db"] - 5.0 * (k - 1)) / 10.0) * power[int(fk / df)]
        power[sl] += gain * np.exp(-0.5 * ((f[sl] - fk) / bw) ** 2)
    mag = np.sqrt(power)
    # Every noise layer is scaled to unit mean power density in 200 Hz - 4 kHz, so that the
    # levels below (background, babble) are relative to the bed where scenes differ most,
    # not to its rumble. irfft of unit-density complex noise has variance 2 / n.
    band = (f >= 200.0) & (f <= 4000.0)
    unit = math.sqrt(n / 2.0)
    mag *= unit / math.sqrt(float(np.mean(power[band])))
    dec = p["decorr"] * f / (f + 300.0)
    common = mag * np.sqrt(1.0 - dec)
    indep = mag * np.sqrt(dec)
    xc = _noise_spectrum(rng, nb) * common
    bed_l = np.fft.irfft(xc + _noise_spectrum(rng, nb) * indep, n)
    bed_r = np.fft.irfft(xc + _noise_spectrum(rng, nb) * indep, n)

    # Temporal texture of the bed: periodic modulation and slow drift.
    cr = 100.0
    nc = int(seconds * cr) + 2
    tc = np.arange(nc) / cr
    rate = p["mod_hz"] * float(np.exp(rng.normal(0, 0.1)))
    gain_c = 1.0 + p["mod_depth"] * np.sin(2 * np.pi * rate * tc + rng.uniform(0, 2 * np.pi))
    gain_c *= np.exp(p["drift"] * _control_noise(rng, nc, cr, 0.8))
    t = np.arange(n) / sr
    g = np.interp(t, tc, gain_c)
    g /= np.sqrt(np.mean(g**2))
    left = bed_l * g
    right = bed_r * g

    # Location background: stationary, its own colour, partially decorrelated.
    bdb = loc["bg_tilt"] * np.maximum(l2 - np.log2(100.0), 0.0) + _bumps_db(
        l2, loc["bg_bumps"], 1.0
    )
    bmag = 10.0 ** (bdb / 20.0)
    bmag[f < 20] = 0.0
    bmag *= unit * 10.0 ** (loc["bg_db"] / 20.0) / math.sqrt(float(np.mean(bmag[band] ** 2)))
    bmag /= math.sqrt(1.0 + 0.6**2)
    xb = _noise_spectrum(rng, nb) * bmag
    left += np.fft.irfft(xb + 0.6 * _noise_spectrum(rng, nb) * bmag, n)
    right += np.fft.irfft(xb + 0.6 * _noise_spectrum(rng, nb) * bmag, n)

    # Babble: formant-shaped noise gated by a few voices at syllabic rates.
    babdb = (
        _bumps_db(l2, [(np.log2(500), 0.0), (np.log2(1500), -4.0), (np.log2(2800), -10.0)], 0.5)
        - 6.0 * np.log2(1.0 + (fsafe / 4000.0) ** 4)
        - 6.0 * np.log2(1.0 + (200.0 / fsafe) ** 4)
    )
    bmag = 10.0 ** (babdb / 20.0)
    bab = np.fft.irfft(_noise_spectrum(rng, nb) * bmag, n)
    bab *= unit / math.sqrt(float(np.mean(bmag[band] ** 2)))
    env_l = np.zeros(nc)
    env_r = np.zeros(nc)
    for _ in range(6):
        syl = 0.5 + 0.5 * np.sin(
            2 * np.pi * rng.uniform(3.0, 6.0) * tc
            + rng.uniform(0, 2 * np.pi)
            + 0.8 * np.sin(2 * np.pi * 0.7 * tc + rng.uniform(0, 2 * np.pi))
        )
        gate = 0.5 * (1.0 + np.tanh(2.0 * _control_noise(rng, nc, cr, 0.5)))
        v = syl**2 * gate
        az = rng.uniform(-p["width"], p["width"])
        env_l += v * 10.0 ** (-az * 6.0 / 20.0)
        env_r += v * 10.0 ** (az * 6.0 / 20.0)
    scale = np.sqrt(np.mean((0.5 * (env_l + env_r)) ** 2)) + 1e-12
    bab_gain = 10.0 ** (p["babble_db"] / 20.0) / scale
    left += bab * np.interp(t, tc, env_l) * bab_gain
    right += bab * np.interp(t, tc, env_r) * bab_gain

    # Events, panned with level and time differences.
    buf = np.stack([left, right])
    _add_events(buf, p, seconds, rng)

    # Level: class + location, never clipping.
    mid = 0.5 * (buf[0] + buf[1])
    level = 10.0 ** ((p["level_db"] + loc["level_db"]) / 20.0)
    gain = level / (np.sqrt(np.mean(mid**2)) + 1e-12)
    peak = np.max(np.abs(buf)) * gain
    if peak > 0.89:
        gain *= 0.89 / peak
    return (buf * gain).T.copy()


def _place(buf: np.ndarray, x: np.ndarray, start: int, az: float) -> None:
    """Add mono event ``x`` at ``start`` with an interaural level and time difference."""
    n = buf.shape[1]
    gl = 10.0 ** (-az * 10.0 / 40.0)
    gr = 10.0 ** (az * 10.0 / 40.0)
    itd = int(round(az * 0.0007 * SAMPLE_RATE))
    for ch, g, s in ((0, gl, start + max(itd, 0)), (1, gr, start + max(-itd, 0))):
        a, b = max(s, 0), min(s + len(x), n)
        if b > a:
            buf[ch, a:b] += g * x[a - s : b - s]


def _onsets(rng: np.random.Generator, rate: float, seconds: float, dur: float) -> np.ndarray:
    count = rng.poisson(rate * (seconds + dur))
    return rng.uniform(-dur, seconds, count)


def _add_events(buf: np.ndarray, p: dict[str, float], seconds: float, rng) -> None:
    from scipy.signal import lfilter

    sr = SAMPLE_RATE
    width = p["width"]

    # Bird-like songs: series of short frequency sweeps.
    for t0 in _onsets(rng, p["chirp_rate"], seconds, 1.0):
        base = rng.uniform(2500.0, 6500.0)
        amp = 10.0 ** (rng.uniform(-14.0, 0.0) / 20.0)
        az = rng.uniform(-width, width)
        start = int(t0 * sr)
        for _ in range(rng.integers(2, 7)):
            d = rng.uniform(0.03, 0.15)
            m = int(d * sr)
            f1 = base * np.exp(rng.normal(0, 0.15))
            f2 = f1 * np.exp(rng.normal(0, 0.3))
            fr = np.linspace(f1, f2, m)
            ph = 2 * np.pi * np.cumsum(fr) / sr
            x = (np.sin(ph) + 0.1 * np.sin(2 * ph)) * np.hanning(m) * amp * 2.0
            _place(buf, x, start, az)
            start += m + int(rng.uniform(0.03, 0.1) * sr)

    # Horns / announcement chimes: harmonic bursts.
    for t0 in _onsets(rng, p["horn_rate"], seconds, 1.5):
        f0 = p["horn_f0"] * np.exp(rng.normal(0, 0.2))
        amp = 10.0 ** (rng.uniform(-10.0, 2.0) / 20.0)
        az = rng.uniform(-width, width)
        notes = int(rng.integers(1, 4))
        start = int(t0 * sr)
        for _ in range(notes):
            d = rng.uniform(0.25, 0.45) if notes > 1 else rng.uniform(0.3, 1.2)
            m = int(d * sr)
            tt = np.arange(m) / sr
            ph = 2 * np.pi * f0 * tt + 0.02 * np.sin(2 * np.pi * 5.0 * tt)
            roll = rng.uniform(0.8, 2.0)
            x = sum(np.sin(k * ph) / k**roll for k in range(1, 7))
            env = np.minimum(tt / 0.02, 1.0) * np.exp(-tt / (d * rng.uniform(0.3, 1.0)))
            _place(buf, x * env * amp, start, az)
            start += m
            f0 *= np.exp(rng.normal(0, 0.15))

    # Footstep / door-like transients: decaying filtered noise bursts, often in series.
    for t0 in _onsets(rng, p["step_rate"] / 3.0, seconds, 2.0):
        steps = int(rng.integers(1, 6))
        interval = rng.uniform(0.4, 0.7)
        az = rng.uniform(-width, width)
        cut = p["step_hz"] * np.exp(rng.normal(0, 0.3))
        a = np.exp(-2 * np.pi * min(cut, 0.45 * sr) / sr)
        amp = 10.0 ** (rng.uniform(-8.0, 6.0) / 20.0)
        for s in range(steps):
            tau = rng.uniform(0.004, 0.02)
            m = int(6 * tau * sr)
            tt = np.arange(m) / sr
            x = lfilter([1 - a], [1, -a], rng.standard_normal(m)) * np.exp(-tt / tau)
            x *= amp / (np.max(np.abs(x)) + 1e-12) * 2.0
            _place(buf, x, int((t0 + s * interval + rng.normal(0, 0.03)) * sr), az)

    # Pass-bys: low-passed noise swells sweeping across the stereo image.
    for t0 in _onsets(rng, p["passby_rate"], seconds, 4.0):
        d = rng.uniform(2.0, 5.0)
        m = int(d * sr)
        fm = np.fft.rfftfreq(m, 1.0 / sr)
        cut = rng.uniform(400.0, 2000.0)  # tyre and engine noise, not the bed's rumble
        spec = _noise_spectrum(rng, len(fm)) / np.sqrt(1.0 + (fm / cut) ** 4)
        spec *= fm**2 / (fm**2 + 80.0**2)
        x = np.fft.irfft(spec, m)
        x /= np.sqrt(np.mean(x**2)) + 1e-12
        tt = np.linspace(-1.0, 1.0, m)
        x *= np.exp(-0.5 * (tt / 0.35) ** 2) * 10.0 ** (rng.uniform(-8.0, 2.0) / 20.0)
        sweep = rng.choice([-1.0, 1.0]) * width * tt
        start = int(t0 * sr)
        gl = 10.0 ** (-sweep * 10.0 / 40.0)
        gr = 10.0 ** (sweep * 10.0 / 40.0)
        a, b = max(start, 0), min(start + m, buf.shape[1])
        if b > a:
            buf[0, a:b] += (x * gl)[a - start : b - start]
            buf[1, a:b] += (x * gr)[a - start : b - start]


# --------------------------------------------------------------------------- video


def _location_video(loc_rng: np.random.Generator, city_rng: np.random.Generator) -> dict:
    """Per-location visual nuisance: exposure, white balance, hue, camera placement."""
    k = _VIDEO_NUISANCE
    wb = np.exp(k * (loc_rng.normal(0, 0.06, 3) + city_rng.normal(0, 0.03, 3)))
    return {
        "exposure": float(np.exp(loc_rng.normal(0, 0.15 * k))),
        "white_balance": wb,
        "hue": float(k * (loc_rng.normal(0, 0.25) + city_rng.normal(0, 0.1))),
        "horizon": float(loc_rng.normal(0, 0.06 * k)),
        "roll": float(loc_rng.normal(0, 0.05 * k)),
        "zoom": float(np.exp(loc_rng.normal(0, 0.15 * k))),
        "shake": float(loc_rng.uniform(0.2, 0.8)),
        "sway": float(loc_rng.uniform(0.3, 1.0)),
    }


def _colour_matrix(hue: float, white_balance: np.ndarray) -> np.ndarray:
    """Rotation about the grey axis by ``hue`` radians, then per-channel gains."""
    c, s = math.cos(hue), math.sin(hue)
    k = 1.0 / 3.0
    q = math.sqrt(k)
    rot = np.array(
        [
            [c + (1 - c) * k, k * (1 - c) - q * s, k * (1 - c) + q * s],
            [k * (1 - c) + q * s, c + (1 - c) * k, k * (1 - c) - q * s],
            [k * (1 - c) - q * s, k * (1 - c) + q * s, c + (1 - c) * k],
        ]
    )
    return white_balance[:, None] * rot


def _apply_colour(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``img @ m.T`` written out per channel (elementwise, hence bit-reproducible)."""
    out = np.empty_like(img)
    for c in range(3):
        out[..., c] = img[..., 0] * m[c, 0] + img[..., 1] * m[c, 1] + img[..., 2] * m[c, 2]
    return out


def _oriented_texture(
    rng: np.random.Generator, hp: int, wp: int, width: int, freq: float, angle: float
) -> np.ndarray:
    """Band-pass noise around spatial frequency ``freq`` (cycles per frame width) at ``angle``."""
    noise = rng.standard_normal((hp, wp)).astype(np.float32)
    spec = np.fft.rfft2(noise)
    fx = (np.fft.rfftfreq(wp) * width)[None, :]
    fy = (np.fft.fftfreq(hp) * width)[:, None]
    u0, v0 = freq * math.cos(angle), freq * math.sin(angle)
    bw2 = 2.0 * (0.25 * freq) ** 2
    mask = np.exp(-((fx - u0) ** 2 + (fy - v0) ** 2) / bw2)
    mask += np.exp(-((fx + u0) ** 2 + (fy + v0) ** 2) / bw2)
    tex = np.fft.irfft2(spec * mask.astype(np.float32), s=(hp, wp))
    return (tex / (tex.std() + 1e-6)).astype(np.float32)


# BT.601 limited range, what decoders assume for untagged SD/HD H.264 yuv420p.
_RGB_TO_YUV = np.array(
    [
        [0.256788, 0.504129, 0.097906],
        [-0.148223, -0.290993, 0.439216],
        [0.439216, -0.367788, -0.071427],
    ],
    dtype=np.float32,
)
_YUV_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float32)


def _rgb_to_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB in [0, 255] (h, w, 3), h and w even -> Y (h, w) and UV (2, h/2, w/2), float32."""
    m = _RGB_TO_YUV
    y = rgb[..., 0] * m[0, 0] + rgb[..., 1] * m[0, 1] + rgb[..., 2] * m[0, 2] + _YUV_OFFSET[0]
    h, w = rgb.shape[0] // 2, rgb.shape[1] // 2
    sub = rgb.reshape(h, 2, w, 2, 3).mean(axis=(1, 3))
    uv = np.empty((2, h, w), dtype=np.float32)
    for c in (1, 2):
        uv[c - 1] = (
            sub[..., 0] * m[c, 0] + sub[..., 1] * m[c, 1] + sub[..., 2] * m[c, 2] + _YUV_OFFSET[c]
        )
    return y.astype(np.float32), uv


def _render_video(
    p: dict[str, float],
    loc: dict,
    width: int,
    height: int,
    fps: int,
    n_frames: int,
    rng: np.random.Generator,
):
    """Yield ``n_frames`` yuv420p frames as (height * 3 // 2, width) uint8 arrays.

    The static scene (colour layout, texture, structures, vignette, location colour cast) is
    rendered once with a margin; each frame takes a window of it that sways and shakes,
    pastes the moving shapes (pre-rendered soft ellipses at even pixel positions, so that the
    half-resolution chroma stays aligned), scales the luma by a drifting, flickering exposure
    and adds grain from a bank.
    """
    # Camera motion, in chroma pixels (2 luma pixels): a slow sway of up to 5 % of the frame
    # plus a fast shake of up to ~1 % of its height; the canvas has a margin for both.
    shake_c = max(1, round(0.004 * height))
    sway_c = (max(1, round(0.025 * width)), max(1, round(0.025 * height)))
    mx, my = 2 * (sway_c[0] + shake_c), 2 * (sway_c[1] + shake_c)
    hp, wp = height + 2 * my, width + 2 * mx
    y = ((np.arange(hp, dtype=np.float32) - my) / height)[:, None]
    x = ((np.arange(wp, dtype=np.float32) - mx) / width)[None, :]
    horizon = float(np.clip(p["horizon"] + loc["horizon"], 0.1, 0.9))
    hz = horizon + loc["roll"] * (x - 0.5)
    soft = 0.015
    wb = 0.5 * (1.0 + np.tanh((y - hz) / soft))  # weight of the lower region

    top = np.array([p["top_r"], p["top_g"], p["top_b"]], dtype=np.float32)
    bot = np.array([p["bot_r"], p["bot_g"], p["bot_b"]], dtype=np.float32)
    lum = 1.0 + p["gradient"] * (y - 0.5)
    tex = _oriented_texture(
        rng, hp, wp, width, p["tex_freq"] * loc["zoom"], p["tex_angle"] + loc["roll"]
    )
    region = p["tex_top"] * (1 - wb) + (1 - p["tex_top"]) * wb
    lum = lum * (1.0 + p["tex_contrast"] * tex * region)
    phase = rng.uniform(0, 1)
    bars = (0.5 + 0.5 * np.cos(2 * np.pi * (x * p["struct_count"] * loc["zoom"] + phase))) ** 3
    band = 0.5 * (1.0 + np.tanh((y - (hz - p["struct_height"])) / soft)) * (1.0 - wb)
    lum = lum * (1.0 + p["struct_contrast"] * (bars - 0.3) * band)
    r2 = ((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.5
    lum = lum * (1.0 - p["vignette"] * r2) * loc["exposure"]
    img = (top * (1 - wb)[..., None] + bot * wb[..., None]) * lum[..., None]
    cmat = _colour_matrix(loc["hue"], loc["white_balance"]).astype(np.float32)
    rgb = np.clip(_apply_colour(img.astype(np.float32), cmat) * 255.0, 0, 255)
    bg_y, bg_uv = _rgb_to_planes(rgb)
    bg_y += 0.5  # so that the final truncation to uint8 rounds
    bg_uv += 0.5

    # Moving shapes: soft ellipses with even-sized sprites.
    count = p["n_shapes"]
    count = int(count) + int(rng.random() < count - int(count))
    shapes = []
    for _ in range(count):
        yc = horizon + (1.0 - horizon) * rng.uniform(0.05, 0.85)
        persp = 0.5 + (yc - horizon) / max(1.0 - horizon, 0.1)
        ry = max(1.5, 0.5 * p["shape_size"] * height * persp * np.exp(rng.normal(0, 0.25)))
        rx = max(1.5, ry * p["shape_aspect"] * np.exp(rng.normal(0, 0.15)))
        hy, hx = math.ceil(ry), math.ceil(rx)
        gy, gx = np.mgrid[-hy : hy + 2, -hx : hx + 2].astype(np.float32)
        gy += 0.5
        gx += 0.5
        d = (gx / rx) ** 2 + (gy / ry) ** 2
        alpha = np.clip((1.0 - d) * 3.0, 0.0, 1.0).astype(np.float32)
        a_uv = alpha.reshape(alpha.shape[0] // 2, 2, alpha.shape[1] // 2, 2).mean(axis=(1, 3))
        colour = np.clip(p["shape_lum"] + rng.normal(0, 0.2, 3), 0.02, 0.98) * loc["exposure"]
        colour = np.clip(cmat @ colour.astype(np.float32) * 255.0, 0, 255).astype(np.float32)
        cy = float(_RGB_TO_YUV[0] @ colour + _YUV_OFFSET[0])
        cuv = (_RGB_TO_YUV[1:] @ colour + _YUV_OFFSET[1:]).astype(np.float32)[:, None, None]
        speed = p["shape_speed"] * width * np.exp(rng.normal(0, 0.3))
        if rng.random() < p["shape_dir"]:
            ang = rng.uniform(0, 2 * np.pi)
            vx, vy = speed * math.cos(ang), 0.3 * speed * math.sin(ang)
        else:
            vx, vy = speed * rng.choice([-1.0, 1.0]), 0.0
        shapes.append((alpha, a_uv, cy, cuv, rng.uniform(0, width), yc * height, vx, vy))

    bank = (rng.standard_normal((8, height, width)) * p["grain"]).astype(np.float32)
    picks = rng.integers(0, len(bank), n_frames)
    gain = (1.0 + p["flicker"] * rng.standard_normal(n_frames)) * np.exp(
        0.08 * _control_noise(rng, n_frames, fps, 1.0)
    )
    gain = gain.astype(np.float32)
    offsets = np.zeros((n_frames, 2), dtype=int)
    for axis in (0, 1):
        sway = sway_c[axis] * np.tanh(loc["sway"] * _control_noise(rng, n_frames, fps, 1.5))
        shake = shake_c * np.tanh(loc["shake"] * rng.standard_normal(n_frames))
        offsets[:, axis] = np.rint(sway + shake)  # |offset| <= sway_c + shake_c
    ymin, ymax = horizon * height, float(height)
    span = max(ymax - ymin, 1.0)

    h2, w2 = height // 2, width // 2
    buf_y = np.empty((height, width), dtype=np.float32)
    buf_uv = np.empty((2, h2, w2), dtype=np.float32)
    out = np.empty(height * width * 3 // 2, dtype=np.uint8)
    out_y = out[: height * width].reshape(height, width)
    out_uv = out[height * width :].reshape(2, h2, w2)
    for i in range(n_frames):
        t = i / fps
        sx, sy = int(offsets[i, 0]), int(offsets[i, 1])  # chroma pixels
        oy, ox = my + 2 * sy, mx + 2 * sx
        np.copyto(buf_y, bg_y[oy : oy + height, ox : ox + width])
        np.copyto(buf_uv, bg_uv[:, oy // 2 : oy // 2 + h2, ox // 2 : ox // 2 + w2])
        for alpha, a_uv, cy, cuv, x0, y0, vx, vy in shapes:
            sh, sw = a_uv.shape
            xs = (x0 + vx * t + sw) % (width + 4 * sw) - sw
            yr = (y0 - ymin + vy * t) % (2 * span)
            ys = ymin + (yr if yr < span else 2 * span - yr)
            left = int(round(xs / 2)) - sw // 2 - sx  # chroma coordinates
            topc = int(round(ys / 2)) - sh // 2 - sy
            a0, a1 = max(topc, 0), min(topc + sh, h2)
            b0, b1 = max(left, 0), min(left + sw, w2)
            if a1 <= a0 or b1 <= b0:
                continue
            reg = buf_uv[:, a0:a1, b0:b1]
            reg += a_uv[a0 - topc : a1 - topc, b0 - left : b1 - left] * (cuv - reg)
            reg = buf_y[2 * a0 : 2 * a1, 2 * b0 : 2 * b1]
            al = alpha[2 * (a0 - topc) : 2 * (a1 - topc), 2 * (b0 - left) : 2 * (b1 - left)]
            reg += al * (cy - reg)
        buf_y *= gain[i]
        buf_y += bank[picks[i]]
        np.clip(buf_y, 0, 255, out=buf_y)
        np.clip(buf_uv, 0, 255, out=buf_uv)
        out_y[...] = buf_y
        out_uv[...] = buf_uv
        yield out.reshape(height * 3 // 2, width)


def _encode_mp4(path: Path, frames, width: int, height: int, fps: int) -> None:
    """H.264 (libx264, single thread, fast preset, 1-s GOP), yuv420p, frame i at i/fps."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.thread_count = 1
        stream.codec_context.gop_size = fps
        stream.codec_context.options = {
            "preset": "ultrafast",
            "crf": "23",
            "threads": "1",
            "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0",
        }
        for i, planes in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
