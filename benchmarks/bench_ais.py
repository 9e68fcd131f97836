"""AIS at 784-200-200 (issue 21): the tempered Gibbs sweep in its two forms, side by side, and
AIS through ``score(..., "ais")`` against the bare sweep.

    SBN_PPL_DATA=/path/to/data python benchmarks/bench_ais.py [--params P.npz] [--seconds 6]

* ``softplus``: the sweep on the children's softplus terms (an exp and a log per child and unit;
  the only form before issue 21, and the fallback where some ``|w| > 20``);
* ``ratios``: the sweep on the children's probabilities (``log(q + p e^delta)``, logs of
  products of four, p and q refreshed from the exact pre-activation; the default where every
  ``|w| <= 20``);
* ``ais``: :func:`sbn_ppl.yardstick.score` with ``estimator="ais"`` on the same rows (T = 50 a
  run, so compilation is timed apart), its row-sweeps per second.

One row-sweep: every hidden unit of one data point in one chain resampled once. The rows are a
seeded random 1,000 test images x 4 chains (binarized MNIST with ``SBN_PPL_DATA``, else random
bits) from a state drawn from the prior; the parameters are ``--params`` (a trained model: its
pre-activations are the ones AIS meets) or ``SBNParams.init(seed=0)``. Each figure is the best of
three windows, wall clock and CPU time (all threads) per call; ratios are of CPU time, steadier on
a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from sbn_ppl import SBNParams
from sbn_ppl.base.arrays import random_subset
from sbn_ppl.inference.shared.gibbs import numpyro as gibbs
from sbn_ppl.yardstick import score

ARCH, POINTS, CHAINS = "784-200-200", 1000, 4


def test_images():
    if os.environ.get("SBN_PPL_DATA"):
        from sbn_ppl.base.data import load_dataset

        return random_subset(load_dataset("binarized-mnist").test, POINTS, 0), "binarized MNIST test, random 1,000"
    return (np.random.default_rng(0).random((POINTS, 784)) < 0.13).astype(np.float32), "random bits (p = 0.13)"


def best_rate(fn, rows: int, seconds: float) -> tuple[float, float]:
    """(row-sweeps per wall second, per CPU second): the best of three windows of ``seconds / 3``."""
    fn()  # compile
    best = (0.0, 0.0)
    for _ in range(3):
        t, c, n = time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - t < seconds / 3:
            fn()
            n += rows
        best = max(best, (n / (time.perf_counter() - t), n / max(time.process_time() - c, 1e-9)))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", help="a trained 784-200-200 model (.npz); default SBNParams.init(seed=0)")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--bdmc", help="also BDMC on 50 simulated points at these T, e.g. 500,1000 (C = 4)")
    ap.add_argument("--ais-temperatures", type=int,
                    help="also AIS at this T (C = 4) on the 1,000 images, timed, beside IS with the model's guide")
    args = ap.parse_args()
    params = SBNParams.load(args.params) if args.params else SBNParams.init(ARCH, seed=0)
    x, what = test_images()
    print(f"# AIS's sweep at {ARCH}: {what} x {CHAINS} chains; params {args.params or 'SBNParams.init(seed=0)'}")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__}; "
          f"load average at the start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    p = gibbs._as_jax(params)
    state = gibbs.init(jax.random.PRNGKey(0), params, x, num_chains=CHAINS)
    layers = [v.reshape((-1, v.shape[-1])) for v in gibbs._layers(jnp.asarray(x), state.hidden)]
    a = gibbs._preactivations(p, layers)
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    noises = [jax.random.logistic(keys[l - 1], (n, layers[0].shape[0])) for l, n in ((1, 200), (2, 200))]
    rows = layers[0].shape[0]
    print(f"# every |w| <= 20 (the ratio sweep applies): {bool(gibbs._ratios_apply(p))}")
    out = {}
    for name, sweep in [("softplus", gibbs._sweep_softplus), ("ratios", gibbs._sweep_ratios)]:
        f = jax.jit(sweep)
        out[name] = best_rate(lambda: jax.block_until_ready(f(p, layers, a, noises, 0.5)), rows, args.seconds)
        print(f"sweep, {name:9s} {out[name][0]:10,.0f} row-sweeps/s  {out[name][1]:10,.0f} per CPU-s", flush=True)
    temperatures = 50
    out["ais"] = best_rate(lambda: score(params, x, "ais", ais_temperatures=temperatures, ais_chains=CHAINS, seed=0),
                           rows * temperatures, args.seconds * 2)
    print(f"ais (score, T={temperatures}) {out['ais'][0]:10,.0f} row-sweeps/s  {out['ais'][1]:10,.0f} per CPU-s")
    print(f"# load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"ratios / softplus: {out['ratios'][1] / out['softplus'][1]:.2f}x (CPU time), "
          f"{out['ratios'][0] / out['softplus'][0]:.2f}x (wall); "
          f"ais / bare ratio sweep: {out['ais'][1] / out['ratios'][1]:.2f} (CPU time)")
    print(json.dumps({k: {"per_s": round(v[0]), "per_cpu_s": round(v[1])} for k, v in out.items()}))
    yardstick(params, x, args)


def yardstick(params, x, args):
    """The yardstick at this scale: BDMC gaps, and AIS on the images (timed) beside IS."""
    from sbn_ppl.yardstick.bdmc import bdmc

    for t in [int(v) for v in args.bdmc.split(",")] if args.bdmc else []:
        t0 = time.perf_counter()
        s = bdmc(params, num_points=50, seed=1, num_temperatures=t, num_chains=CHAINS)
        print(f"BDMC T={t}, C={CHAINS}, 50 simulated points: lower {s.lower.mean:.3f}, upper {s.upper.mean:.3f}, "
              f"gap {s.gap:.3f} nats, {time.perf_counter() - t0:.0f} s", flush=True)
    if args.ais_temperatures:
        t0, c0 = time.perf_counter(), time.process_time()
        ais = score(params, x, "ais", ais_temperatures=args.ais_temperatures, ais_chains=CHAINS, seed=0)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows = len(x) * CHAINS * args.ais_temperatures
        print(f"AIS T={args.ais_temperatures}, C={CHAINS} on {len(x)} images: {ais.mean:.3f} +- {ais.mean_stderr:.3f}, "
              f"{wall:.0f} s ({cpu:.0f} CPU-s; {rows / wall:,.0f} row-sweeps/s)", flush=True)
        if params.has_guide("recognition"):
            est = score(params, x, "is", guide="recognition", is_particles=5000, seed=0)
            print(f"IS with the model's guide, K = 5,000, same images: {est.mean:.3f} +- {est.mean_stderr:.3f}")


if __name__ == "__main__":
    main()
