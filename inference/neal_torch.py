"""Neal's (1992) learning rule for an SBN in torch (the Pyro backend of ``"gibbs"``).

The same rule as :mod:`sbn_ppl.inference.neal_jax`: persistent Gibbs chains
(``chains`` per training case, advanced by :func:`sbn_ppl.inference.gibbs_torch.step`),
then a ``torch.optim`` step (SGD or Adam) up ``grad log p(x, h)`` at the chain states,
``log p(x, h)`` being :func:`sbn_ppl.models.pyro_sbn.log_joint`, the Pyro model's density::

    d log p(x) / d theta = E_{p(h | x)} [ d log p(x, h) / d theta ]
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from sbn_ppl.methods import Method
from sbn_ppl.models import pyro_sbn
from sbn_ppl.params import SBNParams, generative_keys

from . import gibbs_torch

DEFAULTS = {"lr": 0.003, "optimizer": "adam", "sweeps": 1, "chains": 1, "batch_size": 100}
OPTIMIZERS = ("sgd", "adam")


class NealState(NamedTuple):
    """``params``: generative parameters (leaf tensors, ``requires_grad``); ``chains[l - 1]``:
    persistent states of ``h_l``, ``(chains, N_train, n_l)``; ``generator``: the randomness."""

    params: gibbs_torch.TorchParams
    optimizer: torch.optim.Optimizer
    chains: tuple
    generator: torch.Generator


def make_optimizer(name: str, lr: float, tensors) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    if not lr > 0:
        raise ValueError(f"the learning rate must be positive, got {lr}")
    return torch.optim.SGD(tensors, lr=lr) if name == "sgd" else torch.optim.Adam(tensors, lr=lr)


def init(params: SBNParams, x_train: torch.Tensor, *, seed: int = 0, optimizer: str = "adam", lr: float = 0.003,
         chains: int = 1) -> NealState:
    """Weights from ``params`` (generative part), chains drawn from the prior ``p(h)``."""
    theta = {k: torch.tensor(params[k], requires_grad=True) for k in generative_keys(params.architecture)}
    p = gibbs_torch.TorchParams(params.architecture, theta)
    generator = torch.Generator().manual_seed(int(seed))
    hidden = gibbs_torch.init(generator, p, x_train, num_chains=chains).hidden
    return NealState(p, make_optimizer(optimizer, lr, list(theta.values())), hidden, generator)


def gradient(params: gibbs_torch.TorchParams, x, hidden):
    """``(mean log p(x, h), its gradient)`` at the states ``hidden`` (each ``(*batch, n_l)``),
    averaged over the batch: Neal's learning signal. ``params.theta`` must require grad."""
    objective = pyro_sbn.log_joint(params.architecture, params.theta, gibbs_torch._layers(x, hidden)).mean()
    grads = torch.autograd.grad(objective, list(params.theta.values()))
    return objective.detach(), dict(zip(params.theta, grads))


def step(state: NealState, x_train: torch.Tensor, *, sweeps: int, batch_size: int) -> dict:
    """One learning step (in place on ``state``'s tensors and optimiser): advance the chains
    of a mini-batch of ``batch_size`` cases by ``sweeps`` sweeps, then step up the batch
    mean of ``grad log p(x, h)``. Returns ``{"objective": mean log p(x, h), "flip_rate": ...}``."""
    rows = state.chains[0].shape[0] * batch_size
    with gibbs_torch.threads_for(rows * max(state.params.architecture.sizes)):
        return _step(state, x_train, sweeps, batch_size)


def _step(state, x_train, sweeps, batch_size):
    idx = torch.randperm(x_train.shape[0], generator=state.generator)[:batch_size]
    x = x_train[idx]
    frozen = gibbs_torch.TorchParams(state.params.architecture, {k: v.detach() for k, v in state.params.theta.items()})
    gibbs = gibbs_torch.GibbsState(tuple(c[:, idx] for c in state.chains))
    for _ in range(sweeps):
        gibbs, info = gibbs_torch.step(state.generator, gibbs, frozen, x)
    objective, grads = gradient(state.params, x, gibbs.hidden)
    for name, value in state.params.theta.items():
        value.grad = -grads[name]  # the optimiser minimises: step down -log p(x, h)
    state.optimizer.step()
    for c, h in zip(state.chains, gibbs.hidden):
        c[:, idx] = h
    return {"objective": float(objective), "flip_rate": float(info.flip_rate.mean())}


class _Run(NamedTuple):
    state: NealState
    x: torch.Tensor
    sweeps: int
    batch_size: int


def _init(params: SBNParams, train, seed: int = 0, *, lr, optimizer, sweeps, chains, batch_size) -> _Run:
    for name, value in (("sweeps", sweeps), ("chains", chains), ("batch_size", batch_size)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    x = torch.as_tensor(np.asarray(train, dtype=np.float32))
    state = init(params, x, seed=seed, optimizer=optimizer, lr=lr, chains=int(chains))
    return _Run(state, x, int(sweeps), min(int(batch_size), x.shape[0]))


def _run(run: _Run, num_steps: int):
    info = {}
    for _ in range(int(num_steps)):
        info = step(run.state, run.x, sweeps=run.sweeps, batch_size=run.batch_size)
    return run, info


def _get_params(run: _Run) -> SBNParams:
    p = run.state.params
    return SBNParams({"sizes": np.asarray(p.architecture.sizes), **{k: v.detach().numpy() for k, v in p.theta.items()}},
                     p.architecture.connectivity)


def method() -> Method:
    """Neal's rule with our incremental Gibbs sweep (torch), as the ``"gibbs"`` method."""
    return Method(
        name="gibbs", backend="pyro", init=_init, run=_run, get_params=_get_params, guide=None,
        defaults=dict(DEFAULTS),
        description="Neal (1992): persistent single-unit Gibbs chains (one per training case x chains), "
                    "`sweeps` sweeps then a torch.optim step up grad log p(x, h) on a mini-batch. Objective: "
                    "mean log p(x, h) at the chain states. No guide: score with exact or AIS.",
    )
