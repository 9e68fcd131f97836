"""Neal's learning rule with NumPyro's stock ``DiscreteHMCGibbs`` as the posterior sampler
(the math: this folder's ``__init__``; the twin with our incremental sweep: ``numpyro.py``).

Own tricks: the method ``"numpyro-discrete-gibbs"``, the generic reference for our sweep, one
persistent chain per training case. One sample of ``DiscreteHMCGibbs(NUTS(model))`` is one
sweep over every flat discrete coordinate (every hidden unit of every case of the batch) in
a random order, each drawn from its exact conditional by a Metropolised Gibbs proposal (for
a binary unit: the exact Gibbs update). The kernel runs on
``numpyro_sbn.model(..., unit_plates=True)``, the model with a plate over the units of each
layer (elementwise Bernoulli sites: the stock kernel cannot enumerate a ``.to_event(1)``
site), with its ``numpyro.param`` sites hidden from the kernel, so that every sweep uses
the current weights (the kernel would otherwise keep the values it saw at ``init``).

It re-evaluates the whole model for every unit it updates, so a sweep costs O(hidden units
x edges x batch): small nets only. Its step is not jittable as a whole (the runner loops it
in Python); the sweeps and the gradient step are each jitted.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from numpyro import handlers

from sbn_ppl.base.architecture import Architecture, site_name
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.base.optimizers import optax_optimizer
from sbn_ppl.inference.neal import numpyro as neal_jax
from sbn_ppl.models import numpyro_sbn
from sbn_ppl.base.params import SBNParams


def _is_param(site) -> bool:
    return site["type"] == "param"


#: The NumPyro SBN with per-unit plates (what ``DiscreteHMCGibbs`` needs) and its parameter
#: sites hidden from the kernel: the weights are read from ``params`` at every evaluation.
stock_model = handlers.block(functools.partial(numpyro_sbn.model, unit_plates=True), hide_fn=_is_param)


def stock_kernel(rng_key, params: SBNParams, x, hidden):
    """NumPyro's stock ``DiscreteHMCGibbs(NUTS(stock_model))`` and its initial state for
    data ``x`` ``(n, D)`` at the hidden states ``hidden`` (each ``(n, n_l)``)."""
    from numpyro.infer import NUTS, DiscreteHMCGibbs

    kernel = DiscreteHMCGibbs(NUTS(stock_model))
    names = [site_name(l) for l in range(1, params.architecture.num_layers + 1)]
    return kernel, kernel.init(rng_key, 0, dict(zip(names, hidden)), (params, x), {})


@functools.partial(jax.jit, static_argnames=("kernel", "sweeps"))
def stock_sweeps(kernel, kernel_state, key, params: SBNParams, x, hidden, *, sweeps: int):
    """``sweeps`` samples of the stock kernel started from ``hidden`` (each ``(n, n_l)``)
    under ``params`` for data ``x``, with randomness from ``key``: ``(kernel_state, hidden)``.
    ``kernel_state`` (from :func:`stock_kernel`, same shapes) gives the state's structure;
    its values, its keys and the discrete block's cached potential energy are replaced
    (``refresh``) before sampling."""
    names = [site_name(l) for l in range(1, params.architecture.num_layers + 1)]
    z = dict(zip(names, hidden))
    discrete = kernel.blocks[0][0]
    block = kernel_state.block_states[0]._replace(z=z, rng_key=key)
    block = discrete.refresh(block, (params, x), {})
    kernel_state = kernel_state._replace(z=z, block_states=(block,) + tuple(kernel_state.block_states[1:]),
                                         rng_key=jax.random.fold_in(key, 1))
    for _ in range(sweeps):
        kernel_state = kernel.sample(kernel_state, (params, x), {})
    return kernel_state, tuple(kernel_state.z[n] for n in names)


@functools.partial(jax.jit, static_argnames=("optimizer",))
def _learning_update(params, opt_state, chains, index, x, hidden, *, optimizer):
    objective, grads = neal_jax.gradient(params, x, hidden)
    updates, opt_state = optimizer.update(jax.tree_util.tree_map(jnp.negative, grads), opt_state, params)
    chains = tuple(c.at[0, index].set(h.astype(bool)) for c, h in zip(chains, hidden))
    return optax.apply_updates(params, updates), opt_state, chains, objective


class StockState(NamedTuple):
    """As :class:`~sbn_ppl.inference.neal.numpyro.NealState` (one chain per case:
    ``chains[l - 1]`` is ``(1, N_train, n_l)``), plus ``kernel_state``: the stock kernel's
    state for a batch (``None`` before the first step, which sets it up for the batch size)."""

    params: SBNParams
    opt_state: Any
    chains: tuple
    kernel_state: Any


class StockInfo(NamedTuple):
    objective: jax.Array  # mean log p(x, h) over the batch's chain states after the sweeps


def build(arch: Architecture, options: dict) -> Kernel:
    """Neal's rule with NumPyro's stock ``DiscreteHMCGibbs`` as the posterior sampler, for
    ``arch`` and the checked ``options`` (as ``gibbs``'s, one chain per case). Every
    single-unit update re-evaluates the whole model (all units of the batch), so a sweep costs
    O(hidden units x edges x batch): feasible only for small nets and batches (e.g. 64-32-16,
    batch 10). ``info``: :class:`StockInfo`."""
    from numpyro.infer import NUTS, DiscreteHMCGibbs

    optimizer = optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"],
                                options["lr_schedule"])
    sweeps = int(options["sweeps"])
    kernel = DiscreteHMCGibbs(NUTS(stock_model))
    names = [site_name(l) for l in range(1, arch.num_layers + 1)]

    def init(key, params: SBNParams, train) -> StockState:
        base = neal_jax.init(key, params, train, optimizer, 1)
        return StockState(base.params, base.opt_state, base.chains, None)

    def step(key, state: StockState, batch: Batch):
        """``sweeps`` samples of the stock kernel from the chains of ``batch.index``, then the
        optimiser's step up ``grad log p(x, h)`` there."""
        hidden = tuple(ch[0, batch.index].astype(batch.x.dtype) for ch in state.chains)
        kernel_state = state.kernel_state
        if kernel_state is None:  # the kernel's state for this batch size (the runner's batches all have one)
            kernel_state = kernel.init(jax.random.fold_in(key, 2), 0, dict(zip(names, hidden)),
                                       (state.params, batch.x), {})
        kernel_state, hidden = stock_sweeps(kernel, kernel_state, key, state.params, batch.x, hidden, sweeps=sweeps)
        params, opt_state, chains, objective = _learning_update(state.params, state.opt_state, state.chains,
                                                                batch.index, batch.x, hidden, optimizer=optimizer)
        return StockState(params, opt_state, chains, kernel_state), StockInfo(objective)

    return Kernel(init, step, neal_jax.get_params)
