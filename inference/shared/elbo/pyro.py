"""The ELBO-gradient methods' shared pieces on Pyro traces (the math: this folder's
``__init__``; the twin: ``numpyro.py``).

:class:`SurrogateELBO` is the loss object (``loss``, ``loss_and_grads``, used like
``pyro.infer.ReweightedWakeSleep``) whose gradient is a method's surrogate; a method supplies
``_surrogate``. :class:`AntitheticELBO` runs the user's guide once for the forward pass and
once per Bernoulli site (the antithetic branches, a particle plate at ``dim =
-(max_plate_nesting + 1)``), its draws made from given uniforms by :class:`UniformDraws`; the
model replays each branch. Any guide whose latent sites are Bernoulli (``.to_event`` or not),
drawn in an order that makes each site's parents earlier sites, fits.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import pyro.poutine as poutine
import torch
from pyro.distributions import Bernoulli, Independent
from pyro.infer.elbo import ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from pyro.util import check_model_guide_match, warn_if_nan

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.inference.shared.gradient.pyro import (GradientState, gradient_kernel, loss_guide_gradient,
                                                    per_point_programs, store_start)
from sbn_ppl.inference.shared.particles.pyro import in_particles, particle_traces, per_point_log_prob
from sbn_ppl.models import pyro_sbn

BOUND_SAMPLES = 10  # the methods' own bound: per data point, the mean of f over 10 draws h ~ q


class SurrogateELBO(ELBO):
    """A loss whose value is ``-s sum_n ELBO_n`` (an unbiased estimate; ``s`` the data plate's
    scale; VIMCO's: its K-sample bound) and whose gradient is minus a method's estimator, from
    ``_surrogate``.

    :param max_plate_nesting: the model's own plate nesting (1 for our SBN's default layout);
        guessed by one run of the guide and model when left infinite.
    :param str data_plate: the plate whose members are the data points; every sample site
        must sit inside it.
    :param vectorize_particles: Pyro's particle plate (``ELBO``'s own; then ``max_plate_nesting``
        counts it), for a subclass that draws its particles through ``_get_traces``.
    """

    def __init__(self, num_particles: int = 1, max_plate_nesting: float = float("inf"), data_plate: str = "data",
                 vectorize_particles: bool = False):
        # the particle or branch plate is our own, so Pyro's max_plate_nesting stays the model's own
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=vectorize_particles)
        self.data_plate = data_plate

    def _surrogate(self, model, guide, args, kwargs):
        """``(S, f, scale)``: ``S`` the surrogate summed over the data points (a tensor whose
        gradient is the estimator, value ``sum_n`` of the ELBO estimate), ``f`` ``(P, B)`` the
        learning signals (detached), ``scale`` the data plate's."""
        raise NotImplementedError

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(f"{type(self).__name__} builds its own traces (see _surrogate)")

    def _nesting(self, model, guide, args, kwargs) -> int:
        if self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        return int(self.max_plate_nesting)

    def _loss(self, model, guide, args, kwargs):
        """``(loss, f)``: ``-s S`` (differentiable) and the learning signals ``f`` ``(P, B)``."""
        surrogate, f, scale = self._surrogate(model, guide, args, kwargs)
        loss = -scale * surrogate
        warn_if_nan(loss, f"{type(self).__name__} loss")
        return loss, f

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """``-s sum_n ELBO_n`` (estimated) as a tensor whose gradient is minus the estimator."""
        return self._loss(model, guide, args, kwargs)[0]

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self._loss(model, guide, args, kwargs)[0].item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The loss; ``.grad`` of every parameter (theta and phi) holds minus the estimator."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return loss.item()


def densities(model_trace, guide_trace, nesting: int, data_plate: str | None):
    """``log p (P, B)`` (with theta's gradient), ``log q (P, B)`` and the one scale of both
    (``data_plate`` ``None``: the whole batch as one observation)."""
    log_p, scale = per_point_log_prob(model_trace, nesting, data_plate)
    log_q, guide_scale = per_point_log_prob(guide_trace, nesting, data_plate)
    if not math.isclose(scale, guide_scale, rel_tol=1e-6):
        raise ValueError(f"the model's sites have scale {scale}, the guide's {guide_scale}: per-data-point "
                         "signals need the model and guide scaled alike")
    log_p, log_q = torch.broadcast_tensors(log_p, log_q)
    return log_p, log_q, scale


