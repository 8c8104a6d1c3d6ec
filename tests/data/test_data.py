"""Dataset layer: TAU metadata in both layouts, names, labels, the split, ``avsc validate``."""

import shutil

import numpy as np
import pandas as pd
import pytest

from avsc.cli import main
from avsc.config import DataConfig
from avsc.data import LABELS, DatasetError, TAUDataset, load_manifest, parse_clip_name
from avsc.data.split import assign_subsets, validation_split
from avsc.data.tau import annotate
from avsc.data.validate import validate_dataset
from tests.conftest import REALDATA
from tests.media import make_tiny_dataset, write_wav

FOLD1 = REALDATA / "tau_av2021_fold1_meta"


def test_label_order_is_the_papers():
    assert LABELS == (
        "airport",
        "bus",
        "metro",
        "metro_station",
        "park",
        "public_square",
        "shopping_mall",
        "street_pedestrian",
        "street_traffic",
        "tram",
    )


def test_parse_clip_names():
    p = parse_clip_name("audio/street_pedestrian-lisbon-1002-40451.wav")
    assert (p.scene, p.city, p.location, p.segment) == (
        "street_pedestrian",
        "lisbon",
        "1002",
        "40451",
    )
    assert p.identifier == "lisbon-1002" and p.clip == "street_pedestrian-lisbon-1002-40451"
    for bad in ("audio/airport-london-6.wav", "airport--6-257", "x.wav"):
        with pytest.raises(DatasetError, match="not a TAU clip name"):
            parse_clip_name(bad)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "root")


@pytest.mark.parametrize("sibling", [False, True])
def test_both_metadata_layouts(tmp_path, sibling):
    root = make_tiny_dataset(
        tmp_path / "TAU-dev", locations_per_class=2, clips_per_location=1, meta_sibling=sibling
    )
    ds = TAUDataset(root)
    expected_meta = (tmp_path / "TAU-dev.meta") if sibling else root
    assert ds.meta_dir == expected_meta
    assert len(ds) == 6 and set(ds.folds) == {"train", "evaluate", "test"}
    assert list(ds.fold("test").columns[:3]) == ["clip", "filename_audio", "filename_video"]
    assert "label" not in ds.fold("test")
    row = ds.meta.iloc[0]
    assert row.label == LABELS.index(row.scene_label)
    assert ds.audio_path(row.filename_audio).is_file()
    # the files really are the official tab-separated format
    header = (expected_meta / "meta.csv").read_text().splitlines()[0]
    assert header.split("\t") == ["filename_audio", "filename_video", "scene_label", "identifier"]


def test_metadata_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="no meta.csv"):
        TAUDataset(tmp_path)
    (tmp_path / "meta.csv").write_text("filename_audio,filename_video,scene_label,identifier\n")
    with pytest.raises(DatasetError, match=r"meta.csv.*comma-separated"):
        TAUDataset(tmp_path)
    (tmp_path / "meta.csv").write_text(
        "filename_audio\tfilename_video\tscene_label\tidentifier\n"
        "audio/beach-x-1-2.wav\tvideo/beach-x-1-2.mp4\tbeach\tx-1\n"
    )
    with pytest.raises(DatasetError, match=r"meta.csv:2: unknown label 'beach'"):
        TAUDataset(tmp_path)


def real_fold1_train(tmp_path):
    """The real 8,646-clip fold1_train list, rewritten in the official tab format."""
    if not FOLD1.is_dir():
        pytest.skip("real fold-1 list absent")
    df = pd.concat([pd.read_csv(FOLD1 / "train.csv"), pd.read_csv(FOLD1 / "val.csv")])
    root = tmp_path / "tau"
    (root / "evaluation_setup").mkdir(parents=True)
    cols = ["filename_audio", "filename_video", "scene_label"]
    df[cols].to_csv(root / "evaluation_setup" / "fold1_train.csv", sep="\t", index=False)
    meta = df[cols].copy()
    meta["identifier"] = [parse_clip_name(f).identifier for f in meta["filename_audio"]]
    meta.to_csv(root / "meta.csv", sep="\t", index=False)
    return root


