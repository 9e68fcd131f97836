"""Throughput against the number of devices (issue 12): the data axis split over a mesh.

    python benchmarks/bench_devices.py --quick                 # CPU, forced host devices 1 and 2 (< 1 min)
    python benchmarks/bench_devices.py                         # CPU, forced host devices 1, 2, 4
    python benchmarks/bench_devices.py --platform gpu          # the real GPUs: 1, 2, 4, ... of them

For each device count, in a fresh subprocess (``XLA_FLAGS`` must be set before JAX starts):

* RWS (NumPyro backend) 784-200-200, K = 5, batch 1000: training steps/s through the runner
  (``sbn_ppl.engine.runner.JaxRunner``, a jitted ``lax.scan`` of steps, batch split over the devices);
* Gibbs (Neal's rule) 784-200-200, batch 1000 (one persistent chain per training case, so
  1000 chains a step, one sweep): single-unit updates/s (steps/s x 1000 x 400 hidden units);
* importance sampling (``score(..., "is")``) 784-200-200 with the recognition network:
  particles/s (points x K / seconds).

Random weights and random binary data (the speed does not depend on them). Each figure is
timed after a first call that compiles. On a CPU the forced host devices share the same
cores, so the figures only show that the code runs and scales without error, not a speed-up;
on GPUs they are the real thing. Seeded: the same seed gives the same work.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ARCH = "784-200-200"
BATCH = 1000
K = 5

_CHILD = r"""
import json, sys, time
import numpy as np
import jax
from sbn_ppl import SBNParams, score
from sbn_ppl.inference import get_method
from sbn_ppl.engine.runner import runner_for

devices, steps, is_points, is_k, seed = (int(a) for a in sys.argv[1:6])
rng = np.random.default_rng(seed)
train = (rng.random((4 * %(batch)d, 784)) < 0.5).astype(np.float32)
out = {"devices": devices, "platform": jax.devices()[0].platform, "visible": jax.device_count()}

def rate(name, options, per_step):
    m = get_method(name, "numpyro")
    p = SBNParams.init("%(arch)s", seed=seed, guide=tuple(g for g in (m.guide,) if g))
    r = runner_for(m, p, m.check_options(options), train, seed, %(batch)d, devices=devices)
    r.fix_length(steps)
    r.run(0, steps)  # compiles
    t = time.perf_counter()
    r.run(steps, steps)  # floats: waits for the work
    return steps * per_step / (time.perf_counter() - t)

out["rws_steps_per_s"] = rate("rws", {"k": %(k)d}, 1)
out["gibbs_updates_per_s"] = rate("gibbs", {"chains": 1, "sweeps": 1}, %(batch)d * 400)
p = SBNParams.init("%(arch)s", seed=seed, guide=("recognition",))
x = train[:is_points]
score(p, x, "is", is_particles=is_k, seed=seed, devices=devices)  # compiles
t = time.perf_counter()
score(p, x, "is", is_particles=is_k, seed=seed, devices=devices)
out["is_particles_per_s"] = is_points * is_k / (time.perf_counter() - t)
print(json.dumps(out))
""" % {"arch": ARCH, "batch": BATCH, "k": K}


def run_child(devices: int, platform_name: str, steps: int, is_points: int, is_k: int, seed: int) -> dict:
    env = dict(os.environ)
    if platform_name == "cpu":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        env["JAX_PLATFORMS"] = "cpu"
    else:
        env.pop("XLA_FLAGS", None)
        env["JAX_PLATFORMS"] = "cuda"
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(devices), str(steps), str(is_points), str(is_k),
                           str(seed)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench_devices: the run on {devices} device(s) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--platform", choices=("cpu", "gpu"), default="cpu",
                    help="cpu: forced host devices (only shows the code scales without error); gpu: the real GPUs")
    ap.add_argument("--devices", help="comma-separated device counts (default: cpu 1,2,4; gpu 1,2,4,.. up to all)")
    ap.add_argument("--quick", action="store_true", help="device counts 1,2, fewer steps and particles (< 1 min "
                                                         "on a 2-core CPU)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.devices:
        counts = [int(c) for c in args.devices.split(",")]
    elif args.quick:
        counts = [1, 2]
    elif args.platform == "gpu":
        import jax

        n = len(jax.devices("gpu"))
        counts = [c for c in (1, 2, 4, 8, 16) if c <= n and BATCH % c == 0]
    else:
        counts = [1, 2, 4]
    steps, is_points, is_k = (1, 100, 100) if args.quick else (10, 1000, 1000)
    print(f"bench_devices: {ARCH}; RWS K={K}, batch {BATCH}; Gibbs batch {BATCH} (1000 chains, 1 sweep); "
          f"IS {is_points} points x K={is_k}; {steps} timed steps after a compiling chunk; seed {args.seed}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores; platform "
          f"{args.platform}" + (" (FORCED HOST DEVICES: they share the same cores; this shows the code scales "
                                "without error, not a speed-up)" if args.platform == "cpu" else ""))
    print()
    print("| devices | platform | RWS steps/s | Gibbs unit updates/s | IS particles/s | wall s |")
    print("|---:|---|---:|---:|---:|---:|")
    for c in counts:
        t = time.perf_counter()
        r = run_child(c, args.platform, steps, is_points, is_k, args.seed)
        print(f"| {c} | {r['platform']} ({r['visible']} visible) | {r['rws_steps_per_s']:.2f} | "
              f"{r['gibbs_updates_per_s']:.3g} | {r['is_particles_per_s']:.3g} | {time.perf_counter() - t:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
