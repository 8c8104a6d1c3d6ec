"""The index of finished clips, the store's lock, and the checks made before a run
writes into a folder (a foreign folder, a store built with other settings)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

from avsc.config import PreprocessConfig
from avsc.features.store.errors import StoreError
from avsc.features.store.layout import INDEX, META, STORE_VERSION
from avsc.utils import LOCK_NAME, NAMES_IN, exclusive_lock


def read_index(cache: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Finished clips of a store: the last complete ``index.jsonl`` line per clip.

    A line cut short by a killed run is ignored (that clip is redone)."""
    path = Path(cache) / INDEX
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


def repair_index(path: Path) -> None:
    """Cut a torn final line so that later appends start on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)


#: data keys that change which clips a store accepts (the rest choose the split only)
STORE_DATA_KEYS = ("clip_seconds", "length_tolerance")


def open_store(cache: Path, config: PreprocessConfig, manifest=None) -> PreprocessConfig:
    """Check that an existing store was built with compatible settings (audio, frames, the
    data keys of :data:`STORE_DATA_KEYS`) and for the same labels and modalities as
    ``manifest``; return the config to record (feature kinds are the union of old and new)."""
    meta_path = cache / META
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
    if not cache.is_dir() or (cache / META).is_file():
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
