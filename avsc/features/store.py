"""The on-disk feature store and ``avsc preprocess``.

Layout of a store folder::

    store.json               format version, the PreprocessConfig it was built with, and the
                             collection: its labels, recipe, manifest digest, modalities
    manifest.csv             the clip manifest it was built from (paths relative to data_root)
    index.jsonl              one JSON line per finished clip, appended as clips finish
    index.csv                the same, one row per clip, rewritten at the end of each run
    audio/<kind>/<entry>.npy float32 (segments, 6, 2, F) per feature kind (audio collections)
    frames/<entry>.npz       JPEG frames: ``jpeg`` bytes, ``offsets``, ``shape`` (or .npy uint8)
    split.csv                clip -> train / val / evaluate / unused, the store's own split
    stats/<kind>.npz         per (channel, bin) mean and std over that split's training clips
    splits/<key>/            another split (a held-out fold, other fractions or seed): its
                             split.csv, split.json and stats/, made when a training asks
    failures.csv             clip, file, problem: what the last run skipped and why

``<entry>`` is the clip id where it is a plain lower-case file name (TAU's ids), else a
readable stem and a digest of the id (any id is safe: spaces, non-ASCII, slashes).
Every file is written to a temporary name and renamed, and a clip counts as finished only
once its line is in ``index.jsonl``, written after all its files: a killed run leaves no
half-written entry, and a rerun skips finished clips. Workers write their own files and send
back only a small record, so memory does not grow with the number of clips.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import shlex
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avsc.config import PreprocessConfig
from avsc.parallel import PoolError, WorkerDied, process_map
from avsc.utils import (
    LOCK_NAME,
    NAMES_IN,
    TEXT_OUT,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    exclusive_lock,
    native_path,
    progress,
    read_names_csv,
    remove_own_tmp,
    text_bytes,
    versions,
)

log = logging.getLogger(__name__)

STORE_VERSION = 1

#: a clip id that is its own file name in the store (TAU's ``airport-lisbon-1000-40000``)
_PLAIN_ENTRY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,150}$")


def entry_name(clip: str) -> str:
    """The file stem of ``clip``'s entries: the id itself where it is a plain lower-case file
    name, else an ASCII stem of it and 10 hex digits of its SHA-1 (never two ids on one name,
    whatever the file system's case or normalisation rules)."""
    if _PLAIN_ENTRY.match(clip):
        return clip
    raw = text_bytes(clip)  # the id's UTF-8 bytes, whatever the locale it was read under
    text = raw.decode("utf-8", "surrogateescape")
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_).strip("._-")[:60] or "clip"
    return f"{stem}-{hashlib.sha1(raw).hexdigest()[:10]}"


def audio_rel(clip: str, kind: str) -> str:
    """Where ``clip``'s ``kind`` features live in a store (relative)."""
    return f"audio/{kind}/{entry_name(clip)}.npy"


def frames_rel(clip: str, fmt: str = "jpeg") -> str:
    """Where ``clip``'s frames live in a store (relative; ``fmt`` is frames.format)."""
    return f"frames/{entry_name(clip)}.{'npz' if fmt == 'jpeg' else 'npy'}"


class StoreError(RuntimeError):
    """A feature store that cannot be used as asked; the message names the folder or file."""


class PreprocessError(RuntimeError):
    """``--strict`` preprocessing stopped at a bad clip; the message names the file."""


class ClipError(ValueError):
    """A clip that cannot be featurized: ``file`` names the offending file."""

    def __init__(self, file: str | os.PathLike, problem: str):
        super().__init__(f"{file}: {problem}")
        self.file = str(file)
        self.problem = problem


# --------------------------------------------------------------------------------------
# frame encoding


def encode_frames(frames: np.ndarray, quality: int = 95) -> dict[str, np.ndarray]:
    """JPEG-encode ``(S, H, W, 3)`` uint8 frames into arrays for an ``.npz`` file."""
    from PIL import Image

    blobs = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="JPEG", quality=quality, subsampling=0)
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return {
        "jpeg": np.concatenate(blobs) if blobs else np.zeros(0, np.uint8),
        "offsets": offsets,
        "shape": np.asarray(frames.shape, dtype=np.int64),
    }


def decode_jpeg(blob: np.ndarray) -> np.ndarray:
    """One JPEG (uint8 bytes) -> ``(H, W, 3)`` uint8 RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(blob.tobytes())) as im:
        return np.asarray(im.convert("RGB"))


# --------------------------------------------------------------------------------------
# the worker: one clip


def _save_npy(path: Path, arr: np.ndarray) -> list:
    """Write ``arr`` as ``.npy`` atomically; return ``[size, sha1]`` of the bytes written."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return _save_bytes(path, buf.getvalue())


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> list:
    """Write ``arrays`` as ``.npz`` atomically; return ``[size, sha1]`` of the bytes written."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return _save_bytes(path, buf.getvalue())


def _save_bytes(path: Path, data: bytes) -> list:
    atomic_write_bytes(path, data)
    return [len(data), hashlib.sha1(data).hexdigest()]


def _entry_problem(path: Path, expected: list | None, checksum: bool) -> str | None:
    """Why the store entry at ``path`` is damaged, or None: missing, a size other than the
    index's ``[size, sha1]`` or, with ``checksum``, other bytes."""
    try:
        size = path.stat().st_size
    except OSError:
        return "missing"
    if expected is None:
        return None  # written by an avsc that did not record sizes: existence is all we know
    if size != expected[0]:
        return f"{size} bytes, the index says {expected[0]} (truncated or overwritten)"
    if checksum:
        digest = hashlib.sha1()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != expected[1]:
            return "checksum differs from the index (corrupted)"
    return None


