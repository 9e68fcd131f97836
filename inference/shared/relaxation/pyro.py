"""The Concrete relaxation on Pyro traces: a messenger that swaps a program's latent Bernoulli
sites for relaxed ones (the math: this folder's ``__init__``; the JAX twin: ``numpyro.py``).

``relax_sites(fn, make)`` runs ``fn`` with every unobserved ``Bernoulli(logits)`` site
(``.to_event`` kept) drawn from ``make(logits)`` instead, e.g. Pyro's own
``RelaxedBernoulli(temperature, logits=...)``: a reparameterised site, so Pyro's
``Trace_ELBO`` differentiates through it. :class:`RelaxedLoss` is the Pyro loss on such
relaxed programs, and :func:`relaxed_kernel` the method built on it (Concrete, straight-through).
"""
from __future__ import annotations

from typing import NamedTuple

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO
from torch.distributions import Independent
from pyro.poutine.messenger import Messenger

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.inference.shared.gradient.pyro import (GradientState, gradient_kernel, loss_guide_gradient,
                                                    per_point_programs, store_start)
from sbn_ppl.inference.shared.particles.pyro import log_weights
from sbn_ppl.models import pyro_sbn

BOUND_SAMPLES = 16  # single-sample ELBOs averaged by the methods' bound


class RelaxBernoulli(Messenger):
    """Swap each unobserved ``Bernoulli`` (or ``Bernoulli.to_event(n)``) site's distribution for
    ``make(logits)`` (same event dims); other sites are left alone."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def _pyro_sample(self, msg):
        if msg["is_observed"]:
            return
        fn, event_dims = msg["fn"], 0
        if isinstance(fn, Independent):
            fn, event_dims = fn.base_dist, fn.reinterpreted_batch_ndims
        if isinstance(fn, dist.Bernoulli):
            relaxed = self.make(fn.logits)
            msg["fn"] = relaxed.to_event(event_dims) if event_dims else relaxed


def relax_sites(fn, make):
    """``fn`` run under :class:`RelaxBernoulli` ``(make)``."""
    def relaxed(*args, **kwargs):
        with RelaxBernoulli(make):
            return fn(*args, **kwargs)
    return relaxed


def concrete(temperature: float):
    """``logits -> RelaxedBernoulli(temperature, logits)`` (Pyro's binary Concrete)."""
    return lambda logits: dist.RelaxedBernoulli(torch.tensor(float(temperature), dtype=logits.dtype), logits=logits)


class BernoulliStraightThrough(dist.RelaxedBernoulliStraightThrough):
    """Pyro's ``RelaxedBernoulliStraightThrough`` (a hard draw ``round(s)`` whose gradient is that
    of the relaxed ``s``), scored by the discrete Bernoulli log-mass ``b a - softplus(a)`` at
    the hard value (Pyro's own scores the relaxed ``s`` by its Concrete density)."""

    def log_prob(self, value):
        return -F.binary_cross_entropy_with_logits(self.logits, value, reduction="none")


def straight_through(temperature: float):
    """``logits -> BernoulliStraightThrough(temperature, logits)``."""
    return lambda logits: BernoulliStraightThrough(torch.tensor(float(temperature), dtype=logits.dtype),
                                                   logits=logits)


# -- the loss and the kernel ---------------------------------------------------------------------


class RelaxedLoss:
    """``Trace_ELBO`` on a model and guide with their latent ``Bernoulli`` sites relaxed as a
    subclass's ``_relaxed(model, guide) -> (model, guide)`` says: ``loss``,
    ``differentiable_loss`` and ``loss_and_grads``, used like any Pyro loss.

    :param kwargs: passed to ``Trace_ELBO`` (``num_particles``, ``max_plate_nesting``, ...).
    """

    def __init__(self, **kwargs):
        self.elbo = Trace_ELBO(**kwargs)

    def _relaxed(self, model, guide):
        raise NotImplementedError

    def loss(self, model, guide, *args, **kwargs) -> float:
        return self.elbo.loss(*self._relaxed(model, guide), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self.elbo.differentiable_loss(*self._relaxed(model, guide), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        return self.elbo.loss_and_grads(*self._relaxed(model, guide), *args, **kwargs)


class PyroRelaxedInfo(NamedTuple):
    objective: float  # mean over the batch of the loss's single-sample bound (relaxed, or discrete at hard draws)


def relaxed_kernel(arch: Architecture, options: dict, objective: RelaxedLoss) -> Kernel:
    """The :class:`Kernel` of ``objective`` (a :class:`RelaxedLoss`) on the Pyro model and
    recognition guide, one optimiser over theta and phi (``options``: ``lr``, ``optimizer``,
    ``lr_half_life``); ``info``: :class:`PyroRelaxedInfo`; its bound: the discrete single-sample
    ELBO, mean of ``BOUND_SAMPLES`` draws; ``guide_gradient(seed, state, x)``: one draw of the
    loss's gradient of the batch-mean bound in phi (ascent, ``q_`` arrays), on its own seeded
    torch stream."""

    def update(seed: int, state: GradientState, batch: Batch):
        model, guide = per_point_programs(len(state.train))
        loss = objective.differentiable_loss(model, guide, state.like, state.train, subsample=batch.index)
        loss.backward()
        return PyroRelaxedInfo(-loss.item())

    def bound(state: GradientState, x):
        return log_weights(pyro_sbn.model, pyro_sbn.recognition_guide, state.like, x,
                           num_particles=BOUND_SAMPLES).mean(0)

    def loss(state: GradientState, model, guide, x):
        return objective.differentiable_loss(model, guide, state.like, x)

    return gradient_kernel(arch, store_start(arch, options), update, bound,
                           guide_gradient=loss_guide_gradient(arch, loss))
