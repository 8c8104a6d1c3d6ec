"""The tests' forked ``avsc`` command (tests/forked.py) gives what a new ``python -m avsc``
process gives: exit code, standard output and error, working folder and environment."""

import os
import subprocess
import sys

import pytest

from tests.forked import ROOT, _server, avsc_run, python_run


def _real(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "avsc", *map(str, args)], capture_output=True, text=True, **kw
    )


def test_a_forked_command_answers_as_a_new_process(tmp_path):
    for args in (
        ("--version",),
        ("validate",),  # argparse's usage error: exit 2 on stderr
        ("manifest", "missing-folder", "--out", "m.csv"),  # a relative path, from cwd
    ):
        forked = avsc_run(*args, cwd=tmp_path)
        assert "proc" in _server, "the server did not start: every call ran as a subprocess"
        real = _real(*args, cwd=tmp_path)
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            real.returncode,
            real.stdout,
            real.stderr,
        ), args


def test_a_forked_script_runs_as_main_with_its_folder_first_on_the_path(tmp_path):
    (tmp_path / "helper_beside.py").write_text("WHERE = 'beside the script'\n")
    script = tmp_path / "script.py"
    script.write_text(
        "import os, sys\n"
        "from helper_beside import WHERE\n"
        "print(__name__, sys.argv[1:], WHERE, os.getcwd(), sys.path[0])\n"
        "raise SystemExit(int(sys.argv[1]))\n"
    )
    forked = python_run(script, "3", "x y", cwd=ROOT)
    real = subprocess.run(
        [sys.executable, str(script), "3", "x y"], cwd=ROOT, capture_output=True, text=True
    )
    assert forked.returncode == real.returncode == 3
    assert (
        forked.stdout
        == real.stdout
        == f"__main__ ['3', 'x y'] beside the script {ROOT} {tmp_path}\n"
    )


def test_a_forked_command_takes_its_environment_and_a_timeout(tmp_path):
    bad = ("train", "nope", "--cache", tmp_path, "--out", tmp_path / "out")
    debug = {**os.environ, "AVSC_DEBUG": "1"}  # a failure shows its traceback
    forked, real = avsc_run(*bad, env=debug), _real(*bad, env=debug)
    assert forked.returncode == real.returncode == 1
    assert forked.stderr.startswith("Traceback") and real.stderr.startswith("Traceback")
    assert forked.stderr.splitlines()[-1] == real.stderr.splitlines()[-1]
    assert avsc_run(*bad).stderr.startswith("avsc train: error: ")  # the caller's: unset
    # a setting read when Python starts cannot be forked: the call runs as a subprocess
    ascii_locale = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C"}
    assert avsc_run("--version", env=ascii_locale).stdout.startswith("avsc ")
    with pytest.raises(subprocess.TimeoutExpired):
        avsc_run("--version", timeout=1e-6)
    assert avsc_run("--version").returncode == 0  # the server goes on after a killed call
