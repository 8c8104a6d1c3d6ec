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
        (["visual.weights={resnet50: [a, b]}"], "visual.weights"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig().override(override)


def test_visual_weights_are_one_value_or_one_per_backbone():
    one = ExperimentConfig().override({"visual.backbone": "resnet50", "visual.weights": "w.pth"})
    assert one.visual.weights_for("resnet50") == "w.pth"
    with pytest.warns(UserWarning, match=r"visual.weights \(w.pth\) is for visual.backbone res"):
        assert one.visual.weights_for("tf_efficientnetv2_s") is None  # random init, said
    each = ExperimentConfig().override(["visual.weights={resnet50: r.pth, test_resnet: random}"])
    assert each.visual.weights_for("resnet50") == "r.pth"
    assert each.visual.weights_for("test_resnet") == "random"
    assert each.visual.weights_for("tf_efficientnetv2_s") is None


def _alias_bomb(levels: int = 10) -> str:
    """``[&a [lol x9], &b [*a x9], ..., &j [*i x9]]``: 9**10 strings once expanded."""
    names = "abcdefghijklmnop"
    parts = ["&a [" + ", ".join(["lol"] * 9) + "]"]
    for i in range(1, levels):
        parts.append(f"&{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 9) + "]")
    return "[" + ", ".join(parts) + "]"


def test_a_yaml_alias_bomb_as_a_config_value_is_refused_at_once(tmp_path):
    """Issue 21 (1): a bomb as a value of ``--config`` hung ``avsc validate`` (its type error
    formatted 9**10 strings). Aliases are refused in config files and ``-p`` values, naming
    the file and line; and no message prints a whole structure."""
    import subprocess
    import sys

    from avsc.config import ConfigError, load_config_file, parse_overrides

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"train: {{lr: {_alias_bomb()}}}\n")
    res = subprocess.run(
        [sys.executable, "-m", "avsc", "validate", str(tmp_path), "--config", str(bomb)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        f"avsc validate: error: {bomb}, line 1: the YAML alias *a (avsc's configuration takes "
        "no aliases: write the value out)"
    )
    with pytest.raises(ConfigError, match=r"^override 'train.lr=\[&a \[1\], \*a\]': line 1: "):
        parse_overrides(["train.lr=[&a [1], *a]"])
    plain = tmp_path / "plain.yaml"
    plain.write_text("train: {lr: [[1, 2], [3, 4]]}\n")
    assert load_config_file(plain) == {"train": {"lr": [[1, 2], [3, 4]]}}  # plain YAML reads
    with pytest.raises(ConfigError) as err:
        ExperimentConfig().override({"train.lr": [[0] * 10**4] * 10**4})
    assert str(err.value).startswith("config key train.lr: expected a number, got [[0, 0, ")
    assert len(str(err.value)) < 300
