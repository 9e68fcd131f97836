"""Neal's (1992) learning rule for an SBN in JAX: persistent Gibbs chains, then a gradient step.

The gradient of the data log-likelihood is a posterior expectation (DESIGN.md section 2)::

    d log p(x) / d theta = E_{p(h | x)} [ d log p(x, h) / d theta ]

Neal keeps one persistent Gibbs chain per training case (here ``chains`` per case). A
learning step takes a mini-batch of ``batch_size`` training cases, advances their
chains by ``sweeps`` sweeps of :func:`sbn_ppl.inference.gibbs_jax.step` under the
current weights, and moves the weights up ``grad log p(x, h)`` at the chain states,
averaged over the mini-batch and chains, with an optax optimiser (``"sgd"``/``"adam"``).

* :func:`init`, :func:`step`: the pure learning step, ``step(key, state, x_train) -> (state, info)``.
* :func:`method`: the ``"gibbs"`` :class:`~sbn_ppl.methods.Method` (NumPyro backend).
* :func:`stock_method`: ``"numpyro-discrete-gibbs"``, the same rule with NumPyro's own
  ``DiscreteHMCGibbs`` on :func:`numpyro_sbn.model` as the posterior sampler (the generic
  reference; it re-evaluates the whole model for every unit update, so small nets only).
"""
from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax, random

from sbn_ppl.methods import Method
from sbn_ppl.models import numpyro_sbn
from sbn_ppl.params import SBNParams

from . import gibbs_jax

DEFAULTS = {"lr": 0.003, "optimizer": "adam", "sweeps": 1, "chains": 1, "batch_size": 100}
OPTIMIZERS = ("sgd", "adam")


class NealState(NamedTuple):
    """``params``: generative SBN parameters (pytree); ``opt_state``: the optimiser's;
    ``chains[l - 1]``: the persistent states of ``h_l``, ``(chains, N_train, n_l)``."""

    params: SBNParams
    opt_state: Any
    chains: tuple
    rng_key: jax.Array


class NealInfo(NamedTuple):
    """``objective``: mean ``log p(x, h)`` over the mini-batch's chain states after the
    sweeps (nats per data point; tracks, but is not, ``log p(x)``); ``flip_rate``: fraction
    of hidden units that changed in the last sweep."""

    objective: jax.Array
    flip_rate: jax.Array


def check_optimizer(name: str, lr: float) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    if not lr > 0:
        raise ValueError(f"the learning rate must be positive, got {lr}")


def make_optimizer(name: str, lr) -> optax.GradientTransformation:
    """``optax.sgd(lr)`` or ``optax.adam(lr)`` (``lr`` may be a traced scalar)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    return optax.sgd(lr) if name == "sgd" else optax.adam(lr)


def check_options(sweeps, chains, batch_size) -> None:
    for name, value in (("sweeps", sweeps), ("chains", chains), ("batch_size", batch_size)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


def init(rng_key, params: SBNParams, x_train, optimizer: optax.GradientTransformation, chains: int = 1) -> NealState:
    """Weights from ``params`` (generative part), chains drawn from the prior ``p(h)``."""
    theta = jax.tree_util.tree_map(jnp.asarray, params.generative())
    x_train = jnp.asarray(x_train)
    hidden = gibbs_jax.init(rng_key, theta, x_train, num_chains=chains).hidden
    return NealState(theta, optimizer.init(theta), hidden, random.fold_in(rng_key, 1))


def gradient(params: SBNParams, x, hidden):
    """``(mean log p(x, h), its gradient in the generative parameters)`` at the states
    ``hidden`` (each ``(*batch, n_l)``), averaged over the batch: Neal's learning signal."""
    arch = params.architecture

    def mean_log_joint(theta):
        layers = gibbs_jax._layers(x, hidden)
        return jnp.mean(numpyro_sbn.log_joint(arch, theta, layers))

    return jax.value_and_grad(mean_log_joint)(params)


