"""A comparison grid sequentially and on Ray, on this machine, side by side (issue 22).

    SBN_PPL_DATA=/work/shared/data python benchmarks/bench_grid.py [--steps 2000] [--methods rloo,nvil]

The grid: the given methods (NumPyro) at 784-200-200 on binarized MNIST (random 0/1 data of
its shape without ``SBN_PPL_DATA``), batch 100, a ``--steps`` budget each, two checkpoints on
1,000 validation images (K = 200; the last one for the synthetic data, which has no validation split), the guide chosen and the test score taken on 1,000 test
images at K = 1,000 (the tuning grid's scale, ``examples/binarized_mnist_tune.toml``). Run
once with the sequential executor (one process, JAX's threads over every core) and once with
``executor="ray"`` (a local Ray, one task per cell, ``--ray-cpus`` CPUs a task: on this
2-core machine, two cells at once on one thread each). Prints each run's wall time, the
ratio, and whether the records' scores agree (they must: a ``--steps`` budget makes a cell's
numbers independent of where it runs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time


def grid(executor: str, out: str, args) -> tuple[float, list[dict]]:
    from sbn_ppl.comparison.harness import compare

    start = time.perf_counter()
    records = compare(args.data, "784-200-200", methods=args.methods.split(","), steps=args.steps, batch_size=100,
                      seed=0, out=out, checkpoints=2, curve_points=1000, curve_particles=200, select=args.select,
                      estimator="is", curve_ais_temperatures=20, curve_ais_chains=1, is_particles=1000,
                      test_points=1000, train_points=1000, posthoc_steps=args.posthoc_steps,
                      executor=executor, ray_cpus=args.ray_cpus, progress=False)
    return time.perf_counter() - start, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps a cell")
    parser.add_argument("--methods", default="rloo,nvil")
    parser.add_argument("--posthoc-steps", type=int, default=500)
    parser.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs a Ray task declares")
    args = parser.parse_args()
    args.data = "binarized-mnist" if os.environ.get("SBN_PPL_DATA") else "synthetic:784-200-200:0"
    args.select = "best" if args.data == "binarized-mnist" else "last"  # a synthetic set has no validation split
    print(f"# grid: {args.methods} (numpyro), 784-200-200, {args.data}, {args.steps} steps a cell, batch 100; "
          f"curve 2 x 1,000 valid at K = 200, score 1,000 test at K = 1,000, post-hoc guide {args.posthoc_steps} steps")
    print(f"# machine: {platform.node() or 'vm'}, {os.cpu_count()} CPUs, load average at the start: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    times, scores = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for executor in ("sequential", "ray"):
            seconds, records = grid(executor, os.path.join(tmp, executor), args)
            times[executor] = seconds
            scores[executor] = {r["method"]: r["test_log_likelihood"] for r in records}
            cells = ", ".join(f"{r['method']} {r['cell_seconds']:.0f} s" for r in records)
            print(f"{executor:<11} {seconds:8.1f} s wall   (cells: {cells})")
    same = all(abs(scores["sequential"][m] - scores["ray"][m]) < 1e-6 for m in scores["sequential"])
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"sequential / ray wall time: {times['sequential'] / times['ray']:.2f}x; "
          f"test scores {'identical' if same else 'DIFFER'} across executors")
    print(json.dumps({"sequential_s": round(times["sequential"], 1), "ray_s": round(times["ray"], 1),
                      "ratio": round(times["sequential"] / times["ray"], 3), "scores": scores}))


if __name__ == "__main__":
    main()
