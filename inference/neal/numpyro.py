"""Neal's learning rule in JAX, our incremental Gibbs sweep as the sampler (the math: this
folder's ``__init__``; the twin: ``pyro.py``; the same rule with a stock sampler: ``discrete_hmc_gibbs.py``).

Own tricks: the chains are boolean ``(C, N, n_l)`` arrays, one per hidden layer; a step gathers
the batch's by ``batch.index``, runs the sweeps of :mod:`sbn_ppl.inference.shared.gibbs.numpyro`
and scatters them back, all jittable (the runner ``lax.scan``\\ s it); ``data_axes`` splits the
chains over the devices along the training cases.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax, random

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.inference.shared.gibbs import numpyro as gibbs_jax
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.models import numpyro_sbn
from sbn_ppl.base.optimizers import optax_optimizer
from sbn_ppl.base.params import SBNParams


class NealState(NamedTuple):
    """``params``: the generative SBN parameters (a pytree, no guide); ``opt_state``: the
    optimiser's; ``chains[l - 1]``: the persistent states of ``h_l``, ``(chains, N_train,
    n_l)``, boolean."""

    params: SBNParams
    opt_state: Any
    chains: tuple


class NealInfo(NamedTuple):
    """``objective``: mean ``log p(x, h)`` over the batch's chain states after the sweeps
    (nats per data point; it tracks, but is not, ``log p(x)``); ``flip_rate``: fraction of
    hidden units that changed in the last sweep."""

    objective: jax.Array
    flip_rate: jax.Array


def gradient(params: SBNParams, x, hidden):
    """``(mean log p(x, h), its gradient in the generative parameters)`` at the states
    ``hidden`` (each ``(*batch, n_l)``), averaged over the batch: Neal's learning signal."""
    arch = params.architecture

    def mean_log_joint(theta):
        return jnp.mean(numpyro_sbn.log_joint(arch, theta, gibbs_jax._layers(x, hidden)))

    return jax.value_and_grad(mean_log_joint)(params)


def advance_chains(key, params: SBNParams, x, hidden: tuple, sweeps: int):
    """``sweeps`` Gibbs sweeps of ``p(h | x)`` from the states ``hidden`` (each ``(*batch,
    n_l)``; ``x`` broadcastable to ``(*batch, D)``): the new :class:`GibbsState` and the
    last sweep's :class:`GibbsInfo`. Sweep ``i`` uses the key ``fold_in(key, i)``."""
    state = gibbs_jax.GibbsState(tuple(hidden))
    _, info_shape = jax.eval_shape(gibbs_jax.step, key, state, params, x)
    info0 = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), info_shape)

    def sweep(i, carry):
        return gibbs_jax.step(random.fold_in(key, i), carry[0], params, x)

    return lax.fori_loop(0, sweeps, sweep, (state, info0))


def init(key, params: SBNParams, train, optimizer: optax.GradientTransformation, num_chains: int) -> NealState:
    """Weights from ``params`` (its generative part; a guide, if any, is dropped), the
    ``optimizer``'s state, and ``num_chains`` persistent chains per row of ``train`` ``(N, D)``,
    drawn from the prior ``p(h)``. ``train`` is checked (binary, no NaN, the model's width) as
    by :func:`gibbs_jax.init`."""
    theta = jax.tree_util.tree_map(jnp.asarray, params.generative())
    hidden = gibbs_jax.init(key, theta, train, num_chains=num_chains).hidden
    return NealState(theta, optimizer.init(theta), tuple(h.astype(bool) for h in hidden))


def neal_step(key, state: NealState, batch: Batch, *, optimizer: optax.GradientTransformation, sweeps: int):
    """One learning step on ``batch``: advance the chains of ``batch.index`` by ``sweeps``
    sweeps, then step up the batch mean of ``grad log p(x, h)`` at the new states.

    :param key: PRNG key of the sweeps.
    :param state: :class:`NealState`.
    :param batch: the training indices ``(B,)`` and their rows ``(B, D)``.
    :param optimizer: an optax transformation (it descends ``-grad``); ``sweeps``: per step.
    :returns: ``(state, NealInfo)``.
    """
    hidden = tuple(h[:, batch.index].astype(batch.x.dtype) for h in state.chains)
    gibbs, info = advance_chains(key, state.params, batch.x, hidden, sweeps)
    objective, grads = gradient(state.params, batch.x, gibbs.hidden)
    # optax minimises: give it -grad to step up log p(x, h)
    updates, opt_state = optimizer.update(jax.tree_util.tree_map(jnp.negative, grads), state.opt_state,
                                          state.params)
    chains = tuple(ch.at[:, batch.index].set(h.astype(bool)) for ch, h in zip(state.chains, gibbs.hidden))
    new = NealState(optax.apply_updates(state.params, updates), opt_state, chains)
    return new, NealInfo(objective, jnp.mean(info.flip_rate))


def get_params(state: NealState) -> SBNParams:
    """The current generative parameters (Gibbs trains no guide)."""
    arch = state.params.architecture
    return SBNParams.from_arrays(arch, {k: v for k, v in state.params.items() if k != "sizes"})


def data_axes(state: NealState):
    """The persistent chains are kept per training case (axis 1 of ``(chains, N_train, n_l)``):
    split over the devices; the weights and the optimiser's state are replicated."""
    return state._replace(params=None, opt_state=None, chains=tuple(1 for _ in state.chains))


def build(arch: Architecture, options: dict) -> Kernel:
    """Neal's rule with our incremental Gibbs sweep (JAX), the ``"gibbs"`` method, for ``arch``
    and the checked ``options`` (``lr``, ``optimizer``, ``lr_half_life``, ``sweeps``,
    ``chains``). ``info``: :class:`NealInfo`. No bound on new data and no guide: score with
    exact enumeration or AIS (or a recognition network fitted post hoc)."""
    optimizer = optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"],
                                options["lr_schedule"])
    sweeps = int(options["sweeps"])

    def init_(key, params: SBNParams, train):
        return init(key, params, train, optimizer, options["chains"])

    def step(key, state: NealState, batch: Batch):
        return neal_step(key, state, batch, optimizer=optimizer, sweeps=sweeps)

    return Kernel(init_, step, get_params, None, data_axes)
