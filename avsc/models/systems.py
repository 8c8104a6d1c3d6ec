"""Deprecated name of :mod:`avsc.models.fusion` (the networks that join the encoders and the
classifier): ``avsc.models.systems`` meant something else than ``avsc.experiments.systems``
(the registered systems). Kept for one release; import from ``avsc.models`` or
``avsc.models.fusion``."""

import warnings

from avsc.models.fusion import AVSystem, DistilledAVSystem, LateFusion

warnings.warn(
    "avsc.models.systems is renamed avsc.models.fusion (or import from avsc.models); "
    "the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["AVSystem", "DistilledAVSystem", "LateFusion"]
