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
    bank/<key>/              augmentation banks: ``<subset>.npy`` float16 (segments, views, D)
                             and ``bank.json``, written by the trainings that ask for one

``<entry>`` is the clip id where it is a plain lower-case file name (TAU's ids), else a
readable stem and a digest of the id (any id is safe: spaces, non-ASCII, slashes).
Every file is written to a temporary name and renamed, and a clip counts as finished only
once its line is in ``index.jsonl``, written after all its files: a killed run leaves no
half-written entry, and a rerun skips finished clips. Workers write their own files and send
back only a small record, so memory does not grow with the number of clips.

The package's rooms: ``layout`` (every path, spelled once), ``entries`` (one file written
and checked), ``index`` (finished clips, the lock, the checks before a run), ``stats``
(normalisation statistics), ``reader`` (:class:`FeatureStore`), ``builder``
(:func:`preprocess`) and ``bank`` (augmentation banks kept in the store).
"""

from avsc.features.store.bank import bank_path, write_bank
from avsc.features.store.builder import PreprocessReport, featurize_clip, preprocess
from avsc.features.store.entries import load_entry
from avsc.features.store.errors import ClipError, PreprocessError, StoreError
from avsc.features.store.index import (
    STORE_DATA_KEYS,
    check_store_folder,
    read_index,
    store_lock,
)
from avsc.features.store.layout import STORE_VERSION, audio_rel, entry_name, frames_rel
from avsc.features.store.reader import FeatureStore, StoreSplit
from avsc.features.store.stats import NormStats, normalization_stats
from avsc.features.video import decode_jpeg, encode_frames  # where they lived before

__all__ = [
    "STORE_DATA_KEYS",
    "STORE_VERSION",
    "ClipError",
    "FeatureStore",
    "NormStats",
    "PreprocessError",
    "PreprocessReport",
    "StoreError",
    "StoreSplit",
    "audio_rel",
    "bank_path",
    "check_store_folder",
    "decode_jpeg",
    "encode_frames",
    "entry_name",
    "featurize_clip",
    "frames_rel",
    "load_entry",
    "normalization_stats",
    "preprocess",
    "read_index",
    "store_lock",
    "write_bank",
]
