"""``avsc submit`` (issue 13, section 1): a trained system over a DCASE evaluation set (1-s
files, no labels) into the submission file, tested on 1-s clips cut from the synthetic
dataset in that layout: the same probabilities as the segments of the whole clips, resumable,
and a bad file named in one line."""

import subprocess
import sys

import av
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from avsc.config import ExperimentConfig
from avsc.data.tau import LABELS
from tests.conftest import ROOT
from tests.experiments.test_experiments import TRAIN  # a tiny training: 1 epoch, test_efficientnet
from tests.forked import avsc_run


def _cut(src_wav, src_mp4, k, wav, mp4):
    """Second ``k`` of a clip as its own WAV (same subtype) and MP4 (H.264, same fps)."""
    x, sr = sf.read(src_wav, always_2d=True)
    sf.write(wav, x[k * sr : (k + 1) * sr], sr, subtype=sf.info(src_wav).subtype)
    with av.open(str(src_mp4)) as inp, av.open(str(mp4), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuv420p"
        vout.options = {"crf": "10"}
        for frame in inp.decode(vin):
            if k <= frame.time < k + 1 - 1e-6:
                frame.pts = None
                for packet in vout.encode(frame.reformat(format="yuv420p")):
                    out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def evaluation_set(synth_store, tmp_path_factory):
    """Three evaluation clips cut into 1-s files with anonymous names, the layout of the
    challenge's evaluation set; and a trained audio-visual system."""
    import avsc.experiments as S

    data, cache = synth_store
    base = tmp_path_factory.mktemp("eval")
    root = base / "tau-eval"
    for sub in ("audio", "video", "evaluation_setup"):
        (root / sub).mkdir(parents=True)
    test = pd.read_csv(data / "evaluation_setup" / "fold1_evaluate.csv", sep="\t")
    clips = [f.split("/")[1][:-4] for f in test["filename_audio"][:3]]
    rows, truth = [], {}
    for clip in clips:
        for k in range(3):
            name = f"{len(rows)}"
            _cut(
                data / "audio" / f"{clip}.wav",
                data / "video" / f"{clip}.mp4",
                k,
                root / "audio" / f"{name}.wav",
                root / "video" / f"{name}.mp4",
            )
            rows.append((f"audio/{name}.wav", f"video/{name}.mp4"))
            truth[f"{name}.wav"] = (clip, k)
    pd.DataFrame(rows, columns=["filename_audio", "filename_video"]).to_csv(
        root / "evaluation_setup" / "fold1_test.csv", sep="\t", index=False
    )
    cfg = ExperimentConfig().override(TRAIN)
    ws = S.Workspace(cache, cfg)
    audio = S.train_system("audio_only", cfg, ws.store, base / "audio", workspace=ws)
    system = S.train_system(
        "pipeline", cfg, ws.store, base / "pipeline", audio_checkpoint=audio.checkpoint,
        workspace=ws,
    )  # fmt: skip
    return data, root, truth, system.checkpoint


def test_a_submission_from_one_second_files_matches_the_whole_clips(evaluation_set, tmp_path):
    from avsc.experiments.predict import predict_clip

    data, root, truth, ck = evaluation_set
    out = tmp_path / "submission.csv"
    res = avsc_run("submit", root, "--checkpoint", ck, "--out", out, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert f"{out}: 9 rows" in res.stdout
    sub = pd.read_csv(out, sep="\t")
    assert sub.columns.tolist() == ["filename", "scene_label", *LABELS]
    assert sub["filename"].tolist() == [f"{i}.wav" for i in range(9)]
    np.testing.assert_allclose(sub[list(LABELS)].sum(axis=1), 1.0, atol=1e-5)
    assert (sub["scene_label"] == np.array(LABELS)[sub[list(LABELS)].to_numpy().argmax(1)]).all()
    # each 1-s file as the same second of its whole clip: the audio is the same samples,
    # the image the same frame after one more lossy H.264 encoding (crf 10)
    for row in sub.itertuples():
        clip, k = truth[row.filename]
        whole = predict_clip(
            data / "video" / f"{clip}.mp4", ck, audio=data / "audio" / f"{clip}.wav"
        )
        mine = sub.loc[sub["filename"] == row.filename, list(LABELS)].to_numpy()[0]
        np.testing.assert_allclose(mine, whole[list(LABELS)].to_numpy()[k], atol=2e-2)


def test_an_interrupted_submission_resumes(evaluation_set, tmp_path, monkeypatch):
    import avsc.experiments.predict as P

    _, root, _, ck = evaluation_set
    whole = tmp_path / "whole.csv"
    P.predict_folder(root, ck, whole)
    real, calls = P.predict_clip, []

    def dies_at_the_fifth(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(P, "predict_clip", dies_at_the_fifth)
    out = tmp_path / "s.csv"
    with pytest.raises(KeyboardInterrupt):
        P.predict_folder(root, ck, out, every=2)
    partial = tmp_path / "s.csv.partial.tsv"
    assert len(pd.read_csv(partial, sep="\t")) == 4 and not out.exists()
    calls.clear()
    monkeypatch.setattr(P, "predict_clip", real)
    P.predict_folder(root, ck, out, every=2)
    assert out.read_text() == whole.read_text() and not partial.exists()


def test_a_submission_keeps_its_work_every_few_seconds_and_on_sigterm(evaluation_set, tmp_path):
    """Issue 21: a scheduler's SIGTERM kept no partial file (it was written every 200 files
    or on Ctrl-C only). Now also every ``every_seconds``, and on SIGTERM, as on Ctrl-C."""
    import signal
    import textwrap

    _, root, _, ck = evaluation_set
    out = tmp_path / "s.csv"
    driver = textwrap.dedent(
        """
        import sys, time
        import avsc.experiments.predict as P
        real = P.predict_clip
        def slow(*args, **kwargs):  # one file every 0.3 s; says when each is done
            df = real(*args, **kwargs)
            time.sleep(0.3)
            print("done", flush=True)
            return df
        P.predict_clip = slow
        P.predict_folder(sys.argv[1], sys.argv[2], sys.argv[3], every=1000, every_seconds=0.5)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", driver, str(root), str(ck), str(out)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    partial = tmp_path / "s.csv.partial.tsv"
    done = 0
    while done < 4:  # a few files in, and past one 0.5-s keep
        assert child.stdout.readline().strip() == "done"
        done += 1
    assert partial.is_file()  # kept on time, long before 1000 files
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 128 + signal.SIGTERM
    kept = pd.read_csv(partial, sep="\t")
    # every file finished at the signal was kept (the one being recorded as "done" printed
    # may be the exception)
    assert len(kept) >= done - 1 and not out.exists()


def test_a_missing_file_is_named_in_one_line(evaluation_set, tmp_path):
    import shutil

    _, root, _, ck = evaluation_set
    broken = shutil.copytree(root, tmp_path / "eval")
    (broken / "video" / "4.mp4").unlink()
    (broken / "audio" / "4.wav").unlink()
    res = avsc_run("submit", broken, "--checkpoint", ck, "--out", tmp_path / "s.csv", cwd=ROOT)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and "4.wav" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
