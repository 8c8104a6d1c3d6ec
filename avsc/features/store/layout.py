"""Where everything lives in a store folder, spelled once (the folder's layout is in
the package's docstring): entry names, entry paths, the store's own files."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

from avsc.utils import text_bytes

STORE_VERSION = 1

#: the store's own files, relative to its folder
META = "store.json"
MANIFEST = "manifest.csv"
INDEX = "index.jsonl"
INDEX_TABLE = "index.csv"
SPLIT = "split.csv"
SPLIT_SETTINGS = "split.json"
STATS = "stats"
SPLITS = "splits"
FAILURES = "failures.csv"
BANK = "bank"
AUDIO = "audio"  # AUDIO/<kind>/<entry>.npy
FRAMES = "frames"  # FRAMES/<entry>.npz (JPEG) or .npy (decoded)


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
    return f"{AUDIO}/{kind}/{entry_name(clip)}.npy"


def frames_rel(clip: str, fmt: str = "jpeg") -> str:
    """Where ``clip``'s frames live in a store (relative; ``fmt`` is frames.format)."""
    return f"{FRAMES}/{entry_name(clip)}.{'npz' if fmt == 'jpeg' else 'npy'}"


def stats_path(folder: Path, kind: str) -> Path:
    """The normalisation statistics of ``kind`` of the split whose folder is ``folder`` (the
    store's own, or one of ``splits/<key>``)."""
    return folder / STATS / f"{kind}.npz"


def split_folder(cache: Path, key: str) -> Path:
    """The folder of another split than the store's own."""
    return cache / SPLITS / key


def bank_folder(cache: Path, key: str) -> Path:
    """The folder of one augmentation bank (its ``<subset>.npy`` files and ``bank.json``)."""
    return cache / BANK / key


def tmp_folders(cache: Path) -> list[Path]:
    """The folders of a store's own layout, where its temporary files live."""
    folders = [cache, cache / FRAMES, cache / STATS, cache / BANK, cache / SPLITS]
    for parent in (cache / AUDIO, cache / BANK, cache / SPLITS):
        if parent.is_dir():
            folders += [p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()]
    if (cache / SPLITS).is_dir():
        folders += [p / STATS for p in (cache / SPLITS).iterdir() if p.is_dir()]
    return folders