@pytest.mark.realdata
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_location_split_on_the_real_fold1_list(tmp_path, seed):
    ds = TAUDataset(real_fold1_train(tmp_path))
    train = ds.fold("train")
    assert len(train) == 8646
    val = validation_split(train, 0.1, "location", seed)
    assert 0.08 <= val.mean() <= 0.12
    assert not set(train.identifier[val]) & set(train.identifier[~val])
    assert set(train.scene_label[val]) == set(LABELS) == set(train.scene_label[~val])
    per_class = train[val].scene_label.value_counts() / train.scene_label.value_counts()
    assert per_class.between(0.05, 0.16).all(), per_class
    again = validation_split(train, 0.1, "location", seed)
    assert np.array_equal(val, again)  # seeded
    if seed:
        assert not np.array_equal(val, validation_split(train, 0.1, "location", 0))


@pytest.mark.realdata
def test_random_split_on_the_real_fold1_list(tmp_path):
    train = TAUDataset(real_fold1_train(tmp_path)).fold("train")
    val = validation_split(train, 0.1, "random", 0)
    assert val.sum() == pytest.approx(865, abs=1)
    assert set(train.scene_label[val]) == set(LABELS)
    # a random clip split does mix locations across the two sides
    assert set(train.identifier[val]) & set(train.identifier[~val])


def test_split_needs_two_locations_per_class():
    df = annotate(
        pd.DataFrame(
            {
                "filename_audio": [
                    "audio/bus-a-1-1.wav",
                    "audio/bus-a-1-2.wav",
                    "audio/park-a-2-3.wav",
                    "audio/park-a-3-4.wav",
                ],
                "filename_video": ["video/x.mp4"] * 4,
                "scene_label": ["bus", "bus", "park", "park"],
            }
        )
    )
    with pytest.raises(DatasetError, match="'bus' has 1 location"):
        validation_split(df, 0.1, "location", 0)


def test_assign_subsets(tiny):
    ds = TAUDataset(tiny)
    sub = assign_subsets(load_manifest(tiny), DataConfig(val_fraction=0.1, split="group"))
    assert len(sub) == len(ds.meta)
    counts = sub.subset.value_counts()
    assert counts["evaluate"] == len(ds.fold("evaluate"))
    assert counts["val"] >= 3 and counts["train"] >= 3  # one location per class at least


def test_validate_clean_dataset_is_ok(tiny):
    report = validate_dataset(tiny, clip_seconds=2.0)
    assert report.ok, report.format()
    assert report.clips == 18


def test_validate_lists_every_problem_at_once(tmp_path, tiny):
    root = tmp_path / "broken"
    shutil.copytree(tiny, root)
    audio = sorted((root / "audio").iterdir())
    video = sorted((root / "video").iterdir())
    audio[0].unlink()  # missing audio
    video[1].unlink()  # missing video
    audio[2].write_bytes(b"not a wav at all")  # unreadable
    write_wav(audio[3], np.zeros((2, 48000)))  # 1 s instead of 2: wrong length
    data = video[4].read_bytes()
    video[4].write_bytes(data[: len(data) // 3])  # truncated video
    meta = (root / "meta.csv").read_text().splitlines()
    meta.append(meta[1])  # duplicate row
    meta.append("audio/beach-oslo-9-999.wav\tvideo/beach-oslo-9-999.mp4\tbeach\toslo-9")
    (root / "meta.csv").write_text("\n".join(meta) + "\n")
    (root / "audio" / "stray-x-1-1.wav").write_bytes(b"")

    report = validate_dataset(root, clip_seconds=2.0)
    text = report.format()
    assert not report.ok
    expect = [
        (audio[0].name, "audio file missing"),
        (video[1].name, "video file missing"),
        (audio[2].name, "unreadable audio"),
        (audio[3].name, "wrong length: 1.000 s"),
        (video[4].name, ""),
        ("meta.csv", "duplicate rows"),
        ("meta.csv", "unknown label 'beach'"),
        ("stray-x-1-1.wav", "not listed in meta.csv"),
    ]
    for file_part, problem in expect:
        assert any(file_part in p.file and problem in p.problem for p in report.problems), (
            file_part,
            problem,
            text,
        )
    assert len(report.errors) >= 7

    # the CLI prints the same report and exits non-zero
    assert (
        main(
            [
                "validate",
                str(root),
                "-p",
                "data.clip_seconds=2",
                "--report",
                str(tmp_path / "r.csv"),
            ]
        )
        == 1
    )
    assert len(pd.read_csv(tmp_path / "r.csv")) == len(report.problems)
