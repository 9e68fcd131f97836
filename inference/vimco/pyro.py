"""VIMCO for Pyro (Mnih & Rezende 2016): a Pyro ``ELBO`` used like ``pyro.infer.ReweightedWakeSleep``.

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 3e-3}), loss=VIMCO(num_particles=5))

:class:`VIMCO` runs the user's model and guide through Pyro traces, with the K particles
vectorised by an outer plate (``pyro.infer.ELBO``'s own, at ``dim = -(max_plate_nesting +
1)``), and reduces every site's log-probability to one number per particle and data point
of the ``data_plate``. Then, per data point ``n`` (never across the batch):

    log w_nk  = log p(x_n, h_nk) - log q(h_nk | x_n),   h_nk ~ q(. | x_n)
    L_n       = log (1/K) sum_k w_nk
    L_n,-k    = log (1/K) (sum_{j != k} w_nj + w^_n,-k),  log w^_n,-k = mean_{j != k} log w_nj
    loss      = -s sum_n S_n,   S_n = L_n + sum_k sg(L_n - L_n,-k) (log q_nk - sg(log q_nk))

``s`` is the data plate's scale (full size / subsample size, times any ``poutine.scale``),
so a mini-batch (``pyro.plate("data", N, subsample=...)`` or ``subsample_size``) is an
unbiased estimate of the full-data loss. ``S_n`` equals ``L_n`` in value (the loss is
``-s sum_n L_n``); its gradient is VIMCO's: ``sum_k w~_nk grad log p(x_n, h_nk)`` in theta,
``sum_k [(L_n - L_n,-k) - w~_nk] grad log q(h_nk | x_n)`` in phi, one objective for both.

:func:`vimco_method` wraps it as a :class:`sbn_ppl.base.methods.Method` on
:mod:`sbn_ppl.models.pyro_sbn` (the runner supplies the batches, the param-store scope
and the RNG).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.elbo import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.util import warn_if_nan

from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.inference.vimco import VIMCO_OPTIONS
from sbn_ppl.base.methods import Batch, Method
from sbn_ppl.models import pyro_sbn
from sbn_ppl.base.optimizers import torch_optimizer
from sbn_ppl.base.params import SBNParams, generative_keys, recognition_keys

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
    bound = torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])
    signal = (bound.unsqueeze(0) - leave_one_out_bounds(log_w)).detach()
    score = (signal * (log_q - log_q.detach())).sum(0)  # zero in value
    return bound + score, log_w.detach()


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """``(sum_k w_k)^2 / sum_k w_k^2`` per data point, in log space: ``(B,)`` from ``(K, B)``."""
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))


class VIMCO(ELBO):
    """VIMCO's K-sample objective with leave-one-out baselines, weighting per data point.

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
                         vectorize_particles=True)
        self.data_plate = data_plate

    def _get_trace(self, model, guide, args, kwargs):
        """The guide's trace (K particles; values detached: every site is scored, none
        reparameterised) and the model replayed on it (Pyro's ``get_importance_trace``)."""
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs, detach=True)

    def _per_point(self, trace):
        """A trace's unscaled log-probabilities summed over every dim but the particle and
        data dims: ``(K, B)`` (``(K, 1)`` with ``data_plate=None``), and the sites' one scale."""
        nesting, total, scale = self.max_plate_nesting, 0.0, None
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            log_p = site["unscaled_log_prob"]
            if site["mask"] is not None:
                log_p = scale_and_mask(log_p, 1.0, site["mask"])
            if log_p.dim() > nesting:
                raise ValueError(f"site {name!r} has more batch dims ({log_p.dim()}) than the plates allow "
                                 f"(max_plate_nesting {nesting - 1} + particles); enumeration is not supported")
            log_p = log_p.reshape((1,) * (nesting - log_p.dim()) + log_p.shape)
            data_dim = None  # counted from the right, like a plate's dim
            if self.data_plate is not None:
                frame = next((f for f in site["cond_indep_stack"] if f.name == self.data_plate), None)
                if frame is None:
                    raise ValueError(f"site {name!r} is outside the data plate {self.data_plate!r}: per-data-point "
                                     "weights need every sample site inside it (or data_plate=None)")
                data_dim = frame.dim
            others = tuple(d for d in range(-nesting + 1, 0) if d != data_dim)
            if others:
                log_p = log_p.sum(others)
            total = total + log_p.reshape(log_p.shape[0], -1)  # (K, B), or (K, 1) without a data plate
            site_scale = float(site["scale"])
            if scale is not None and not math.isclose(site_scale, scale, rel_tol=1e-6):
                raise ValueError(f"site {name!r} has scale {site_scale}, others {scale}: per-data-point weights "
                                 "need one scale for the whole data plate (scale the model and guide alike)")
            scale = site_scale
        return total, (1.0 if scale is None else scale)

    def _densities(self, model, guide, args, kwargs):
        """``log p(x_n, h_nk)`` and ``log q(h_nk | x_n)`` as ``(K, B)``, and the data scale ``s``."""
        (model_trace, guide_trace), = self._get_traces(model, guide, args, kwargs)
        log_p, scale = self._per_point(model_trace)
        log_q, guide_scale = self._per_point(guide_trace)
        if not math.isclose(scale, guide_scale, rel_tol=1e-6):
            raise ValueError(f"the model's sites have scale {scale}, the guide's {guide_scale}: VIMCO's weights "
                             "need the model and guide scaled alike")
        log_p, log_q = torch.broadcast_tensors(log_p, log_q)
        return log_p, log_q, scale

    def _loss(self, model, guide, args, kwargs):
        """``(loss, log w)``: the loss ``-s sum_n S_n`` (differentiable) and ``log w`` ``(K, B)``."""
        log_p, log_q, scale = self._densities(model, guide, args, kwargs)
        surrogate, log_w = vimco_surrogate(log_p, log_q)
        loss = -scale * surrogate.sum()
        warn_if_nan(loss, "VIMCO loss")
        return loss, log_w

    def log_weights(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """``log w_nk = log p(x_n, h_nk) - log q(h_nk | x_n)``, ``h_nk ~ q``: ``(K, B)``, no gradient."""
        with torch.no_grad():
            log_p, log_q, _ = self._densities(model, guide, args, kwargs)
        return log_p - log_q

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The loss ``-s sum_n L_n`` as a tensor whose gradient is VIMCO's (minus the ascent direction)."""
        return self._loss(model, guide, args, kwargs)[0]

    def loss(self, model, guide, *args, **kwargs) -> float:
        """``-s sum_n L_n``, without gradients."""
        with torch.no_grad():
            return self._loss(model, guide, args, kwargs)[0].item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """``-s sum_n L_n``; ``.grad`` of every parameter (theta and phi) holds the gradient of
        the one surrogate."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return loss.item()


# -- the method ----------------------------------------------------------------------------


class PyroVIMCOState(NamedTuple):
    """``like``: the architecture and initial values (the ``pyro.param`` defaults);
    ``train``: the training set ``(N, D)`` (a batch is ``subsample=batch.index`` of its
    rows); ``objective``: :class:`VIMCO`; ``optimizer``: one ``torch.optim`` optimiser over
    theta and phi (tensors of the runner's param store, updated in place); ``seed``: the
    seed of the method's own bound."""

    like: SBNParams
    train: torch.Tensor
    objective: VIMCO
    optimizer: torch.optim.Optimizer
    seed: int


class PyroVIMCOInfo(NamedTuple):
    objective: float  # mean over the batch of the K-sample bound L_n
    ess: float  # mean over the batch of the per-point effective sample size (1..K)


def init_state(seed: int, params: SBNParams, options: dict, train) -> PyroVIMCOState:
    """The trained parameters in the (runner's) param store, a recognition network at its
    default initialisation if ``params`` has none, and the checked ``options``."""
    arch = params.architecture
    params = params.with_guide("recognition", int(seed))
    params = params.only("recognition")
    # copies (torch.tensor): the optimiser updates the store in place, never the caller's arrays
    trained = [pyro.param(k, torch.tensor(np.asarray(params[k]), dtype=torch.get_default_dtype())).unconstrained()
               for k in generative_keys(arch) + recognition_keys(arch)]
    optimizer = torch_optimizer(options["optimizer"], options["lr"], options["lr_half_life"])(trained)
    objective = VIMCO(num_particles=options["k"], max_plate_nesting=1)
    return PyroVIMCOState(params, torch.as_tensor(train), objective, optimizer, int(seed))


def step(seed: int, state: PyroVIMCOState, batch: Batch):
    """One VIMCO step on ``batch`` (the model and guide see ``subsample=batch.index``, scaled
    by ``1/N``, so the loss is the batch mean of ``-S_n``); the runner seeds torch."""
    per_point = 1.0 / len(state.train)
    model, guide = poutine.scale(pyro_sbn.model, per_point), poutine.scale(pyro_sbn.recognition_guide, per_point)
    loss, log_w = state.objective._loss(model, guide, (state.like, state.train), {"subsample": batch.index})
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    return state, PyroVIMCOInfo(-loss.item(), effective_sample_size(log_w).mean().item())


def get_params(state: PyroVIMCOState) -> SBNParams:
    """The generative and recognition arrays from the param store (no other guide's)."""
    store = pyro.get_param_store()
    return SBNParams.from_mapping({k: store[k].detach().numpy().copy() for k in state.like.keys() if k != "sizes"},
                                  like=state.like)


def bound(state: PyroVIMCOState, x, chunk: int = 1000) -> np.ndarray:
    """Per-data-point K-sample bound ``L_n`` with the method's K (seeded by the state)."""
    arch = state.like.architecture
    x = torch.as_tensor(validate_binary(x, width=arch.visible_size, name="data"))
    k = state.objective.num_particles
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(state.seed + 1)
        for s in range(0, len(x), chunk):
            log_w = state.objective.log_weights(pyro_sbn.model, pyro_sbn.recognition_guide, state.like, x[s:s + chunk])
            out.append(torch.logsumexp(log_w, 0) - math.log(k))
    return torch.cat(out).double().numpy()


def vimco_method() -> Method:
    """VIMCO on the Pyro model and recognition guide, per-data-point weights, mini-batches in
    the data plate; ``info``: :class:`PyroVIMCOInfo`."""
    return Method("vimco", "pyro", init_state, step, get_params, guide="recognition", bound=bound,
                  options=VIMCO_OPTIONS,
                  description="VIMCO (Mnih & Rezende 2016): K-sample bound with leave-one-out baselines, Pyro")
