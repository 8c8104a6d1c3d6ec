"""Recipes: a folder (or a file) in, a clip :class:`~avsc.data.manifest.Manifest` out.

Recipes are registered like systems (:mod:`avsc.experiments.registry`): one decorated
function each, in avsc or in a user's own module (the command line imports it with
``--module NAME``). A recipe returns a :class:`Manifest`, or simply a DataFrame with the
manifest's columns, which the registry checks and completes::

    from avsc.data import register_recipe

    @register_recipe("my_birds", detect=lambda root: (root / "birds.json").is_file())
    def my_birds(root):
        rows = [...]  # clip, audio, label, group, ... (paths relative to root)
        return pd.DataFrame(rows)

Built in:

* ``tau2021av``: TAU Urban Audio-Visual Scenes 2021 (``meta.csv``, ``evaluation_setup/`` at
  the root or in a sibling ``<root>.meta/``): fold1_train is ``split=train``,
  fold1_evaluate ``split=test``, the recording location the group, TAU's ten labels;
* ``folders``: ``ROOT/<label>/.../<name>.<ext>``, audio and/or video files, paired by name;
* ``csv``: a CSV or TSV file with the manifest's columns (what ``avsc manifest`` writes).

:func:`load_manifest` picks the recipe (``auto``: the one that recognises the path; a
manifest file is always ``csv``) and applies a labels file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from avsc.data.manifest import (
    AUDIO_EXTENSIONS,
    COLUMNS,
    MODALITIES,
    VIDEO_EXTENSIONS,
    DatasetError,
    Manifest,
    Problem,
    check_clips,
    labels_file_for,
    read_labels_file,
    read_table,
    sorted_labels,
    with_labels,
)

RecipeFn = Callable[[Path], "Manifest | pd.DataFrame"]


@dataclass(frozen=True)
class RecipeSpec:
    """One registered recipe: ``make(path)`` gives the manifest; ``detect(path)`` says
    whether the recipe recognises ``path`` (for ``recipe: auto``; None: never guessed)."""

    name: str
    make: RecipeFn
    detect: Callable[[Path], bool] | None = None
    description: str = ""
    files: bool = False  # it reads a file (a manifest) rather than a folder


_RECIPES: dict[str, RecipeSpec] = {}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*([_-][A-Za-z0-9]+)*$")


class UnknownRecipe(DatasetError):
    """A recipe name that is not registered; the message lists the registered ones."""


def register_recipe(
    name: str,
    *,
    detect: Callable[[Path], bool] | None = None,
    description: str | None = None,
    files: bool = False,
    replace: bool = False,
) -> Callable[[RecipeFn], RecipeFn]:
    """Decorator: register ``fn(path) -> Manifest | DataFrame`` as the recipe ``name``.
    ``detect(path)`` lets ``recipe: auto`` choose it; ``files`` marks a recipe that reads a
    file. A name registered by other code is an error unless ``replace``."""
    if not _NAME.match(name or ""):
        raise ValueError(f"recipe name {name!r}: use letters, digits, '_' and '-'")

    def deco(fn: RecipeFn) -> RecipeFn:
        old = _RECIPES.get(name)
        same = old is not None and (old.make.__module__, old.make.__qualname__) == (
            fn.__module__,
            fn.__qualname__,
        )
        if old is not None and not (replace or same):
            raise ValueError(
                f"recipe {name!r} is already registered (by {old.make.__module__}."
                f"{old.make.__qualname__}); choose another name or pass replace=True"
            )
        doc = (fn.__doc__ or "").strip().split("\n\n")[0]
        _RECIPES[name] = RecipeSpec(name, fn, detect, " ".join((description or doc).split()), files)
        return fn

    return deco


def get_recipe(name: str) -> RecipeSpec:
    if name not in _RECIPES:
        raise UnknownRecipe(
            f"unknown recipe {name!r}; registered: {', '.join(_RECIPES)} (a recipe of your own "
            "is registered with avsc.data.register_recipe; the command line imports its "
            "module with --module NAME)"
        )
    return _RECIPES[name]


def recipes() -> list[RecipeSpec]:
    """Every registered recipe, in registration order."""
    return list(_RECIPES.values())


def unregister_recipe(name: str) -> None:
    _RECIPES.pop(name, None)


def guess_recipe(path: str | os.PathLike) -> str:
    """The recipe for ``path``: ``csv`` for a file; for a folder the one recipe that
    recognises it. None or several is a :class:`DatasetError` saying how to name one."""
    path = Path(path)
    if path.is_file():
        return "csv"
    if not path.is_dir():
        raise DatasetError(f"{path}: dataset root does not exist (no such folder or manifest file)")
    found = [s.name for s in _RECIPES.values() if s.detect is not None and _detects(s, path)]
    if len(found) == 1:
        return found[0]
    names = ", ".join(s.name for s in _RECIPES.values())
    if not found:
        raise DatasetError(
            f"{path}: not a collection avsc recognises: no TAU Urban Audio-Visual Scenes 2021 "
            f"metadata (meta.csv), no class folders of audio or video files "
            f"(ROOT/<label>/<name>.{{{','.join(AUDIO_EXTENSIONS + VIDEO_EXTENSIONS)}}}); pass "
            f"a manifest CSV instead, or name a recipe with --recipe / -p data.recipe=NAME "
            f"({names})"
        )
    raise DatasetError(
        f"{path}: recognised by several recipes ({', '.join(found)}); name one with "
        "--recipe NAME (avsc run: -p data.recipe=NAME)"
    )


def _detects(spec: RecipeSpec, path: Path) -> bool:
    try:
        return bool(spec.detect(path))  # type: ignore[misc]
    except OSError:
        return False


def load_manifest(
    path: str | os.PathLike | Manifest,
    recipe: str = "auto",
    labels: str | os.PathLike | None = None,
    modalities: tuple[str, ...] | list[str] | None = None,
) -> Manifest:
    """The manifest of ``path`` (a folder or a manifest file) made by ``recipe`` (``auto``:
    :func:`guess_recipe`), its label order fixed by the labels file ``labels`` when given,
    keeping only ``modalities`` when given. Problems are collected in ``problems``, not
    raised (:meth:`Manifest.raise_errors` refuses a manifest with errors); a path that no
    recipe can read at all is a :class:`DatasetError`."""
    if isinstance(path, Manifest):
        manifest = path
    else:
        path = Path(path)
        name = guess_recipe(path) if recipe in (None, "", "auto") else recipe
        spec = get_recipe(name)
        if spec.files and not path.is_file():
            raise DatasetError(f"{path}: the {name} recipe reads a manifest file, not a folder")
        if not spec.files and not path.is_dir():
            what = "a manifest file: use the csv recipe" if path.is_file() else "not found"
            raise DatasetError(f"{path}: the {name} recipe reads a folder ({what})")
        made = spec.make(path)
        manifest = made if isinstance(made, Manifest) else from_frame(made, path, name)
    manifest = with_labels(manifest, labels)
    if modalities:
        manifest = keep_modalities(manifest, tuple(modalities))
    return manifest


def keep_modalities(manifest: Manifest, modalities: tuple[str, ...]) -> Manifest:
    """The manifest with only ``modalities`` (``audio``, ``video``): e.g. the audio of an
    audio-visual collection. Asking for one it lacks is a :class:`DatasetError`."""
    bad = [m for m in modalities if m not in MODALITIES]
    if bad:
        raise DatasetError(f"data.modalities: unknown modality {bad[0]!r}; use audio and/or video")
    lacking = [m for m in modalities if m not in manifest.modalities]
    if lacking:
        raise DatasetError(
            f"{manifest.source}: has no {lacking[0]} ({manifest.describe()}); "
            f"data.modalities asks for {', '.join(modalities)}"
        )
    drop = [m for m in MODALITIES if m not in modalities and m in manifest.clips.columns]
    if not drop:
        return manifest
    clips = manifest.clips.drop(columns=drop)
    keep = clips[[m for m in modalities]].ne("").any(axis=1)
    problems = [
        p
        for p in manifest.problems
        if not ("to pair with" in p.problem or "has neither audio nor video" in p.problem)
    ]
    out = Manifest(
        clips[keep].reset_index(drop=True),
        manifest.root,
        manifest.labels,
        manifest.recipe,
        manifest.source,
        problems,
        manifest.unknown,
        manifest.clip_seconds,
        manifest.audio_format if "audio" in modalities else None,
    )
    return out


def from_frame(
    df: pd.DataFrame,
    source: Path,
    recipe: str,
    root: Path | None = None,
    lines: list[int] | None = None,
    labels: tuple[str, ...] | None = None,
    where: str | None = None,
) -> Manifest:
    """A checked :class:`Manifest` from a DataFrame with the manifest's columns (``clip``
    optional: the audio, else video, path without its extension). A missing ``label`` column,
    or neither ``audio`` nor ``video``, is a :class:`DatasetError` naming the columns found."""
    where = where or str(source)
    cols = list(df.columns)
    if "label" not in cols:
        raise DatasetError(
            f"{where}: missing column 'label'; found {', '.join(map(str, cols)) or 'none'} "
            f"(a manifest has the columns {', '.join(COLUMNS)}; clip, group, fold and split "
            "are optional)"
        )
    if not any(m in cols for m in MODALITIES):
        raise DatasetError(
            f"{where}: missing column 'audio' or 'video' (at least one); found "
            f"{', '.join(map(str, cols))}"
        )
    df = df.copy()
    for c in df.columns:
        df[c] = ["" if pd.isna(v) else str(v) for v in df[c]]
    for c in ("clip", "audio", "video", "group", "fold", "split"):
        if c in df.columns:
            df[c] = df[c].str.strip()
    for m in MODALITIES:
        if m in df.columns:
            df[m] = df[m].str.replace("\\", "/", regex=False)
    if "clip" not in df.columns or not (df["clip"] != "").any():
        first = df["audio"] if "audio" in df.columns else df["video"]
        if "audio" in df.columns and "video" in df.columns:
            first = df["audio"].where(df["audio"] != "", df["video"])
        df["clip"] = [_strip_ext(p) for p in first]
    order = [c for c in COLUMNS if c in df.columns]
    df = df[order + [c for c in df.columns if c not in order]]
    problems = check_clips(df, where, lines, labels)
    return Manifest(
        df.reset_index(drop=True),
        root or (source.parent if source.is_file() else source),
        labels if labels is not None else sorted_labels(df["label"]),
        recipe,
        source,
        problems,
    )


def _strip_ext(path: str) -> str:
    p = path.replace("\\", "/")
    base = p.rsplit("/", 1)[-1]
    return p[: len(p) - len(base)] + (base.rsplit(".", 1)[0] if "." in base[1:] else base)


# --------------------------------------------------------------------------------------
# the built-in recipes


@register_recipe("csv", detect=None, files=True)
def csv_recipe(path: Path) -> Manifest:
    """A user's CSV or TSV file with the manifest's columns (clip, audio and/or video, label,
    group, fold or split), paths relative to the file's folder; ``<name>.labels.txt`` beside
    it, where present, fixes the label order."""
    df, lines = read_table(path)
    extra = [c for c in df.columns if c not in COLUMNS]
    labels_path = labels_file_for(path)
    labels = read_labels_file(labels_path) if labels_path.is_file() else None
    manifest = from_frame(df, path, "csv", root=path.parent, lines=lines, labels=labels)
    if extra:
        manifest.problems.append(
            Problem(
                str(path),
                f"column(s) {', '.join(extra)} are not manifest columns (kept, not used; the "
                f"manifest's are {', '.join(COLUMNS)})",
                "warning",
            )
        )
    return manifest


def _media_kind(name: str) -> str | None:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def _walk(root: Path) -> list[str]:
    """Every file under ``root`` (hidden names skipped), relative, ``/``-separated, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for f in filenames:
            if not f.startswith("."):
                out.append((rel / f).as_posix())
    return sorted(out)


