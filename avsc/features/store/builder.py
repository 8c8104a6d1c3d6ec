"""``avsc preprocess``: a collection's clips featurized, in worker processes, into a
store (each clip's files written atomically, then its line in the index)."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avsc.config import PreprocessConfig
from avsc.features.store.entries import entry_problem, save_npy, save_npz
from avsc.features.store.errors import ClipError, PreprocessError
from avsc.features.store.index import (
    check_store_folder,
    open_store,
    read_index,
    repair_index,
    store_lock,
)
from avsc.features.store.layout import (
    FAILURES,
    INDEX,
    INDEX_TABLE,
    MANIFEST,
    META,
    SPLIT,
    STORE_VERSION,
    audio_rel,
    frames_rel,
    tmp_folders,
)
from avsc.features.store.reader import FeatureStore
from avsc.features.store.stats import write_stats
from avsc.features.video import encode_frames
from avsc.parallel import PoolError, WorkerDied, process_map
from avsc.utils import (
    TEXT_OUT,
    atomic_path,
    atomic_write_json,
    native_path,
    progress,
    remove_own_tmp,
    versions,
)

log = logging.getLogger("avsc.features.store")


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

    from avsc.features.extractors import import_extractors

    import_extractors(task.get("extractors", ()))  # a user's feature kinds
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
        files[rel] = save_npy(cache / rel, arr)
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
            files[rel] = save_npz(cache / rel, encode_frames(frames, config.frames.jpeg_quality))
        else:
            files[rel] = save_npy(cache / rel, frames)
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
                f"{self.store / INDEX_TABLE}, column warnings):"
            )
            lines += [f"    {k}: {n} clip(s)" for k, n in sorted(kinds.items())[:5]]
            if len(kinds) > 5:
                lines.append(f"    ... and {len(kinds) - 5} more kinds")
        if self.dropped:
            total = sum(self.dropped.values())
            lines.append(
                f"  {len(self.dropped)} clip(s) end in less than a whole segment: {total:.1f} s "
                f"dropped in all (listed in {self.store / INDEX_TABLE}, column dropped_seconds)"
            )
        for f in self.failures:
            lines.append(f"  FAILED {f['clip']}: {f['file']}: {f['problem']}")
        if self.failures:
            lines.append(f"  (listed in {self.store / FAILURES}; fix and rerun to retry)")
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
    from avsc.features.extractors import check_kinds, extractor_classes

    t0 = time.perf_counter()
    config = config or PreprocessConfig()
    check_kinds(config.features, config.audio)
    local = [q for m, q in extractor_classes(config.features) if m == "__main__"]
    if local and workers > 1:
        raise PreprocessError(
            f"feature extractor {local[0]} is defined in __main__ (a notebook or script): "
            "worker processes cannot import it; define it in a module, or use workers=1"
        )
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
        config = open_store(cache, config, manifest)
        removed = remove_own_tmp(tmp_folders(cache))
        if removed:
            log.info("removed %d temporary file(s) of an interrupted run in %s", removed, cache)
        index_path = cache / INDEX
        repair_index(index_path)
        clip_seconds = dc.clip_seconds if dc.clip_seconds is not None else manifest.clip_seconds
        # store.json first: from the first file on, the folder is a store (a second run is
        # then refused as "in use", and a run killed here can be rerun), never a folder that
        # holds files but no store.json, which preprocess refuses to touch
        atomic_write_json(
            cache / META,
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
        with atomic_path(cache / MANIFEST) as tmp:
            manifest.standard().to_csv(tmp, index=False, lineterminator="\n", **TEXT_OUT)
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
    from avsc.features.extractors import extractor_classes

    done = read_index(cache)
    clips = manifest.clips
    kinds = tuple(config.features) if "audio" in manifest.modalities else ()
    with_frames = "video" in manifest.modalities
    groups = manifest.groups()
    tasks, rebuilt = [], []
    extractors = extractor_classes(kinds)
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
                if (why := entry_problem(cache / rel, sums.get(rel), verify)) is not None
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
                "extractors": extractors,
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
    index_path = cache / INDEX
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
    with atomic_path(cache / FAILURES) as tmp:
        df.to_csv(tmp, index=False, **TEXT_OUT)


def _finalize(cache: Path, manifest, config: PreprocessConfig) -> None:
    """Write index.csv, the store's own split (split.csv) and its normalisation statistics."""
    from avsc.data.split import assign_subsets

    store = FeatureStore(cache)
    index = store.index
    table = index.drop(columns=["files"], errors="ignore")
    if "warnings" in table:
        table["warnings"] = ["; ".join(w) if isinstance(w, list) else "" for w in table["warnings"]]
    with atomic_path(cache / INDEX_TABLE) as tmp:
        table.to_csv(tmp, index=False, **TEXT_OUT)
    subsets = assign_subsets(manifest, config.data)
    with atomic_path(cache / SPLIT) as tmp:
        subsets.to_csv(tmp, index=False, **TEXT_OUT)
    write_stats(store, cache, subsets)
