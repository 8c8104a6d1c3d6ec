"""``avsc sweep``: points checked before anything runs, run here or through submitit, skipped
once finished, killed without loss, preempted and resumed to the same weights, tabulated with
intervals against an independent computation (scipy's bootstrap via avsc.evaluation, the
points' own metrics.json)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from avsc.cluster import run_series_on_cluster
from avsc.evaluation.uncertainty import interval, paired_interval
from avsc.launch import LaunchError, point_status
from avsc.sweep import SweepError, load_sweep, parse_grid, point_name, run_sweep, sweep_view
from avsc.utils import exclusive_lock
from tests.forked import avsc_run
from tests.test_cluster import _plan

ROOT = Path(__file__).resolve().parents[1]
RESULT = "audio_only_scalogram"


def _spec(tmp_path: Path, cache, **over) -> Path:
    spec = {
        "name": "lr",
        "profile": "smoke",
        "base": {"train.max_epochs": 2, "train.batch_size": 32, "train.cpu_threads": 1},
        "run": {"train": {"system": "audio_only", "feature": "scalogram", "cache": str(cache)}},
        **over,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ the spec


def test_points_are_every_combination_named_by_what_differs(tmp_path):
    grid = parse_grid(["train.lr=[0.01, 0.03]", "train.seed=[0,1]"])
    sweep = load_sweep(_spec(tmp_path, "cache", points=[{"train.select_window": 3}]), grid, jobs=2)
    names = [p.name for p in sweep.points]
    assert names == [
        "train.lr=0.01__train.seed=0",
        "train.lr=0.01__train.seed=1",
        "train.lr=0.03__train.seed=0",
        "train.lr=0.03__train.seed=1",
        "train.select_window=3",
    ]
    assert sweep.reference == names[0] and sweep.jobs == 2
    assert sweep.points[3].overrides == {
        "train.max_epochs": 2,
        "train.batch_size": 32,
        "train.cpu_threads": 1,
        "train.lr": 0.03,
        "train.seed": 1,
    }
    assert sweep.keys == ("train.lr", "train.seed", "train.select_window")
    ref = {"train.seed": 1, "train.lr": 0.03}  # what differs, in any order
    assert load_sweep(_spec(tmp_path, "cache", reference=ref), grid).reference == names[3]
    with pytest.raises(SweepError, match=r"reference \{'train.lr': 0.5\} is not one of"):
        load_sweep(_spec(tmp_path, "cache", reference={"train.lr": 0.5}), grid)
    assert load_sweep(_spec(tmp_path, "cache"), {"seeds": [[0, 1]]}).points[0].name == (
        "train.seeds=0-1"  # an alias under its key's name
    )
    assert point_name({"model.channels": [32, 64], "visual.backbone": "a/b c"}) == (
        "model.channels=32-64__visual.backbone=a-b-c"
    )
    assert point_name({}) == "base"


@pytest.mark.parametrize(
    ("grid", "run", "named"),
    [
        ({"train.lrr": [0.1]}, None, "train.lrr"),  # no such key
        ({"train.lr": ["fast"]}, None, "train.lr"),  # wrong type
        ({"train.batch_size": [0]}, None, "train.batch_size"),  # out of range
        ({"clips_per_class": [3]}, None, "clips_per_class"),  # a series setting, trainings
        ({"clips_per_clas": [3]}, {"series": {}}, "clips_per_clas"),  # no such setting
        ({"perplexity": ["high"]}, {"series": {}}, "perplexity"),
    ],
)
def test_a_bad_grid_key_or_value_is_refused_before_anything_runs(tmp_path, grid, run, named):
    spec = _spec(tmp_path, "cache", grid=grid, **({"run": run} if run else {}))
    with pytest.raises(SweepError, match=named) as err:
        load_sweep(spec)
    assert "\n" not in str(err.value)
    assert err.value.args[0].startswith("sweep lr: point ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]  # nothing made


def test_the_command_line_checks_and_prints_the_points(tmp_path, synth_store):
    spec = _spec(tmp_path, synth_store[1])
    r = avsc_run(
        "sweep", str(spec), "--grid", "train.seed=[0,1]", "-p", "train.max_epochs=3",
        "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("train.seed=0: -m avsc train audio_only --cache ")
    assert lines[0].endswith("-p train.cpu_threads=1 -p train.max_epochs=3 -p train.seed=0")
    assert lines[-1] == "2 point(s) checked; reference train.seed=0"
    r = avsc_run(
        "sweep", "--name", "nb", "--profile", "smoke", "--only", "03", "04", "--grid",
        "clips_per_class=[3,4]", "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    root, figures = tmp_path / "runs" / "nb", tmp_path / "figures" / "nb"
    assert r.stdout.splitlines()[1] == (
        f"clips_per_class=4: -m avsc run --profile smoke --runs {root} --name "
        f"clips_per_class=4 --figures {figures} --only 03 04 -p clips_per_class=4"
    )
    r = avsc_run("sweep", str(spec), "--grid", "train.lr=[slow]", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "avsc sweep: error: sweep lr: point train.lr=slow: config key train.lr: expected a "
        "number, got 'slow'"
    )
    assert not (tmp_path / "runs").exists()


def test_bad_launcher_settings_are_one_line_naming_the_setting(tmp_path, monkeypatch):
    with pytest.raises(SweepError, match=r"launcher 'pbs': expected one of local, slurm"):
        load_sweep(_spec(tmp_path, "cache", launcher="pbs"))
    with pytest.raises(SweepError, match=r"slurm: unknown setting\(s\) \['partitionn'\]"):
        load_sweep(_spec(tmp_path, "cache", launcher="slurm", slurm={"partitionn": "gpu"}))
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    sweep = load_sweep(_spec(tmp_path, "cache", launcher="slurm", slurm={"partition": "gpu"}))
    with pytest.raises(LaunchError) as err:
        run_sweep(sweep, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    assert str(err.value) == (
        "launcher slurm: sbatch is not on PATH (no Slurm here); use --launcher local or run "
        "avsc on the cluster's login node"
    )
    env = {**os.environ, "PATH": str(tmp_path)}
    r = avsc_run("run", "--profile", "smoke", "--launcher", "slurm", cwd=tmp_path, env=env)
    assert (r.returncode, r.stderr.strip()) == (2, f"avsc run: error: {err.value}")
    r = avsc_run("run", "--launcher", "slurm", "--slurm", "partitio=gpu", cwd=tmp_path)
    assert r.stderr.strip() == (
        "avsc run: error: --slurm partitio: not a setting (partition, time, gpus, cpus, mem, "
        "account, qos, constraint, signal_delay)"
    )
    assert not (tmp_path / "runs").exists()


def test_a_second_sweep_into_the_same_folder_is_refused(tmp_path):
    first = load_sweep(_spec(tmp_path, "cache", grid={"train.seed": [0]}))
    root = tmp_path / "runs" / "lr"
    root.mkdir(parents=True)
    with exclusive_lock(root / ".sweep.lock", f"sweep folder {root}"):  # one still running
        r = avsc_run("sweep", str(tmp_path / "sweep.yaml"), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith(f"avsc sweep: error: sweep folder {root} is in use by another ")
    assert not (root / "train.seed=0").exists()
    (root / "sweep.json").write_text(
        json.dumps({"name": "lr", "profile": "demo", "run": first.run, "base": {}, "points": []})
    )
    with pytest.raises(SweepError, match=r"holds another sweep \(profile demo"):
        run_sweep(first, tmp_path / "runs")
    assert not (root / "train.seed=0").exists()


# ------------------------------------------------------------------------------ running


def _wait_for(predicate, timeout=240.0, what="condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _sweep_process(spec: Path, cwd: Path) -> subprocess.Popen:
    """``avsc sweep SPEC`` as a real process (to be killed), its output in a pipe."""
    env = {k: v for k, v in os.environ.items() if k != "AVSC_HPARAMS"}
    return subprocess.Popen(
        [sys.executable, "-m", "avsc", "sweep", str(spec)],
        cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_a_sweep_of_trainings_killed_rerun_and_tabulated(tmp_path, synth_store):
    """Three trainings and one that fails: the sweep is killed after its first point, the
    rerun skips that one, runs the rest (the failure named, the others finished) and its
    table's figures are the points' own (metrics.json; bootstrap intervals recomputed)."""
    spec = _spec(
        tmp_path,
        synth_store[1],
        grid={"train.seed": [0, 1]},
        points=[{"train.lr": 0.05}, {"train.device": "cuda:99"}],
    )
    root = tmp_path / "runs" / "lr"
    first = _sweep_process(spec, tmp_path)
    try:
        _wait_for(
            lambda: (
                point_status(root / "train.seed=0").get("status") == "done"
                and point_status(root / "train.seed=1").get("status") == "running"
            ),
            what="the first point to finish",
        )
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 130, out
    assert "avsc sweep: interrupted" in out
    assert point_status(root / "train.seed=0")["status"] == "done"
    stopped = point_status(root / "train.seed=1")["command_pid"]  # its training was stopped
    _wait_for(lambda: not Path(f"/proc/{stopped}").exists(), 30, "the training to stop")
    resumes = (root / "train.seed=1" / "results" / RESULT / "last.pt").is_file()
    # on a loaded machine the stop can reach the second training only after it finished
    # (two epochs take seconds): a finished point is kept, and the rerun skips it too
    finished = point_status(root / "train.seed=1").get("status") == "done"
    kept = (root / "train.seed=0" / "results" / RESULT / "metrics.json").stat().st_mtime_ns

    r = avsc_run("sweep", str(spec), cwd=tmp_path, timeout=600)
    seen = (  # what a failure shows: both runs' output, the stopped point's record and log
        f"first run:\n{out}\nrerun:\n{r.stdout}{r.stderr}\n"
        f"train.seed=1 point.json: {point_status(root / 'train.seed=1')}\nits log:\n"
        + (root / "train.seed=1" / "log.txt").read_text(errors="replace")[-3000:]
    )
    assert r.returncode == 1, seen
    if finished:
        assert point_status(root / "train.seed=1")["returncode"] == 0, seen
        assert "1 point(s) done, 2 finished before, 1 failed" in r.stdout, seen
    else:
        assert "2 point(s) done, 1 finished before, 1 failed" in r.stdout, seen
    assert r.stderr.strip().splitlines()[-1] == (
        "avsc sweep: error: point train.device=cuda-99: avsc train: error: config key "
        "train.device: cuda:99 asked, but this machine has "
        + r.stderr.split("this machine has ", 1)[1].strip()
    )
    assert (root / "train.seed=0" / "results" / RESULT / "metrics.json").stat().st_mtime_ns == kept
    # stopped after an epoch, it resumed; stopped before one, it started over
    if not finished:
        assert ("resuming from" in (root / "train.seed=1" / "log.txt").read_text()) == resumes
    config = yaml.safe_load((root / "train.seed=1" / "config.yaml").read_text())
    assert config["experiment"]["train"]["seed"] == 1
    assert config["experiment"]["train"]["max_epochs"] == 2

    table = pd.read_csv(root / "summary.csv")
    assert list(table["point"]) == [
        "train.seed=0",
        "train.seed=1",
        "train.lr=0.05",
        "train.device=cuda-99",
    ]
    assert list(table["status"]) == ["done", "done", "done", "failed"]
    ok = table[table["status"] == "done"].reset_index(drop=True)
    proba = {}
    for i, row in ok.iterrows():
        folder = root / row["point"] / "results" / RESULT
        m = json.loads((folder / "metrics.json").read_text())
        proba[i] = pd.read_csv(folder / "proba.csv")
        assert row["accuracy"] == pytest.approx(100 * m["accuracy_classwise"], abs=1e-9)
        assert row["logloss"] == pytest.approx(m["logloss_classwise"], abs=1e-9)
        lo, hi = interval(proba[i], "accuracy")
        assert (row["accuracy_low"], row["accuracy_high"]) == pytest.approx((100 * lo, 100 * hi))
        assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]
    for i in (1, 2):  # against the reference, the first point: the same clips resampled
        d, lo, hi = paired_interval(proba[i], proba[0], "logloss")
        assert ok.loc[i, "vs_reference_logloss"] == pytest.approx(d)
        assert d == pytest.approx(ok.loc[i, "logloss"] - ok.loc[0, "logloss"])
        assert (ok.loc[i, "vs_ref_ll_low"], ok.loc[i, "vs_ref_ll_high"]) == pytest.approx((lo, hi))
    seeds = ok.loc[:1, "accuracy"].to_numpy()
    assert ok.loc[0, "accuracy_seed_mean"] == pytest.approx(seeds.mean())
    assert ok.loc[0, "accuracy_seed_sd"] == pytest.approx(np.std(seeds, ddof=1))
    assert ok.loc[0, "seeds"] == 2 and ok.loc[2, "seeds"] == 1
    md = (root / "summary.md").read_text()
    assert f"| {ok.loc[0, 'accuracy']:.1f} [{ok.loc[0, 'accuracy_low']:.1f}, " in md
    view = sweep_view(root)
    assert list(view["point"]) == list(table["point"])
    assert view.loc[2, "train.seed"] == ""  # at the base's value
    assert "train.seed=1,1,," in (root / "summary.csv").read_text()  # 1 as given, not 1.0

    # TensorBoard's HParams view lists the swept keys, train.seed = 0 (its default) included
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(root / "train.seed=0" / "results" / RESULT))
    acc.Reload()
    info = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info
    assert info.hparams["train.seed"].number_value == 0
    assert info.hparams["train.lr"].number_value == pytest.approx(0.01)  # swept, at its default
    assert info.hparams["system"].string_value == "audio_only"


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A one-node Slurm cluster on this machine: Debian's slurm-wlm (``.ci/run`` installs it
    where apt is available), ``slurmctld`` and ``slurmd`` in the foreground with their own
    ports, folders and config (``SLURM_CONF``), localhost only, no authentication between
    daemons of one machine (``auth/none``). Skipped, saying why, where they cannot start."""
    import shutil
    import socket

    missing = [e for e in ("slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "sinfo")
               if shutil.which(e) is None]  # fmt: skip
    if missing:
        pytest.skip(f"no Slurm here ({', '.join(missing)} missing; .ci/run installs slurm-wlm)")
    folder = tmp_path_factory.mktemp("slurm")
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30)
    line = node.stdout.splitlines()[0] if node.returncode == 0 and node.stdout else ""
    if not line.startswith("NodeName="):
        pytest.skip(f"slurmd -C cannot describe this machine: {node.stderr.strip()[:200]}")
    name = line.split()[0].split("=", 1)[1]
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    import getpass

    user = getpass.getuser()
    conf = folder / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=avsctest",
                f"SlurmctldHost={name}(127.0.0.1)",
                f"SlurmctldPort={ports[0]}",
                f"SlurmdPort={ports[1]}",
                "AuthType=auth/none",
                "CredType=cred/none",
                f"SlurmUser={user}",
                f"SlurmdUser={user}",
                f"StateSaveLocation={folder / 'state'}",
                f"SlurmdSpoolDir={folder / 'spool'}",
                f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
                f"SlurmdPidFile={folder / 'slurmd.pid'}",
                f"SlurmctldLogFile={folder / 'slurmctld.log'}",
                f"SlurmdLogFile={folder / 'slurmd.log'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "SchedulerType=sched/builtin",
                "ReturnToService=2",
                "MpiDefault=none",
                "JobRequeue=1",
                "KillWait=2",  # a stopped job ends 2 s after its SIGTERM, not 30 s
                f"{line} NodeAddr=127.0.0.1 State=UNKNOWN",
                f"PartitionName=debug Nodes={name} Default=YES MaxTime=INFINITE State=UP",
            ]
        )
        + "\n"
    )
    (folder / "state").mkdir()
    (folder / "spool").mkdir()
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons = [
        subprocess.Popen(
            [exe, "-D", *extra, "-f", str(conf)],
            env=env,
            cwd=folder,
            stdout=open(folder / f"{exe}.out", "wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for exe, extra in (("slurmctld", ["-i"]), ("slurmd", []))
    ]
    try:
        t0 = time.monotonic()
        state = ""
        while time.monotonic() - t0 < 30 and all(d.poll() is None for d in daemons):
            r = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            state = r.stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        if state != "idle":
            logs = " | ".join(
                (folder / f).read_text(errors="replace").strip().splitlines()[-1]
                for f in ("slurmctld.out", "slurmd.out", "slurmctld.log", "slurmd.log")
                if (folder / f).is_file() and (folder / f).read_text(errors="replace").strip()
            )
            pytest.skip(f"the Slurm daemons did not start (node {state or 'absent'}): {logs[:300]}")
        yield conf
    finally:
        for d in daemons:
            d.terminate()
        for d in daemons:
            try:
                d.wait(timeout=30)
            except subprocess.TimeoutExpired:
                d.kill()


def _preempt_slurm(point: Path, env: dict[str, str]) -> None:
    """What a cluster does to a preempted job: ``scontrol requeue`` (the job is stopped and
    queued again); then its start is moved to now (Slurm holds a requeued job back 2
    minutes)."""
    job = point_status(point)["job_id"]
    subprocess.run(["scontrol", "requeue", job], env=env, check=True, timeout=30)
    _wait_for(
        lambda: (
            subprocess.run(
                ["squeue", "-h", "-j", job, "-o", "%t"], env=env, capture_output=True, text=True
            ).stdout.strip()
            == "PD"
        ),
        60,
        "the job to be pending again",
    )
    subprocess.run(
        ["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=True, timeout=30
    )


@pytest.mark.parametrize("launcher", ["submitit-local", "slurm"])
def test_a_preempted_job_requeues_and_resumes_to_an_uninterrupted_runs_weights(
    tmp_path, synth_store, launcher, request, monkeypatch
):
    """One job per point through submitit; one point's job is preempted after its second
    epoch, requeued, and its training resumes from last.pt. Its twin (train.tensorboard,
    which changes nothing trained) runs uninterrupted: the weights are equal. On Slurm the
    cluster requeues the job (``scontrol requeue``); with submitit's local executor, Slurm's
    preemption signal (USR2) goes to the job and submitit requeues it."""
    slurm = {"cpus": 1, "time": 10}
    if launcher == "slurm":
        conf = request.getfixturevalue("slurm_cluster")
        monkeypatch.setenv("SLURM_CONF", str(conf))
        slurm["partition"] = "debug"
    base = {"train.max_epochs": 6, "train.batch_size": 16, "train.cpu_threads": 1}
    spec = _spec(
        tmp_path, synth_store[1], base=base, grid={"train.tensorboard": [True, False]},
        launcher=launcher, slurm=slurm,
    )  # fmt: skip
    sweep = load_sweep(spec)
    root = tmp_path / "runs" / "lr"
    cut = root / "train.tensorboard=true"
    signalled = []
    env = dict(os.environ)

    def preempt():
        history = cut / "results" / RESULT / "history.csv"
        _wait_for(lambda: history.is_file() and len(history.read_text().splitlines()) >= 3)
        signalled.append(len(history.read_text().splitlines()) - 1)
        if launcher == "slurm":
            _preempt_slurm(cut, env)
        else:
            os.kill(point_status(cut)["pid"], signal.SIGUSR2)

    import threading

    t = threading.Thread(target=preempt, daemon=True)
    t.start()
    out = run_sweep(sweep, tmp_path / "runs")
    t.join(5)
    assert signalled and signalled[0] < 6, "the preemption came after the training had finished"
    assert out.failed == {} and sorted(out.done) == sorted(p.name for p in sweep.points)
    record = point_status(cut)
    assert record["status"] == "done" and record["attempts"] == 2
    if launcher == "submitit-local":
        assert record["requeued"] == 1  # by submitit's checkpoint, on the signal
    log = (cut / "log.txt").read_text()
    assert f"resuming from {cut / 'results' / RESULT / 'last.pt'}" in log
    a = torch.load(cut / "results" / RESULT / "last.pt", weights_only=True)
    b = torch.load(
        root / "train.tensorboard=false" / "results" / RESULT / "last.pt", weights_only=True
    )
    assert a["epoch"] == b["epoch"] == 5
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ha = pd.read_csv(cut / "results" / RESULT / "history.csv")
    hb = pd.read_csv(root / "train.tensorboard=false" / "results" / RESULT / "history.csv")
    pd.testing.assert_series_equal(ha["val_logloss"], hb["val_logloss"])
    print(
        f"{launcher}: preempted after epoch {signalled[0]}, resumed; last.pt of the 6 epochs "
        f"equals the uninterrupted twin's in all {len(a['model'])} tensors"
    )


def test_a_runs_name_places_its_folders():
    from avsc.runconfig import resolve

    params = resolve("smoke", {}, Path("r"), Path("f"), name="p1")
    assert params["run_dir"] == str(Path("r/p1").resolve())
    assert params["figures_dir"] == str(Path("f/p1").resolve())
    assert params["cache_dir"] == str(Path("r/p1/cache").resolve())


def test_a_submission_slurm_refuses_names_the_setting(tmp_path, slurm_cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster))
    sweep = load_sweep(
        _spec(tmp_path, "cache", launcher="slurm", slurm={"partition": "nope", "time": 5})
    )
    with pytest.raises(LaunchError) as err:
        run_sweep(sweep, tmp_path / "runs")
    msg = str(err.value)
    assert msg.startswith(
        "launcher slurm: submitting point base failed (slurm.partition=nope, slurm.time=5): "
    ), msg
    assert "invalid partition" in msg.lower() and "\n" not in msg


def test_a_rerun_waits_on_the_job_of_a_killed_submission(
    tmp_path, synth_store, slurm_cluster, monkeypatch, capsys
):
    """The ``avsc sweep`` that waits on the Slurm jobs is killed while its point's job runs
    (a closed SSH session on the login node: SIGKILL, nothing cleaned up); the job runs on.
    The same command run again waits on that job: it submits no second job into the same
    folder (which would run the command twice and could record the point as failed)."""
    from avsc.launch import _queued

    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster))
    base = {"train.max_epochs": 4, "train.batch_size": 16, "train.cpu_threads": 1}
    slurm = {"partition": "debug", "cpus": 1, "time": 10}
    spec = _spec(tmp_path, synth_store[1], base=base, launcher="slurm", slurm=slurm)
    point = tmp_path / "runs" / "lr" / "base"
    first = _sweep_process(spec, tmp_path)
    try:
        _wait_for(lambda: point_status(point).get("status") == "running", what="the job")
    finally:
        first.kill()
        first.communicate(timeout=60)
    job = point_status(point)["job_id"]
    assert job in (_queued([job]) or set()), "the job ended with the process that submitted it"

    out = run_sweep(load_sweep(spec), tmp_path / "runs")
    printed = capsys.readouterr().out
    assert f"base: job {job} of an earlier submission is still queued or running" in printed
    assert "submitted as job" not in printed
    assert out.done == ["base"] and out.failed == {}
    record = point_status(point)
    assert record["status"] == "done" and record["job_id"] == job and record["attempts"] == 1
    assert len(list((point.parent / ".submitit").glob("*_submitted.pkl"))) == 1
    assert (point / "results" / RESULT / "best.pt").is_file()


