"""``train.decode_on_device``: the loader passes JPEG bytes and the training device decodes
(torchvision.io.decode_jpeg) and augments them (transforms.v2 on device tensors). Checked on
the CPU device here: the same pixels as the loader's decoding, the same augmentation for the
same random draws, and a whole training through the fit loop."""

from __future__ import annotations

import numpy as np
import torch

from avsc.config import AugmentConfig
from avsc.features import FeatureStore
from avsc.features.datasets import (
    ClipTable,
    FrameSamples,
    FrameSource,
    decode_and_transform,
    subset_clips,
    train_transform,
)
from tests.experiments.test_experiments import TRAIN


def _table(cache):
    store = FeatureStore(cache)
    return ClipTable(store, subset_clips(store, "train"))


def test_device_decoding_gives_the_loaders_pixels_and_augmentation(synth_store):
    _, cache = synth_store
    table = _table(cache)
    pil = FrameSource(table, in_memory="no")  # the loader's path: PIL in the workers
    enc = FrameSource(table, in_memory="no", encoded=True)
    for c, s in [(0, 0), (3, 2), (len(table) - 1, table.segments - 1)]:
        jpeg = enc.get(c, s)
        assert (
            jpeg.dtype == torch.uint8
            and jpeg.dim() == 1
            and bytes(jpeg[:2].tolist()) == b"\xff\xd8"
        )
        decoded = decode_and_transform([jpeg], None, "cpu")[0]
        assert torch.equal(decoded, pil.get(c, s))  # libjpeg-turbo both ways
        tf = train_transform(32, AugmentConfig())
        torch.manual_seed(c * 100 + s)
        on_device = decode_and_transform([jpeg], tf, "cpu")[0]
        torch.manual_seed(c * 100 + s)
        in_loader = tf(pil.get(c, s))
        assert on_device.shape == (3, 32, 32) and torch.equal(on_device, in_loader)
    # in memory: the bytes themselves, about a tenth of the decoded frames
    mem = FrameSource(table, in_memory="yes", encoded=True)
    assert torch.equal(mem.get(2, 1), enc.get(2, 1))
    raw = sum(int(np.prod(f.shape)) for f in FrameSource(table, in_memory="yes").memory)
    assert sum(b.numel() for clip in mem.memory for b in clip) < raw / 5


def test_a_batch_keeps_its_jpegs_as_a_list_and_decodes_to_images(synth_store):
    _, cache = synth_store
    table = _table(cache)
    tf = train_transform(32, AugmentConfig())
    ds = FrameSamples(table, frames=FrameSource(table, encoded=True), transform=tf, unit="segment")
    batch = FrameSamples.collate([ds[i] for i in range(5)])
    assert isinstance(batch["jpeg"], list) and len(batch["jpeg"]) == 5
    assert batch["label"].shape == (5,)
    images = ds.decode_images(batch["jpeg"], torch.device("cpu"))
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.uint8


def test_joint_trains_with_frames_decoded_on_the_device(synth_store, tmp_path):
    from avsc.config import ExperimentConfig
    from avsc.experiments import train_system

    _, cache = synth_store
    cfg = ExperimentConfig().override(
        {**TRAIN, "train.decode_on_device": True, "train.num_workers": 1}
    )
    res = train_system("joint", cfg, cache, tmp_path, feature="scalogram")
    assert np.isfinite(res.metrics["logloss_classwise"])
    assert len(res.history) == 1 and np.isfinite(res.history["train_loss"]).all()
