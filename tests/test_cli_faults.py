"""Reliability of the command line: bad config values, files and devices refused before
any work in one line naming the key or file, --debug for the traceback, a second run
into one folder refused, non-ASCII names under a non-UTF-8 locale.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from avsc.cli import main
from tests.faults import TRAIN, error_lines


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_epochs=abc", "config key train.max_epochs: expected an integer, got 'abc'"),
        ("train.batch_size=0", "config key train.batch_size: must be >= 1, got 0"),
        ("train.max_epochs=0", "config key train.max_epochs: must be >= 1, got 0"),
        ("train.lr=.nan", "config key train.lr: must be a finite number, got nan"),
        ("train.lr=nan", "config key train.lr: must be a finite number, got nan"),
        ("train.lr=-1", "config key train.lr: must be > 0"),
        ("model.sc_dropout=1.5", "config key model.sc_dropout: must be in [0, 1)"),
        ("augment.crop_scale=[0.5]", "config key augment.crop_scale: expected a list of 2"),
        ("visual.image_size=big", "config key visual.image_size"),
    ],
)
def test_bad_config_values_are_refused_before_any_work(tmp_path, capsys, override, message):
    missing = tmp_path / "no-store-here"  # never reached: the config is checked first
    code = main(
        [
            "train",
            "audio_only",
            "--cache",
            str(missing),
            "--out",
            str(tmp_path / "o"),
            "-p",
            override,
        ]
    )
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert "store" not in err and not (tmp_path / "o").exists()


def test_run_checks_config_and_notebook_parameter_types_up_front(tmp_path, capsys):
    base = ["run", "--profile", "smoke", "--runs", str(tmp_path), "--figures", str(tmp_path)]
    assert main([*base, "-p", "train.batch_size=0"]) == 1
    assert "config key train.batch_size: must be >= 1, got 0" in capsys.readouterr().err
    assert main([*base, "-p", "clips_per_class=abc"]) == 1
    err = capsys.readouterr().err
    assert "config key series.clips_per_class: expected an integer, got 'abc'" in err
    # values the series cannot use, refused before notebook 01 (which used to fail on them)
    for value, message in (
        ("clips_per_class=2", "config key series.clips_per_class: must be >= 3, got 2"),
        ("video_size=[97,64]", "config key series.video_size: must be [width, height], even "),
        ("series.workers=0", "config key series.workers: must be >= 1, got 0"),
    ):
        assert main([*base, "-p", value]) == 1
        assert message in capsys.readouterr().err, value
    assert not (tmp_path / "smoke").exists()


def test_a_config_file_with_python_tags_is_refused_in_one_line(tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'train: !!python/object/apply:os.system ["touch {marker}"]\n')
    code = main(
        [
            "train",
            "audio_only",
            "--cache",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--config",
            str(bad),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert error_lines(err) == [ln for ln in err.splitlines() if ln.strip()]
    assert f"{bad}: not a plain YAML config (ConstructorError" in err


def test_a_damaged_weights_file_is_named(synth_store, tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    code = main(
        [
            "train",
            "video_only",
            "--cache",
            str(synth_store[1]),
            "--out",
            str(tmp_path / "o"),
            "-p",
            f"visual.weights={weights}",
            *[f"-p{k}={v}" for k, v in TRAIN.items()],
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(error_lines(err)) == 1, err
    assert f"{weights}: not a readable safetensors file" in err


def test_debug_shows_the_traceback(tmp_path, capsys):
    args = ["validate", str(tmp_path / "nowhere"), "--report", str(tmp_path / "x" / "r.csv")]
    assert main(args) == 1  # a missing root is a validation finding, not an exception
    assert "dataset root does not exist" in (tmp_path / "x" / "r.csv").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    args = [
        "train",
        "audio_only",
        "--cache",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "--config",
        str(bad),
    ]
    assert main(args) == 2
    assert "not a plain YAML config (ParserError" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a plain YAML config"):
        main(["--debug", *args])


def test_synth_below_its_minimum_of_clips_says_the_minimum_not_unexpected(tmp_path, capsys):
    """Issue 21: ``synth --clips-per-class 2`` printed ``ValueError ... (unexpected ...)``;
    the option now states its minimum, and the library's own error is avsc's."""
    from avsc.data.synth import SynthError, make_synthetic_dataset

    with pytest.raises(SystemExit) as exit_:
        main(["synth", "--out", str(tmp_path / "d"), "--clips-per-class", "2"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unexpected" not in err
    assert err.strip().splitlines()[-1] == (
        "avsc synth: error: argument --clips-per-class: must be at least 3 (each class needs "
        "clips for training, validation and evaluation), got 2"
    )
    with pytest.raises(SynthError, match=r"^clips_per_class must be an integer >= 3, got 2$"):
        make_synthetic_dataset(tmp_path / "e", clips_per_class=2, show_progress=False)
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_the_machine_lacks_is_named_before_any_work(synth_store, tmp_path, capsys):
    """Issue 21 (5): ``-p train.device=cuda`` without a GPU, ``predict --device cuda`` and
    ``--device banana`` gave torch's errors as unexpected ones, and training left a results
    folder holding only a lock file. Now one line naming the key or option and the devices
    there are, and nothing written."""
    out = tmp_path / "results"
    code = main(["train", "audio_only", "--cache", str(synth_store[1]), "--out", str(out),
                 "-p", "train.device=cuda"])  # fmt: skip
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and lines == [
        "avsc train: error: config key train.device: cuda asked, but this machine has no CUDA "
        "device (no driver or no GPU visible to torch); it has cpu"
    ]
    assert not out.exists()
    for device, why in (
        ("cuda:1", "cuda:1 asked, but this machine has no CUDA device"),
        ("banana", "'banana' is not a device (cpu, cuda, cuda:N, mps); this machine has cpu"),
    ):
        code = main(["predict", str(tmp_path / "clip.wav"), "--checkpoint",
                     str(tmp_path / "best.pt"), "--device", device])  # fmt: skip
        lines = error_lines(capsys.readouterr().err)
        assert (
            code == 2
            and len(lines) == 1
            and lines[0].startswith(f"avsc predict: error: --device: {why}")
        ), lines


def test_an_unknown_backbone_is_named_with_close_timm_names_before_any_work(
    synth_store, tmp_path, capsys
):
    """Issue 21 (6): ``-p visual.backbone=does_not_exist`` gave timm's "Unknown model" as an
    unexpected RuntimeError. Now one line naming the key and the closest timm names."""
    out = tmp_path / "results"
    code = main(["train", "video_only", "--cache", str(synth_store[1]), "--out", str(out),
                 "-p", "visual.backbone=efficientnet_lite"])  # fmt: skip
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(
        "avsc train: error: config key visual.backbone: timm has no model 'efficientnet_lite'; "
        "close names: efficientnet_lite"
    ), lines
    assert not out.exists()


def test_a_second_avsc_run_into_one_run_folder_is_refused(tmp_path, capsys):
    """Issue 21: two ``avsc run`` of one profile into one folder overwrote each other's
    executed notebooks. The second is refused, naming the first (pid, host, command)."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom avsc.utils import exclusive_lock\n"
         "with exclusive_lock(sys.argv[1], 'a run'):\n    print('held', flush=True)\n"
         "    time.sleep(120)\n",
         str(tmp_path / "runs" / ".smoke.run.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["run", "--profile", "smoke", "--runs", str(tmp_path / "runs"),
                     "--figures", str(tmp_path / "fig"), "--no-preflight"])  # fmt: skip
        lines = error_lines(capsys.readouterr().err)
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith(
            f"avsc run: error: run folder {tmp_path / 'runs' / 'smoke'} is in use by another "
            f"avsc run (pid {holder.pid} on "
        ), lines
        assert lines[0].endswith("; wait for it to finish or use another folder")
        assert not (tmp_path / "runs" / "smoke").exists()
    finally:
        holder.kill()
        holder.wait()


