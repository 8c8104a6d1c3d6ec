#!/usr/bin/env python3
"""Threads under load (issue 21): how much a training step on the CPU slows beside busy
neighbours, against the share of the CPU it still has.

    python benchmarks/threads.py [--neighbours 1,2] [--steps 40] [--quick]

One step is the acoustic encoder's training step at the own profile's batch (32 segments of
6 scalogram frames, SGD with momentum), in a fresh process per setting, since OpenMP reads
its wait policy once when torch loads. Each setting is timed alone and beside N busy
processes (pure-Python loops, one core each):

- ``spin``: GNU OpenMP's own waiting (threads spin for about 3 ms between operations before
  they sleep; ``GOMP_SPINCOUNT=300000``), torch's own thread count: avsc before this change;
- ``avsc``: what avsc does now: threads that sleep while they wait (``OMP_WAIT_POLICY``
  PASSIVE, set on ``import avsc``), the thread count from the CPUs granted;
- ``one``: ``train.cpu_threads=1``.

A step's fair share: with T threads and N neighbours on C cores, each runnable thread gets
C / (T + N) of a core, so a step should take max(1, (T + N) / C) times its time alone. Ends
with one ``name: value`` line per figure (median ms per step; slowdown = beside / alone),
all measured in this one run: the machine is shared, compare the ratios, not the times.
``--quick`` (avsc's setting only, 3 steps, one neighbour) checks that the script runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

STEP = r"""
import json, sys, time
import avsc  # sets the wait policy, unless the environment has one
import torch
from torch import nn
from avsc.models.acoustic import AcousticEncoder
from avsc.models.classifier import SceneClassifier
from avsc.utils import training_threads

threads, steps = sys.argv[1], int(sys.argv[2])
if threads == "auto":  # what a training does with train.cpu_threads unset
    torch.set_num_threads(training_threads(None))
elif threads != "torch":  # "torch": the count a fresh process has
    torch.set_num_threads(int(threads))
torch.manual_seed(0)
model = nn.Sequential(AcousticEncoder(), SceneClassifier(1024))
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(192, 2, 290), torch.randint(0, 10, (192,))
times = []
for _ in range(steps + 3):
    t = time.perf_counter()
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - t)
times = sorted(times[3:])
print(json.dumps({"threads": torch.get_num_threads(), "ms": 1000 * times[len(times) // 2],
                  "loss": loss.item()}))
"""

SETTINGS = {  # name: (environment, thread count)
    "spin": ({"GOMP_SPINCOUNT": "300000"}, "torch"),
    "avsc": ({}, "auto"),
    "one": ({}, "1"),
}


def step_ms(setting: str, steps: int, neighbours: int) -> dict:
    env_extra, threads = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(neighbours)]
    try:
        time.sleep(0.3)
        res = subprocess.run(
            [sys.executable, "-c", STEP, threads, str(steps)],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
    finally:
        for p in busy:
            p.kill()
            p.wait()
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--neighbours", default="1,2", help="busy processes beside, comma-separated")
    ap.add_argument("--steps", type=int, default=40, help="timed steps per setting")
    ap.add_argument("--quick", action="store_true", help="3 steps, one neighbour: does it run?")
    args = ap.parse_args()
    neighbours = [1] if args.quick else [int(n) for n in args.neighbours.split(",")]
    steps = 3 if args.quick else args.steps
    from avsc.utils import granted_cpus

    cores = granted_cpus()
    figures: dict[str, float] = {"granted_cpus": cores}
    losses = {}
    for setting in ["avsc"] if args.quick else SETTINGS:
        alone = step_ms(setting, steps, 0)
        losses[setting] = alone["loss"]
        figures[f"threads_{setting}"] = alone["threads"]
        figures[f"step_ms_{setting}_alone"] = alone["ms"]
        for n in neighbours:
            beside = step_ms(setting, steps, n)
            figures[f"step_ms_{setting}_beside_{n}"] = beside["ms"]
            figures[f"slowdown_{setting}_beside_{n}"] = beside["ms"] / alone["ms"]
            share = max(1.0, (alone["threads"] + n) / cores)
            figures[f"fair_share_{setting}_beside_{n}"] = share
    # the wait policy changes where threads wait, never a value
    if "spin" in losses:
        figures["same_loss_spin_avsc"] = float(losses["spin"] == losses["avsc"])
    for name, value in figures.items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")


if __name__ == "__main__":
    main()
