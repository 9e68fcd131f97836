"""VIMCO as a Pyro ``ELBO`` on the user's model and guide traces (the math: this folder's
``__init__``; the twin: ``numpyro.py``).

Own tricks: the K particles are ``pyro.infer.ELBO``'s outer plate (``dim =
-(max_plate_nesting + 1)``), each site's log-probability reduced to one number per particle
and data point of the ``data_plate``; the loss ``-s sum_n S_n`` carries the data plate's
scale ``s`` (full size / subsample size, times any ``poutine.scale``), so a mini-batch is
unbiased for the full-data loss. Used like ``pyro.infer.ReweightedWakeSleep``:

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 3e-3}), loss=VIMCO(num_particles=5))
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from pyro.infer.enum import get_importance_trace

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.inference.shared.elbo.pyro import SurrogateELBO, densities
from sbn_ppl.inference.shared.gradient.pyro import (GradientState, gradient_kernel, loss_guide_gradient,
                                                    per_point_programs, store_start)
from sbn_ppl.inference.shared.particles.pyro import effective_sample_size, log_mean_exp
from sbn_ppl.models import pyro_sbn

# -- the estimator -------------------------------------------------------------------------


def leave_one_out_bounds(log_w: torch.Tensor) -> torch.Tensor:
    """``L_{-k} = log (1/K) (sum_{j != k} w_j + w^_{-k})`` for every k: ``(K, B)`` from ``(K, B)``.

    ``log w^_{-k} = m + (m - log w_k) / (K - 1)`` (``m``: the mean of ``log w``); row k of a
    ``(K, K, B)`` array is ``log w`` with entry k replaced by it, ``L_{-k}`` its logsumexp
    (exact in log space; the JAX twin is :func:`sbn_ppl.inference.vimco.numpyro.leave_one_out_bounds`).
    """
    k = log_w.shape[0]
    mean = log_w.mean(0)
    log_w_hat = mean + (mean - log_w) / (k - 1)
    eye = torch.eye(k, dtype=torch.bool, device=log_w.device).unsqueeze(-1)
    rows = torch.where(eye, log_w_hat.unsqueeze(1), log_w.unsqueeze(0))
    return torch.logsumexp(rows, dim=1) - math.log(k)


def vimco_surrogate(log_p: torch.Tensor, log_q: torch.Tensor):
    """The per-point surrogate ``S_n`` (``(B,)``, value ``L_n``, gradient VIMCO's) and
    ``log w`` (``(K, B)``, detached), from ``(K, B)`` densities (module docstring)."""
    log_w = log_p - log_q
    bound = log_mean_exp(log_w)
    signal = (bound.unsqueeze(0) - leave_one_out_bounds(log_w)).detach()
    score = (signal * (log_q - log_q.detach())).sum(0)  # zero in value
    return bound + score, log_w.detach()


class VIMCO(SurrogateELBO):
    """VIMCO's K-sample objective with leave-one-out baselines, weighting per data point:
    ``loss``, ``differentiable_loss`` and ``loss_and_grads`` (of ``-s sum_n S_n``, value ``-s
    sum_n L_n``; :class:`~sbn_ppl.inference.shared.elbo.pyro.SurrogateELBO`'s).

    :param int num_particles: K >= 2, samples ``h ~ q(. | x)`` per data point.
    :param max_plate_nesting: the model's own plate nesting (1 for our SBN's default layout,
        2 with ``unit_plates=True``); guessed by one run of the guide and model when left
        infinite. The particle plate sits at ``dim = -(max_plate_nesting + 1)``.
    :param str data_plate: the plate whose members are the data points; every sample site
        must sit inside it. ``None`` weights the whole batch as one observation.
    """

    def __init__(self, num_particles: int = 2, max_plate_nesting: float = float("inf"),
                 data_plate: str | None = "data"):
        if isinstance(num_particles, bool) or int(num_particles) != num_particles or num_particles < 2:
            raise ValueError(f"VIMCO needs num_particles >= 2 (each sample's baseline is built from the "
                             f"others), got {num_particles!r}")
        super().__init__(num_particles=int(num_particles), max_plate_nesting=max_plate_nesting,
                         data_plate=data_plate, vectorize_particles=True)

    def _get_trace(self, model, guide, args, kwargs):
        """The guide's trace (K particles; values detached: every site is scored, none
        reparameterised) and the model replayed on it (Pyro's ``get_importance_trace``)."""
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs, detach=True)

    def _densities(self, model, guide, args, kwargs):
        """``log p(x_n, h_nk)`` and ``log q(h_nk | x_n)`` as ``(K, B)``, and the data scale ``s``."""
        (model_trace, guide_trace), = self._get_traces(model, guide, args, kwargs)
        # the model's own nesting, without the particle plate
        return densities(model_trace, guide_trace, self.max_plate_nesting - 1, self.data_plate)

    def _surrogate(self, model, guide, args, kwargs):
        """``(sum_n S_n, log w (K, B), s)``: the loss is ``-s sum_n S_n``, its value ``-s sum_n L_n``."""
        log_p, log_q, scale = self._densities(model, guide, args, kwargs)
        surrogate, log_w = vimco_surrogate(log_p, log_q)
        return surrogate.sum(), log_w, scale

    def log_weights(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """``log w_nk = log p(x_n, h_nk) - log q(h_nk | x_n)``, ``h_nk ~ q``: ``(K, B)``, no gradient."""
        with torch.no_grad():
            log_p, log_q, _ = self._densities(model, guide, args, kwargs)
        return log_p - log_q


# -- the method ----------------------------------------------------------------------------


class PyroVIMCOInfo(NamedTuple):
    objective: float  # mean over the batch of the K-sample bound L_n
    ess: float  # mean over the batch of the per-point effective sample size (1..K)


def build(arch: Architecture, options: dict) -> Kernel:
    """VIMCO on the Pyro model and recognition guide, per-data-point weights, mini-batches in
    the data plate (one optimiser over theta and phi); ``info``: :class:`PyroVIMCOInfo`; its
    bound: the K-sample bound ``L_n`` with the method's K; ``guide_gradient``: one draw of the
    estimator in phi."""
    objective = VIMCO(num_particles=options["k"], max_plate_nesting=1)

    def update(seed: int, state: GradientState, batch: Batch):
        model, guide = per_point_programs(len(state.train))  # the loss: the batch mean of -S_n
        loss, log_w = objective._loss(model, guide, (state.like, state.train), {"subsample": batch.index})
        loss.backward()
        return PyroVIMCOInfo(-loss.item(), effective_sample_size(log_w).mean().item())

    def bound(state: GradientState, x):
        return log_mean_exp(objective.log_weights(pyro_sbn.model, pyro_sbn.recognition_guide, state.like, x))

    def loss(state: GradientState, model, guide, x):
        return objective._loss(model, guide, (state.like, x), {})[0]

    return gradient_kernel(arch, store_start(arch, options), update, bound,
                           guide_gradient=loss_guide_gradient(arch, loss))