# -- the antithetic branches (ARM, DisARM) ---------------------------------------------------------


class Draw(NamedTuple):
    """One latent Bernoulli site of the guide under :class:`UniformDraws`."""

    name: str
    u: torch.Tensor  # the forward pass's uniforms, the site's shape with 1 on the branch axis
    logits: torch.Tensor  # (P, ...) the site's logits in every branch (carry phi)
    value: torch.Tensor  # (P, ...) the draws in every branch
    axis: int  # the branch axis in the site's shape
    data_dims: tuple  # (dim of the data plate in the site's shape without the branch axis, event dims)


class UniformDraws(Messenger):
    """Makes each latent Bernoulli site's value from uniforms: the ``j``-th such site (in the
    order the guide draws them, 1-based) takes ``u`` in every branch but branch ``j``, which
    takes ``1 - u``; each unit compares on its rare side, ``h = 1 - [u < sigma(-c)]`` for
    ``c > 0``, else ``[u < sigma(c)]``. Put it outside the branch plate (it must see the
    distributions broadcast to it). ``draws`` records each site.

    :param branches: the branch plate's size P (sites + 1); ``nesting``: the model's own plate
        nesting (the branch plate at ``dim = -(nesting + 1)``); ``data_plate``: its name.
    """

    def __init__(self, branches: int, nesting: int, data_plate: str):
        super().__init__()
        self.branches, self.nesting, self.data_plate = branches, nesting, data_plate
        self.draws: list[Draw] = []

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["value"] is not None or site_is_subsample(msg):
            return
        fn, event = msg["fn"], 0
        if isinstance(fn, Independent):
            fn, event = fn.base_dist, fn.reinterpreted_batch_ndims
        if not isinstance(fn, Bernoulli):
            raise ValueError(f"site {msg['name']!r} is a {type(fn).__name__}: ARM and DisARM need every latent "
                             "site of the guide to be Bernoulli")
        j = len(self.draws) + 1
        if j >= self.branches:
            raise ValueError(f"the guide drew more Bernoulli sites than the {self.branches - 1} it was run for")
        logits = fn.logits
        shape = list(logits.shape)
        axis = len(shape) - event - (self.nesting + 1)
        shape[axis] = 1
        u = torch.rand(shape, dtype=logits.dtype, device=logits.device)
        branch = torch.arange(self.branches, device=logits.device).reshape([-1] + [1] * (len(shape) - axis - 1))
        us = torch.where(branch == j, 1.0 - u, u)
        c = logits.detach()
        value = torch.where(c > 0, us >= torch.sigmoid(-c), us < torch.sigmoid(c)).to(logits.dtype)
        frame = next(f for f in msg["cond_indep_stack"] if f.name == self.data_plate)
        msg["value"] = value
        self.draws.append(Draw(msg["name"], u, logits, value, axis, (frame.dim, event)))


def latent_sites(guide, args, kwargs) -> int:
    """How many latent (non-subsample) sample sites one run of ``guide`` draws."""
    with poutine.block():
        trace = poutine.trace(guide).get_trace(*args, **kwargs)
    return sum(1 for site in trace.nodes.values()
               if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site))


def per_point(f: torch.Tensor, draw: Draw) -> torch.Tensor:
    """A per-data-point ``(B,)`` tensor shaped to broadcast against a site without its branch axis."""
    dim, event = draw.data_dims
    return f.reshape((-1,) + (1,) * (-dim - 1 + event))


