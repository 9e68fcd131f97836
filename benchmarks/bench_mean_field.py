"""Mean-field SVI: Pyro vs NumPyro steps per second, and gradient variance with and without baselines.

    python benchmarks/bench_mean_field.py [--archs 64-32-16 784-200-200] [--seconds 3] [--skip-variance]

Every configuration trains the amortised mean-field guide and the SBN on batches of 100
(random binary data; the speed does not depend on the values), side by side in one run:

* Pyro ``SVI`` + ``TraceGraph_ELBO`` (``jit=False``, the stock path; baselines none / decaying /
  nvil) and + ``JitTraceGraph_ELBO`` (``jit=True``, the default: the same estimator, traced by
  ``torch.jit``), through the method's runner;
* NumPyro ``SVI`` + the stock ``TraceGraph_ELBO`` (no baselines), jit-compiled update;
* NumPyro ``SVI`` + :class:`TraceGraphBaselineELBO` (ours; none / decaying / nvil), jitted and
  scanned by the method's runner.

Then the total variance ``sum_j Var[g_j]`` of the single-sample gradient w.r.t. the guide's
parameters, at fixed parameters, with each baseline (same seed; the baselines warmed up first).
"""
from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from jax import random
from numpyro.infer import SVI, TraceGraph_ELBO

from sbn_ppl import SBNParams
from sbn_ppl.base.data import load_digits, synthetic
from sbn_ppl.inference import get_method
from sbn_ppl.inference.mean_field import numpyro as mn
from sbn_ppl.inference.mean_field import pyro as mp
from sbn_ppl.inference.shared.score_function import BASELINES
from sbn_ppl.models import numpyro_sbn
from sbn_ppl.engine.runner import runner_for

BATCH = 100


def rate(run, seconds, chunk, windows=3):
    """Steps per second of ``run(chunk)`` after a warm-up call (which compiles): the best of
    ``windows`` windows of ``seconds / windows`` each (the machine is shared; the best window is
    the least disturbed one)."""
    run(2)
    best = 0.0
    for _ in range(windows):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / windows:
            run(chunk)
            done += chunk
        best = max(best, done / (time.perf_counter() - start))
    return best


def method_rate(backend, params, train, seconds, chunk, **options):
    """steps/s of ``mean-field-svi`` through the backend's runner (the path ``fit`` takes)."""
    m = get_method("mean-field-svi", backend)
    runner = runner_for(m, params, m.check_options(options), train, 0, BATCH)
    box = [0]

    def run(n):
        runner.run(box[0], n)  # returns floats: waits for JAX's asynchronous work
        box[0] += n
        runner.fix_length(chunk)  # one scan length from here on (the first call compiles it)

    return rate(run, seconds, chunk)


def pyro_rate(params, train, seconds, **options):
    return method_rate("pyro", params, train, seconds, 5, **options)


def numpyro_rate(params, train, seconds, **options):
    return method_rate("numpyro", params, train, seconds, 50, **options)


def stock_numpyro_rate(params, train, seconds):
    """NumPyro's own TraceGraph_ELBO, same model, guide, optimiser and batches."""
    svi = SVI(numpyro_sbn.model, numpyro_sbn.mean_field_guide, optax.adam(3e-3), TraceGraph_ELBO())
    params = jax.tree.map(jnp.asarray, params)
    x_all = jnp.asarray(train)

    @jax.jit
    def step(state, key):
        x = jnp.take(x_all, random.choice(key, len(train), (BATCH,), replace=False), axis=0)
        return svi.update(state, params, x)

    box = [svi.init(random.PRNGKey(0), params, x_all[:BATCH]), random.PRNGKey(1)]

    def run(n):
        state, key = box
        for _ in range(n):
            key, sub = random.split(key)
            state, loss = step(state, sub)
        loss.block_until_ready()
        box[:] = [state, key]

    return rate(run, seconds, 50)


def fixed_point_rate(params, train, seconds):
    """steps/s of ``mean-field-fixed-point`` (one damped layer-parallel sweep per step) through its runner."""
    m = get_method("mean-field-fixed-point")
    runner = runner_for(m, params, m.check_options({}), train, 0, BATCH)
    done = [0]

    def run(n):
        runner.run(done[0], n)
        done[0] += n
        runner.fix_length(50)

    return rate(run, seconds, 50)


