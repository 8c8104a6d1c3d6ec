"""The on-disk feature store and ``avsc preprocess``.

Layout of a store folder::

    store.json               format version and the PreprocessConfig it was built with
    index.jsonl              one JSON line per finished clip, appended as clips finish
    index.csv                the same, one row per clip, rewritten at the end of each run
    audio/<kind>/<clip>.npy  float32 (segments, 6, 2, F) per feature kind
    frames/<clip>.npz        JPEG frames: ``jpeg`` bytes, ``offsets``, ``shape`` (or .npy uint8)
    split.csv                clip -> train / val / evaluate / unused (method.md section 1)
    stats/<kind>.npz         per (channel, bin) mean and std over the training subset
    failures.csv             clip, file, problem: what the last run skipped and why

Every file is written to a temporary name and renamed, and a clip counts as finished only
once its line is in ``index.jsonl``, written after all its files: a killed run leaves no
half-written entry, and a rerun skips finished clips. Workers write their own files and send
back only a small record, so memory does not grow with the number of clips.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time
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
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    exclusive_lock,
    progress,
    remove_own_tmp,
    versions,
)

log = logging.getLogger(__name__)

STORE_VERSION = 1


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
    audio_path: str | os.PathLike,
    video_path: str | os.PathLike,
    config: PreprocessConfig,
    decode_threads: int | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Audio features (one array per kind) and frames of one clip, after checking it.

    Raises :class:`ClipError` naming the file for a missing, unreadable or truncated file, a
    clip of the wrong length, or audio and video that disagree on the segment count.
    """
    import soundfile as sf

    from avsc.features.audio import AudioError, features_from_waveform, read_audio
    from avsc.features.video import VideoError, extract_frames, video_info

    audio_path, video_path = Path(audio_path), Path(video_path)
    dc, ac = config.data, config.audio
    expected_segments = int(round(dc.clip_seconds / ac.segment_seconds))

    if not audio_path.is_file():
        raise ClipError(audio_path, "audio file missing")
    if not video_path.is_file():
        raise ClipError(video_path, "video file missing")
    try:
        if audio_path.suffix.lower() == ".wav":
            info = sf.info(str(audio_path))
            _check_length(audio_path, info.frames / info.samplerate, dc)
        x, sr = read_audio(audio_path)
    except (AudioError, RuntimeError) as exc:
        raise ClipError(audio_path, _problem(exc, audio_path)) from exc
    _check_length(audio_path, x.shape[1] / sr, dc)
    try:
        feats = features_from_waveform(x, sr, tuple(config.features), ac, source=str(audio_path))
    except AudioError as exc:
        raise ClipError(audio_path, _problem(exc, audio_path)) from exc
    assert isinstance(feats, dict)
    n_seg = next(iter(feats.values())).shape[0]
    if n_seg != expected_segments:
        raise ClipError(audio_path, f"{n_seg} segments, expected {expected_segments}")

    try:
        vinfo = video_info(video_path)
        _check_length(video_path, vinfo.duration, dc)
        frames = extract_frames(
            video_path,
            short_side=config.frames.short_side,
            segments=expected_segments,
            segment_seconds=ac.segment_seconds,
            threads=decode_threads,
        )
    except VideoError as exc:
        raise ClipError(video_path, _problem(exc, video_path)) from exc
    return feats, frames


def _problem(exc: Exception, path: Path) -> str:
    msg = str(exc)
    prefix = f"{path}: "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg


def _check_length(path: Path, seconds: float, dc) -> None:
    if not math.isfinite(seconds) or abs(seconds - dc.clip_seconds) > dc.length_tolerance:
        raise ClipError(
            path,
            f"wrong length: {seconds:.3f} s, expected {dc.clip_seconds:g} s "
            f"(tolerance {dc.length_tolerance:g} s)",
        )


