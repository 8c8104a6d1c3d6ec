"""Reliability of ``avsc predict``: long clips streamed block by block, video-only
systems, clips whose video outlasts the audio, wrong inputs said in one line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from avsc.cli import main
from avsc.config import ExperimentConfig
from tests.faults import TRAIN, avsc_cli, error_lines
from tests.media import write_wav


def _checkpoints(synth_store, runs):
    import avsc.experiments as S

    cfg = ExperimentConfig().override({**TRAIN, "visual.image_size": 32})
    ws = S.Workspace(synth_store[1], cfg)
    audio = S.train_system("audio_only", cfg, ws.store, runs / "audio", workspace=ws)
    joint = S.train_system(
        "pipeline",
        cfg,
        ws.store,
        runs / "pipeline",
        audio_checkpoint=audio.checkpoint,
        workspace=ws,
    )
    return ws, audio.checkpoint, joint.checkpoint


@pytest.fixture(scope="module")
def checkpoints(synth_store, tmp_path_factory):
    return _checkpoints(synth_store, tmp_path_factory.mktemp("runs"))


def test_predict_streams_a_long_clip_block_by_block(checkpoints, tmp_path):
    from avsc.experiments.predict import predict_clip

    _, audio_ck, _ = checkpoints
    rng = np.random.default_rng(0)
    wav = write_wav(tmp_path / "long.wav", 0.1 * rng.standard_normal((2, 48000 * 7)))
    whole = predict_clip(wav, audio_ck, block_segments=1000)
    for block in (1, 3):
        part = predict_clip(wav, audio_ck, block_segments=block)
        pd.testing.assert_frame_equal(part, whole, check_exact=False, atol=1e-6)
    assert len(whole) == 7


def test_predict_streams_a_video_only_system(checkpoints, synth_store, tmp_path):
    import avsc.experiments as S
    from avsc.experiments.predict import predict_clip

    ws, _, _ = checkpoints
    video_ck = S.train_system(
        "video_only", ws.config, ws.store, tmp_path / "video", workspace=ws
    ).checkpoint
    clip = ws.tables["evaluate"].clips[0]
    video = synth_store[0] / "video" / f"{clip}.mp4"
    whole = predict_clip(video, video_ck)
    assert len(whole) == 3  # every segment of the 3-s clip
    pd.testing.assert_frame_equal(
        predict_clip(video, video_ck, block_segments=2), whole, check_exact=False, atol=1e-6
    )


def test_predict_says_when_the_video_outlasts_the_audio(checkpoints, synth_store, tmp_path):
    from avsc.experiments.predict import PredictNote, predict_clip

    ws, _, pipeline_ck = checkpoints
    root = synth_store[0]
    clip = ws.tables["evaluate"].clips[0]
    x, sr = sf.read(str(root / "audio" / f"{clip}.wav"), always_2d=True)
    short = write_wav(tmp_path / "two_seconds.wav", x[: 2 * sr].T, sr)
    video = root / "video" / f"{clip}.mp4"
    with pytest.warns(PredictNote, match=r"the last 1.0 s of video were not used"):
        df = predict_clip(video, pipeline_ck, audio=short)
    full = predict_clip(video, pipeline_ck, audio=root / "audio" / f"{clip}.wav")
    assert len(df) == 2 and len(full) == 3
    pd.testing.assert_frame_equal(df, full.iloc[:2], check_exact=False, atol=1e-5)
    res = avsc_cli("predict", str(video), "--audio", str(short), "--checkpoint", str(pipeline_ck))
    assert res.returncode == 0, res.stderr
    assert "avsc predict: note:" in res.stderr and "were not used" in res.stderr


def test_a_folder_as_the_clip_and_a_joint_checkpoint_as_the_audio_one_are_said(
    checkpoints, tmp_path, capsys, caplog
):
    """Issue 21: a folder passed as the clip was reported as "audio file not found"; a
    pipeline/joint checkpoint given as the audio checkpoint was taken silently. Now the folder
    is named as a folder, and the log says which part of the checkpoint is used."""
    import logging

    from avsc.experiments.train import load_acoustic_encoder

    ws, audio_ck, pipeline_ck = checkpoints
    folder = tmp_path / "my clips"
    folder.mkdir()
    code = main(["predict", str(folder), "--checkpoint", str(audio_ck)])
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and lines == [f"avsc predict: error: {folder}: a folder, not an audio file"]
    with caplog.at_level(logging.WARNING, logger="avsc.experiments.train"):
        load_acoustic_encoder(audio_ck, ws.config, 290)
        assert not caplog.records  # the audio-only system's own: nothing to say
        load_acoustic_encoder(pipeline_ck, ws.config, 290)
    assert [r.getMessage() for r in caplog.records] == [
        f"{pipeline_ck} is a pipeline system's checkpoint: only its acoustic encoder is used "
        "(its scene classifier and visual parts are not)"
    ]
