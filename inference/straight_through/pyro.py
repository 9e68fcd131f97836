"""Straight-through Gumbel as a Pyro loss on the user's model and guide (the math: this
folder's ``__init__``; the twin: ``numpyro.py``).

Own tricks: the guide's latent Bernoulli sites are swapped for Pyro's
``RelaxedBernoulliStraightThrough`` (scored by the discrete log-mass at its hard draw:
:class:`~sbn_ppl.inference.shared.relaxation.pyro.BernoulliStraightThrough`); the model keeps
its ``Bernoulli`` sites, whose ``log_prob`` (``b a - softplus(a)``) passes the gradient on to
the hard values; Pyro's ``Trace_ELBO`` does the rest. Used like any Pyro loss:

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 3e-3}), loss=StraightThrough(temperature=1.0))
"""
from __future__ import annotations

from typing import NamedTuple

import pyro.poutine as poutine
from pyro.infer import Trace_ELBO

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.inference.shared.gradient.pyro import GradientState, gradient_kernel, store_start
from sbn_ppl.inference.shared.particles.pyro import log_weights
from sbn_ppl.inference.shared.relaxation.pyro import relax_sites, straight_through
from sbn_ppl.models import pyro_sbn

BOUND_SAMPLES = 16  # single-sample ELBOs averaged by the method's bound


class StraightThrough:
    """The discrete ELBO with straight-through Gumbel gradients, on any Pyro model and guide whose
    latent sites are ``Bernoulli``: ``loss``, ``differentiable_loss`` and ``loss_and_grads`` of
    ``Trace_ELBO`` with the guide's sites relaxed.

    :param temperature: the relaxation's temperature in the backward pass.
    :param kwargs: passed to ``Trace_ELBO`` (``num_particles``, ``max_plate_nesting``, ...).
    """

    def __init__(self, temperature: float = 1.0, **kwargs):
        self.temperature = float(temperature)
        self.elbo = Trace_ELBO(**kwargs)

    def _relaxed(self, model, guide):
        return model, relax_sites(guide, straight_through(self.temperature))

    def loss(self, model, guide, *args, **kwargs) -> float:
        return self.elbo.loss(*self._relaxed(model, guide), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self.elbo.differentiable_loss(*self._relaxed(model, guide), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        return self.elbo.loss_and_grads(*self._relaxed(model, guide), *args, **kwargs)


class PyroStraightThroughInfo(NamedTuple):
    objective: float  # mean over the batch of the discrete single-sample ELBO at the hard draws


def build(arch: Architecture, options: dict) -> Kernel:
    """Straight-through on the Pyro model and recognition guide (one optimiser over theta and
    phi); its bound: the discrete single-sample ELBO, mean of 16 draws."""
    objective = StraightThrough(options["temperature"], max_plate_nesting=1)

    def update(seed: int, state: GradientState, batch: Batch):
        per_point = 1.0 / len(state.train)  # the data plate scales the batch by N / B
        model = poutine.scale(pyro_sbn.model, per_point)
        guide = poutine.scale(pyro_sbn.recognition_guide, per_point)
        loss = objective.differentiable_loss(model, guide, state.like, state.train, subsample=batch.index)
        loss.backward()
        return PyroStraightThroughInfo(-loss.item())

    def bound(state: GradientState, x):
        return log_weights(pyro_sbn.model, pyro_sbn.recognition_guide, state.like, x,
                           num_particles=BOUND_SAMPLES).mean(0)

    return gradient_kernel(arch, store_start(arch, options), update, bound)
