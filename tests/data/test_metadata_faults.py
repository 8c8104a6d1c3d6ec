"""Reliability of a collection's metadata: every inconsistency listed before any work,
naming the file and row.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from avsc.data import DatasetError, TAUDataset
from avsc.data.validate import validate_dataset
from avsc.features import preprocess
from tests.faults import CFG2
from tests.media import write_indexed_video, write_wav


def test_metadata_inconsistencies_are_all_listed_before_any_work(copy, tmp_path):
    meta = (copy / "meta.csv").read_text().splitlines()
    meta.append(meta[1])  # a duplicate row
    first = meta[3].split("\t")
    wrong = "park" if first[2] != "park" else "bus"
    meta[3] = "\t".join([first[0], first[1], wrong, first[3]])  # disagrees with the name
    (copy / "meta.csv").write_text("\n".join(meta) + "\n")
    fold = copy / "evaluation_setup" / "fold1_train.csv"
    fold.write_text(fold.read_text() + "audio/bus-oslo-9-999.wav\tvideo/bus-oslo-9-999.mp4\tbus\n")
    expected = [
        "duplicate rows: " + meta[1].split("\t")[0],
        f"label '{wrong}' but the file name says '{first[2]}'",
        "bus-oslo-9-999 is not listed in meta.csv",
    ]
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError) as info:
        preprocess(copy, cache, CFG2)
    assert all(e in str(info.value) for e in expected), str(info.value)
    assert "nothing was done" in str(info.value)
    assert not cache.exists()  # refused before any featurizing
    with pytest.raises(DatasetError):
        TAUDataset(copy)
    report = validate_dataset(copy, clip_seconds=2.0)  # the same checker
    for e in expected:
        assert any(e in p.problem for p in report.errors), (e, report.format())


def test_paths_that_leave_the_dataset_root_are_refused_by_name(copy, tmp_path):
    outside = tmp_path / "outside"
    write_wav(outside / "airport-x-1-1.wav", 0.01 * np.ones((2, 96000)))
    write_indexed_video(outside / "airport-x-1-1.mp4", 48, 24, (64, 48))
    meta = (copy / "meta.csv").read_text().splitlines()
    meta.append(
        "audio/../../outside/airport-x-1-1.wav\tvideo/../../outside/airport-x-1-1.mp4\tairport\tx-1"
    )
    absolute = outside / "airport-x-1-1.wav"
    meta.append(f"{absolute}\tvideo/airport-y-2-2.mp4\tairport\ty-2")
    (copy / "meta.csv").write_text("\n".join(meta) + "\n")
    report = validate_dataset(copy, clip_seconds=2.0)
    assert not report.ok
    problems = [f"{p.file}: {p.problem}" for p in report.errors]
    assert any(
        "audio/../../outside/airport-x-1-1.wav leaves the dataset root" in p for p in problems
    )
    assert any(f"absolute path {absolute}" in p for p in problems), problems
    with pytest.raises(DatasetError, match=r"leaves the dataset root"):
        preprocess(copy, tmp_path / "cache", CFG2)
    assert not (tmp_path / "cache").exists()


def test_empty_fold_files_are_errors(copy):
    fold = copy / "evaluation_setup" / "fold1_evaluate.csv"
    fold.write_text(fold.read_text().splitlines()[0] + "\n")
    report = validate_dataset(copy, clip_seconds=2.0)
    assert any(p.file == str(fold) and "lists no clips" in p.problem for p in report.errors), (
        report.format()
    )
    with pytest.raises(DatasetError, match=r"fold1_evaluate.csv: lists no clips"):
        TAUDataset(copy)


def test_validate_deep_finds_nan_audio(copy):
    wav = sorted((copy / "audio").iterdir())[0]
    x = 0.01 * np.ones((96000, 2))
    x[1000, 0] = np.nan
    x[2000, 1] = np.inf
    sf.write(str(wav), x, 48000, subtype="FLOAT")
    shallow = validate_dataset(copy, clip_seconds=2.0)
    assert shallow.ok  # the header is fine
    deep = validate_dataset(copy, deep=True, clip_seconds=2.0)
    assert any(
        p.file == str(wav) and "2 NaN or infinite sample(s)" in p.problem for p in deep.errors
    ), deep.format()
