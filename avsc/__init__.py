"""avsc: audio-visual scene classification with a transfer-learning-based joint optimisation.

Reproduces Chen, Wang and Zhang, "Audio-visual scene classification using a transfer
learning based joint optimization strategy" (ICASSP 2022) on TAU Urban Audio-Visual Scenes
2021, and on any labelled collection of audio, video or audio-visual clips. The layers, from
raw files up: ``avsc.data`` (clip manifests made by recipes: TAU, class folders, CSV, your
own; splits; Places365; synthetic data), ``avsc.features`` (scalogram, FBank, 1-fps frames,
the feature store), ``avsc.models``, ``avsc.training`` / ``avsc.evaluation`` / ``avsc.viz``,
``avsc.experiments`` (the systems registry), ``avsc.workflow`` (the notebooks' Context) and
``avsc.cli``.
"""

__version__ = "0.1.0"
