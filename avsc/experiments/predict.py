"""``avsc predict``: classify a user's clip with a trained checkpoint, second by second.

The checkpoint is self-contained: it holds the system's weights (frozen visual encoder
included), its config, its feature kind and the training-split normalisation statistics.
A clip is either a TAU WAV + MP4 pair or one MP4 with its own audio track.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from avsc.config import ExperimentConfig
from avsc.data.manifest import VIDEO_EXTENSIONS
from avsc.experiments.registry import Parts, SystemUsageError, UnknownSystem, get_system
from avsc.models.fusion import AVSystem
from avsc.models.visual import VisualEncoder
from avsc.training.checkpoint import CheckpointError, load_checkpoint
from avsc.training.loop import resolve_device


def system_from_checkpoint(
    checkpoint: str | os.PathLike | dict,
) -> tuple[AVSystem, dict, ExperimentConfig]:
    """Rebuild the trained system of a checkpoint written by
    :func:`avsc.experiments.train.train_system` (eval mode): its registry entry's
    factory builds the model, the checkpoint supplies every weight."""
    ck = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    where = "checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
    extra = ck.get("extra") or {}
    if "system" not in extra:
        raise CheckpointError(
            f"{where}: not a scene-classification system checkpoint (no 'extra.system')"
        )
    try:
        spec = get_system(extra["system"])
    except UnknownSystem as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    cfg = ExperimentConfig.from_dict(ck.get("config") or {})
    ve = None
    if extra.get("visual"):
        v = extra["visual"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ve = VisualEncoder(v["name"], weights=None, image_size=int(v["image_size"]))
    n_bins = int(extra["norm_mean"].shape[-1]) if extra.get("feature") else None
    labels = checkpoint_labels(extra, where)
    model = spec.build(Parts(cfg, len(labels), n_bins=n_bins, visual=ve, pretrained=None))
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"{where}: its weights do not fit the {spec.name} system registered now ({first})"
        ) from exc
    return model.eval(), extra, cfg


def checkpoint_labels(extra: dict, where: str = "checkpoint") -> list[str]:
    """The class names a checkpoint's outputs stand for (recorded by the training from its
    feature store); a :class:`CheckpointError` when it records none."""
    labels = extra.get("labels")
    if not labels:
        raise CheckpointError(
            f"{where}: records no class names (extra.labels); it was not written by avsc "
            "train, or by a version before labels were recorded: train it again"
        )
    return [str(x) for x in labels]


class PredictNote(UserWarning):
    """Something ``predict`` did that the user should know (a part of the input not used)."""


def predict_clip(
    clip: str | os.PathLike,
    checkpoint: str | os.PathLike,
    audio: str | os.PathLike | None = None,
    device: str = "cpu",
    block_segments: int = 64,
) -> pd.DataFrame:
    """Per-second scene probabilities of ``clip``.

    ``clip`` is an MP4 (its own audio track is used unless ``audio`` names a WAV), or a WAV
    for an audio-only checkpoint. Returns one row per 1-s segment: ``segment``, ``start_s``,
    ``end_s``, ``scene_label`` (the most probable class) and one probability column per class.
    The clip is streamed ``block_segments`` segments at a time (features, frames and model),
    so memory stays flat however long it is; the result does not depend on the block size.
    Where the video outlasts the audio, the segments both cover are classified and a
    :class:`PredictNote` says how much video was left out.
    """
    from itertools import islice

    from avsc.features.audio import iter_audio_features
    from avsc.features.datasets import eval_transform
    from avsc.features.video import VideoError, iter_frames, video_info

    device = resolve_device(device)  # a device this machine lacks: one line, before any work
    model, extra, cfg = _cached_system(checkpoint)
    model.to(device)
    labels = checkpoint_labels(extra, str(checkpoint))
    clip = Path(clip)
    is_video = clip.suffix.lower().lstrip(".") in VIDEO_EXTENSIONS
    seg_s = cfg.audio.segment_seconds
    needs_video = model.visual_input is not None
    if needs_video and not is_video:
        raise SystemUsageError(f"{clip}: this checkpoint's system needs video; pass the MP4")

    frames = tf = None
    if needs_video:
        frames = iter_frames(
            clip,
            cfg.frames.short_side,
            segment_seconds=seg_s,
            until_end=model.ae is not None,  # with audio, the audio decides the length
        )
        tf = eval_transform(model.ve.input_size[-1], model.ve.crop_pct)

    def to_images(imgs: list[np.ndarray]) -> torch.Tensor:
        return torch.stack([tf(torch.from_numpy(f).permute(2, 0, 1).contiguous()) for f in imgs])

    def image_batch(n: int, done: int) -> torch.Tensor:
        imgs = list(islice(frames, n))
        if len(imgs) < n:
            raise VideoError(
                f"{clip}: video too short: it covers {done + len(imgs)} segment(s) of "
                f"{seg_s:g} s, the audio more"
            )
        return to_images(imgs)

    if model.ae is not None:
        source = Path(audio) if audio is not None else clip
        mean, std = extra["norm_mean"].numpy(), extra["norm_std"].numpy()
        blocks = (
            b[extra["feature"]]
            for b in iter_audio_features(source, extra["feature"], cfg.audio, block_segments)
        )
    else:  # video only: blocks of frames for as long as the video lasts
        blocks = iter(lambda: list(islice(frames, block_segments)), [])

    parts, done = [], 0
    with torch.no_grad():
        for block in blocks:
            n = len(block)
            inputs: dict[str, torch.Tensor] = {}
            if model.ae is not None:
                inputs["audio"] = torch.from_numpy(((block - mean) / std).astype(np.float32))
                if needs_video:
                    inputs["image"] = image_batch(n, done)
            else:
                inputs["image"] = to_images(block)
            out = model.segment_outputs(**{k: v.to(device) for k, v in inputs.items()})
            parts.append(out["proba"].float().cpu().numpy())
            done += n
    proba = np.concatenate(parts) if parts else np.zeros((0, len(labels)), np.float32)
    if needs_video and model.ae is not None:
        info = video_info(clip)
        if info.duration - done * seg_s >= seg_s:
            warnings.warn(
                f"{clip}: the video lasts {info.duration:.1f} s, the audio {done * seg_s:g} s: "
                f"classified the {done} segment(s) both cover; the last "
                f"{info.duration - done * seg_s:.1f} s of video were not used",
                PredictNote,
                stacklevel=2,
            )
    df = pd.DataFrame(
        {
            "segment": np.arange(len(proba)),
            "start_s": np.arange(len(proba)) * seg_s,
            "end_s": (np.arange(len(proba)) + 1) * seg_s,
            "scene_label": [labels[i] for i in proba.argmax(axis=1)],
        }
    )
    return pd.concat([df, pd.DataFrame(proba, columns=labels)], axis=1)


@functools.lru_cache(maxsize=2)
def _cached(path: str, mtime_ns: int, size: int):
    return system_from_checkpoint(path)


def _cached_system(checkpoint: str | os.PathLike | dict):
    """:func:`system_from_checkpoint`, loaded once per file (as long as it is unchanged), so
    that classifying many files does not read the checkpoint for each."""
    if isinstance(checkpoint, dict):
        return system_from_checkpoint(checkpoint)
    try:
        st = Path(checkpoint).stat()
    except OSError:
        return system_from_checkpoint(checkpoint)  # its own error names the file
    return _cached(str(Path(checkpoint).resolve()), st.st_mtime_ns, st.st_size)


def predict_folder(
    root: str | os.PathLike,
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    device: str = "cpu",
    every: int = 200,
    every_seconds: float = 5.0,
) -> str:
    """Classify every file of an evaluation set (:func:`avsc.data.evaluation_files`: 1-s clips, no
    labels) with a trained system and write the DCASE submission file ``out`` (tab-separated
    ``filename  scene_label  airport ... tram``, ``filename`` the audio file's name; a file of
    more than one segment gets the mean of its segments). Rows are kept in
    ``<out>.partial.tsv`` every ``every`` files or ``every_seconds``, whichever comes first,
    and on an error, Ctrl-C or SIGTERM (a scheduler's preemption), so an interrupted run
    resumes where it stopped, losing seconds of work; the submission is written atomically
    at the end. Returns its preview."""
    import time

    from avsc.data import evaluation_files
    from avsc.evaluation.metrics import write_submission
    from avsc.utils import TEXT_OUT, atomic_path, read_names_csv, terminate_as_exit

    root, out = Path(root), Path(out)
    files = evaluation_files(root)
    model, extra, _ = _cached_system(checkpoint)
    labels = checkpoint_labels(extra, str(checkpoint))
    needs = [k for k, used in (("audio", model.ae is not None), ("video", model.visual_input))
             if used]  # fmt: skip
    partial = out.with_name(out.name + ".partial.tsv")
    done: dict[str, np.ndarray] = {}
    if partial.is_file():
        prev = read_names_csv(partial, sep="\t")
        if list(prev.columns) == ["filename", *labels]:
            rows = prev[labels].to_numpy()
            done = dict(zip(prev["filename"], rows, strict=True))

    def keep() -> None:
        with atomic_path(partial) as tmp:
            pd.DataFrame([[f, *p] for f, p in done.items()], columns=["filename", *labels]).to_csv(
                tmp, sep="\t", index=False, float_format="%.9g", **TEXT_OUT
            )

    names = [Path(a).name for a in files["filename_audio"]]
    kept = time.monotonic()
    try:
        with terminate_as_exit():  # SIGTERM keeps the work done, as Ctrl-C does
            for i, (a, v) in enumerate(
                zip(files["filename_audio"], files["filename_video"], strict=True), 1
            ):
                name = Path(a).name
                if name in done:
                    continue
                video, audio = root / v, root / a
                for kind, path in (("audio", audio), ("video", video)):
                    if kind in needs and not path.is_file():
                        raise FileNotFoundError(
                            f"{path}: listed as evaluation file {name} but missing (the system "
                            f"needs its {kind}); the {len(done)} file(s) done are kept in "
                            f"{partial.name} and a rerun resumes after them"
                        )
                df = predict_clip(video if video.is_file() else audio, checkpoint, audio=audio,
                                  device=device)  # fmt: skip
                if df.empty:
                    raise ValueError(f"{audio}: shorter than one segment; nothing to classify")
                done[name] = df[labels].to_numpy().mean(axis=0)
                if i % every == 0 or time.monotonic() - kept >= every_seconds:
                    keep()
                    kept = time.monotonic()
    except BaseException:  # an error, Ctrl-C or SIGTERM: keep what is done, for the rerun
        if done:
            keep()
        raise
    preview = write_submission(out, names, np.stack([done[n] for n in names]), labels)
    partial.unlink(missing_ok=True)
    return preview
