"""Training speed on a quiet machine and under load, for one Pyro and one JAX method (issue 14).

Torch's intra-op thread pool, woken for every small op of a Pyro step and left spinning,
collapses when other processes hold the cores. The runner now picks torch's thread count by
the size of the work (one thread for small batches); this script shows what that buys:

* ``quiet``: steps/s of ``fit`` on digits 64-12-6 (batch 100, K = 5) with nothing else running;
* ``loaded``: the same with one CPU-bound process per core running beside it;
* ``pyro (torch default threads)``: the Pyro method with the runner's choice overridden by
  torch's default thread count, as before the fix.

Run: ``python benchmarks/bench_load.py [--seconds 8]``. Prints steps/s and the
loaded/quiet ratio of each contender, measured in one run.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time

import numpy as np

from sbn_ppl import SBNParams, load_dataset
from sbn_ppl.engine import runner
from sbn_ppl.engine.fitting import Budget, fit
from sbn_ppl.inference import get_method


def _burn(stop):
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2**31


def steps_per_second(label: str, seconds: float) -> float:
    name, backend = label.split(":")
    data = load_dataset("digits")
    params = SBNParams.init("64-12-6", seed=0, guide=("recognition",))
    method = get_method(name, backend)
    fit(method, params, data.train, budget=Budget(steps=20), progress=False)  # warm-up: compilation, first traces
    result = fit(method, params, data.train, budget=Budget(seconds=seconds), progress=False)
    last = result.metrics[-1]
    return last["step"] / last["seconds"]


def measure(contenders: dict, seconds: float) -> dict:
    return {name: fn(seconds) for name, fn in contenders.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="training seconds per measurement")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    auto_threads = runner.threads_for

    def with_default_threads(seconds):
        import torch

        default = torch.get_num_threads()
        runner.threads_for = lambda elements: default
        try:
            return steps_per_second("rws:pyro", seconds)
        finally:
            runner.threads_for = auto_threads

    contenders = {
        "rws:numpyro": lambda s: steps_per_second("rws:numpyro", s),
        "rws:pyro": lambda s: steps_per_second("rws:pyro", s),
        "rws:pyro (torch default threads)": with_default_threads,
    }
    quiet = measure(contenders, args.seconds)
    stop = mp.Event()
    burners = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(cores)]
    for p in burners:
        p.start()
    time.sleep(1.0)
    try:
        loaded = measure(contenders, args.seconds)
    finally:
        stop.set()
        for p in burners:
            p.join()
    print(f"machine: {platform.machine()}, {cores} cores, {platform.python_version()}; digits 64-12-6, batch 100, "
          f"K=5, {args.seconds:g} s per measurement; loaded = {cores} CPU-bound processes beside the run\n")
    print("| contender | quiet steps/s | loaded steps/s | loaded / quiet |")
    print("|---|---:|---:|---:|")
    for name in contenders:
        print(f"| {name} | {quiet[name]:.1f} | {loaded[name]:.1f} | {loaded[name] / quiet[name]:.2f} |")
    ratio = np.array([loaded[n] / quiet[n] for n in ("rws:numpyro", "rws:pyro")])
    print(f"\nPyro's loaded/quiet ratio relative to JAX's: {ratio[1] / ratio[0]:.2f}")


if __name__ == "__main__":
    main()
