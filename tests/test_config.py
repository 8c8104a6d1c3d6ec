"""Config: overrides parsed as YAML, clear errors for unknown keys and bad values."""

import pytest

from avsc.config import ExperimentConfig


def test_string_overrides_are_parsed_as_yaml_and_round_trip():
    cfg = ExperimentConfig().override(
        ["train.max_epochs=3", "augment.crop_scale=[0.5, 1.0]", "train.patience=null"]
    )
    assert cfg.train.max_epochs == 3 and cfg.train.patience is None
    assert tuple(cfg.augment.crop_scale) == (0.5, 1.0)
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


def test_yaml_yes_no_become_memory_modes():
    # YAML 1.1 reads a bare ``no`` as False; the memory options still mean "no"
    cfg = ExperimentConfig().override(["train.audio_in_memory=no", "train.frames_in_memory=yes"])
    assert cfg.train.audio_in_memory == "no" and cfg.train.frames_in_memory == "yes"


@pytest.mark.parametrize(
    "override, message",
    [
        (["train.audio_in_memory=sometimes"], "audio_in_memory"),
        (["train.aug_bank=-1"], "aug_bank"),
        (["train.nope=1"], "nope"),
        (["trian.max_epochs=1"], "trian"),
        (["train.max_epochs"], "section.key=value"),
        (["data.split=kfold"], "split"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig().override(override)
