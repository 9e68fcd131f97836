"""Importance sampling at benchmark scale: microseconds per particle at 784-200-200.

Scores a seeded random subset of the binarized-MNIST test images with K particles per
image, by the jitted streaming sampler (``sbn_ppl.yardstick.importance``) and by
the float64 NumPy reference (``sbn_ppl.yardstick.estimates.importance_log_likelihood``), side by
side in one run, and prints the cost per particle (one particle = one ``h ~ q(. | x)`` and
one ``log p(x, h) - log q(h | x)``), its ratio, and the projected time for the papers'
yardstick (all 10,000 test images at K = 5,000).

Both wall time and process CPU time are printed: on a shared machine the wall time moves
with the load, the CPU time much less. The two samplers run in interleaved rounds (each
round on its own share of the points), so that a change of load hits both alike, and the
figures are medians over the rounds. The compilation is timed apart (one small call first)
and is not counted in the per-particle figure. The post-hoc guide's phi updates are timed
too (steps per second at batch 100).

    python benchmarks/bench_scoring.py                   # ~3 min: 400 images, K = 1000 (JAX), K = 100 (NumPy)
    python benchmarks/bench_scoring.py --points 1000 --k 5000
    python benchmarks/bench_scoring.py --data path/to/binarized_mnist.npz
"""
from __future__ import annotations

import argparse
import os
import platform

import time

import numpy as np


def default_data() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(here, "..", "..", "shared", "data", "binarized_mnist.npz"),
                 "/work/shared/data/binarized_mnist.npz"):
        if os.path.exists(path):
            return path
    raise SystemExit("binarized_mnist.npz not found: pass --data PATH (an .npz with a 'test' array)")


def timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="an .npz holding a 'test' array of 784-pixel binary images")
    ap.add_argument("--arch", default="784-200-200")
    ap.add_argument("--points", type=int, default=400, help="test images (a seeded random subset)")
    ap.add_argument("--k", type=int, default=1000, help="particles per image for the JAX sampler")
    ap.add_argument("--numpy-k", type=int, default=100, help="particles per image for the NumPy reference")
    ap.add_argument("--guide", default="recognition", choices=("recognition", "mean_field"))
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (each on its share of the points)")
    ap.add_argument("--posthoc-steps", type=int, default=300,
                    help="also time the post-hoc guide's phi updates (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import jax

    from sbn_ppl import SBNParams
    from sbn_ppl.yardstick import estimates
    from sbn_ppl.base.arrays import random_subset
    from sbn_ppl.yardstick import importance

    test = np.load(args.data or default_data())["test"]
    x = random_subset(np.asarray(test, dtype=np.float32), args.points, args.seed)
    # an untrained net at a realistic weight scale: the cost does not depend on the values
    params = SBNParams.init(args.arch, seed=args.seed, scale=1.0, guide=(args.guide,))
    arch = params.architecture
    print(f"# importance sampling at {arch}, {args.guide} guide, {len(x)} of {len(test)} test images "
          f"(seeded random subset)")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} at start; python {platform.python_version()}, "
          f"jax {jax.__version__} ({jax.default_backend()}), numpy {np.__version__}")
    print(f"# JAX chunks: {importance.POINTS_PER_BATCH} points x "
          f"{importance.ROWS_PER_CHUNK // importance.POINTS_PER_BATCH} particles per jitted call")

    _, wall_c, _ = timed(lambda: importance.is_log_likelihood(params, x[:importance.POINTS_PER_BATCH], args.guide,
                                                              100, args.seed))
    print(f"# JAX compilation and first call: {wall_c:.1f} s (not counted below)")
    # interleaved rounds, each on its own share of the points, so that a change of load
    # on the shared machine hits both samplers alike; medians over the rounds
    rows = {"jax": [], "numpy": []}
    results = {"jax": [], "numpy": []}
    for part in np.array_split(np.arange(len(x)), args.rounds):
        xs = x[part]
        ll, w, c = timed(lambda: importance.is_log_likelihood(params, xs, args.guide, args.k, args.seed))
        rows["jax"].append((w / (len(xs) * args.k), c / (len(xs) * args.k)))
        results["jax"].append(ll)
        ll, w, c = timed(lambda: estimates.importance_log_likelihood(params, xs, args.guide, args.numpy_k, args.seed))
        rows["numpy"].append((w / (len(xs) * args.numpy_k), c / (len(xs) * args.numpy_k)))
        results["numpy"].append(ll)
    load_end = os.getloadavg()[0]
    cost = {name: (np.median([r[0] for r in v]) * 1e6, np.median([r[1] for r in v]) * 1e6) for name, v in rows.items()}
    print()
    print("| sampler | K | particles | wall µs/particle | CPU µs/particle | per round (wall) | mean log p^(x) | "
          "ESS mean | k-hat max |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for name, label, k in (("jax", "JAX streaming (float32, float64 sums)", args.k),
                           ("numpy", "NumPy reference (float64)", args.numpy_k)):
        per_point = np.concatenate([ll.per_point for ll in results[name]])
        ess = np.concatenate([ll.ess for ll in results[name]])
        khat = np.concatenate([ll.khat for ll in results[name]])
        rounds = ", ".join(f"{r[0] * 1e6:.1f}" for r in rows[name])
        print(f"| {label} | {k} | {len(x) * k:,} | {cost[name][0]:.1f} | {cost[name][1]:.1f} | {rounds} | "
              f"{per_point.mean():.2f} | {ess.mean():.1f} | {np.nanmax(khat):.2f} |")
    us_j, cpu_us_j = cost["jax"]
    print()
    print(f"speed-up, JAX over NumPy per particle (medians of {args.rounds} interleaved rounds): "
          f"{cost['numpy'][0] / us_j:.1f}x wall, {cost['numpy'][1] / cpu_us_j:.1f}x CPU")
    full = 10_000 * 5_000
    print(f"projected: all 10,000 test images at K = 5,000 ({full:,} particles): "
          f"{full * us_j / 1e6 / 60:.1f} min at this run's wall rate; "
          f"{full * cpu_us_j / 2 / 1e6 / 60:.1f} min if both cores were ours (CPU time / 2)")
    print(f"target: <= 15 µs per particle on 2 cores (<= 15 min for the whole test set); load average at end "
          f"{load_end:.1f}")
    if args.posthoc_steps:
        from sbn_ppl.yardstick.defaults import POSTHOC_BATCH_SIZE, POSTHOC_PARTICLES, POSTHOC_STEPS
        from sbn_ppl.yardstick.posthoc import fit_posthoc_guide

        train = random_subset(np.asarray(np.load(args.data or default_data())["train"], dtype=np.float32), 5000,
                              args.seed)
        steps = max(1, args.posthoc_steps)
        timed(lambda: fit_posthoc_guide(params, train, steps=min(steps, 500), seed=args.seed))  # compile
        _, wall_p, cpu_p = timed(lambda: fit_posthoc_guide(params, train, steps=min(steps, 500), seed=args.seed))
        rate = min(steps, 500) / wall_p
        print(f"post-hoc guide (wake-phi + sleep-phi, K = {POSTHOC_PARTICLES}, batch {POSTHOC_BATCH_SIZE}): "
              f"{rate:.0f} steps/s wall ({min(steps, 500) / cpu_p:.0f} per CPU-second); the default "
              f"{POSTHOC_STEPS:,} steps take {POSTHOC_STEPS / rate / 60:.1f} min at this rate")


if __name__ == "__main__":
    main()