def load_entry(path: Path, clip: str | None = None, mmap: bool = False):
    """``np.load`` of a store entry; a damaged file is a :class:`StoreError` naming it (and
    never a hint to allow pickles: avsc's entries hold plain arrays)."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise
    except Exception as exc:
        text = str(exc)
        if "pickled data" in text or "allow_pickle" in text:
            text = "not a valid .npy/.npz file"
        whose = f" of clip {clip}" if clip else ""
        raise StoreError(
            f"{path}: damaged store entry{whose} ({type(exc).__name__}: {text}); rerun avsc "
            "preprocess to rebuild damaged entries (--verify also compares checksums)"
        ) from exc


def featurize_clip(
    audio_path: str | os.PathLike | None,
    video_path: str | os.PathLike | None,
    config: PreprocessConfig,
    decode_threads: int | None = None,
    clip_seconds: float | None = None,
    kinds: tuple[str, ...] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray | None, dict[str, float]]:
    """Audio features (one array per kind of ``kinds``, default ``config.features``), frames
    and facts (``seconds``, ``segments``, ``dropped_seconds``) of one clip, after checking it.

    Either path may be None (an audio-only or video-only clip). A clip gives as many
    ``audio.segment_seconds`` segments as fit in its audio (in its video, without audio); the
    remainder is dropped and counted. With ``clip_seconds`` (``data.clip_seconds``, or the
    length a recipe promises) every clip must last that long. Raises :class:`ClipError`
    naming the file for a missing, unreadable, truncated or too short file, a clip of the
    wrong length, or a video that does not cover the audio's segments."""
    import soundfile as sf

    from avsc.features.audio import AudioError, features_from_waveform, read_audio
    from avsc.features.video import VideoError, extract_frames, video_info

    dc, ac = config.data, config.audio
    kinds = tuple(config.features if kinds is None else kinds)
    audio_path = Path(audio_path) if audio_path else None
    video_path = Path(video_path) if video_path else None
    expected = None if clip_seconds is None else int(round(clip_seconds / ac.segment_seconds))
    seg_s = ac.segment_seconds
    for path, what in ((audio_path, "audio"), (video_path, "video")):
        if path is not None and not path.is_file():
            raise ClipError(path, f"{what} file missing")
    feats: dict[str, np.ndarray] = {}
    n_seg = seconds = None
    if audio_path is not None and kinds:
        try:
            if audio_path.suffix.lower() == ".wav" and clip_seconds is not None:
                info = sf.info(native_path(audio_path))
                _check_length(audio_path, info.frames / info.samplerate, clip_seconds, dc)
            x, sr = read_audio(audio_path)
        except (AudioError, RuntimeError) as exc:
            raise ClipError(audio_path, _problem(exc, audio_path)) from exc
        seconds = x.shape[1] / sr
        if clip_seconds is not None:
            _check_length(audio_path, seconds, clip_seconds, dc)
        try:
            out = features_from_waveform(x, sr, kinds, ac, source=str(audio_path))
        except AudioError as exc:
            raise ClipError(audio_path, _problem(exc, audio_path)) from exc
        assert isinstance(out, dict)
        feats = out
        n_seg = next(iter(feats.values())).shape[0]
        if expected is not None and n_seg != expected:
            raise ClipError(audio_path, f"{n_seg} segments, expected {expected}")

    frames = None
    if video_path is not None:
        try:
            vinfo = video_info(video_path)
            if clip_seconds is not None:
                _check_length(video_path, vinfo.duration, clip_seconds, dc)
            if n_seg is None:  # video only: the video's whole segments
                seconds = vinfo.duration
                n_seg = expected
                if n_seg is None:
                    if not math.isfinite(seconds):
                        raise ClipError(video_path, "unknown duration")
                    n_seg = int(math.floor(seconds / seg_s + ac.segment_tolerance))
                if n_seg < 1:
                    raise ClipError(
                        video_path,
                        f"{seconds:.3f} s of video is shorter than one {seg_s:g}-s segment",
                    )
            frames = extract_frames(
                video_path,
                short_side=config.frames.short_side,
                segments=n_seg,
                segment_seconds=seg_s,
                threads=decode_threads,
            )
        except VideoError as exc:
            raise ClipError(video_path, _problem(exc, video_path)) from exc
    assert n_seg is not None and seconds is not None
    facts = {
        "seconds": round(float(seconds), 4),
        "segments": int(n_seg),
        "dropped_seconds": round(max(0.0, float(seconds) - n_seg * seg_s), 4),
    }
    return feats, frames, facts


def _problem(exc: Exception, path: Path) -> str:
    msg = str(exc)
    prefix = f"{path}: "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg


def _check_length(path: Path, seconds: float, clip_seconds: float, dc) -> None:
    if not math.isfinite(seconds) or abs(seconds - clip_seconds) > dc.length_tolerance:
        raise ClipError(
            path,
            f"wrong length: {seconds:.3f} s, expected {clip_seconds:g} s "
            f"(tolerance {dc.length_tolerance:g} s)",
        )


