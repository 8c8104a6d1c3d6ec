"""avsc: audio-visual scene classification with a transfer-learning-based joint optimisation.

Reproduces Chen, Wang and Zhang, "Audio-visual scene classification using a transfer
learning based joint optimization strategy" (ICASSP 2022) on TAU Urban Audio-Visual Scenes
2021. See ``avsc.data`` (dataset layer), ``avsc.features`` (scalogram, FBank, 1-fps frames,
feature store).
"""

__version__ = "0.1.0"
