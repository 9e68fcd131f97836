"""Neal's (1992) learning rule for an SBN in JAX: persistent Gibbs chains, then a gradient step.

The gradient of the data log-likelihood is a posterior expectation (the README, "The methods")::

    d log p(x) / d theta = E_{p(h | x)} [ d log p(x, h) / d theta ]

Neal keeps one persistent Gibbs chain per training case (here ``chains`` per case). A
learning step on the runner's batch (training indices ``batch.index``, rows ``batch.x``)
advances those cases' chains by ``sweeps`` sweeps of
:func:`sbn_ppl.inference.shared.gibbs.numpyro.step` under the current weights ``theta``, then
moves ``theta`` up the mean over the batch and its chains of ``grad log p(x_n, h_nc)`` at
the new chain states, with an optax optimiser::

    h_nc <- sweeps Gibbs sweeps of p(h | x_n, theta) from h_nc     (n in the batch, c <= chains)
    theta <- theta + optimizer( (1 / (B C)) sum_{n, c} grad_theta log p(x_n, h_nc) )

The chains of the other training cases wait, frozen, for their next batch.

* :func:`init_state`, :func:`step`, :func:`get_params`: the method's pure functions
  (``step`` is jittable: the runner ``lax.scan``\\ s it); :func:`gradient`: the learning
  signal at given states; :func:`advance_chains`: the sweeps.
* :func:`method`: the ``"gibbs"`` :class:`~sbn_ppl.base.methods.Method` (NumPyro backend).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax, random

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.inference.shared.gibbs import numpyro as gibbs_jax
from sbn_ppl.inference.neal import GIBBS_OPTIONS
from sbn_ppl.base.methods import Batch, Method, Static
from sbn_ppl.models import numpyro_sbn
from sbn_ppl.base.optimizers import optax_optimizer
from sbn_ppl.base.params import SBNParams


class Config(NamedTuple):
    """What a jitted step needs to know (static: hashable, carried in the state)."""

    arch: Architecture
    optimizer: optax.GradientTransformation
    sweeps: int


class NealState(NamedTuple):
    """``params``: the generative SBN parameters (a pytree, no guide); ``opt_state``: the
    optimiser's; ``chains[l - 1]``: the persistent states of ``h_l``, ``(chains, N_train,
    n_l)``, boolean; ``config``: :class:`Config` (static)."""

    params: SBNParams
    opt_state: Any
    chains: tuple
    config: Static


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


def init_state(key, params: SBNParams, options: dict, train) -> NealState:
    """Weights from ``params`` (its generative part; a guide, if any, is dropped), the
    optimiser from ``options`` (``lr``, ``optimizer``, ``sweeps``, ``chains``, checked), and
    ``chains`` persistent chains per row of ``train`` ``(N, D)``, drawn from the prior ``p(h)``.
    ``train`` is checked (binary, no NaN, the model's width) as by :func:`gibbs_jax.init`."""
    theta = jax.tree_util.tree_map(jnp.asarray, params.generative())
    hidden = gibbs_jax.init(key, theta, train, num_chains=options["chains"]).hidden
    optimizer = optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"])
    config = Config(params.architecture, optimizer, int(options["sweeps"]))
    return NealState(theta, optimizer.init(theta), tuple(h.astype(bool) for h in hidden), Static(config))


def step(key, state: NealState, batch: Batch):
    """One learning step on ``batch``: advance the chains of ``batch.index`` by ``sweeps``
    sweeps, then step up the batch mean of ``grad log p(x, h)`` at the new states.

    :param key: PRNG key of the sweeps.
    :param state: :class:`NealState`.
    :param batch: the training indices ``(B,)`` and their rows ``(B, D)``.
    :returns: ``(state, NealInfo)``.
    """
    c = state.config.value
    hidden = tuple(h[:, batch.index].astype(batch.x.dtype) for h in state.chains)
    gibbs, info = advance_chains(key, state.params, batch.x, hidden, c.sweeps)
    objective, grads = gradient(state.params, batch.x, gibbs.hidden)
    # optax minimises: give it -grad to step up log p(x, h)
    updates, opt_state = c.optimizer.update(jax.tree_util.tree_map(jnp.negative, grads), state.opt_state,
                                            state.params)
    chains = tuple(ch.at[:, batch.index].set(h.astype(bool)) for ch, h in zip(state.chains, gibbs.hidden))
    new = state._replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state, chains=chains)
    return new, NealInfo(objective, jnp.mean(info.flip_rate))


def get_params(state: NealState) -> SBNParams:
    """The current generative parameters (Gibbs trains no guide)."""
    arch = state.config.value.arch
    return SBNParams.from_arrays(arch, {k: v for k, v in state.params.items() if k != "sizes"})


def data_axes(state: NealState):
    """The persistent chains are kept per training case (axis 1 of ``(chains, N_train, n_l)``):
    split over the devices; the weights and the optimiser's state are replicated."""
    return state._replace(params=None, opt_state=None, chains=tuple(1 for _ in state.chains))


def method() -> Method:
    """Neal's rule with our incremental Gibbs sweep (JAX), as the ``"gibbs"`` method.

    ``info``: :class:`NealInfo`. No bound on new data and no guide: score with exact
    enumeration or AIS (or a recognition network fitted post hoc).
    """
    return Method(
        "gibbs", "numpyro", init_state, step, get_params, guide=None, bound=None, options=GIBBS_OPTIONS,
        data_axes=data_axes,
        description="Neal (1992): persistent single-unit Gibbs chains (one per training case x chains), "
                    "`sweeps` sweeps of the batch's chains then an optax step up grad log p(x, h). Objective: "
                    "mean log p(x, h) at the chain states. No guide: score with exact or AIS.",
    )
