"""The dataset as a plug-in (issue 20, sections 1 and 3): clip manifests made by recipes, their
checks, manifest files, label orders, and the splits drawn from them."""

import csv
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from avsc.config import DataConfig
from avsc.data import (
    DatasetError,
    TAUDataset,
    load_manifest,
    register_recipe,
    unregister_recipe,
    write_manifest,
)
from avsc.data.manifest import RESERVED_LABELS
from avsc.data.recipes import guess_recipe
from avsc.data.split import assign_subsets, split_problems, validation_split
from avsc.features.store import entry_name
from tests.conftest import ROOT
from tests.media import make_tiny_dataset, write_wav


def _csv(path, rows, header=("clip", "audio", "label"), delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def _problems(manifest):
    return [f"{p.file}: {p.problem}" for p in manifest.problems]


def test_labels_with_commas_quotes_and_non_ascii_round_trip(tmp_path):
    labels = ['café, "le métro"', "bus stop", "2", "Ölçü · 北"]
    rows = [(f"c{i}", f"a/{i}.wav", labels[i % 4]) for i in range(8)]
    m = load_manifest(_csv(tmp_path / "m.csv", rows))
    assert m.recipe == "csv" and not m.errors, _problems(m)
    assert m.labels == tuple(sorted(labels))  # sorted unique labels, exactly as written
    assert list(m.clips["label"]) == [r[2] for r in rows]
    assert m.audio_path("c3") == tmp_path / "a" / "3.wav"  # relative to the file's folder
    back = load_manifest(write_manifest(m, tmp_path / "again.tsv"))  # tab-separated
    assert back.sha1() == m.sha1() and back.labels == m.labels
    moved = load_manifest(write_manifest(m, tmp_path / "sub" / "m.csv"))  # paths: ../a/3.wav
    assert moved.audio_path("c3").resolve() == m.audio_path("c3").resolve()
    assert list(moved.clips["label"]) == list(m.clips["label"])


def test_a_labels_file_fixes_the_order_and_names_clips_it_lacks(tmp_path):
    rows = [("a", "a.wav", "zebra"), ("b", "b.wav", "ant"), ("c", "c.wav", "mole")]
    path = _csv(tmp_path / "m.csv", rows)
    (tmp_path / "order.txt").write_text("zebra\nant\nmole\nunseen\n", encoding="utf-8")
    m = load_manifest(path, labels=tmp_path / "order.txt")
    assert m.labels == ("zebra", "ant", "mole", "unseen") and not m.errors
    m.labels = ("zebra", "ant", "mole")
    out = write_manifest(m, tmp_path / "w" / "m.csv")  # an unsorted order travels beside it
    assert (tmp_path / "w" / "m.labels.txt").read_text() == "zebra\nant\nmole\n"
    assert load_manifest(out).labels == ("zebra", "ant", "mole")
    (tmp_path / "short.txt").write_text("zebra\nant\n", encoding="utf-8")
    m = load_manifest(path, labels=tmp_path / "short.txt")
    assert any("clip 'c': label 'mole' is not listed here" in p for p in _problems(m))


def test_bad_csv_input_is_one_line_naming_the_file_line_or_column(tmp_path):
    missing = _csv(tmp_path / "nolabel.csv", [("a", "a.wav", "x")], header=("clip", "audio", "lbl"))
    with pytest.raises(DatasetError) as info:
        load_manifest(missing)
    msg = str(info.value)
    assert "\n" not in msg and str(missing) in msg and "missing column 'label'" in msg
    assert "found clip, audio, lbl" in msg
    nomedia = _csv(tmp_path / "nomedia.csv", [("a", "x")], header=("clip", "label"))
    with pytest.raises(DatasetError, match="missing column 'audio' or 'video'"):
        load_manifest(nomedia)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("clip,audio,label\na,a.wav,cafe, bar\n", encoding="utf-8")  # unquoted ,
    with pytest.raises(DatasetError, match=r"ragged.csv:2: 4 field\(s\), the header has 3"):
        load_manifest(ragged)
    quote = tmp_path / "quote.csv"
    quote.write_text('clip,audio,label\na,a.wav,"open\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"quote.csv:\d+: malformed"):
        load_manifest(quote)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("clip,audio,label\na,a.wav,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin.csv:2: not UTF-8 text"):
        load_manifest(latin)


def test_every_manifest_problem_is_named_by_clip_and_line(tmp_path):
    rows = [
        ("a", "a.wav", "", "tab\there", "g1", "1"),
        ("a", "b.wav", "", "ok", "g1", "2"),  # duplicate id; group g1 in folds 1 and 2
        ("c", "c.wav", "c.mp4", "clip", "g2", "1"),  # reserved label
        ("d", "", "", "ok", "g3", "2"),  # no media
        ("e", "e.wav", "", " padded", "g4", "2"),
    ]
    header = ("clip", "audio", "video", "label", "group", "fold")
    path = _csv(tmp_path / "m.tsv", rows, header=header, delimiter="\t")
    m = load_manifest(path)
    text = "\n".join(_problems(m))
    for expect in (
        f"{path}:2: clip 'a': label 'tab\\there' holds a tab",
        f"{path}:3: duplicate clip id 'a' (also line 2)",
        f"{path}:4: clip 'c': label 'clip' is a column name",
        f"{path}:5: clip 'd' has neither audio nor video",
        f"{path}:6: clip 'e': label ' padded' starts or ends with a space",
        "group 'g1' spans folds 1, 2",
        f"{path}:2: audio a.wav has no video to pair with",
    ):
        assert expect in text, (expect, text)
    assert "label" in RESERVED_LABELS
    with pytest.raises(DatasetError, match="nothing was done"):
        m.raise_errors()
    bad_split = load_manifest(
        _csv(
            tmp_path / "s.csv",
            [("a", "a.wav", "x", "training")],
            ("clip", "audio", "label", "split"),
        )
    )
    assert any(
        "split 'training'; expected one of train, val, test" in p for p in _problems(bad_split)
    )


def test_recipes_are_guessed_where_unambiguous_and_named_otherwise(tmp_path):
    folders = tmp_path / "sounds"
    write_wav(folders / "dog bark" / "001.wav", np.zeros(16000), sr=16000)
    assert guess_recipe(folders) == "folders"
    assert guess_recipe(_csv(tmp_path / "m.csv", [("a", "a.wav", "x")])) == "csv"
    tiny = make_tiny_dataset(tmp_path / "tau", seconds=1.0)
    assert guess_recipe(tiny) == "tau2021av"  # its audio/ and video/ are not class folders
    with pytest.raises(DatasetError, match="not a collection avsc recognises"):
        guess_recipe(_empty(tmp_path))

    @register_recipe("also_sounds", detect=lambda root: root.name == "sounds")
    def also(root):
        return pd.DataFrame({"audio": ["dog bark/001.wav"], "label": ["dog"]})

    try:
        with pytest.raises(
            DatasetError, match=r"recognised by several recipes \(folders, also_sounds\)"
        ):
            guess_recipe(folders)
        m = load_manifest(folders, "also_sounds")  # named: no guess
        assert m.recipe == "also_sounds" and list(m.clips["clip"]) == ["dog bark/001"]
    finally:
        unregister_recipe("also_sounds")


def _empty(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("nothing")
    return tmp_path / "empty"


def test_a_users_recipe_module_reaches_the_command_line(tmp_path):
    (tmp_path / "birds").mkdir()
    write_wav(tmp_path / "birds" / "x1.wav", np.zeros(16000), sr=16000)
    (tmp_path / "my_recipes.py").write_text(
        textwrap.dedent(
            """
            import pandas as pd
            from avsc.data import register_recipe

            @register_recipe("birds")
            def birds(root):
                return pd.DataFrame({"clip": ["x1"], "audio": ["x1.wav"], "label": ["robin"]})
            """
        )
    )
    out = tmp_path / "m.csv"
    res = subprocess.run(
        [sys.executable, "-m", "avsc", "manifest", str(tmp_path / "birds"), "--recipe", "birds",
         "--module", "my_recipes", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True,
        env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert pd.read_csv(out).to_dict("records") == [
        {"clip": "x1", "audio": "birds/x1.wav", "label": "robin"}
    ]
    res = subprocess.run(
        [sys.executable, "-m", "avsc", "manifest", str(tmp_path / "birds"), "--recipe", "nope",
         "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 2 and "unknown recipe 'nope'; registered: csv" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_the_tau_recipe_gives_the_taudataset_clips_labels_groups_and_split(tmp_path):
    root = make_tiny_dataset(tmp_path / "tau", seconds=1.0)
    ds, m = TAUDataset(root), load_manifest(root)
    assert m.recipe == "tau2021av" and not m.errors and m.modalities == ("audio", "video")
    assert m.labels[:2] == ("airport", "bus") and len(m.labels) == 10  # TAU's ten, in order
    assert set(m.clips["clip"]) == set(ds.meta["clip"])
    meta = ds.meta.set_index("clip")
    for row in m.clips.itertuples():
        assert row.label == meta.at[row.clip, "scene_label"]
        assert row.group == meta.at[row.clip, "identifier"]
        assert row.audio == meta.at[row.clip, "filename_audio"]
    train = ds.fold("train")
    assert list(m.clips.loc[m.clips["split"] == "train", "clip"]) == list(train["clip"])
    sub = assign_subsets(m, DataConfig()).set_index("clip")["subset"]
    val = validation_split(train, 0.1, "location", 0)  # the split avsc drew before manifests
    assert list(sub[train["clip"]]) == list(np.where(val, "val", "train"))
    assert set(sub[ds.fold("evaluate")["clip"]]) == {"evaluate"}


def _folded(n_per_label=6, folds=3, groups=True):
    rows = []
    for lab in ("cat", "dog", "owl"):
        for i in range(n_per_label):
            g = f"{lab}-site{i // 2}" if groups else ""
            rows.append((f"{lab}{i}", f"{lab}{i}.wav", lab, g, str(1 + (i // 2) % folds)))
    return pd.DataFrame(rows, columns=["clip", "audio", "label", "group", "fold"])


def test_folds_hold_one_out_and_validation_is_group_disjoint_and_stratified(tmp_path):
    df = _folded(n_per_label=12)
    path = tmp_path / "m.csv"
    df.to_csv(path, index=False)
    m = load_manifest(path)
    assert m.folds == ["1", "2", "3"] and not m.errors
    for k in m.folds:
        sub = assign_subsets(m, DataConfig(test_fold=k, val_fraction=0.25)).merge(df, on="clip")
        assert set(sub.loc[sub.subset == "evaluate", "fold"]) == {k}
        assert k not in set(sub.loc[sub.subset != "evaluate", "fold"])
        val, train = sub[sub.subset == "val"], sub[sub.subset == "train"]
        assert not set(val.group) & set(train.group)  # no group on both sides
        assert set(val.label) == set(train.label) == {"cat", "dog", "owl"}
    assert split_problems(m, DataConfig()) == []
    with pytest.raises(DatasetError, match="data.test_fold '7': .* has folds 1, 2, 3"):
        assign_subsets(m, DataConfig(test_fold="7"))


def test_without_folds_or_splits_a_seeded_group_aware_split_is_drawn(tmp_path):
    df = _folded(n_per_label=20).drop(columns="fold")
    path = tmp_path / "m.csv"
    df.to_csv(path, index=False)
    m = load_manifest(path)
    a = assign_subsets(m, DataConfig(seed=3))
    assert a.equals(assign_subsets(m, DataConfig(seed=3)))  # the same seed, the same split
    assert not a.equals(assign_subsets(m, DataConfig(seed=4)))
    sub = a.merge(df, on="clip")
    parts = {s: sub[sub.subset == s] for s in ("train", "val", "evaluate")}
    for x, y in (("train", "val"), ("train", "evaluate"), ("val", "evaluate")):
        assert not set(parts[x].group) & set(parts[y].group), (x, y)
    for s, part in parts.items():
        assert set(part.label) == {"cat", "dog", "owl"}, s
    assert 0.1 < len(parts["evaluate"]) / len(sub) < 0.35
    with pytest.raises(DatasetError) as err:  # a fold asked of a collection without folds
        assign_subsets(m, DataConfig(test_fold=9))
    assert str(err.value) == (
        f"data.test_fold 9: {m.source} has no folds (no fold column; its clips are held out by "
        "a seeded split (data.test_fraction)); leave data.test_fold unset"
    )
    few = load_manifest(_csv(tmp_path / "few.csv", [("a", "a.wav", "x"), ("b", "b.wav", "x")]))
    problems = [p.problem for p in split_problems(few, DataConfig())]
    assert problems == [
        "label 'x' has 2 clip(s) in 2 group(s); a seeded split into train, val and test needs at "
        "least 3 group(s) per label (give the manifest a split or fold column, add clips, or "
        "-p data.split=random)"
    ]


def test_store_entry_names_are_safe_and_distinct():
    assert entry_name("airport-lisbon-1000-40000") == "airport-lisbon-1000-40000"  # TAU's ids
    names = {entry_name(c) for c in ("Dog/A", "dog/a", "dog a", "../x", "café", "日本")}
    assert len(names) == 6
    assert all("/" not in n and not n.startswith(".") and n.isascii() for n in names)


def test_the_old_split_name_location_still_works_with_a_warning():
    with pytest.warns(FutureWarning, match="'location' is now called 'group'"):
        assert DataConfig(split="location").split == "group"
