"""Neal's learning rule in torch, the Pyro backend of ``"gibbs"`` (the math: this folder's
``__init__``; the twin: ``numpyro.py``).

Own tricks: the sweeps are :func:`sbn_ppl.inference.shared.gibbs.pyro.step`, ``log p(x, h)``
is the Pyro model's density :func:`sbn_ppl.models.pyro_sbn.log_joint`, and the step is a
``torch.optim`` step. ``step`` returns a new state and leaves its inputs alone, except for
torch's one documented in-place update: ``optimizer.step()`` changes the weight tensors (and
the optimiser's own state), which the old and the new state share.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.base.optimizers import torch_optimizer
from sbn_ppl.base.params import SBNParams, generative_keys
from sbn_ppl.inference.shared.gibbs import pyro as gibbs_torch
from sbn_ppl.models import pyro_sbn


class NealState(NamedTuple):
    """``params``: the generative parameters, leaf tensors that require grad (updated in
    place by ``optimizer``); ``optimizer``: a ``torch.optim.Optimizer`` over them;
    ``chains[l - 1]``: the persistent states of ``h_l``, ``(chains, N_train, n_l)``, boolean
    (never changed in place: each step makes new tensors, a quarter of the bytes of float32
    to copy)."""

    params: gibbs_torch.TorchParams
    optimizer: torch.optim.Optimizer
    chains: tuple


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


def build(arch: Architecture, options: dict) -> Kernel:
    """Neal's rule with our incremental Gibbs sweep (torch), as the ``"gibbs"`` method: the
    ``torch.optim`` optimiser of ``options``, ``options["chains"]`` persistent chains per
    training case, ``options["sweeps"]`` sweeps per step. Gibbs trains no guide and has no
    bound of its own (score it with exact enumeration or AIS)."""
    make = torch_optimizer(options["optimizer"], options["lr"], options["lr_half_life"],
                           options["lr_schedule"])

    def init(key: int, params: SBNParams, train) -> NealState:
        """Weights from ``params`` (its generative part), and ``chains`` persistent chains per
        row of ``train`` ``(N, D)`` drawn from the prior ``p(h)`` with a generator seeded by
        ``key``. ``train`` is checked (binary, no NaN, the model's width) as by :func:`gibbs_torch.init`."""
        theta = {k: torch.tensor(np.asarray(params[k], dtype=np.float32), requires_grad=True)
                 for k in generative_keys(arch)}
        p = gibbs_torch.TorchParams(arch, theta)
        generator = torch.Generator().manual_seed(int(key))
        hidden = gibbs_torch.init(generator, p, torch.as_tensor(train), num_chains=options["chains"]).hidden
        return NealState(p, make(list(theta.values())), tuple(h.bool() for h in hidden))

    def step(key: int, state: NealState, batch: Batch):
        """One learning step on ``batch``: advance the chains of ``batch.index`` by ``sweeps``
        sweeps (randomness from a generator seeded by ``key``), then the optimiser's step up the
        batch mean of ``grad log p(x, h)``. Returns ``(new state, NealInfo)``."""
        generator = torch.Generator().manual_seed(int(key))
        index = torch.as_tensor(batch.index, dtype=torch.long)
        x = torch.as_tensor(batch.x)
        frozen = gibbs_torch.TorchParams(arch, {k: v.detach() for k, v in state.params.theta.items()})
        gibbs = gibbs_torch.GibbsState(tuple(c[:, index].float() for c in state.chains))
        for _ in range(options["sweeps"]):
            gibbs, info = gibbs_torch.step(generator, gibbs, frozen, x)
        objective, grads = gradient(state.params, x, gibbs.hidden)
        for name, value in state.params.theta.items():
            value.grad = -grads[name]  # the optimiser minimises: step down -log p(x, h)
        state.optimizer.step()
        chains = tuple(c.index_copy(1, index, h.bool()) for c, h in zip(state.chains, gibbs.hidden))  # out of place
        return state._replace(chains=chains), NealInfo(float(objective), float(info.flip_rate.mean()))

    def get_params(state: NealState) -> SBNParams:
        """The current generative parameters (Gibbs trains no guide)."""
        like = SBNParams({"sizes": np.asarray(arch.sizes), **state.params.theta}, arch.connectivity)
        return pyro_sbn.read_params(like, state.params.theta)

    return Kernel(init, step, get_params)