class AntitheticELBO(SurrogateELBO):
    """The antithetic estimators' loss (the folder's ``__init__``): the guide run in ``P =``
    sites ``+ 1`` branches (forward pass and one antithetic branch per Bernoulli site), the model
    replayed on each, and ``logit_gradient`` per site.

    :param num_sites: the guide's latent Bernoulli sites (found by one run of the guide at first
        use when ``None``, then checked at every call).
    """

    def __init__(self, max_plate_nesting: float = float("inf"), data_plate: str = "data",
                 num_sites: int | None = None):
        super().__init__(1, max_plate_nesting, data_plate)
        self.num_sites = num_sites

    @staticmethod
    def logit_gradient(f, f_anti, u, c, h, h_anti):
        """One draw of ``grad_c E[f]`` for a site (ARM's or DisARM's)."""
        raise NotImplementedError

    def _traces(self, model, guide, args, kwargs):
        nesting = self._nesting(model, guide, args, kwargs)
        if self.num_sites is None:
            self.num_sites = latent_sites(guide, args, kwargs)
        draws = UniformDraws(self.num_sites + 1, nesting, self.data_plate)
        guide_trace = poutine.trace(draws(in_particles(guide, self.num_sites + 1, nesting))).get_trace(*args, **kwargs)
        if len(draws.draws) != self.num_sites:
            raise ValueError(f"the guide drew {len(draws.draws)} Bernoulli sites, expected {self.num_sites}")
        guide_trace.detach_()
        model_trace = poutine.trace(
            poutine.replay(in_particles(model, self.num_sites + 1, nesting), trace=guide_trace)).get_trace(*args, **kwargs)
        if is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace, nesting + 1)
        return model_trace, guide_trace, draws.draws, nesting

    def _surrogate(self, model, guide, args, kwargs):
        model_trace, guide_trace, draws, nesting = self._traces(model, guide, args, kwargs)
        log_p, log_q, scale = densities(model_trace, guide_trace, nesting, self.data_plate)
        f = (log_p - log_q).detach()  # (P, B)
        surrogate = (log_p - log_q.detach()).mean(0).sum()  # theta: the mean over branches of grad log p
        for j, draw in enumerate(draws, start=1):
            c = draw.logits.select(draw.axis, 0)  # the forward pass's logits, carrying phi
            g = self.logit_gradient(per_point(f[0], draw), per_point(f[j], draw), draw.u.squeeze(draw.axis),
                                    c.detach(), draw.value.select(draw.axis, 0), draw.value.select(draw.axis, j))
            surrogate = surrogate + (g.detach() * (c - c.detach())).sum()  # zero in value
        return surrogate, f, scale


# -- the kernel ------------------------------------------------------------------------------------


class PyroELBOInfo(NamedTuple):
    objective: float  # mean over the batch of the estimate of the ELBO


def elbo_estimate(params, x, num_samples: int = BOUND_SAMPLES) -> torch.Tensor:
    """Per data point, the mean of ``f = log p(x, h) - log q(h | x)`` over ``num_samples`` draws
    ``h ~ q(. | x)`` of the recognition guide: an unbiased estimate of the ELBO, ``(B,)``."""
    with torch.no_grad():
        traces = particle_traces(pyro_sbn.model, pyro_sbn.recognition_guide, num_samples, 1, (params, x))
        log_p, log_q, _ = densities(*traces, 1, "data")
    return (log_p - log_q).mean(0)


def surrogate_kernel(arch: Architecture, options: dict, objective: SurrogateELBO) -> Kernel:
    """The :class:`~sbn_ppl.base.methods.Kernel` of a :class:`SurrogateELBO` on the Pyro model and
    recognition guide, mini-batches in the data plate, one optimiser over theta and phi
    (``options``: ``lr``, ``optimizer``, ``lr_half_life``); ``info``: :class:`PyroELBOInfo`; its
    bound: the per-point ELBO estimated by ``BOUND_SAMPLES`` draws; ``guide_gradient(seed, state,
    x)``: one draw of the estimator of the batch-mean ELBO's gradient in phi (ascent, ``q_``
    arrays), on its own seeded torch stream."""

    def update(seed: int, state: GradientState, batch: Batch):
        model, guide = per_point_programs(len(state.train))  # the loss: minus the batch mean
        loss, f = objective._loss(model, guide, (state.like, state.train), {"subsample": batch.index})
        loss.backward()
        return PyroELBOInfo(f.mean().item())

    def bound(state: GradientState, x):
        return elbo_estimate(state.like, x)

    def loss(state: GradientState, model, guide, x):
        return objective._loss(model, guide, (state.like, x), {})[0]

    return gradient_kernel(arch, store_start(arch, options), update, bound,
                           guide_gradient=loss_guide_gradient(arch, loss))