def step(rng_key, state: NealState, x_train, *, optimizer, sweeps: int, batch_size: int):
    """One learning step: advance a mini-batch's persistent chains, then step up ``grad log p(x, h)``.

    :param rng_key: PRNG key (mini-batch choice and the Gibbs sweeps).
    :param state: :class:`NealState`.
    :param x_train: the training cases ``(N, D)``.
    :param optimizer: an optax transformation (it minimises, so it is given ``-grad``).
    :param sweeps: Gibbs sweeps per learning step; ``batch_size``: training cases per step.
    """
    key_batch, key_sweep = random.split(rng_key)
    idx = random.choice(key_batch, x_train.shape[0], (batch_size,), replace=False)
    x = x_train[idx]
    gibbs = gibbs_jax.GibbsState(tuple(c[:, idx] for c in state.chains))

    def sweep(i, carry):
        g, _ = carry
        return gibbs_jax.step(random.fold_in(key_sweep, i), g, state.params, x)

    info0 = gibbs_jax.GibbsInfo(*(jnp.zeros(gibbs.hidden[0].shape[:-1]),) * 3)
    gibbs, info = lax.fori_loop(0, sweeps, sweep, (gibbs, info0))
    objective, grads = gradient(state.params, x, gibbs.hidden)
    updates, opt_state = optimizer.update(jax.tree_util.tree_map(jnp.negative, grads), state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    chains = tuple(c.at[:, idx].set(h) for c, h in zip(state.chains, gibbs.hidden))
    return NealState(params, opt_state, chains, state.rng_key), NealInfo(objective, jnp.mean(info.flip_rate))


# -- the Method ------------------------------------------------------------------------------


class _Run(NamedTuple):
    state: NealState
    x: jax.Array
    optimizer: str
    lr: jax.Array
    sweeps: int
    batch_size: int


@partial(jax.jit, static_argnames=("optimizer", "sweeps", "batch_size", "num_steps"))
def _run_steps(state, x, lr, *, optimizer, sweeps, batch_size, num_steps):
    optimizer = make_optimizer(optimizer, lr)  # lr traced: one compilation serves every lr

    def body(s, _):
        key, sub = random.split(s.rng_key)
        s, info = step(sub, s._replace(rng_key=key), x, optimizer=optimizer, sweeps=sweeps, batch_size=batch_size)
        return s, info

    return lax.scan(body, state, None, length=num_steps)


def _init(params: SBNParams, train, seed: int = 0, *, lr, optimizer, sweeps, chains, batch_size) -> _Run:
    check_options(sweeps, chains, batch_size)
    check_optimizer(optimizer, lr)
    x = jnp.asarray(np.asarray(train, dtype=np.float32))
    state = init(random.PRNGKey(seed), params, x, make_optimizer(optimizer, lr), int(chains))
    return _Run(state, x, optimizer, jnp.float32(lr), int(sweeps), min(int(batch_size), x.shape[0]))


def _run(run: _Run, num_steps: int):
    state, info = _run_steps(run.state, run.x, run.lr, optimizer=run.optimizer, sweeps=run.sweeps,
                             batch_size=run.batch_size, num_steps=int(num_steps))
    return run._replace(state=state), {"objective": float(jnp.mean(info.objective)),
                                       "flip_rate": float(jnp.mean(info.flip_rate))}


def _get_params(run) -> SBNParams:
    params = run.state.params
    return SBNParams({k: np.asarray(v) for k, v in params.items()}, params.architecture.connectivity)


def method() -> Method:
    """Neal's rule with our incremental Gibbs sweep (JAX), as the ``"gibbs"`` method."""
    return Method(
        name="gibbs", backend="numpyro", init=_init, run=_run, get_params=_get_params, guide=None,
        defaults=dict(DEFAULTS),
        description="Neal (1992): persistent single-unit Gibbs chains (one per training case x chains), "
                    "`sweeps` sweeps then an optax step up grad log p(x, h) on a mini-batch. Objective: "
                    "mean log p(x, h) at the chain states. No guide: score with exact or AIS.",
    )


# -- the stock sampler -----------------------------------------------------------------------


class _StockRun(NamedTuple):
    state: NealState
    x: jax.Array
    optimizer: str
    lr: jax.Array
    sweeps: int
    batch_size: int
    kernel: Any  # numpyro.infer.DiscreteHMCGibbs, initialised once
    kernel_state: Any


def stock_kernel(rng_key, params: SBNParams, x, hidden):
    """NumPyro's stock ``DiscreteHMCGibbs(NUTS(numpyro_sbn.model))`` and its initial state
    for data ``x`` ``(n, D)`` at the hidden states ``hidden`` (each ``(n, n_l)``)."""
    from numpyro.infer import NUTS, DiscreteHMCGibbs

    kernel = DiscreteHMCGibbs(NUTS(numpyro_sbn.model))
    names = [f"h{l}" for l in range(1, params.architecture.num_layers + 1)]
    return kernel, kernel.init(rng_key, 0, dict(zip(names, hidden)), (params, x), {})


@partial(jax.jit, static_argnames=("kernel", "sweeps"))
def stock_sweeps(kernel, kernel_state, params: SBNParams, x, hidden, *, sweeps: int):
    """``sweeps`` samples of the stock kernel (each one sweep over every flat discrete
    coordinate, in random order) started from ``hidden`` under ``params``; returns
    ``(kernel_state, hidden)``. The discrete block's cached potential energy is recomputed
    for the new states and weights (``refresh``) before sampling."""
    names = [f"h{l}" for l in range(1, params.architecture.num_layers + 1)]
    z = dict(zip(names, hidden))
    discrete = kernel.blocks[0][0]
    block = discrete.refresh(kernel_state.block_states[0]._replace(z=z), (params, x), {})
    kernel_state = kernel_state._replace(z=z, block_states=(block,) + tuple(kernel_state.block_states[1:]))
    for _ in range(sweeps):
        kernel_state = kernel.sample(kernel_state, (params, x), {})
    return kernel_state, tuple(kernel_state.z[n] for n in names)


def _stock_init(params, train, seed: int = 0, *, lr, optimizer, sweeps, chains, batch_size) -> _StockRun:
    if chains != 1:
        raise ValueError("numpyro-discrete-gibbs keeps one chain per training case (chains=1)")
    run = _init(params, train, seed, lr=lr, optimizer=optimizer, sweeps=sweeps, chains=1, batch_size=batch_size)
    idx = jnp.arange(run.batch_size)
    kernel, kernel_state = stock_kernel(random.fold_in(run.state.rng_key, 2), run.state.params, run.x[idx],
                                        tuple(c[0, idx] for c in run.state.chains))
    return _StockRun(*run, kernel, kernel_state)


@partial(jax.jit, static_argnames=("optimizer",))
def _stock_update(state, x, hidden, idx, lr, *, optimizer):
    optimizer = make_optimizer(optimizer, lr)
    objective, grads = gradient(state.params, x, hidden)
    updates, opt_state = optimizer.update(jax.tree_util.tree_map(jnp.negative, grads), state.opt_state, state.params)
    chains = tuple(c.at[:, idx].set(h[None]) for c, h in zip(state.chains, hidden))
    return state._replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                          chains=chains), objective