def _has_class_folders(root: Path) -> bool:
    if (root / "meta.csv").is_file() or any(root.glob("*.csv")) or any(root.glob("*.tsv")):
        return False  # a collection that describes itself: its metadata recipe reads it
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if Path(dirpath) != root and any(_media_kind(f) for f in filenames):
            return True
    return False


@register_recipe("folders", detect=_has_class_folders)
def folders_recipe(root: Path) -> Manifest:
    """``ROOT/<label>/.../<name>.<ext>``: audio (wav flac ogg mp3 m4a) and/or video (mp4 mov
    mkv webm avi) files, an audio and a video file with the same name making one clip; the
    label is the top folder's name exactly as written; the clip id the path without its
    extension. In a collection without separate audio files, a video's own audio track is its
    audio. ``ROOT/labels.txt`` (one label per line), where present, fixes the label order."""
    files = _walk(root)
    media: dict[str, dict[str, str]] = {}
    problems: list[Problem] = []
    unknown: list[str] = []
    for rel in files:
        if rel == "labels.txt":
            continue
        kind = _media_kind(rel)
        if kind is None:
            unknown.append(rel)
            continue
        if "/" not in rel:
            problems.append(
                Problem(
                    str(root / rel),
                    "not in a label folder (ROOT/<label>/...): not used",
                    "warning",
                )
            )
            continue
        stem = _strip_ext(rel)
        entry = media.setdefault(stem, {})
        if kind in entry:
            problems.append(
                Problem(
                    str(root / rel),
                    f"a second {kind} file for clip {stem!r} (also {entry[kind]}): "
                    "one of them is not used",
                )
            )
            continue
        entry[kind] = rel
    any_audio = any("audio" in e for e in media.values())
    if not any_audio:  # a collection of videos: their own audio tracks, where every one has one
        from avsc.data.media import VideoError, video_info

        tracks = {}
        for stem, e in media.items():
            try:
                tracks[stem] = video_info(root / e["video"]).has_audio
            except VideoError:
                tracks[stem] = False  # unreadable: validate and preprocess name it
        if tracks and all(tracks.values()):
            for e in media.values():
                e["audio"] = e["video"]
    rows = [
        {
            "clip": stem,
            "audio": e.get("audio", ""),
            "video": e.get("video", ""),
            "label": stem.split("/", 1)[0],
        }
        for stem, e in sorted(media.items())
    ]
    df = pd.DataFrame(rows, columns=["clip", "audio", "video", "label"])
    for m in MODALITIES:
        if not (df[m] != "").any():
            df = df.drop(columns=m)
    if not len(df):
        raise DatasetError(
            f"{root}: no audio or video files in class folders (ROOT/<label>/<name>.<ext>, "
            f"ext one of {', '.join(AUDIO_EXTENSIONS + VIDEO_EXTENSIONS)})"
            + (f"; {len(unknown)} file(s) of other types, e.g. {unknown[0]}" if unknown else "")
        )
    labels_file = root / "labels.txt"
    labels = read_labels_file(labels_file) if labels_file.is_file() else None
    manifest = from_frame(df, root, "folders", root=root, labels=labels)
    manifest.problems[:0] = problems
    manifest.unknown = unknown
    if unknown:
        shown = ", ".join(unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        manifest.problems.append(
            Problem(
                str(root),
                f"{len(unknown)} file(s) with an unknown extension, not used: {shown} "
                f"(audio: {' '.join(AUDIO_EXTENSIONS)}; video: {' '.join(VIDEO_EXTENSIONS)})",
                "warning",
            )
        )
    return manifest


def _is_tau_root(root: Path) -> bool:
    from avsc.data.tau import find_meta_dir

    try:
        find_meta_dir(root)
        return True
    except DatasetError:
        return False


@register_recipe("tau2021av", detect=_is_tau_root)
def tau2021av_recipe(root: Path) -> Manifest:
    """TAU Urban Audio-Visual Scenes 2021 (and the synthetic data in its layout): ``meta.csv``
    and ``evaluation_setup/fold1_*.csv`` (tab-separated) at the root or in a sibling
    ``<root>.meta/``; fold1_train is ``split=train``, fold1_evaluate ``split=test``, the
    recording location ``<city>-<location>`` the group; its ten scene labels in their order."""
    from avsc.data.tau import TAU_CLIP_SECONDS, tau_manifest

    return tau_manifest(root, TAU_CLIP_SECONDS)
