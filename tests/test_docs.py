"""The documents a user expects, and the command line's help."""

import argparse
import re

import yaml

from avsc.cli import build_parser

from .conftest import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def test_every_method_section_the_code_cites_is_in_docs_method_md():
    text = (ROOT / "docs" / "method.md").read_text()
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", text, re.M)}
    cited = set()
    for path in [*(ROOT / "avsc").rglob("*.py"), *(ROOT / "notebooks").glob("*.ipynb")]:
        for a, b in re.findall(r"method\.md,? sections? (\d+)(?:-(\d+))?", path.read_text()):
            cited |= set(range(int(a), int(b or a) + 1))
    assert cited and cited <= sections, sorted(cited - sections)


def test_license_citation_and_changelog():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert cff["version"] == project["version"]
    paper = cff["preferred-citation"]
    assert "joint optimization strategy" in paper["title"] and paper["year"] == 2022
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")
    assert "next release" not in (ROOT / "notebooks" / "README.md").read_text()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_option_has_help_and_every_subcommand_an_example():
    parser = build_parser()
    subs = _subparsers(parser)
    assert set(subs) == {
        "synth", "download", "manifest", "validate", "preprocess", "train", "crossval", "predict",
        "submit", "finetune", "run", "sweep",
    }  # fmt: skip
    for name, sub in subs.items():
        assert sub.description and sub.epilog and f"avsc {name} " in sub.epilog, name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"avsc {name} {action.option_strings or action.dest}: no help"
        text = sub.format_help()
        for action in sub._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert f"(default: {action.default})" in " ".join(text.split()), (
                    f"avsc {name} {action.option_strings[0]}: default not shown"
                )
    run_help = " ".join(subs["run"].format_help().split())
    assert "--profile PROFILE smoke, demo or paper" in run_help and "(default: demo)" in run_help
    finetune = subs["finetune"].format_usage()
    assert "(--images IMAGES | --standin STANDIN)" in finetune  # declared exclusive


def test_a_run_rewriting_its_own_figures_does_not_mark_the_code_dirty(tmp_path, monkeypatch):
    import subprocess

    from avsc import runner

    repo = tmp_path / "repo"
    (repo / "figures" / "demo").mkdir(parents=True)
    (repo / "avsc.py").write_text("x = 1\n")
    (repo / "figures" / "demo" / "t.md").write_text("old\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    monkeypatch.setattr(runner, "REPO", repo)
    (repo / "figures" / "demo" / "t.md").write_text("new\n")  # what a demo run does
    assert runner.git_commit((repo / "figures",))["dirty"] is False
    assert runner.git_commit()["dirty"] is True
    (repo / "avsc.py").write_text("x = 2\n")  # a change to the code is still seen
    assert runner.git_commit((repo / "figures",))["dirty"] is True


def _readme_table(heading: str) -> list[list[str]]:
    """The rows of the first Markdown table after the README line starting ``heading``."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows, seen = [], False
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            seen = True
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif seen:
            break
    return rows[2:]  # without the header and the rule


def test_the_readmes_demo_tables_are_the_committed_demo_figures():
    """The README quotes ``figures/demo/``: every number of its results and claims tables
    equals the committed CSVs (a demo rerun that changes them must update both)."""
    import pandas as pd

    demo = ROOT / "figures" / "demo"
    ablations = pd.read_csv(demo / "table4_ablations.csv", keep_default_na=False)
    results = pd.concat(
        [
            pd.read_csv(demo / "results_all.csv", keep_default_na=False),
            ablations[ablations.system.str.startswith("ablation")].drop(columns="ablation"),
        ]
    )
    feature = {"scalogram": "scalogram", "FBank": "fbank", "—": ""}

    def ci(row, key, digits):
        return (
            f"{row[key]:.{digits}f} ({row[key + '_low']:.{digits}f} "
            f"to {row[key + '_high']:.{digits}f})"
        )

    rows = _readme_table("## Demo results")
    assert len(rows) == len(results), "the README's demo table lists another set of systems"
    for cells in rows:
        system = cells[0].split(" (")[0].replace("-", "_").replace(" ", "_")
        match = results[(results.system == system) & (results.feature == feature[cells[1]])]
        assert len(match) == 1, cells[:2]
        row = match.iloc[0]
        quoted = [ci(row, "logloss", 3), ci(row, "accuracy", 1)]
        quoted += [ci(row, "clip_logloss", 3), ci(row, "clip_accuracy", 1)]
        assert cells[2:6] == quoted, cells[:2]

    claims = pd.read_csv(demo / "claims.csv")
    rows = _readme_table("**The paper's claims on this run**")
    assert len(rows) == len(claims)
    for cells, claim in zip(rows, claims.itertuples(), strict=True):
        assert cells[1] == f"{claim.logloss_diff:+.3f}", cells[0]
        assert cells[2] == f"{claim.diff_low:+.3f} to {claim.diff_high:+.3f}", cells[0]
        assert cells[4] == claim.verdict, cells[0]