# ------------------------------------------------------------------ avsc run on a cluster


def _notebook(path: Path, code: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('config: str = ""\noverrides: dict = {}')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, str(path))


def test_the_series_trains_as_jobs_and_the_collect_step_finds_them_finished(
    tmp_path, synth_store, request, monkeypatch
):
    """On the one-node Slurm cluster (where its daemons cannot start: submitit's local
    executor, the same code path). Stand-in notebooks around the real trainings: 01 and 02
    (the prepare job) write a mark; the trainings are the real ``Context.train`` jobs on a
    synthetic store (the five of notebooks 03 and 04 on one feature and one backbone); 03
    (the collect job) reloads two of them without training and saves how many it found."""
    slurm = {"cpus": 1, "time": 10}
    try:
        monkeypatch.setenv("SLURM_CONF", str(request.getfixturevalue("slurm_cluster")))
        launcher, slurm["partition"] = "slurm", "debug"
    except pytest.skip.Exception as why:
        launcher = "submitit-local"
        print(f"{why}: submitit's local executor instead")
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    for n in ("01_prepare", "02_more"):
        _notebook(nbs / f"{n}.ipynb", f"open({str(tmp_path / n)!r}, 'w').close()")
    _notebook(
        nbs / "03_collect.ipynb",
        "from avsc.workflow import Context\n"
        "ctx = Context.from_config(config)\n"
        "names = ['audio_only_fbank', 'video_only_test_efficientnet']\n"
        "before = [(ctx.run / 'results' / n / 'best.pt').stat().st_mtime_ns for n in names]\n"
        "loaded = [ctx.train('audio_only', feature='fbank').name,\n"
        "          ctx.train('video_only', backbone='test_efficientnet').name]\n"
        "after = [(ctx.run / 'results' / n / 'best.pt').stat().st_mtime_ns for n in names]\n"
        "assert loaded == names and before == after  # reloaded, not trained again\n"
        "ctx.save_metrics('03_collect', {'loaded': len(loaded)})",
    )
    over = {
        "features": ["fbank"],
        "train.seeds": None,
        "train.max_epochs": 1,
        "train.cpu_threads": 1,
    }  # fmt: skip (ablations and robustness: on scalogram)
    records = run_series_on_cluster(
        "smoke", over, launcher, slurm, runs_root=tmp_path / "runs",
        figures_root=tmp_path / "figures", cache_dir=str(synth_store[1]),
        notebooks_dir=nbs, preflight=False,
    )  # fmt: skip
    run = tmp_path / "runs" / "smoke"
    assert (tmp_path / "01_prepare").is_file() and (tmp_path / "02_more").is_file()
    trainings = [k for k in records if k not in ("prepare", "collect")]
    assert len(trainings) == 5 and all(r["status"] == "done" for r in records.values())
    for name in trainings:
        assert (run / "results" / name / "metrics.json").is_file(), name
    # each training started after those it builds on had finished
    ended = {k: json.loads((run / "jobs" / k / "point.json").read_text()) for k in trainings}
    for name, after in _plan(synth_store[1], **over).items():
        for dep in after:
            assert ended[name]["started"] >= ended[dep]["started"] + ended[dep]["seconds"], (
                name, dep)  # fmt: skip
    assert json.loads((run / "metrics" / "03_collect.json").read_text())["loaded"] == 2
    jobs = [p for p in os.listdir(run / "jobs") if not p.startswith(".")]  # .submitit: its own
    assert sorted(jobs) == sorted([*trainings, "prepare", "collect"])


def test_an_interrupted_sweep_stops_a_command_that_starts_as_it_stops(tmp_path, monkeypatch):
    """The race a killed sweep once lost: the interrupt lands after a point is marked
    running but before its command starts; that command must be stopped too, not run to
    the end behind the sweep's back (it made a killed point 'done')."""
    import threading

    import avsc.launch as launch

    real = subprocess.Popen

    def late_popen(*args, **kwargs):  # the gap between "running" and the process, widened
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(launch.subprocess, "Popen", late_popen)
    mark = tmp_path / "ran to the end"
    code = f"import time, pathlib; time.sleep(3); pathlib.Path({str(mark)!r}).touch()"
    cmd = [sys.executable, "-c", code]

    def interrupt():
        _wait_for(lambda: point_status(tmp_path / "p").get("status") == "running", 30)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # as Ctrl-C

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        launch.run_local({"p": cmd}, tmp_path, {}, 1)
    _wait_for(lambda: point_status(tmp_path / "p").get("status") == "failed", 30)
    time.sleep(4)
    assert not mark.exists()
    assert point_status(tmp_path / "p")["returncode"] == -signal.SIGTERM