def _stock_run(run: _StockRun, num_steps: int):
    state, kernel_state, objective = run.state, run.kernel_state, np.nan
    for _ in range(int(num_steps)):
        key, sub = random.split(state.rng_key)
        idx = random.choice(sub, run.x.shape[0], (run.batch_size,), replace=False)
        x = run.x[idx]
        kernel_state, hidden = stock_sweeps(run.kernel, kernel_state, state.params, x,
                                            tuple(c[0, idx] for c in state.chains), sweeps=run.sweeps)
        state, objective = _stock_update(state._replace(rng_key=key), x, hidden, idx, run.lr, optimizer=run.optimizer)
    return run._replace(state=state, kernel_state=kernel_state), {"objective": float(objective)}


def stock_method() -> Method:
    """Neal's rule with NumPyro's stock ``DiscreteHMCGibbs`` as the posterior sampler."""
    return Method(
        name="numpyro-discrete-gibbs", backend="numpyro", init=_stock_init, run=_stock_run,
        get_params=_get_params, guide=None, defaults={**DEFAULTS, "batch_size": 10},
        description="Neal (1992) learning with NumPyro's stock DiscreteHMCGibbs on the NumPyro model as the "
                    "posterior sampler (persistent chains, one per case). Every single-unit update re-evaluates "
                    "the whole model (all units of the mini-batch), so a sweep costs O(hidden units x edges x "
                    "batch): feasible only for small nets and mini-batches (e.g. 64-32-16, batch 10).",
    )
