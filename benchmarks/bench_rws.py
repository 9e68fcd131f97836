"""RWS training speed, side by side in one run (issue 4).

Contenders, each training the same SBN with K particles per data point, batch 100, Adam,
wake-phi (insomnia = 1):

* ``stock-pyro``: ``pyro.infer.ReweightedWakeSleep`` (vectorised particles) on our Pyro model
  and recognition guide, two torch optimisers, the batch passed as the data;
* ``ours-pyro``: our :class:`sbn_ppl.inference.rws.pyro.ReweightedWakeSleep`, the same loop and
  the same traces, per-data-point weights;
* ``ours-pyro-minibatch``: the method ``rws`` (pyro) under its runner: the runner's batch passed
  to the model's ``data`` plate as ``subsample``, loss scaled per data point;
* ``bare-torch``: a hand-written torch RWS step (no Pyro), the reference for Pyro's overhead;
* ``ours-numpyro``: the method ``rws`` (numpyro) under its runner: the jitted kernel, many steps
  per call in a ``lax.scan`` over the runner's batches;
* ``ours-numpyro-step``: the same jitted kernel called once per step from Python;
* ``bare-jax``: a hand-written jitted JAX RWS step for a 2-hidden-layer net, called per step.

Run: ``python benchmarks/bench_rws.py [--quick]``. Prints steps/s and data-point-particles/s
(steps/s x batch x K), the median of 5 round-robin rounds, and the issue's target ratios.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pyro
import torch

from sbn_ppl import SBNParams
from sbn_ppl.inference import get_method
from sbn_ppl.inference.rws import numpyro as rws_jax
from sbn_ppl.inference.rws.pyro import ReweightedWakeSleep
from sbn_ppl.models import pyro_sbn
from sbn_ppl.engine.runner import runner_for

BATCH = 100
N_DATA = 1000


def make_problem(arch: str, seed: int = 0):
    """Random weights of the net's widths (scale 0.1 generative, recognition as initialised)
    and random binary data, p(1) = 0.3."""
    params = SBNParams.init(arch, seed=seed, scale=0.1, guide=("recognition",))
    rng = np.random.default_rng(seed)
    data = (rng.random((N_DATA, params.architecture.sizes[0])) < 0.3).astype(np.float32)
    return params, data


def timed_round_robin(runners: dict, steps: dict, rounds: int) -> dict:
    """Median steps/s of each runner over ``rounds`` rounds; every round times every runner
    once, in turn, so a change in the shared machine's load hits all of them alike."""
    for name, run in runners.items():  # warm-up: compilation, first traces, allocator
        run(steps[name])
    rates = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(steps[name])
            rates[name].append(steps[name] / (time.perf_counter() - t0))
    return {name: statistics.median(r) for name, r in rates.items()}


# -- Pyro contenders -----------------------------------------------------------------------


def pyro_loop(objective, params: SBNParams, data: np.ndarray):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    theta = [pyro.param(k, torch.tensor(params[k])).unconstrained() for k in
             [k for k in params if k.startswith(("b_", "W_"))]]
    phi = [pyro.param(k, torch.tensor(params[k])).unconstrained() for k in params if k.startswith("q_")]
    opt_theta, opt_phi = torch.optim.Adam(theta, lr=1e-3), torch.optim.Adam(phi, lr=1e-3)
    batches = [torch.tensor(data[i:i + BATCH]) for i in range(0, len(data), BATCH)]

    def run(steps):
        for i in range(steps):
            objective.loss_and_grads(pyro_sbn.model, pyro_sbn.recognition_guide, params, batches[i % len(batches)])
            for opt in (opt_theta, opt_phi):
                opt.step()
                opt.zero_grad(set_to_none=True)

    return run


def _runner_loop(method, params, data, k):
    """The method as ``fit`` runs it: its backend's runner, the runner's batches."""
    run_ = runner_for(method, params, method.check_options({"k": k, "lr": 1e-3}), data, seed=0, batch_size=BATCH)
    done = [0]

    def run(steps):
        run_.run(done[0], steps)  # returns floats: waits for asynchronous (JAX) work
        done[0] += steps

    return run


def pyro_method_loop(params, data, k):
    return _runner_loop(get_method("rws", "pyro"), params, data, k)


def bare_torch_loop(params: SBNParams, data: np.ndarray, k: int):
    """RWS for a layered 2-hidden-layer SBN in plain torch: the floor for any Pyro path."""
    p = {name: torch.tensor(v, requires_grad=True) for name, v in params.items() if name != "sizes"}
    opt = torch.optim.Adam(list(p.values()), lr=1e-3)
    batches = [torch.tensor(data[i:i + BATCH]) for i in range(0, len(data), BATCH)]
    lp = lambda s, a: -torch.nn.functional.softplus(-(2 * s - 1) * a)  # noqa: E731

    def step(x):
        c1 = x @ p["q_W_0_1"] + p["q_b_1"]
        with torch.no_grad():
            h1 = torch.bernoulli(torch.sigmoid(c1).expand(k, *c1.shape))
        c2 = h1 @ p["q_W_1_2"] + p["q_b_2"]
        with torch.no_grad():
            h2 = torch.bernoulli(torch.sigmoid(c2))
        log_q = lp(h1, c1).sum(-1) + lp(h2, c2).sum(-1)
        log_p = (lp(h2, p["b_2"]).sum(-1) + lp(h1, h2 @ p["W_2_1"] + p["b_1"]).sum(-1)
                 + lp(x, h1 @ p["W_1_0"] + p["b_0"]).sum(-1))
        log_w = log_p - log_q.detach()
        lse = torch.logsumexp(log_w, 0)
        w = (log_w - lse).exp().detach()
        loss = -lse.sum() - (w * log_q).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def run(steps):
        for i in range(steps):
            step(batches[i % len(batches)])

    return run