_BLAS = None  # a worker's threadpoolctl controller (scanning the loaded libraries takes ms)


def _process_clip(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: featurize one clip, write its files atomically, return its index record.

    BLAS runs single-threaded here: parallelism comes from the worker processes, and a
    threaded BLAS on busy cores slows the small filterbank products down tenfold or more."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    with _BLAS.limit(limits=1, user_api="blas"):
        return _process_clip_unlimited(task)


@functools.lru_cache(maxsize=4)
def _config_of(text: str) -> PreprocessConfig:
    """A task's config (its JSON text), checked once per worker rather than per clip."""
    return PreprocessConfig.from_dict(json.loads(text))


def _process_clip_unlimited(task: dict[str, Any]) -> dict[str, Any]:
    import warnings

    config = _config_of(json.dumps(task["config"], sort_keys=True))
    cache = Path(task["cache"])
    clip = task["clip"]
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            feats, frames, facts = featurize_clip(
                task["audio_path"],
                task["video_path"],
                config,
                task.get("decode_threads"),
                task.get("clip_seconds"),
                tuple(task["kinds"]),
            )
    except ClipError as exc:
        return {"clip": clip, "ok": False, "file": exc.file, "problem": exc.problem}
    except Exception as exc:  # never let one clip kill the run: report it by name
        return {
            "clip": clip,
            "ok": False,
            "file": task["audio_path"] or task["video_path"],
            "problem": f"unexpected {type(exc).__name__}: {exc}",
        }
    files = {}
    for kind, arr in feats.items():
        rel = audio_rel(clip, kind)
        files[rel] = _save_npy(cache / rel, arr)
    record: dict[str, Any] = {
        "clip": clip,
        "ok": True,
        "scene_label": task["scene_label"],
        "identifier": task["identifier"],
        "segments": facts["segments"],
        "features": sorted(feats),
    }
    if frames is not None:
        rel = frames_rel(clip, config.frames.format)
        if config.frames.format == "jpeg":
            files[rel] = _save_npz(cache / rel, encode_frames(frames, config.frames.jpeg_quality))
        else:
            files[rel] = _save_npy(cache / rel, frames)
        record["frame_shape"] = list(frames.shape[1:])
    record.update(
        {
            "files": files,  # relative path -> [size, sha1]: a rerun finds damaged entries
            "warnings": sorted({str(w.message) for w in caught}),
            "seconds": round(time.perf_counter() - t0, 4),
            "duration": facts["seconds"],
            "dropped_seconds": facts["dropped_seconds"],
        }
    )
    return record


# --------------------------------------------------------------------------------------
# normalisation statistics


@dataclass(frozen=True)
class NormStats:
    """Per (channel, bin) mean and standard deviation of one feature kind (method.md 2.7)."""

    mean: np.ndarray  # (2, F) float32
    std: np.ndarray  # (2, F) float32
    count: int  # feature frames the statistics were computed over
    clips: int

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise ``(..., 2, F)`` features."""
        return ((x - self.mean) / self.std).astype(np.float32, copy=False)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "mean": self.mean,
            "std": self.std,
            "count": np.int64(self.count),
            "clips": np.int64(self.clips),
        }

    @classmethod
    def load(cls, path: str | os.PathLike) -> NormStats:
        try:
            with load_entry(Path(path)) as z:
                return cls(z["mean"], z["std"], int(z["count"]), int(z["clips"]))
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(
                f"{path}: damaged normalisation statistics ({type(exc).__name__}: {exc}); "
                "delete the file and rerun avsc preprocess"
            ) from exc


def normalization_stats(arrays: Iterable[np.ndarray], min_std: float = 1e-5) -> NormStats:
    """Streaming per (channel, bin) mean/std over ``(..., 2, F)`` arrays (Chan's merge, in
    float64), one array in memory at a time. Standard deviations below ``min_std`` become 1."""
    n = 0
    mean = m2 = None
    clips = 0
    for arr in arrays:
        a = np.asarray(arr, dtype=np.float64).reshape(-1, *arr.shape[-2:])
        k = a.shape[0]
        mu = a.mean(axis=0)
        m2_k = ((a - mu) ** 2).sum(axis=0)
        if mean is None:
            mean, m2, n = mu, m2_k, k
        else:
            delta = mu - mean
            tot = n + k
            mean = mean + delta * (k / tot)
            m2 = m2 + m2_k + delta**2 * (n * k / tot)
            n = tot
        clips += 1
    if mean is None or n < 2:
        raise StoreError("normalisation statistics need at least two feature frames")
    std = np.sqrt(m2 / n)
    std = np.where(std < min_std, 1.0, std)
    return NormStats(mean.astype(np.float32), std.astype(np.float32), int(n), clips)


# --------------------------------------------------------------------------------------
# the store


class FeatureStore:
    """Read access to a feature store written by :func:`preprocess`: its clips (``index``),
    their features and frames, the collection's ``labels`` and ``modalities``, and its splits
    (:meth:`split`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / "store.json"
        if not meta_path.is_file():
            raise StoreError(
                f"{self.path}: not a feature store (no store.json); run avsc preprocess"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("version") != STORE_VERSION:
            raise StoreError(
                f"{meta_path}: store format {meta.get('version')}, this avsc reads {STORE_VERSION}"
            )
        self.meta = meta
        self.config = PreprocessConfig.from_dict(meta["config"])
        self._index: pd.DataFrame | None = None
        self._manifest = None

    # ------------------------------------------------------------------ the collection
    @property
    def labels(self) -> tuple[str, ...]:
        """The class names in class-index order, from the collection's manifest."""
        if "labels" not in self.meta:
            raise StoreError(
                f"{self.path / 'store.json'}: made by an older avsc that recorded no label "
                "list; rerun avsc preprocess on the same data and --cache to record it (the "
                "features are kept)"
            )
        return tuple(self.meta["labels"])

    @property
    def modalities(self) -> tuple[str, ...]:
        """``("audio", "video")``, ``("audio",)`` or ``("video",)``: what the store holds."""
        return tuple(self.meta.get("modalities", ("audio", "video")))

    @property
    def features(self) -> tuple[str, ...]:
        """The acoustic feature kinds the store holds (none for a video-only collection)."""
        return tuple(self.config.features) if "audio" in self.modalities else ()

    @property
    def recipe(self) -> str:
        return str(self.meta.get("recipe", "tau2021av"))

    @property
    def data_root(self) -> Path:
        return Path(self.meta.get("data_root", ""))

    @property
    def folds(self) -> list[str]:
        return list(self.meta.get("folds") or [])

    def manifest(self):
        """The :class:`avsc.data.Manifest` the store was built from (its ``manifest.csv``,
        paths relative to :attr:`data_root`)."""
        if self._manifest is None:
            from avsc.data.manifest import Manifest

            path = self.path / "manifest.csv"
            if not path.is_file():
                raise StoreError(f"{path}: no manifest in this store; rerun avsc preprocess")
            df = read_names_csv(path, dtype=str, keep_default_na=False)
            self._manifest = Manifest(
                df,
                self.data_root,
                self.labels,
                self.recipe,
                Path(self.meta.get("source") or self.data_root),
                clip_seconds=self.meta.get("clip_seconds"),
            )
        return self._manifest

    @property
    def index(self) -> pd.DataFrame:
        """One row per finished clip: clip, scene_label, label (the class index), identifier
        (the group), segments, ..."""
        if self._index is None:
            records = list(read_index(self.path).values())
            df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=["clip"])
            if len(df):
                index = {name: i for i, name in enumerate(self.labels)}
                df["label"] = df["scene_label"].map(index).fillna(-1).astype(int)
                df = df.sort_values("clip").reset_index(drop=True)
            self._index = df
        return self._index

    @property
    def clips(self) -> list[str]:
        return list(self.index["clip"])

    def audio_path(self, clip: str, kind: str) -> Path:
        return self.path / audio_rel(clip, kind)

    def frames_path(self, clip: str) -> Path:
        return self.path / frames_rel(clip, self.config.frames.format)

    def load_audio(self, clip: str, kind: str = "scalogram", mmap: bool = False) -> np.ndarray:
        """float32 ``(segments, 6, 2, F)`` of ``clip``."""
        path = self.audio_path(clip, kind)
        if not path.is_file():
            raise StoreError(f"{path}: no {kind} features for clip {clip!r} in this store")
        return load_entry(path, clip, mmap)

    def load_frames(self, clip: str, segments: Iterable[int] | None = None) -> np.ndarray:
        """uint8 ``(segments, H, W, 3)`` of ``clip`` (all segments, or those listed)."""
        path = self.frames_path(clip)
        if not path.is_file():
            raise StoreError(f"{path}: no frames for clip {clip!r} in this store")
        if path.suffix == ".npy":
            arr = load_entry(path, clip, mmap=True)
            idx = list(range(arr.shape[0])) if segments is None else list(segments)
            return np.ascontiguousarray(arr[idx])
        try:
            with load_entry(path, clip) as z:
                data, offsets, shape = z["jpeg"], z["offsets"], z["shape"]
            idx = list(range(int(shape[0]))) if segments is None else list(segments)
            return np.stack([decode_jpeg(data[offsets[i] : offsets[i + 1]]) for i in idx])
        except StoreError:
            raise
        except Exception as exc:  # a damaged member or JPEG inside a readable .npz
            raise StoreError(
                f"{path}: damaged store entry of clip {clip} ({type(exc).__name__}: {exc}); "
                "rerun avsc preprocess to rebuild damaged entries (--verify also compares "
                "checksums)"
            ) from exc

    def load_frame_jpegs(self, clip: str) -> list[np.ndarray]:
        """The JPEG bytes (uint8, one array per segment) of ``clip``'s stored frames, for
        decoding elsewhere (``train.decode_on_device``)."""
        path = self.frames_path(clip)
        if not path.is_file():
            raise StoreError(f"{path}: no frames for clip {clip!r} in this store")
        if path.suffix == ".npy":
            raise StoreError(
                f"{path}: this store keeps decoded frames (frames.jpeg_quality null); "
                "train.decode_on_device needs JPEG frames"
            )
        with load_entry(path, clip) as z:
            data, offsets = z["jpeg"], z["offsets"]
        return [data[offsets[i] : offsets[i + 1]].copy() for i in range(len(offsets) - 1)]

    # ------------------------------------------------------------------ splits
    def split(self, data=None) -> StoreSplit:
        """The split of the store's clips under ``data`` (a :class:`DataConfig`; default the
        one the store was built with): the store's own ``split.csv`` and ``stats/`` when it
        decides the same split, else ``splits/<key>/``, made now (under the store's lock) if
        no training asked for it before: the subsets and the normalisation statistics of its
        own training clips. No clip is featurized again."""
        from avsc.data.split import split_settings

        own = self.meta.get("split")
        if data is None:
            settings = own
        else:
            settings = split_settings(self.manifest(), data)
        if settings is None or settings == own:
            return StoreSplit(self, self.path, own)
        key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        folder = self.path / "splits" / key
        if not (folder / "split.json").is_file():
            with store_lock(self.path, wait=True):
                if not (folder / "split.json").is_file():
                    _write_split(self, folder, data, settings)
        return StoreSplit(self, folder, settings)

    def subsets(self, data=None) -> pd.DataFrame:
        """``clip, subset`` (train / val / evaluate / unused) of :meth:`split`."""
        return self.split(data).subsets()

    def split_summary(self, data=None) -> pd.DataFrame:
        """Clips and groups per class in each subset of :meth:`split`."""
        return self.split(data).summary()

    def normalization(self, kind: str = "scalogram", data=None) -> NormStats:
        """The normalisation statistics of ``kind`` over the training clips of :meth:`split`."""
        return self.split(data).normalization(kind)

    def failures(self) -> pd.DataFrame:
        path = self.path / "failures.csv"
        if not path.is_file():
            return pd.DataFrame(columns=["clip", "file", "problem"])
        return read_names_csv(path, dtype=str, keep_default_na=False)

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return (
            f"FeatureStore({str(self.path)!r}, clips={len(self)}, labels={len(self.labels)}, "
            f"modalities={'+'.join(self.modalities)}, features={self.features})"
        )


@dataclass
class StoreSplit:
    """One split of a store: ``folder`` holds its ``split.csv`` and ``stats/``."""

    store: FeatureStore
    folder: Path
    settings: dict | None

    def subsets(self) -> pd.DataFrame:
        path = self.folder / "split.csv"
        if not path.is_file():
            raise StoreError(f"{path}: no split in this store; rerun avsc preprocess")
        return read_names_csv(path, dtype=str, keep_default_na=False)

    def normalization(self, kind: str = "scalogram") -> NormStats:
        path = self.folder / "stats" / f"{kind}.npz"
        if not path.is_file():
            raise StoreError(f"{path}: no normalisation statistics for {kind}")
        return NormStats.load(path)

    def summary(self) -> pd.DataFrame:
        """Clips and groups (``locations``, TAU's) per class in each subset."""
        index = self.store.index[["clip", "scene_label", "identifier"]]
        split = self.subsets().merge(index, on="clip")
        out = split.groupby(["scene_label", "subset"]).agg(
            clips=("clip", "size"), locations=("identifier", "nunique")
        )
        return out.unstack("subset").fillna(0).astype(int).reset_index()


def _write_split(store: FeatureStore, folder: Path, data, settings: dict) -> None:
    """``split.csv``, ``stats/<kind>.npz`` and, last, ``split.json`` of a split in ``folder``."""
    from avsc.data.split import assign_subsets

    subsets = assign_subsets(store.manifest(), data)
    with atomic_path(folder / "split.csv") as tmp:
        subsets.to_csv(tmp, index=False, **TEXT_OUT)
    _write_stats(store, folder / "stats", subsets)
    atomic_write_json(folder / "split.json", settings)


def _write_stats(store: FeatureStore, folder: Path, subsets: pd.DataFrame) -> None:
    """The normalisation statistics of every feature kind over the finished training clips
    of ``subsets`` (kept when an earlier run computed them over the same clips)."""
    index = store.index
    finished = set(index["clip"]) if len(index) else set()
    train = sorted(c for c in subsets.loc[subsets["subset"] == "train", "clip"] if c in finished)
    if not train:
        log.warning("no finished training clips: no normalisation statistics")
        return
    digest = hashlib.sha1(text_bytes("\n".join(train))).hexdigest()
    for kind in store.features:
        path = folder / f"{kind}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                if "clips_sha1" in z and str(z["clips_sha1"]) == digest:
                    continue
        stats = normalization_stats(store.load_audio(c, kind) for c in train)
        arrays = stats.to_arrays()
        arrays["clips_sha1"] = np.asarray(digest)
        _save_npz(path, arrays)


def read_index(cache: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Finished clips of a store: the last complete ``index.jsonl`` line per clip.

    A line cut short by a killed run is ignored (that clip is redone)."""
    path = Path(cache) / "index.jsonl"
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    with open(path, **NAMES_IN) as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # torn final line
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[rec["clip"]] = rec
    return out


def _repair_index(path: Path) -> None:
    """Cut a torn final line so that later appends start on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)


#: data keys that change which clips a store accepts (the rest choose the split only)
STORE_DATA_KEYS = ("clip_seconds", "length_tolerance")


def _open_store(cache: Path, config: PreprocessConfig, manifest=None) -> PreprocessConfig:
    """Check that an existing store was built with compatible settings (audio, frames, the
    data keys of :data:`STORE_DATA_KEYS`) and for the same labels and modalities as
    ``manifest``; return the config to record (feature kinds are the union of old and new)."""
    meta_path = cache / "store.json"
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(f"{meta_path}: unreadable store description ({exc})") from exc
        if old.get("version") != STORE_VERSION:
            raise StoreError(
                f"{meta_path}: store format {old.get('version')}, expected {STORE_VERSION}"
            )
        old_cfg = PreprocessConfig.from_dict(old["config"])
        # a store whose runs finished no clip (e.g. every clip failed on wrong settings)
        empty = "" if read_index(cache) else (
            f"; it holds no finished clip yet, so nothing is lost by deleting it: rm -r "
            f"{shlex.quote(str(cache))} and rerun with the new settings"
        )  # fmt: skip
        for section in ("audio", "frames", "data"):
            a, b = getattr(old_cfg, section).to_dict(), getattr(config, section).to_dict()
            keys = STORE_DATA_KEYS if section == "data" else list(a)
            diff = {k: (a[k], b[k]) for k in keys if a[k] != b[k]}
            if diff:
                raise StoreError(
                    f"{cache}: built with different {section} settings {diff} (stored, asked); "
                    f"use a new --cache folder{empty}"
                )
        if manifest is not None:
            for what, stored, now in (
                ("labels", old.get("labels"), list(manifest.labels)),
                ("modalities", old.get("modalities"), list(manifest.modalities)),
            ):
                if stored is not None and list(stored) != now:
                    raise StoreError(
                        f"{cache}: built for a collection with the {what} {_short(stored)}; "
                        f"{manifest.source} has {_short(now)}; use a new --cache folder{empty}"
                    )
        features = tuple(sorted(set(old_cfg.features) | set(config.features)))
        return config.replace(features=features)
    return config


def _short(values: list, n: int = 6) -> str:
    shown = ", ".join(map(repr, values[:n]))
    return f"[{shown}{f', ... ({len(values)} in all)' if len(values) > n else ''}]"


def check_store_folder(cache: str | os.PathLike) -> None:
    """A store folder must be new, empty or a feature store: a :class:`StoreError` for a file,
    or for a non-empty folder without ``store.json`` (preprocess never writes into, nor
    cleans up, a folder it did not make)."""
    cache = Path(cache)
    if cache.exists() and not cache.is_dir():
        raise StoreError(f"{cache}: is a file, not a feature store folder")
    if not cache.is_dir() or (cache / "store.json").is_file():
        return
    from avsc.utils import TMP_NAME

    foreign = sorted(
        p.name
        for p in cache.iterdir()
        if not (p.name.startswith(LOCK_NAME) or TMP_NAME.match(p.name))
    )
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise StoreError(
            f"{cache}: not empty and not a feature store (no store.json; holds {shown}); "
            "avsc preprocess writes only into a new or empty folder or an existing store: "
            "choose another --cache"
        )


def store_lock(cache: str | os.PathLike, wait: bool = False):
    """The exclusive lock of a feature store (``<cache>/.avsc.lock``): preprocess holds it for
    its whole run, a training while it writes an augmentation bank into the store."""
    return exclusive_lock(Path(cache) / LOCK_NAME, f"feature store {cache}", wait=wait)


def _store_tmp_folders(cache: Path) -> list[Path]:
    """The folders of a store's own layout, where its temporary files live."""
    folders = [cache, cache / "frames", cache / "stats", cache / "bank", cache / "splits"]
    for parent in (cache / "audio", cache / "bank", cache / "splits"):
        if parent.is_dir():
            folders += [p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()]
    if (cache / "splits").is_dir():
        folders += [p / "stats" for p in (cache / "splits").iterdir() if p.is_dir()]
    return folders


@dataclass
class PreprocessReport:
    """What one :func:`preprocess` run did."""

    store: Path
    total: int
    processed: int
    skipped: int
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    rebuilt: list[str] = field(default_factory=list)  # clips whose entries were damaged
    notes: dict[str, list[str]] = field(default_factory=dict)  # clip -> format conversions
    dropped: dict[str, float] = field(default_factory=dict)  # clip -> seconds past its segments

    @property
    def ok(self) -> bool:
        return not self.failures

    def format(self) -> str:
        lines = [
            f"feature store {self.store}: {self.total} clips; {self.processed} processed, "
            f"{self.skipped} already done, {len(self.failures)} failed ({self.seconds:.1f} s)"
        ]
        if self.rebuilt:
            lines.append(
                f"  {len(self.rebuilt)} damaged entr{'y' if len(self.rebuilt) == 1 else 'ies'} "
                f"rebuilt: {', '.join(self.rebuilt[:5])}"
                + (" ..." if len(self.rebuilt) > 5 else "")
            )
        if self.notes:
            kinds: dict[str, int] = {}
            for ns in self.notes.values():
                for n in ns:
                    kinds[n] = kinds.get(n, 0) + 1
            lines.append(
                f"  {len(self.notes)} clip(s) converted to the method's input (listed in "
                f"{self.store / 'index.csv'}, column warnings):"
            )
            lines += [f"    {k}: {n} clip(s)" for k, n in sorted(kinds.items())[:5]]
            if len(kinds) > 5:
                lines.append(f"    ... and {len(kinds) - 5} more kinds")
        if self.dropped:
            total = sum(self.dropped.values())
            lines.append(
                f"  {len(self.dropped)} clip(s) end in less than a whole segment: {total:.1f} s "
                f"dropped in all (listed in {self.store / 'index.csv'}, column dropped_seconds)"
            )
        for f in self.failures:
            lines.append(f"  FAILED {f['clip']}: {f['file']}: {f['problem']}")
        if self.failures:
            lines.append(f"  (listed in {self.store / 'failures.csv'}; fix and rerun to retry)")
        return "\n".join(lines)


def _note_kind(message: str, source: str | None) -> str:
    """A conversion note without the file it names (``x.ogg: mono ...`` -> ``mono ...``)."""
    if source and message.startswith(f"{source}: "):
        return message[len(source) + 2 :]
    return message


def preprocess(
    data_root,
    cache: str | os.PathLike,
    config: PreprocessConfig | None = None,
    workers: int = 1,
    strict: bool = False,
    show_progress: bool | None = None,
    verify: bool = False,
    recipe: str | None = None,
) -> PreprocessReport:
    """Featurize a collection into a feature store (method.md sections 2-3).

    ``data_root`` is a dataset folder or a manifest file (made into a clip manifest by
    ``recipe``, default ``config.data.recipe``: :func:`avsc.data.load_manifest`), or an
    :class:`avsc.data.Manifest`. The manifest is checked first and a collection with any
    metadata error, or one that cannot be split as ``config.data`` asks, is refused with
    every problem listed, before any work. Every clip gets its audio features
    (``config.features``) where the collection has audio and its 1-fps frames where it has
    video; finished clips are skipped on a rerun unless an entry is missing or its size
    differs from the index (``verify``: or its checksum), in which case the clip is rebuilt.
    A bad clip (missing, unreadable, truncated or too short file, wrong length where one is
    asked, a worker that died on it) is reported by name in ``failures.csv`` and skipped, or,
    with ``strict``, stops the run with :class:`PreprocessError` (finished clips are kept).
    Afterwards the split and its training clips' normalisation statistics are written. The
    store is locked for the run: a second run on the same ``cache`` is refused with a
    :class:`avsc.utils.LockedError` naming the first. A folder that is neither new, empty nor
    a store is refused. Returns a :class:`PreprocessReport`.
    """
    from avsc.data.manifest import DatasetError, Manifest
    from avsc.data.recipes import keep_modalities, load_manifest
    from avsc.data.split import split_problems, split_settings

    t0 = time.perf_counter()
    config = config or PreprocessConfig()
    dc = config.data
    cache = Path(cache)
    if isinstance(data_root, Manifest):
        manifest = data_root
        if dc.modalities:
            manifest = keep_modalities(manifest, tuple(dc.modalities))
    else:
        manifest = load_manifest(data_root, recipe or dc.recipe, dc.labels, dc.modalities)
    manifest.raise_errors()
    if not len(manifest.clips):
        raise DatasetError(f"{manifest.source}: the collection holds no clip")
    problems = split_problems(manifest, dc, all_folds=False)
    if problems:
        raise DatasetError(
            f"{manifest.source}: cannot be split as asked (data.split {dc.split}, "
            f"val_fraction {dc.val_fraction:g}); nothing was done:\n"
            + "\n".join(f"  {p.problem}" for p in problems)
        )
    check_store_folder(cache)
    with store_lock(cache):
        config = _open_store(cache, config, manifest)
        removed = remove_own_tmp(_store_tmp_folders(cache))
        if removed:
            log.info("removed %d temporary file(s) of an interrupted run in %s", removed, cache)
        index_path = cache / "index.jsonl"
        _repair_index(index_path)
        clip_seconds = dc.clip_seconds if dc.clip_seconds is not None else manifest.clip_seconds
        with atomic_path(cache / "manifest.csv") as tmp:
            manifest.standard().to_csv(tmp, index=False, lineterminator="\n", **TEXT_OUT)
        atomic_write_json(
            cache / "store.json",
            {
                "version": STORE_VERSION,
                "config": json.loads(json.dumps(config.to_dict())),
                "data_root": str(Path(manifest.root).resolve()),
                "source": str(Path(manifest.source).resolve()),
                "recipe": manifest.recipe,
                "labels": list(manifest.labels),
                "manifest_sha1": manifest.sha1(),
                "modalities": list(manifest.modalities),
                "folds": manifest.folds,
                "clip_seconds": clip_seconds,
                "split": split_settings(manifest, dc),
                "versions": versions(),
            },
        )
        report = _featurize_all(
            manifest, cache, config, workers, strict, show_progress, verify, clip_seconds
        )
        _finalize(cache, manifest, config)
    report.seconds = time.perf_counter() - t0
    return report


def _featurize_all(
    manifest,
    cache: Path,
    config: PreprocessConfig,
    workers: int,
    strict: bool,
    show_progress: bool | None,
    verify: bool,
    clip_seconds: float | None,
) -> PreprocessReport:
    done = read_index(cache)
    clips = manifest.clips
    kinds = tuple(config.features) if "audio" in manifest.modalities else ()
    with_frames = "video" in manifest.modalities
    groups = manifest.groups()
    tasks, rebuilt = [], []
    sources: dict[str, str | None] = {}
    for row, group in zip(clips.to_dict("records"), groups, strict=True):
        clip = row["clip"]
        audio = str(manifest.path(row["audio"])) if row.get("audio") else None
        video = str(manifest.path(row["video"])) if row.get("video") and with_frames else None
        sources[clip] = audio
        rec = done.get(clip)
        if rec is not None and set(kinds) <= set(rec["features"]):
            rels = [audio_rel(clip, k) for k in kinds]
            if with_frames:
                rels.append(frames_rel(clip, config.frames.format))
            sums = rec.get("files") or {}
            problems = {
                rel: why
                for rel in rels
                if (why := _entry_problem(cache / rel, sums.get(rel), verify)) is not None
            }
            if not problems:
                continue
            rebuilt.append(clip)
            for rel, why in problems.items():
                log.warning(
                    "damaged store entry %s: %s; rebuilding clip %s", cache / rel, why, clip
                )
        tasks.append(
            {
                "clip": clip,
                "audio_path": audio,
                "video_path": video,
                "kinds": list(kinds),
                "clip_seconds": clip_seconds,
                "scene_label": row["label"],
                "identifier": group,
                "cache": str(cache),
                "config": json.loads(json.dumps(config.to_dict())),
                # parallel workers decode single-threaded; one worker lets FFmpeg thread
                "decode_threads": 1 if workers > 1 else None,
            }
        )
    report = PreprocessReport(
        cache, total=len(clips), processed=0, skipped=len(clips) - len(tasks), rebuilt=rebuilt
    )
    in_manifest = set(clips["clip"])
    for rec in done.values():
        if rec["clip"] not in in_manifest:
            continue
        if rec.get("warnings"):
            report.notes[rec["clip"]] = [
                _note_kind(w, sources.get(rec["clip"])) for w in rec["warnings"]
            ]
        if rec.get("dropped_seconds"):
            report.dropped[rec["clip"]] = float(rec["dropped_seconds"])
    log.info(
        "preprocess %s -> %s: %d clips to do, %d done",
        manifest.source,
        cache,
        len(tasks),
        report.skipped,
    )

    bar = (
        progress(None, total=len(tasks), desc="preprocess", enabled=show_progress)
        if tasks
        else None
    )
    step = max(1, len(tasks) // 10)
    index_path = cache / "index.jsonl"
    said: set[str] = set()
    try:
        with open(index_path, "a", **TEXT_OUT) as index_fh:
            for i, (task, rec) in enumerate(process_map(_process_clip, tasks, workers), 1):
                if isinstance(rec, WorkerDied):  # blamed on the clip it was featurizing
                    rec = {
                        "clip": task["clip"],
                        "ok": False,
                        "file": task["audio_path"] or task["video_path"],
                        "problem": f"the worker process featurizing this clip {rec.why}",
                    }
                if rec.pop("ok"):
                    try:
                        index_fh.write(json.dumps(rec, sort_keys=True) + "\n")
                        index_fh.flush()
                        os.fsync(index_fh.fileno())
                    except OSError as exc:
                        raise OSError(
                            exc.errno, f"cannot write: {exc.strerror}", str(index_path)
                        ) from exc
                    report.processed += 1
                    report.notes.pop(rec["clip"], None)
                    report.dropped.pop(rec["clip"], None)
                    if rec.get("dropped_seconds"):
                        report.dropped[rec["clip"]] = float(rec["dropped_seconds"])
                    if rec.get("warnings"):
                        report.notes[rec["clip"]] = [
                            _note_kind(w, task["audio_path"]) for w in rec["warnings"]
                        ]
                        for w, kind in zip(rec["warnings"], report.notes[rec["clip"]], strict=True):
                            if kind not in said:  # each kind of conversion is said once
                                said.add(kind)
                                log.warning("%s (said once; every clip is listed in index.csv)", w)
                else:
                    report.failures.append(rec)
                    log.warning("skipped %s: %s: %s", rec["clip"], rec["file"], rec["problem"])
                    if strict:
                        raise PreprocessError(
                            f"{rec['file']}: {rec['problem']} (clip {rec['clip']}; --strict stops "
                            f"here; {report.skipped + report.processed} finished clips are kept)"
                        )
                if bar is not None and hasattr(bar, "update"):
                    bar.update(1)
                elif i % step == 0 or i == len(tasks):
                    log.info("preprocess: %d/%d clips", i, len(tasks))
    except PoolError as exc:
        raise PreprocessError(str(exc)) from exc
    finally:
        if bar is not None and hasattr(bar, "close"):
            bar.close()
        _write_failures(cache, report.failures)
    return report


def _write_failures(cache: Path, failures: list[dict[str, str]]) -> None:
    df = pd.DataFrame(failures, columns=["clip", "file", "problem"])
    with atomic_path(cache / "failures.csv") as tmp:
        df.to_csv(tmp, index=False, **TEXT_OUT)


def _finalize(cache: Path, manifest, config: PreprocessConfig) -> None:
    """Write index.csv, the store's own split (split.csv) and its normalisation statistics."""
    from avsc.data.split import assign_subsets

    store = FeatureStore(cache)
    index = store.index
    table = index.drop(columns=["files"], errors="ignore")
    if "warnings" in table:
        table["warnings"] = ["; ".join(w) if isinstance(w, list) else "" for w in table["warnings"]]
    with atomic_path(cache / "index.csv") as tmp:
        table.to_csv(tmp, index=False, **TEXT_OUT)
    subsets = assign_subsets(manifest, config.data)
    with atomic_path(cache / "split.csv") as tmp:
        subsets.to_csv(tmp, index=False, **TEXT_OUT)
    _write_stats(store, cache / "stats", subsets)
