"""Features: registered acoustic feature kinds, the paper's long-term scalogram and FBank
among them (method.md section 2), 1-fps frames (section 3), and the on-disk feature store
written by ``avsc preprocess``."""

from avsc.config import FEATURE_KINDS
from avsc.features.audio import (
    AudioError,
    AudioFormatWarning,
    extract_audio_features,
    features_from_waveform,
    read_audio,
    stft_magnitude,
)
from avsc.features.extractors import (
    ExtractorOptions,
    FeatureExtractor,
    extractor_names,
    get_extractor,
    register_extractor,
)
from avsc.features.filterbanks import (
    mel_filterbank,
    scalogram_centre_frequencies,
    scalogram_filterbank,
    scalogram_filters,
)
from avsc.features.store import (
    FeatureStore,
    NormStats,
    PreprocessError,
    PreprocessReport,
    StoreError,
    normalization_stats,
    preprocess,
)
from avsc.features.video import VideoError, extract_frames, video_info

__all__ = [
    "FEATURE_KINDS",
    "AudioError",
    "AudioFormatWarning",
    "ExtractorOptions",
    "FeatureExtractor",
    "FeatureStore",
    "NormStats",
    "PreprocessError",
    "PreprocessReport",
    "StoreError",
    "VideoError",
    "extract_audio_features",
    "extract_frames",
    "extractor_names",
    "features_from_waveform",
    "get_extractor",
    "mel_filterbank",
    "normalization_stats",
    "preprocess",
    "read_audio",
    "register_extractor",
    "scalogram_centre_frequencies",
    "scalogram_filterbank",
    "scalogram_filters",
    "stft_magnitude",
    "video_info",
]
