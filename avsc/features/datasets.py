"""torch Datasets over the feature store, method.md section 4.

A training sample is (acoustic frame k of segment s, visual frame of segment s, label): 60
per 10-s clip. Evaluation works per segment: its 6 acoustic frames with its one image. The
audio features of the chosen clips are loaded once, normalised with the training-split
statistics, into one tensor; frames are decoded from the store's JPEGs on demand or, when
they fit (``frames_in_memory``), once into memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from avsc.features.store import FeatureStore, NormStats, StoreError, load_entry


def subset_clips(
    store: FeatureStore, subsets: str | Sequence[str], split: pd.DataFrame | None = None
) -> list[str]:
    """Finished clips of the store in the named subsets (train / val / evaluate) of ``split``
    (``clip, subset``; default the store's own split)."""
    names = [subsets] if isinstance(subsets, str) else list(subsets)
    split = store.subsets() if split is None else split
    wanted = set(split.loc[split["subset"].isin(names), "clip"])
    index = store.index
    ok = set(index.loc[index["label"] >= 0, "clip"]) if len(index) else set()
    clips = [c for c in store.clips if c in wanted and c in ok]
    if not clips:
        raise StoreError(f"{store.path}: no finished clips in subset(s) {names}")
    return clips


class ClipTable:
    """The clips of one subset: labels, groups, and the segment index. Clips may have
    different numbers of segments: segment row ``r`` (0 .. ``total_segments`` - 1, clip by
    clip, in segment order) is segment ``segment_of[r]`` of clip ``clip_of[r]``."""

    def __init__(self, store: FeatureStore, clips: Sequence[str]):
        index = store.index.set_index("clip")
        missing = [c for c in clips if c not in index.index]
        if missing:
            raise StoreError(f"{store.path}: clips not in the store: {missing[:5]}")
        self.store = store
        self.clips = list(clips)
        rows = index.loc[self.clips]
        self.labels = torch.tensor(rows["label"].to_numpy(dtype=np.int64))
        self.identifiers = rows["identifier"].tolist()
        counts = rows["segments"].to_numpy(dtype=np.int64)
        self.segment_counts = counts
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.total_segments = int(self.offsets[-1])
        self.clip_of = np.repeat(np.arange(len(self.clips)), counts)
        self.segment_of = np.arange(self.total_segments) - np.repeat(self.offsets[:-1], counts)
        self.segment_labels = self.labels[torch.from_numpy(self.clip_of)]

    @property
    def segments(self) -> int:
        """The segment count shared by every clip (a :class:`StoreError` where it varies:
        use ``segment_counts``)."""
        if len(set(self.segment_counts.tolist())) != 1:
            raise StoreError(
                f"{self.store.path}: clips with different segment counts "
                f"{sorted(set(self.segment_counts.tolist()))[:5]}: use segment_counts"
            )
        return int(self.segment_counts[0])

    def __len__(self) -> int:
        return len(self.clips)

    def segment_frame(self) -> pd.DataFrame:
        """One row per segment row: clip, segment, label, identifier, filename (the 1-s
        name ``<clip>_<segment>.wav`` used in submissions)."""
        clips = np.array(self.clips, dtype=object)[self.clip_of]
        ident = np.array(self.identifiers, dtype=object)[self.clip_of]
        return pd.DataFrame(
            {
                "clip": clips,
                "segment": self.segment_of,
                "label": self.segment_labels.numpy(),
                "identifier": ident,
                "filename": [f"{c}_{k}.wav" for c, k in zip(clips, self.segment_of, strict=True)],
            }
        )


class StoreAudio:
    """Normalised audio features read from the feature store sample by sample (memory stays
    flat however large the dataset): indexes like the in-memory tensor of
    :func:`load_audio_bank`, ``[row]`` or ``[row, frame]`` by segment row."""

    def __init__(self, table: ClipTable, kind: str, stats: NormStats):
        self.table = table
        self.paths = [table.store.audio_path(c, kind) for c in table.clips]
        first = load_entry(self.paths[0], table.clips[0], mmap=True)
        self.shape = (table.total_segments, *first.shape[1:])
        self.mean, self.std = stats.mean, stats.std

    def __getitem__(self, index) -> torch.Tensor:
        r, *rest = index if isinstance(index, tuple) else (index,)
        r = int(r)
        c, s = int(self.table.clip_of[r]), int(self.table.segment_of[r])
        arr = load_entry(self.paths[c], mmap=True)
        x = np.array(arr[(s, *(int(i) for i in rest))], dtype=np.float32)  # copies, unmaps
        return torch.from_numpy((x - self.mean) / self.std)


class NpyRows:
    """A ``.npy`` array on disk read element by element (``[r, k]`` -> a float32 tensor),
    for augmentation banks larger than memory."""

    def __init__(self, path):
        self.path = path
        self.shape = load_entry(path, mmap=True).shape

    def __getitem__(self, index) -> torch.Tensor:
        arr = load_entry(self.path, mmap=True)
        idx = index if isinstance(index, tuple) else (index,)
        return torch.from_numpy(np.array(arr[tuple(int(i) for i in idx)], dtype=np.float32))


def load_audio_bank(
    table: ClipTable, kind: str, stats: NormStats, dtype=torch.float32
) -> torch.Tensor:
    """Normalised features of every segment row: ``(segments, frames, 2, F)``."""
    first = table.store.load_audio(table.clips[0], kind)
    out = torch.empty((table.total_segments, *first.shape[1:]), dtype=dtype)
    for i, clip in enumerate(table.clips):
        x = table.store.load_audio(clip, kind)
        lo, hi = int(table.offsets[i]), int(table.offsets[i + 1])
        if len(x) != hi - lo:
            raise StoreError(
                f"{table.store.audio_path(clip, kind)}: {len(x)} segments, the index says "
                f"{hi - lo}; rerun avsc preprocess --verify"
            )
        out[lo:hi] = torch.from_numpy(stats.apply(x))
    return out


class FrameSource:
    """uint8 ``(3, H, W)`` frames of ``table``'s clips by (clip index, segment).

    Frames keep the size they were stored at, which may differ between clips (another
    aspect ratio, or ``frames.short_side: null`` on sources of several resolutions): every
    consumer resizes and crops each image to the encoder's input (:func:`train_transform`,
    :func:`eval_transform`), so clips of any size train together. In memory they are held
    per clip, never as one tensor that would assume one size."""

    def __init__(
        self,
        table: ClipTable,
        in_memory: str | bool = "auto",
        limit_bytes: float = 2e9,
        encoded: bool = False,
    ):
        self.table = table
        self.encoded = encoded
        store = table.store
        if encoded:  # JPEG bytes, decoded by the consumer (train.decode_on_device)
            size = sum(store.frames_path(c).stat().st_size for c in table.clips)
            keep = in_memory in (True, "yes") or (in_memory == "auto" and size <= limit_bytes)
            self.memory = None
            if keep:
                self.memory = [
                    [torch.from_numpy(b) for b in store.load_frame_jpegs(c)] for c in table.clips
                ]
            return
        index = store.index.set_index("clip")
        if "frame_shape" in index:
            shapes = [tuple(index.at[c, "frame_shape"]) for c in table.clips]
        else:
            shapes = [store.load_frames(table.clips[0], [0]).shape[1:]] * len(table)
        total = sum(
            int(n) * int(np.prod(s)) for n, s in zip(table.segment_counts, shapes, strict=True)
        )
        keep = in_memory in (True, "yes") or (in_memory == "auto" and total <= limit_bytes)
        self.memory: list[torch.Tensor] | None = None
        if keep:
            self.memory = [
                torch.from_numpy(store.load_frames(clip)).permute(0, 3, 1, 2).contiguous()
                for clip in table.clips
            ]

    def get(self, clip_index: int, segment: int) -> torch.Tensor:
        """The frame: uint8 ``(3, H, W)``, or its JPEG bytes (1-D uint8) when ``encoded``."""
        if self.memory is not None:
            return self.memory[clip_index][segment]
        clip = self.table.clips[clip_index]
        if self.encoded:
            return torch.from_numpy(self.table.store.load_frame_jpegs(clip)[segment])
        frame = self.table.store.load_frames(clip, [segment])[0]
        return torch.from_numpy(frame).permute(2, 0, 1).contiguous()


def train_transform(image_size: int, augment) -> object:
    """RandomResizedCrop, RandomHorizontalFlip and ColorJitter (torchvision.transforms.v2) on
    uint8 ``(3, H, W)`` images, method.md section 7."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=tuple(augment.crop_scale), antialias=True),
            v2.RandomHorizontalFlip(augment.hflip),
            v2.ColorJitter(augment.brightness, augment.contrast, augment.saturation, augment.hue),
        ]
    )


def decode_and_transform(
    jpegs: Sequence[torch.Tensor], transform, device: torch.device | str
) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` on ``device``: JPEG bytes decoded there
    (``torchvision.io.decode_jpeg``; nvJPEG, batched, on CUDA) and each image put through
    ``transform`` (transforms.v2 on device tensors; each image its own random draw)."""
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    with warnings.catch_warnings():  # torchvision 0.29 points to TorchCodec's successor
        warnings.simplefilter("ignore", DeprecationWarning)
        images = decode_jpeg(list(jpegs), mode=ImageReadMode.RGB, device=device)
    return torch.stack([transform(im) if transform is not None else im for im in images])


def eval_transform(image_size: int, crop_pct: float = 0.875) -> object:
    """Resize the short side to ``image_size / crop_pct``, then centre-crop ``image_size``."""
    from torchvision.transforms import v2

    return v2.Compose(
        [v2.Resize(int(round(image_size / crop_pct)), antialias=True), v2.CenterCrop(image_size)]
    )


class FrameSamples(Dataset):
    """Training samples, over the segment rows of a :class:`ClipTable` (clips may differ in
    their number of segments).

    ``unit="frame"``: one item per (segment, acoustic frame) with ``audio`` ``(2, F)``;
    ``unit="segment"``: one per segment, ``audio`` ``(T, 2, F)`` when given (none for
    video-only); ``unit="segment_frames"``: the same with audio required, for image-major
    batches (one image shared by the segment's T samples). ``audio`` is indexed by segment
    row: ``(segments, T, 2, F)``.
    ``image`` (a transformed uint8 frame), ``vemb`` (precomputed visual embeddings
    ``(segments, D)``) or ``vemb_bank`` (``(segments, K, D)`` embeddings of K augmented views,
    one drawn per item and epoch, see :meth:`set_epoch`) are added when given.
    """

    def __init__(
        self,
        table: ClipTable,
        audio: torch.Tensor | None = None,
        frames: FrameSource | None = None,
        transform=None,
        vemb: torch.Tensor | None = None,
        unit: str = "frame",
        vemb_bank: torch.Tensor | None = None,
    ):
        if unit not in ("frame", "segment", "segment_frames"):
            raise ValueError(f"unit must be 'frame', 'segment' or 'segment_frames', got {unit!r}")
        if unit != "segment" and audio is None:
            raise ValueError(f"{unit} samples need audio features")
        self.table, self.audio, self.frames = table, audio, frames
        self.transform, self.vemb, self.vemb_bank = transform, vemb, vemb_bank
        self.unit = unit
        self.views: torch.Tensor | None = None
        self.per_segment = audio.shape[1] if unit == "frame" else 1
        self.samples_per_item = audio.shape[1] if unit == "segment_frames" else 1
        if vemb_bank is not None:
            self.set_epoch(0)

    def set_epoch(self, seed: int) -> None:
        """Draw, with ``seed``, which augmentation-bank view every item gets this epoch."""
        if self.vemb_bank is not None:
            g = torch.Generator().manual_seed(int(seed))
            self.views = torch.randint(self.vemb_bank.shape[1], (len(self),), generator=g)

    def __len__(self) -> int:
        return self.table.total_segments * self.per_segment

    def locate(self, i: int) -> tuple[int, int, int]:
        """Item ``i`` -> (clip index, segment of that clip, acoustic frame)."""
        r, k = divmod(int(i), self.per_segment)
        return int(self.table.clip_of[r]), int(self.table.segment_of[r]), k

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        i = int(i)
        r, k = divmod(i, self.per_segment)
        c, s = int(self.table.clip_of[r]), int(self.table.segment_of[r])
        item: dict[str, torch.Tensor] = {"label": self.table.labels[c]}
        if self.unit == "frame":
            item["audio"] = self.audio[r, k]
        elif self.audio is not None:
            item["audio"] = self.audio[r]
        if self.frames is not None and self.frames.encoded:
            item["jpeg"] = self.frames.get(c, s)  # decoded on the device: decode_images
        elif self.frames is not None:
            img = self.frames.get(c, s)
            item["image"] = self.transform(img) if self.transform is not None else img
        if self.vemb is not None:
            item["vemb"] = self.vemb[r]
        if self.vemb_bank is not None:
            item["vemb"] = self.vemb_bank[r, int(self.views[i])].float()
        return item

    @property
    def gathers(self) -> bool:
        """Whether :meth:`gather` can build a batch at once: every input is an in-memory
        tensor and no item has its own random transform (no images)."""
        tensors = [x for x in (self.audio, self.vemb, self.vemb_bank) if x is not None]
        return self.frames is None and all(isinstance(x, torch.Tensor) for x in tensors)

    def gather(self, indices) -> dict[str, torch.Tensor]:
        """The batch of items ``indices`` at once, by tensor indexing: the very tensors
        :meth:`collate` makes of the items one by one (only where :attr:`gathers`)."""
        i = torch.as_tensor(indices, dtype=torch.int64)
        r = torch.div(i, self.per_segment, rounding_mode="floor")
        batch: dict[str, torch.Tensor] = {"label": self.table.segment_labels[r]}
        if self.unit == "frame":
            batch["audio"] = self.audio[r, i - r * self.per_segment]
        elif self.audio is not None:
            batch["audio"] = self.audio[r]
        if self.vemb is not None:
            batch["vemb"] = self.vemb[r]
        if self.vemb_bank is not None:
            batch["vemb"] = self.vemb_bank[r, self.views[i]].float()
        return batch

    @staticmethod
    def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """torch's default collation, with JPEG bytes (of every length) kept as a list."""
        from torch.utils.data import default_collate

        jpegs = [it.pop("jpeg") for it in items] if "jpeg" in items[0] else None
        batch = default_collate(items)
        if jpegs is not None:
            batch["jpeg"] = jpegs
        return batch

    def decode_images(self, jpegs: Sequence[torch.Tensor], device) -> torch.Tensor:
        """A batch's ``image`` from its ``jpeg`` list, on ``device``."""
        return decode_and_transform(jpegs, self.transform, device)


class SegmentSamples(FrameSamples):
    """Evaluation samples, one per segment row: ``audio`` ``(frames, 2, F)``, the
    eval-transformed ``image`` and/or ``vemb``, ``label`` and ``index`` (row of
    :meth:`ClipTable.segment_frame`)."""

    def __init__(
        self,
        table: ClipTable,
        audio: torch.Tensor | None = None,
        frames: FrameSource | None = None,
        transform=None,
        vemb: torch.Tensor | None = None,
    ):
        super().__init__(table, audio, frames, transform, vemb, unit="segment")

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {**super().__getitem__(i), "index": torch.tensor(int(i))}

    def gather(self, indices) -> dict[str, torch.Tensor]:
        i = torch.as_tensor(indices, dtype=torch.int64)
        return {**super().gather(i), "index": i}


def batches(dataset, batch_size: int, num_workers: int = 0, collate_fn=None):
    """The dataset's items in order, ``batch_size`` at a time: gathered at once where the
    dataset can (:meth:`FrameSamples.gather`), else through a ``DataLoader``; the same
    tensors either way."""
    from torch.utils.data import DataLoader

    if num_workers == 0 and getattr(dataset, "gathers", False):
        n = len(dataset)
        return (dataset.gather(range(a, min(a + batch_size, n))) for a in range(0, n, batch_size))
    return iter(
        DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=collate_fn,
        )
    )
