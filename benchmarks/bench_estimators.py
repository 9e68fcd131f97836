"""Steps/s of the discrete-VAE gradient estimators at 784-200-200 against NVIL's (issue 19),
per particle evaluated, through the runner (the same batches and jitted scan as a real fit).

Random binary data (the speed does not depend on the pixels), batch 100, each method's default
options unless ``METHODS`` says otherwise. Each method: one chunk of ``--warmup`` steps (the
compile), then chunks of ``--chunk`` steps for ``--seconds``. "Particles" is how many samples
``h`` (full evaluations of ``log p(x, h) - log q(h | x)``) one step evaluates per data point:
NVIL 1, RLOO K, ARM and DisARM L + 1 (the forward pass and one antithetic branch per layer),
Concrete and straight-through 1 (one relaxed or hard sample), REBAR and RELAX 1 + 2L (the hard
sample, and per layer the relaxed control variate at ``z`` and at ``z~``, each a relaxed pass
from that layer up: an upper count, the passes from the upper layers are partial).
The target: each method's particle-steps/s within 1.5x of NVIL's, i.e. the ratio printed >= 0.67.

    python benchmarks/bench_estimators.py --seconds 5

To add a method: a line in ``METHODS`` (name, options, particles per data point).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

ARCH, BATCH = "784-200-200", 100
LAYERS = 2

# (name, options, particles evaluated per data point per step)
METHODS = [
    ("nvil", {}, 1),
    ("rloo", {"k": 5}, 5),
    ("arm", {}, LAYERS + 1),
    ("disarm", {}, LAYERS + 1),
    ("concrete", {}, 1),
    ("straight-through", {}, 1),
    ("rebar", {}, 1 + 2 * LAYERS),
    ("relax", {}, 1 + 2 * LAYERS),
]


def steps_per_second(name: str, options: dict, train: np.ndarray, warmup: int, chunk: int, seconds: float) -> float:
    """Steps/s of ``name`` (NumPyro) through the runner, after a compiling chunk."""
    from sbn_ppl import SBNParams
    from sbn_ppl.engine.runner import runner_for
    from sbn_ppl.inference import get_method

    runner = runner_for(get_method(name, "numpyro"), SBNParams.init(ARCH, seed=0), options, train, seed=0,
                        batch_size=BATCH)
    runner.fix_length(chunk)
    runner.run(0, min(warmup, chunk))  # compiles the scan
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        runner.run(warmup + done, chunk)
        done += chunk
    runner.params()  # waits for the device
    return done / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per method")
    parser.add_argument("--chunk", type=int, default=50, help="steps per scan")
    parser.add_argument("--warmup", type=int, default=50, help="steps of the compiling chunk")
    parser.add_argument("--methods", default=",".join(m[0] for m in METHODS))
    args = parser.parse_args(argv)
    train = (np.random.default_rng(0).random((2000, 784)) < 0.3).astype(np.float32)
    wanted = args.methods.split(",")
    print(f"{ARCH}, batch {BATCH}, {args.seconds:g} s per method after a {args.warmup}-step compile; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    rows = []
    for name, options, particles in METHODS:
        if name in wanted:
            rate = steps_per_second(name, options, train, args.warmup, args.chunk, args.seconds)
            rows.append((name, options, particles, rate))
    base = next((r[2] * r[3] for r in rows if r[0] == "nvil"), None)
    print("| method | options | particles/step | steps/s | particle-steps/s | ratio to NVIL per particle |")
    print("|---|---|---:|---:|---:|---:|")
    for name, options, particles, rate in rows:
        ratio = "–" if base is None else f"{particles * rate / base:.2f}"
        print(f"| {name} | {options or 'defaults'} | {particles} | {rate:.1f} | {particles * rate:.1f} | {ratio} |")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
