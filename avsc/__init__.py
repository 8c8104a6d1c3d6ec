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

import os as _os
import sys as _sys

# torch's OpenMP threads wait for each other between operations by spinning. On a machine
# with another busy process (a shared workstation, a node's neighbours) a spinning thread
# holds a core the thread it waits for needs: a training step at 2 threads took 3-5x its
# time alone. Threads that sleep while they wait (PASSIVE) lose much of that, give the same
# numbers, and cost little with nothing else running (README, "Threads under load";
# benchmarks/threads.py). OpenMP reads the setting once, when torch loads, so it is set
# here, before avsc imports torch. A setting of your own is kept: OMP_WAIT_POLICY, or
# GOMP_SPINCOUNT (GOMP_SPINCOUNT=300000 gives GNU OpenMP's own default back).
if "torch" not in _sys.modules and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(_os.environ):
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
