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
