"""Acoustic feature extractors, registered by name like systems and recipes.

A feature kind is one class: a log filterbank over the long-term magnitude STFT of each 1-s
mid/side segment (method.md section 2), with what figures and tables need to show it. The
paper's two, ``scalogram`` and ``fbank``, are registered here; a researcher's own is one
decorated class in any module (``avsc preprocess --module mine``), with its own options::

    from dataclasses import dataclass
    from avsc.features import ExtractorOptions, FeatureExtractor, register_extractor

    @register_extractor
    class LogMel(FeatureExtractor):
        name, title, short, unit, band_label = "logmel", "log-mel", "log-mel", "mel", "mel band"

        @dataclass(frozen=True)
        class Options(ExtractorOptions):
            n_mels: int = 64  # -p 'audio.extractors={logmel: {n_mels: 40}}'

        def filterbank(self):
            return librosa.filters.mel(...)  # (F, n_fft // 2 + 1)

Every stage picks a registered kind up by its name: ``preprocess`` (``--features``; by
default the paper's two), ``train --feature``, the feature figure of notebook 01 (every
registered kind), the explorer, and the tables' feature comparisons. Preprocessing workers
import and register a user's class before they use it; a class defined in ``__main__`` or a
notebook works with ``--workers 1``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from avsc.config import AudioConfig, ConfigError, _Section


@dataclass(frozen=True)
class ExtractorOptions(_Section):
    """Base of an extractor's own options (``audio.extractors.<name>``): a frozen dataclass
    whose keys are type-checked and refused by name, like every config section."""

    _name: ClassVar[str] = "audio.extractors"


class FeatureExtractor:
    """One acoustic feature kind: ``(segments, 2T, bins)`` magnitude rows -> log features.

    Subclasses set the class attributes and :meth:`filterbank`, or override :meth:`apply`
    for a feature that is not a log filterbank."""

    name: ClassVar[str] = ""  # the store's and the command line's name
    title: ClassVar[str] = ""  # figures: "long-term scalogram"
    short: ClassVar[str] = ""  # tables' comparisons: "scalogram vs FBank"
    unit: ClassVar[str] = "bands"  # a figure's title counts them: "(290 filters)"
    band_label: ClassVar[str] = "band"  # a figure's y axis
    high_first: ClassVar[bool] = False  # rows run from high to low frequencies
    Options: ClassVar[type[ExtractorOptions]] = ExtractorOptions

    def __init__(self, audio: AudioConfig | None = None):
        self.audio = audio or AudioConfig()
        self.options = self.Options.from_dict(self.audio.extractors.get(self.name))

    def filterbank(self) -> np.ndarray:
        """The ``(F, n_fft // 2 + 1)`` weights over the STFT bins."""
        raise NotImplementedError(f"feature extractor {self.name!r} defines no filterbank")

    def apply(self, rows: np.ndarray) -> np.ndarray:
        """``(S, 2T, bins)`` float32 magnitudes -> ``(S, 2T, F)`` float32 log features
        (:func:`filterbank_product`, then the log)."""
        return self.log(filterbank_product(rows, self.filterbank()))

    def log(self, s: np.ndarray) -> np.ndarray:
        """The features of filterbank outputs ``s``: ``log(s + audio.log_eps)``, float32."""
        return np.log(s + np.float32(self.audio.log_eps)).astype(np.float32, copy=False)

    def band_ticks(self, n_bands: int) -> tuple[list[int], list[str]] | None:
        """Rows to label on a figure's y axis and their labels, in display order (None:
        matplotlib's own)."""
        return None


#: a filterbank with at most this fraction of non-zero weights is applied as a sparse matrix
SPARSE_DENSITY = 0.1
_SPARSE: dict[int, tuple[np.ndarray, object]] = {}  # id(weights) -> (weights, CSR or None)


def filterbank_product(rows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``rows @ w.T`` for ``(..., bins)`` float32 magnitude rows and ``(F, bins)`` weights.

    A filterbank whose filters each cover a band of bins (the scalogram's 290 filters: 2.7 %
    of the weights are non-zero; the FBank's 256: 0.8 %) is applied as a ``scipy.sparse``
    CSR matrix: each value is the sum of its filter's non-zero terms in bin order, in
    float32, and depends on its own row only, never on the rows computed with it or on BLAS
    (13x less time than the dense product). A denser one (more than :data:`SPARSE_DENSITY`
    non-zero) goes through BLAS, whose OpenBLAS sums in an order that depends on a product's row
    count and thread count: the caller runs it per segment on one BLAS thread
    (:func:`avsc.features.audio._segment_features`), so that a segment's features are the
    same bits in a whole clip, a streamed block or a batch."""
    csr = _sparse_weights(w)
    if csr is None:
        return np.matmul(rows, w.T)
    x = rows.reshape(-1, rows.shape[-1])
    out = (csr @ x.T).T  # (rows, F): csr_matvecs, a row's sums in bin order
    return np.ascontiguousarray(out, dtype=np.float32).reshape(*rows.shape[:-1], w.shape[0])


def sparse_log_filterbank(extractor: FeatureExtractor):
    """The CSR weights of ``extractor`` where its features are the log of a filterbank
    (:meth:`FeatureExtractor.apply` not overridden) that is sparse enough, else None: the
    caller may then multiply any rows it likes and take :meth:`FeatureExtractor.log`."""
    if type(extractor).apply is not FeatureExtractor.apply:
        return None
    return _sparse_weights(extractor.filterbank())


def _sparse_weights(w: np.ndarray):
    """The CSR form of ``w`` if it is sparse enough (kept while ``w`` lives: the registered
    filterbanks are cached arrays), else None."""
    hit = _SPARSE.get(id(w))
    if hit is not None and hit[0] is w:
        return hit[1]
    csr = None
    if np.count_nonzero(w) <= SPARSE_DENSITY * w.size:
        import scipy.sparse

        csr = scipy.sparse.csr_matrix(np.asarray(w, dtype=np.float32))
    if len(_SPARSE) >= 32:  # a user's filterbank() that builds a new array every call
        _SPARSE.clear()
    _SPARSE[id(w)] = (w, csr)
    return csr


_EXTRACTORS: dict[str, type[FeatureExtractor]] = {}


def register_extractor(cls: type[FeatureExtractor]) -> type[FeatureExtractor]:
    """Class decorator: make ``cls`` a feature kind under ``cls.name``. A second class under
    one name is refused (a module imported twice re-registers its own class)."""
    name = cls.name
    if not name or not name.isidentifier():
        raise ValueError(f"feature extractor {cls.__qualname__}: name must be an identifier")
    old = _EXTRACTORS.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise ValueError(
            f"feature kind {name!r} is already registered by {old.__module__}.{old.__qualname__}"
        )
    if cls.Options._name == ExtractorOptions._name:  # messages name audio.extractors.<name>
        cls.Options = type(
            cls.Options.__name__, (cls.Options,), {"_name": f"audio.extractors.{name}"}
        )
    _EXTRACTORS[name] = cls
    return cls


def extractor_names() -> tuple[str, ...]:
    """The registered feature kinds, in registration order (the paper's two first)."""
    return tuple(_EXTRACTORS)


def get_extractor(name: str, audio: AudioConfig | None = None) -> FeatureExtractor:
    """The registered extractor ``name`` with ``audio``'s settings; a ``ValueError`` naming
    the registered kinds otherwise."""
    cls = _EXTRACTORS.get(name)
    if cls is None:
        raise ValueError(
            f"unknown feature kind {name!r}; expected one of {extractor_names()} "
            "(a module of yours can add one with @avsc.features.register_extractor)"
        )
    return cls(audio)


def check_kinds(kinds, audio: AudioConfig) -> None:
    """Every kind of ``kinds`` registered and its options valid, or a :class:`ConfigError`
    naming the ``features`` key or the option."""
    for kind in kinds:
        if kind not in _EXTRACTORS:
            raise ConfigError(
                f"config key features: unknown feature kind {kind!r}; registered: "
                f"{', '.join(extractor_names())} (a module of yours can add one with "
                "@avsc.features.register_extractor)"
            )
        get_extractor(kind, audio)
    unknown = sorted(set(audio.extractors) - set(_EXTRACTORS))
    if unknown:
        raise ConfigError(
            f"config key audio.extractors: options for unregistered feature kind(s) {unknown}"
        )


def extractor_classes(kinds) -> list[tuple[str, str]]:
    """``(module, qualified name)`` of the classes of ``kinds`` registered outside avsc: a
    spawned worker imports and registers them (:func:`import_extractors`)."""
    classes = {(_EXTRACTORS[k].__module__, _EXTRACTORS[k].__qualname__) for k in kinds}
    return sorted(c for c in classes if not c[0].startswith("avsc."))


def import_extractors(classes) -> None:
    """Register the extractor classes ``(module, qualified name)`` in this process."""
    for module, qualname in classes:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        if _EXTRACTORS.get(obj.name) is not obj:
            register_extractor(obj)


def unregister_extractor(name: str) -> None:
    """Forget the feature kind ``name`` (tests; a notebook redefining its class)."""
    _EXTRACTORS.pop(name, None)


@register_extractor
class Scalogram(FeatureExtractor):
    """The long-term scalogram: 290 Morlet filters (Q=32, J=12), method.md section 2.5.
    Its settings are ``audio.scalogram_q`` / ``audio.scalogram_j``."""

    name = "scalogram"
    title = "long-term scalogram"
    short = "scalogram"
    unit = "filters"
    band_label = "centre (Hz)"
    high_first = True  # its filters run from high to low

    def filterbank(self) -> np.ndarray:
        from avsc.features.filterbanks import scalogram_filterbank

        a = self.audio
        return scalogram_filterbank(a.sample_rate, a.n_fft, a.scalogram_q, a.scalogram_j)

    def band_ticks(self, n_bands: int) -> tuple[list[int], list[str]]:
        from avsc.features.filterbanks import scalogram_centre_frequencies

        a = self.audio
        centres = scalogram_centre_frequencies(a.sample_rate, a.scalogram_q, a.scalogram_j)
        ticks = list(range(0, n_bands, 40))
        return [n_bands - 1 - k for k in ticks], [f"{centres[k]:.0f}" for k in ticks]


@register_extractor
class FBank(FeatureExtractor):
    """The long-term FBank: ``audio.n_mels`` mel filters over ``audio.fmin``-``fmax``,
    method.md section 2.6."""

    name = "fbank"
    title = "long-term FBank"
    short = "FBank"
    unit = "mel"
    band_label = "mel band"

    def filterbank(self) -> np.ndarray:
        from avsc.features.filterbanks import mel_filterbank

        a = self.audio
        return mel_filterbank(a.sample_rate, a.n_fft, a.n_mels, a.fmin, a.fmax)