def speed(arch, seconds, with_fixed_point):
    params = SBNParams.init(arch, seed=0)
    train = (np.random.default_rng(0).random((1000, params.architecture.visible_size)) < 0.3).astype(np.float32)
    rows = []
    for name, fn in [
        ("Pyro SVI + TraceGraph_ELBO, no baseline", lambda: pyro_rate(params, train, seconds, baseline="none", jit=False)),
        ("Pyro SVI + TraceGraph_ELBO, decaying avg", lambda: pyro_rate(params, train, seconds, baseline="decaying", jit=False)),
        ("Pyro SVI + TraceGraph_ELBO, NVIL", lambda: pyro_rate(params, train, seconds, baseline="nvil", jit=False)),
        ("Pyro SVI + JitTraceGraph_ELBO, no baseline", lambda: pyro_rate(params, train, seconds, baseline="none", jit=True)),
        ("Pyro SVI + JitTraceGraph_ELBO, NVIL", lambda: pyro_rate(params, train, seconds, baseline="nvil", jit=True)),
        ("NumPyro SVI + stock TraceGraph_ELBO (jit)", lambda: stock_numpyro_rate(params, train, seconds)),
        ("NumPyro SVI + ours, no baseline (jit)", lambda: numpyro_rate(params, train, seconds, baseline="none")),
        ("NumPyro SVI + ours, decaying avg (jit)", lambda: numpyro_rate(params, train, seconds, baseline="decaying")),
        ("NumPyro SVI + ours, NVIL (jit)", lambda: numpyro_rate(params, train, seconds, baseline="nvil")),
    ] + ([("JAX fixed point (SJJ), 1 damped layer-parallel sweep/step", lambda: fixed_point_rate(params, train, seconds))]
         if with_fixed_point else []):
        rows.append((name, fn()))
        print(f"  {arch:>12}  {name:<45} {rows[-1][1]:9.1f} steps/s", flush=True)
    return rows


def variance(arch, warmup, samples):
    """Total gradient variance of the guide's parameters on a batch of 20 (digits for 64-...,
    else samples of a teacher SBN); the baselines warm up on random batches of the training set."""
    params = SBNParams.init(arch, seed=0, scale=0.5)
    if params.architecture.visible_size == 64:
        pool = load_digits().train
    else:
        pool = synthetic(arch, 0).train
    x = pool[:20]
    out = {}
    for backend, module, (w, s) in (("numpyro", mn, (warmup, samples)), ("pyro", mp, (warmup // 2, samples // 2))):
        for baseline in BASELINES:
            t0 = time.perf_counter()
            moments = module.mean_field_gradient_moments(params, x, baseline, warmup=w, num_samples=s, seed=0,
                                                         warmup_pool=pool)
            out[(backend, baseline)] = moments.total_variance
            print(f"  {arch:>12}  {backend:<8} {baseline:<9} total Var[g] {moments.total_variance:12.1f}  "
                  f"ratio to none {out[(backend, 'none')] / moments.total_variance:6.1f}x  "
                  f"({w} warm-up, {s} samples, {time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["64-32-16", "784-200-200"])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per configuration")
    parser.add_argument("--variance-archs", nargs="+", default=["10-4-2", "64-32-16"])
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--skip-variance", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # Pyro's small ops: 1 thread is ~10x faster than 2 on a shared 2-core machine
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}; batch {BATCH}; amortised mean-field guide")
    print("steps per second (one training step = sample h ~ q, surrogate, gradient, Adam update):")
    for arch in [] if args.skip_speed else args.archs:
        rows = dict(speed(arch, args.seconds, with_fixed_point=arch.startswith("64")))
        base = rows["Pyro SVI + TraceGraph_ELBO, no baseline"]
        print(f"  {arch}: NumPyro stock / Pyro stock = {rows['NumPyro SVI + stock TraceGraph_ELBO (jit)'] / base:.1f}x; "
              f"Pyro jit / Pyro = {rows['Pyro SVI + JitTraceGraph_ELBO, no baseline'] / base:.1f}x (no baseline), "
              f"{rows['Pyro SVI + JitTraceGraph_ELBO, NVIL'] / rows['Pyro SVI + TraceGraph_ELBO, NVIL']:.1f}x (NVIL)")
    if not args.skip_variance:
        print("gradient variance w.r.t. the guide's parameters (same seed, fixed parameters, batch of 20;"
              " baselines warmed up on random batches of the training set):")
        for arch in args.variance_archs:
            variance(arch, args.warmup, args.samples)


if __name__ == "__main__":
    main()