# -- JAX contenders ------------------------------------------------------------------------


def numpyro_method_loop(params, data, k):
    return _runner_loop(get_method("rws", "numpyro"), params, data, k)


def numpyro_step_loop(params, data, k):
    opt = optax.adam(1e-3)
    step = jax.jit(lambda key, state, x: rws_jax.rws_step(key, state, x, arch=params.architecture, optimizer=opt,
                                                          k=k, insomnia=1.0))
    box = [rws_jax.init(params, opt), jax.random.PRNGKey(0)]
    batches = [jnp.asarray(data[i:i + BATCH]) for i in range(0, len(data), BATCH)]

    def run(steps):
        state, key = box
        for i in range(steps):
            key, sub = jax.random.split(key)
            state, info = step(sub, state, batches[i % len(batches)])
        jax.block_until_ready(state.params)
        box[:] = [state, key]

    return run


def bare_jax_loop(params: SBNParams, data: np.ndarray, k: int):
    """A hand-written jitted RWS step for a layered 2-hidden-layer SBN (dict of arrays, optax Adam)."""
    p0 = {name: jnp.asarray(v) for name, v in params.items() if name != "sizes"}
    opt = optax.adam(1e-3)
    lp = lambda s, a: -jax.nn.softplus(-(2 * s - 1) * a)  # noqa: E731
    sg = jax.lax.stop_gradient

    def loss(p, key, x):
        k1, k2 = jax.random.split(key)
        c1 = x @ p["q_W_0_1"] + p["q_b_1"]
        h1 = (jax.random.uniform(k1, (k,) + c1.shape) < jax.nn.sigmoid(c1)).astype(jnp.float32)
        c2 = h1 @ p["q_W_1_2"] + p["q_b_2"]
        h2 = (jax.random.uniform(k2, c2.shape) < jax.nn.sigmoid(c2)).astype(jnp.float32)
        log_q = lp(h1, c1).sum(-1) + lp(h2, c2).sum(-1)
        log_p = (lp(h2, p["b_2"]).sum(-1) + lp(h1, h2 @ p["W_2_1"] + p["b_1"]).sum(-1)
                 + lp(x, h1 @ p["W_1_0"] + p["b_0"]).sum(-1))
        log_w = log_p - sg(log_q)
        lse = jax.nn.logsumexp(log_w, 0)
        return -lse.mean() - (sg(jnp.exp(log_w - lse)) * log_q).sum(0).mean()

    @jax.jit
    def step(p, opt_state, key, x):
        g = jax.grad(loss)(p, key, x)
        updates, opt_state = opt.update(g, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    box = [p0, opt.init(p0), jax.random.PRNGKey(0)]
    batches = [jnp.asarray(data[i:i + BATCH]) for i in range(0, len(data), BATCH)]

    def run(steps):
        p, s, key = box
        for i in range(steps):
            key, sub = jax.random.split(key)
            p, s = step(p, s, sub, batches[i % len(batches)])
        jax.block_until_ready(p)
        box[:] = [p, s, key]

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument("--nets", default="64-32-16,784-200-200")
    parser.add_argument("--ks", default="5,50")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads (1: on a shared 2-core machine more threads spin and "
                             "run 10-100x slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    pyro.enable_validation(True)  # Pyro's default (stock and ours validate alike)
    print(f"# RWS benchmark: batch {BATCH}, Adam, insomnia 1; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, jax {jax.__version__} on {jax.devices()[0].platform}, "
          f"torch {torch.__version__}, pyro {pyro.__version__}")
    print("| net | K | contender | steps/s | data-point-particles/s |")
    print("|---|---|---|---|---|")
    for arch in args.nets.split(","):
        params, data = make_problem(arch)
        for k in (int(v) for v in args.ks.split(",")):
            heavy = params.architecture.sizes[0] > 100
            steps = (2 if args.quick else 10) if heavy else (10 if args.quick else 40)
            if heavy and k >= 50:
                steps = max(2, steps // 3)
            contenders = {
                "stock-pyro": lambda: pyro_loop(pyro.infer.ReweightedWakeSleep(num_particles=k, max_plate_nesting=2),
                                                params, data),
                "ours-pyro": lambda: pyro_loop(ReweightedWakeSleep(num_particles=k, max_plate_nesting=2), params, data),
                "ours-pyro-minibatch": lambda: pyro_method_loop(params, data, k),
                "bare-torch": lambda: bare_torch_loop(params, data, k),
                "ours-numpyro": lambda: numpyro_method_loop(params, data, k),
                "ours-numpyro-step": lambda: numpyro_step_loop(params, data, k),
                "bare-jax": lambda: bare_jax_loop(params, data, k),
            }
            runners = {name: make() for name, make in contenders.items()}
            jax_side = {name: "jax" in name or "numpyro" in name for name in runners}
            rates = timed_round_robin(runners, {name: steps * (10 if jax_side[name] else 1) for name in runners},
                                      rounds=args.rounds)
            for name, rate in rates.items():
                print(f"| {arch} | {k} | {name} | {rate:.1f} | {rate * BATCH * k:,.0f} |", flush=True)
            print(f"| {arch} | {k} | **ratios** | ours-pyro / stock {rates['ours-pyro'] / rates['stock-pyro']:.2f}; "
                  f"ours-numpyro / stock {rates['ours-numpyro'] / rates['stock-pyro']:.1f}; "
                  f"bare-jax / ours-numpyro {rates['bare-jax'] / rates['ours-numpyro']:.2f} | |", flush=True)


if __name__ == "__main__":
    main()