def _process_clip(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: featurize one clip, write its files atomically, return its index record.

    BLAS runs single-threaded here: parallelism comes from the worker processes, and a
    threaded BLAS on busy cores slows the small filterbank products down tenfold or more."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _process_clip_unlimited(task)


def _process_clip_unlimited(task: dict[str, Any]) -> dict[str, Any]:
    import warnings

    config = PreprocessConfig.from_dict(task["config"])
    cache = Path(task["cache"])
    clip = task["clip"]
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            feats, frames = featurize_clip(
                task["audio_path"], task["video_path"], config, task.get("decode_threads")
            )
    except ClipError as exc:
        return {"clip": clip, "ok": False, "file": exc.file, "problem": exc.problem}
    except Exception as exc:  # never let one clip kill the run: report it by name
        return {
            "clip": clip,
            "ok": False,
            "file": task["audio_path"],
            "problem": f"unexpected {type(exc).__name__}: {exc}",
        }
    files = {}
    for kind, arr in feats.items():
        rel = f"audio/{kind}/{clip}.npy"
        files[rel] = _save_npy(cache / rel, arr)
    if config.frames.format == "jpeg":
        rel = f"frames/{clip}.npz"
        files[rel] = _save_npz(cache / rel, encode_frames(frames, config.frames.jpeg_quality))
    else:
        rel = f"frames/{clip}.npy"
        files[rel] = _save_npy(cache / rel, frames)
    return {
        "clip": clip,
        "ok": True,
        "scene_label": task["scene_label"],
        "identifier": task["identifier"],
        "segments": int(frames.shape[0]),
        "features": sorted(feats),
        "frame_shape": list(frames.shape[1:]),
        "files": files,  # relative path -> [size, sha1]: a rerun finds damaged entries
        "warnings": sorted({str(w.message) for w in caught}),
        "seconds": round(time.perf_counter() - t0, 4),
    }


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
    """Read access to a feature store written by :func:`preprocess`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / "store.json"
        if not meta_path.is_file():
            raise StoreError(
                f"{self.path}: not a feature store (no store.json); run avsc preprocess"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != STORE_VERSION:
            raise StoreError(
                f"{meta_path}: store format {meta.get('version')}, this avsc reads {STORE_VERSION}"
            )
        self.meta = meta
        self.config = PreprocessConfig.from_dict(meta["config"])
        self._index: pd.DataFrame | None = None

    @property
    def index(self) -> pd.DataFrame:
        """One row per finished clip: clip, scene_label, label, identifier, segments, ..."""
        if self._index is None:
            from avsc.data.tau import LABEL_TO_INDEX

            records = list(read_index(self.path).values())
            df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=["clip"])
            if len(df):
                df["label"] = df["scene_label"].map(LABEL_TO_INDEX).astype(int)
                df = df.sort_values("clip").reset_index(drop=True)
            self._index = df
        return self._index

    @property
    def clips(self) -> list[str]:
        return list(self.index["clip"])

    def audio_path(self, clip: str, kind: str) -> Path:
        return self.path / "audio" / kind / f"{clip}.npy"

    def frames_path(self, clip: str) -> Path:
        ext = "npz" if self.config.frames.format == "jpeg" else "npy"
        return self.path / "frames" / f"{clip}.{ext}"

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

    def subsets(self) -> pd.DataFrame:
        """``clip, subset`` (train / val / evaluate / unused) as written by preprocess."""
        path = self.path / "split.csv"
        if not path.is_file():
            raise StoreError(f"{path}: no split in this store (the dataset has no fold1_train?)")
        return pd.read_csv(path, dtype=str)

    def split_summary(self) -> pd.DataFrame:
        """Clips and locations per class in each subset of the store's split."""
        split = self.subsets().merge(self.index[["clip", "scene_label", "identifier"]], on="clip")
        out = split.groupby(["scene_label", "subset"]).agg(
            clips=("clip", "size"), locations=("identifier", "nunique")
        )
        return out.unstack("subset").fillna(0).astype(int).reset_index()

    def normalization(self, kind: str = "scalogram") -> NormStats:
        """The training-split statistics of ``kind``."""
        path = self.path / "stats" / f"{kind}.npz"
        if not path.is_file():
            raise StoreError(f"{path}: no normalisation statistics for {kind}")
        return NormStats.load(path)

    def failures(self) -> pd.DataFrame:
        path = self.path / "failures.csv"
        if not path.is_file():
            return pd.DataFrame(columns=["clip", "file", "problem"])
        return pd.read_csv(path, dtype=str, keep_default_na=False)

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return (
            f"FeatureStore({str(self.path)!r}, clips={len(self)}, features={self.config.features})"
        )


def read_index(cache: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Finished clips of a store: the last complete ``index.jsonl`` line per clip.

    A line cut short by a killed run is ignored (that clip is redone)."""
    path = Path(cache) / "index.jsonl"
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    with open(path) as fh:
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


def _open_store(cache: Path, config: PreprocessConfig) -> PreprocessConfig:
    """Check that an existing store was built with compatible settings; return the config to
    record (feature kinds are the union of old and new)."""
    meta_path = cache / "store.json"
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{meta_path}: unreadable store description ({exc})") from exc
        if old.get("version") != STORE_VERSION:
            raise StoreError(
                f"{meta_path}: store format {old.get('version')}, expected {STORE_VERSION}"
            )
        old_cfg = PreprocessConfig.from_dict(old["config"])
        for section in ("audio", "frames", "data"):
            a, b = getattr(old_cfg, section).to_dict(), getattr(config, section).to_dict()
            diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
            if diff:
                raise StoreError(
                    f"{cache}: built with different {section} settings {diff} (stored, asked); "
                    "use a new --cache folder"
                )
        features = tuple(sorted(set(old_cfg.features) | set(config.features)))
        return config.replace(features=features)
    return config


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
    folders = [cache, cache / "frames", cache / "stats", cache / "bank"]
    for parent in (cache / "audio", cache / "bank"):
        if parent.is_dir():
            folders += [p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()]
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
    notes: dict[str, list[str]] = field(default_factory=dict)  # clip -> format warnings

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
            kinds = sorted({n for ns in self.notes.values() for n in ns})
            lines.append(
                f"  {len(self.notes)} clip(s) not in the TAU format, converted "
                f"(listed in {self.store / 'index.csv'}, column warnings):"
            )
            lines += [f"    {k}" for k in kinds[:5]]
            if len(kinds) > 5:
                lines.append(f"    ... and {len(kinds) - 5} more kinds")
        for f in self.failures:
            lines.append(f"  FAILED {f['clip']}: {f['file']}: {f['problem']}")
        if self.failures:
            lines.append(f"  (listed in {self.store / 'failures.csv'}; fix and rerun to retry)")
        return "\n".join(lines)


def preprocess(
    data_root: str | os.PathLike,
    cache: str | os.PathLike,
    config: PreprocessConfig | None = None,
    workers: int = 1,
    strict: bool = False,
    show_progress: bool | None = None,
    verify: bool = False,
) -> PreprocessReport:
    """Featurize a TAU-layout dataset into a feature store (method.md sections 2-3).

    The metadata is checked first (:func:`avsc.data.tau.TAUDataset`: every inconsistency is
    listed before any work). Every clip of ``meta.csv`` gets its audio features
    (``config.features``) and its 1-fps frames; finished clips are skipped on a rerun unless
    an entry is missing or its size differs from the index (``verify``: or its checksum),
    in which case the clip is rebuilt. A bad clip (missing, unreadable or truncated file,
    wrong length, a worker that died on it) is reported by name in ``failures.csv`` and
    skipped, or, with ``strict``, stops the run with :class:`PreprocessError` (finished clips
    are kept). Afterwards the validation split and the training-split normalisation
    statistics are written. The store is locked for the run: a second run on the same
    ``cache`` is refused with a :class:`avsc.utils.LockedError` naming the first. A folder
    that is neither new, empty nor a store is refused. Returns a :class:`PreprocessReport`.
    """
    from avsc.data.tau import TAUDataset

    t0 = time.perf_counter()
    config = config or PreprocessConfig()
    data_root, cache = Path(data_root), Path(cache)
    dataset = TAUDataset(data_root)
    check_store_folder(cache)
    with store_lock(cache):
        config = _open_store(cache, config)
        removed = remove_own_tmp(_store_tmp_folders(cache))
        if removed:
            log.info("removed %d temporary file(s) of an interrupted run in %s", removed, cache)
        index_path = cache / "index.jsonl"
        _repair_index(index_path)
        atomic_write_json(
            cache / "store.json",
            {
                "version": STORE_VERSION,
                "config": json.loads(json.dumps(config.to_dict())),
                "data_root": str(data_root.resolve()),
                "versions": versions(),
            },
        )
        report = _featurize_all(dataset, cache, config, workers, strict, show_progress, verify)
        _finalize(cache, dataset, config)
    report.seconds = time.perf_counter() - t0
    return report


def _featurize_all(
    dataset,
    cache: Path,
    config: PreprocessConfig,
    workers: int,
    strict: bool,
    show_progress: bool | None,
    verify: bool,
) -> PreprocessReport:
    done = read_index(cache)
    meta = dataset.meta
    frame_ext = "npz" if config.frames.format == "jpeg" else "npy"
    tasks, rebuilt = [], []
    for row in meta.itertuples(index=False):
        rec = done.get(row.clip)
        if rec is not None and set(config.features) <= set(rec["features"]):
            rels = [f"audio/{k}/{row.clip}.npy" for k in config.features]
            rels.append(f"frames/{row.clip}.{frame_ext}")
            sums = rec.get("files") or {}
            problems = {
                rel: why
                for rel in rels
                if (why := _entry_problem(cache / rel, sums.get(rel), verify)) is not None
            }
            if not problems:
                continue
            rebuilt.append(row.clip)
            for rel, why in problems.items():
                log.warning(
                    "damaged store entry %s: %s; rebuilding clip %s", cache / rel, why, row.clip
                )
        tasks.append(
            {
                "clip": row.clip,
                "audio_path": str(dataset.audio_path(row.filename_audio)),
                "video_path": str(dataset.video_path(row.filename_video)),
                "scene_label": row.scene_label,
                "identifier": row.identifier,
                "cache": str(cache),
                "config": json.loads(json.dumps(config.to_dict())),
                # parallel workers decode single-threaded; one worker lets FFmpeg thread
                "decode_threads": 1 if workers > 1 else None,
            }
        )
    report = PreprocessReport(
        cache, total=len(meta), processed=0, skipped=len(meta) - len(tasks), rebuilt=rebuilt
    )
    for rec in done.values():
        if rec.get("warnings") and rec["clip"] in set(meta["clip"]):
            report.notes[rec["clip"]] = list(rec["warnings"])
    log.info(
        "preprocess %s -> %s: %d clips to do, %d done",
        dataset.root,
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
    warned = 0
    try:
        with open(index_path, "a") as index_fh:
            for i, (task, rec) in enumerate(process_map(_process_clip, tasks, workers), 1):
                if isinstance(rec, WorkerDied):  # blamed on the clip it was featurizing
                    rec = {
                        "clip": task["clip"],
                        "ok": False,
                        "file": task["audio_path"],
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
                    if rec.get("warnings"):
                        report.notes[rec["clip"]] = rec["warnings"]
                        for w in rec["warnings"]:
                            warned += 1
                            if warned <= 5:
                                log.warning("%s", w)
                            elif warned == 6:
                                log.warning("more format warnings: see the summary at the end")
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
        df.to_csv(tmp, index=False)


def _finalize(cache: Path, dataset, config: PreprocessConfig) -> None:
    """Write index.csv, split.csv and the normalisation statistics."""
    from avsc.data.split import assign_subsets

    store = FeatureStore(cache)
    index = store.index
    table = index.drop(columns=["files"], errors="ignore")
    if "warnings" in table:
        table["warnings"] = ["; ".join(w) if isinstance(w, list) else "" for w in table["warnings"]]
    with atomic_path(cache / "index.csv") as tmp:
        table.to_csv(tmp, index=False)
    if "train" not in dataset.folds:
        log.warning("%s has no fold1_train: no split and no normalisation statistics", dataset.root)
        return
    dc = config.data
    subsets = assign_subsets(dataset, dc.val_fraction, dc.split, dc.seed)
    with atomic_path(cache / "split.csv") as tmp:
        subsets.to_csv(tmp, index=False)
    finished = set(index["clip"]) if len(index) else set()
    train = sorted(c for c in subsets.loc[subsets["subset"] == "train", "clip"] if c in finished)
    if not train:
        log.warning("no finished training clips: no normalisation statistics")
        return
    digest = hashlib.sha1("\n".join(train).encode()).hexdigest()
    for kind in config.features:
        path = cache / "stats" / f"{kind}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                if "clips_sha1" in z and str(z["clips_sha1"]) == digest:
                    continue
        stats = normalization_stats(store.load_audio(c, kind) for c in train)
        arrays = stats.to_arrays()
        arrays["clips_sha1"] = np.asarray(digest)
        _save_npz(path, arrays)
