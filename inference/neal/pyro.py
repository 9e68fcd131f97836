"""Neal's (1992) learning rule for an SBN in torch (the Pyro backend of ``"gibbs"``).

The same rule as :mod:`sbn_ppl.inference.neal.numpyro`: ``chains`` persistent Gibbs chains
per training case; a step on the runner's batch advances the chains of ``batch.index`` by
``sweeps`` sweeps of :func:`sbn_ppl.inference.shared.gibbs.pyro.step`, then takes a
``torch.optim`` step up the batch mean of ``grad log p(x, h)`` at the new states,
``log p(x, h)`` being :func:`sbn_ppl.models.pyro_sbn.log_joint`, the Pyro model's density::

    d log p(x) / d theta = E_{p(h | x)} [ d log p(x, h) / d theta ]

``step`` returns a new state and leaves its inputs alone, except for the one documented
in-place update of torch: ``optimizer.step()`` changes the weight tensors (and the
optimiser's own state), which the old and the new state share.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from sbn_ppl.inference.shared.gibbs import pyro as gibbs_torch
from sbn_ppl.inference.neal import GIBBS_OPTIONS
from sbn_ppl.base.methods import Batch, Method
from sbn_ppl.models import pyro_sbn
from sbn_ppl.base.optimizers import torch_optimizer
from sbn_ppl.base.params import SBNParams, generative_keys


class NealState(NamedTuple):
    """``params``: the generative parameters, leaf tensors that require grad (updated in
    place by ``optimizer``); ``optimizer``: a ``torch.optim.Optimizer`` over them;
    ``chains[l - 1]``: the persistent states of ``h_l``, ``(chains, N_train, n_l)``, boolean
    (never changed in place: each step makes new tensors, a quarter of the bytes of float32
    to copy); ``sweeps``: sweeps per step."""

    params: gibbs_torch.TorchParams
    optimizer: torch.optim.Optimizer
    chains: tuple
    sweeps: int


class NealInfo(NamedTuple):
    """``objective``: mean ``log p(x, h)`` over the batch's chain states after the sweeps
    (nats per data point); ``flip_rate``: fraction of hidden units changed in the last sweep."""

    objective: float
    flip_rate: float


def gradient(params: gibbs_torch.TorchParams, x, hidden):
    """``(mean log p(x, h), its gradient)`` at the states ``hidden`` (each ``(*batch, n_l)``),
    averaged over the batch: Neal's learning signal. ``params.theta`` must require grad."""
    objective = pyro_sbn.log_joint(params.architecture, params.theta, gibbs_torch._layers(x, hidden)).mean()
    grads = torch.autograd.grad(objective, list(params.theta.values()))
    return objective.detach(), dict(zip(params.theta, grads))


def init_state(key: int, params: SBNParams, options: dict, train) -> NealState:
    """Weights from ``params`` (its generative part), a ``torch.optim`` optimiser from
    ``options`` (checked), and ``chains`` persistent chains per row of ``train`` ``(N, D)``
    drawn from the prior ``p(h)`` with a generator seeded by ``key``. ``train`` is checked
    (binary, no NaN, the model's width) as by :func:`gibbs_torch.init`."""
    arch = params.architecture
    theta = {k: torch.tensor(np.asarray(params[k], dtype=np.float32), requires_grad=True)
             for k in generative_keys(arch)}
    p = gibbs_torch.TorchParams(arch, theta)
    generator = torch.Generator().manual_seed(int(key))
    hidden = gibbs_torch.init(generator, p, torch.as_tensor(train), num_chains=options["chains"]).hidden
    optimizer = torch_optimizer(options["optimizer"], options["lr"], options["lr_half_life"])(list(theta.values()))
    return NealState(p, optimizer, tuple(h.bool() for h in hidden), int(options["sweeps"]))


def step(key: int, state: NealState, batch: Batch):
    """One learning step on ``batch``: advance the chains of ``batch.index`` by ``sweeps``
    sweeps (randomness from a generator seeded by ``key``), then the optimiser's step up the
    batch mean of ``grad log p(x, h)``. Returns ``(new state, NealInfo)``."""
    generator = torch.Generator().manual_seed(int(key))
    index = torch.as_tensor(batch.index, dtype=torch.long)
    x = torch.as_tensor(batch.x)
    arch = state.params.architecture
    frozen = gibbs_torch.TorchParams(arch, {k: v.detach() for k, v in state.params.theta.items()})
    gibbs = gibbs_torch.GibbsState(tuple(c[:, index].float() for c in state.chains))
    for _ in range(state.sweeps):
        gibbs, info = gibbs_torch.step(generator, gibbs, frozen, x)
    objective, grads = gradient(state.params, x, gibbs.hidden)
    for name, value in state.params.theta.items():
        value.grad = -grads[name]  # the optimiser minimises: step down -log p(x, h)
    state.optimizer.step()
    chains = tuple(c.index_copy(1, index, h.bool()) for c, h in zip(state.chains, gibbs.hidden))  # out of place
    return state._replace(chains=chains), NealInfo(float(objective), float(info.flip_rate.mean()))


def get_params(state: NealState) -> SBNParams:
    """The current generative parameters (Gibbs trains no guide)."""
    p = state.params
    return SBNParams({"sizes": np.asarray(p.architecture.sizes),
                      **{k: v.detach().numpy().copy() for k, v in p.theta.items()}}, p.architecture.connectivity)


def method() -> Method:
    """Neal's rule with our incremental Gibbs sweep (torch), as the ``"gibbs"`` method."""
    return Method(
        "gibbs", "pyro", init_state, step, get_params, guide=None, bound=None, options=GIBBS_OPTIONS,
        description="Neal (1992): persistent single-unit Gibbs chains (one per training case x chains), "
                    "`sweeps` sweeps of the batch's chains then a torch.optim step up grad log p(x, h). "
                    "Objective: mean log p(x, h) at the chain states. No guide: score with exact or AIS.",
    )