def test_non_ascii_names_work_under_a_non_utf8_locale(tmp_path):
    """Under ``LC_ALL=C PYTHONUTF8=0`` (an ASCII locale: Python holds non-ASCII file names
    with surrogate escapes) a collection whose root, labels and clip names are not ASCII
    validates, preprocesses, trains and predicts; the one broken file is named as it is
    named on disk; every file avsc writes is UTF-8 holding the names' own text. (validate
    called every clip unreadable, preprocess crashed writing failures.csv, predict failed
    without naming the file.)"""
    root = tmp_path / "dätä"
    rng = np.random.default_rng(0)
    for k, label in enumerate(["café", "straße", "park"]):
        for i in range(4):
            tone = np.sin(2 * np.pi * (300 + 200 * k) * np.arange(32000) / 16000)
            x = 0.3 * tone + 0.05 * rng.standard_normal(32000)
            path = root / label / f"clïp_{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(os.fsencode(path), x, 16000)
    (root / "park" / "brøken.wav").write_bytes(b"not a wave file")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_") and k != "LANG"}
    env.update(LC_ALL="C", PYTHONUTF8="0", PYTHONIOENCODING="", AVSC_PROGRESS="0")

    def run(*args: str) -> tuple[int, str, str]:
        res = subprocess.run([sys.executable, "-m", "avsc", *args], capture_output=True, env=env)
        return res.returncode, res.stdout.decode("utf-8"), res.stderr.decode("utf-8")

    probe = "import sys; print(sys.getfilesystemencoding())"
    fs = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert fs.stdout.strip() == "ascii", "the locale under test is not an ASCII one"

    rc, out, err = run("validate", str(root))
    assert rc == 1, out + err
    assert f"{root}/park/brøken.wav: unreadable audio file" in out
    assert "13 clips checked, 1 error(s)" in out, out
    assert "codec can't" not in out + err

    rc, out, err = run("manifest", str(root), "--out", str(tmp_path / "mänifest.csv"))
    assert rc == 0, err
    text = (tmp_path / "mänifest.csv").read_bytes().decode("utf-8")
    assert "café/clïp_0,dätä/café/clïp_0.wav,café" in text.splitlines()

    cache = tmp_path / "cäche"
    rc, out, err = run("preprocess", "--data", str(root), "--cache", str(cache))
    assert rc == 3, err  # some clips failed
    assert f"FAILED park/brøken: {root}/park/brøken.wav: unreadable audio file" in out
    failures = pd.read_csv(cache / "failures.csv", encoding="utf-8")
    assert list(failures["clip"]) == ["park/brøken"]
    assert list(failures["file"]) == [f"{root}/park/brøken.wav"]

    out_dir = tmp_path / "rün"
    rc, out, err = run("train", "audio_only", "--cache", str(cache), "--out", str(out_dir),
                       "-p", "train.max_epochs=1")  # fmt: skip
    assert rc == 0, err
    assert json.loads(out[out.index("{") :])["labels"] == ["café", "park", "straße"]
    # TensorBoard (which opens paths as UTF-8) wrote the curves and the result into rün/
    assert len(list((out_dir / "audio_only_scalogram").glob("events.out.tfevents.*"))) == 2

    ckpt = str(out_dir / "audio_only_scalogram" / "best.pt")
    csv_out = tmp_path / "prédictions.csv"
    rc, out, err = run("predict", str(root / "café" / "clïp_1.wav"), "--checkpoint", ckpt,
                       "--csv", str(csv_out))  # fmt: skip
    assert rc == 0, err
    assert "café" in out.splitlines()[0] and "straße" in out.splitlines()[0]
    header = csv_out.read_bytes().decode("utf-8").splitlines()[0]
    assert header.endswith(",café,park,straße")
    rc, out, err = run("predict", str(root / "park" / "brøken.wav"), "--checkpoint", ckpt)
    assert rc == 2
    assert err.strip() == (
        f"avsc predict: error: {root}/park/brøken.wav: unreadable audio file "
        "(Format not recognised.)"
    )
