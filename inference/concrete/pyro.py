"""Concrete as a Pyro loss on the user's model and guide (the math: this folder's
``__init__``; the twin: ``numpyro.py``).

Own tricks: none of its own arithmetic: the model's and guide's latent Bernoulli sites are
swapped for Pyro's ``RelaxedBernoulli`` (the guide's at ``temperature``, the model's at
``prior_temperature``) by :class:`~sbn_ppl.inference.shared.relaxation.pyro.RelaxBernoulli`,
and Pyro's ``Trace_ELBO`` differentiates the relaxed bound through the reparameterised draws.
Used like any Pyro loss:

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 3e-3}), loss=Concrete(temperature=2 / 3))
"""
from __future__ import annotations

from typing import NamedTuple

import pyro.poutine as poutine
from pyro.infer import Trace_ELBO

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.inference.shared.gradient.pyro import GradientState, gradient_kernel, store_start
from sbn_ppl.inference.shared.particles.pyro import log_weights
from sbn_ppl.inference.shared.relaxation.pyro import concrete, relax_sites
from sbn_ppl.models import pyro_sbn

BOUND_SAMPLES = 16  # single-sample ELBOs averaged by the method's bound


class Concrete:
    """The relaxed ELBO of Maddison et al. on any Pyro model and guide whose latent sites are
    ``Bernoulli``: ``loss``, ``differentiable_loss`` and ``loss_and_grads`` of ``Trace_ELBO`` on
    the relaxed programs.

    :param temperature: the guide's relaxation temperature ``lambda_q``.
    :param prior_temperature: the model's (the relaxed prior's) ``lambda_p``; default ``temperature``.
    :param kwargs: passed to ``Trace_ELBO`` (``num_particles``, ``max_plate_nesting``, ...).
    """

    def __init__(self, temperature: float = 2 / 3, prior_temperature: float | None = None, **kwargs):
        self.temperature = float(temperature)
        self.prior_temperature = self.temperature if prior_temperature is None else float(prior_temperature)
        self.elbo = Trace_ELBO(**kwargs)

    def _relaxed(self, model, guide):
        return relax_sites(model, concrete(self.prior_temperature)), relax_sites(guide, concrete(self.temperature))

    def loss(self, model, guide, *args, **kwargs) -> float:
        return self.elbo.loss(*self._relaxed(model, guide), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self.elbo.differentiable_loss(*self._relaxed(model, guide), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        return self.elbo.loss_and_grads(*self._relaxed(model, guide), *args, **kwargs)


class PyroRelaxedInfo(NamedTuple):
    objective: float  # mean over the batch of the relaxed single-sample bound


def build(arch: Architecture, options: dict) -> Kernel:
    """Concrete on the Pyro model and recognition guide (one optimiser over theta and phi);
    its bound: the discrete single-sample ELBO, mean of 16 draws."""
    objective = Concrete(options["temperature"], options["prior_temperature"], max_plate_nesting=1)

    def update(seed: int, state: GradientState, batch: Batch):
        per_point = 1.0 / len(state.train)  # the data plate scales the batch by N / B
        model = poutine.scale(pyro_sbn.model, per_point)
        guide = poutine.scale(pyro_sbn.recognition_guide, per_point)
        loss = objective.differentiable_loss(model, guide, state.like, state.train, subsample=batch.index)
        loss.backward()
        return PyroRelaxedInfo(-loss.item())

    def bound(state: GradientState, x):
        return log_weights(pyro_sbn.model, pyro_sbn.recognition_guide, state.like, x,
                           num_particles=BOUND_SAMPLES).mean(0)

    return gradient_kernel(arch, store_start(arch, options), update, bound)
