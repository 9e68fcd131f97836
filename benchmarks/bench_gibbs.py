"""Single-unit Gibbs updates per second: our incremental sweep (JAX and torch) against
NumPyro's stock ``DiscreteHMCGibbs`` on the same NumPyro model and data, side by side.

    python benchmarks/bench_gibbs.py            # all four configurations (a few minutes)
    python benchmarks/bench_gibbs.py --quick    # fewer repetitions

Configurations: 64-32-16 (digits data, random weights) and 784-200-200 (random weights,
random binary data), each with 1 data point x 1 chain and 100 data points x 10 chains.
A "unit update" is one hidden unit of one data point in one chain resampled.

The stock kernel re-evaluates the whole model for every coordinate it updates, so a full
sweep of 784-200-200 takes minutes; it is timed on a short run of its own sweep function
(``numpyro.infer.gibbs.discrete_gibbs_sweep`` with the kernel's potential and proposal,
over the first K flat coordinates), after one run to compile. Chains of the stock
kernel are vectorised with ``jax.vmap`` as ``MCMC(chain_method="vectorized")`` does.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax import random

from sbn_ppl import SBNParams
from sbn_ppl.base.data import load_dataset
from sbn_ppl.inference.shared.gibbs import numpyro as gibbs_jax, pyro as gibbs_torch
from sbn_ppl.inference.neal import discrete_hmc_gibbs as neal_jax


def config_data(arch: str, n: int) -> np.ndarray:
    if arch.startswith("64-"):
        return load_dataset("digits").train[:n].astype(np.float32)
    return (np.random.default_rng(0).random((n, 784)) < 0.5).astype(np.float32)


def timed(fn, min_seconds: float):
    """Run ``fn`` (returns a number of unit updates) until ``min_seconds`` pass: updates/s."""
    fn()  # compile / warm up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:
        done += fn()
    return done / (time.perf_counter() - t0)


def ours_jax(params, x, chains, sweeps, min_seconds):
    theta = jax.tree_util.tree_map(jnp.asarray, params)
    state = gibbs_jax.init(random.PRNGKey(0), theta, x, num_chains=chains)
    run = jax.jit(lambda key, s: jax.lax.scan(lambda s, k: (gibbs_jax.step(k, s, theta, x)[0], None), s,
                                              random.split(key, sweeps))[0])
    box = {"state": state, "i": 0}

    def once():
        box["i"] += 1
        box["state"] = run(random.PRNGKey(box["i"]), box["state"])
        jax.block_until_ready(box["state"])
        return sweeps * params.architecture.num_hidden * x.shape[0] * chains

    return timed(once, min_seconds)


def ours_torch(params, x, chains, sweeps, min_seconds):
    p = gibbs_torch.as_torch(params)
    xt = torch.as_tensor(x)
    generator = torch.Generator().manual_seed(0)
    box = {"state": gibbs_torch.init(generator, p, xt, num_chains=chains)}

    def once():
        for _ in range(sweeps):
            box["state"], _ = gibbs_torch.step(generator, box["state"], p, xt)
        return sweeps * params.architecture.num_hidden * x.shape[0] * chains

    return timed(once, min_seconds)


def stock(params, x, chains, updates, min_seconds):
    """NumPyro's DiscreteHMCGibbs(NUTS(model)): its sweep over ``updates`` flat coordinates."""
    from numpyro.infer.gibbs import discrete_gibbs_sweep, select_discrete_proposal

    theta = jax.tree_util.tree_map(jnp.asarray, params)
    hidden = gibbs_jax.init(random.PRNGKey(0), theta, x).hidden
    kernel, state = neal_jax.stock_kernel(random.PRNGKey(1), theta, jnp.asarray(x), hidden)
    discrete = kernel.blocks[0][0]
    block = state.block_states[0]
    potential_fn = discrete.get_potential_fn((theta, jnp.asarray(x)), {})
    proposal = select_discrete_proposal(random_walk=False, modified=False)
    sizes = jnp.full((updates,), 2)  # the first `updates` flat (binary) coordinates

    def sweep(key, z, pe):
        return discrete_gibbs_sweep(key, z, pe, potential_fn, sizes, proposal)

    batched = jax.jit(jax.vmap(sweep, in_axes=(0, None, None)) if chains > 1 else sweep)
    box = {"i": 0}

    def once():
        box["i"] += 1
        key = random.PRNGKey(box["i"])
        out = batched(random.split(key, chains) if chains > 1 else key, block.z, block.potential_energy)
        jax.block_until_ready(out)
        return updates * chains

    return timed(once, min_seconds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    secs = 1.0 if args.quick else 3.0
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; jax {jax.__version__} "
          f"({jax.default_backend()}), torch {torch.__version__} ({args.torch_threads} thread(s))")
    print(f"{'config':<28}{'stock upd/s':>14}{'ours JAX upd/s':>17}{'ratio':>9}{'ours torch upd/s':>19}{'ratio':>9}")
    for arch in ("64-32-16", "784-200-200"):
        params = SBNParams.init(arch, seed=0, scale=1.0, guide=()).generative()
        hidden_units = params.architecture.num_hidden
        for n, chains in ((1, 1), (100, 10)):
            x = config_data(arch, n)
            updates = min(hidden_units * n, 300)
            r_stock = stock(params, x, chains, updates, secs)
            sweeps = 20 if n * chains == 1 else 2
            r_jax = ours_jax(params, x, chains, sweeps, secs)
            r_torch = ours_torch(params, x, chains, max(1, sweeps // 4), secs)
            name = f"{arch}, {n} x {chains}"
            print(f"{name:<28}{r_stock:>14,.0f}{r_jax:>17,.0f}{r_jax / r_stock:>8,.1f}x"
                  f"{r_torch:>19,.0f}{r_torch / r_stock:>8,.1f}x", flush=True)


if __name__ == "__main__":
    main()
