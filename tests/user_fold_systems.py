"""A user's system for the cross-validation tests, imported by ``avsc crossval --module
tests.user_fold_systems`` in the command and in its worker processes: the audio-only system,
except that it refuses to be built for held-out fold 2 (a fold that fails)."""

from avsc.experiments import Parts, register_system
from avsc.experiments.systems import audio_only


@register_system("audio_only_but_fold2", inputs=("feature",))
def audio_only_but_fold2(p: Parts):
    """The audio-only system, failing on fold 2."""
    if p.config.data.test_fold == "2":
        raise ValueError("this system will not train with fold 2 held out")
    return audio_only(p)
