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

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Kernel
from sbn_ppl.inference.shared.relaxation.pyro import RelaxedLoss, relax_sites, relaxed_kernel, straight_through


class StraightThrough(RelaxedLoss):
    """The discrete ELBO with straight-through Gumbel gradients, on any Pyro model and guide whose
    latent sites are ``Bernoulli``: ``loss``, ``differentiable_loss`` and ``loss_and_grads`` of
    ``Trace_ELBO`` with the guide's sites relaxed.

    :param temperature: the relaxation's temperature in the backward pass.
    :param kwargs: passed to ``Trace_ELBO`` (``num_particles``, ``max_plate_nesting``, ...).
    """

    def __init__(self, temperature: float = 1.0, **kwargs):
        self.temperature = float(temperature)
        super().__init__(**kwargs)

    def _relaxed(self, model, guide):
        return model, relax_sites(guide, straight_through(self.temperature))


def build(arch: Architecture, options: dict) -> Kernel:
    """Straight-through on the Pyro model and recognition guide (one optimiser over theta and
    phi); its bound: the discrete single-sample ELBO, mean of 16 draws; ``guide_gradient`` one
    draw of the loss's gradient in phi."""
    objective = StraightThrough(options["temperature"], max_plate_nesting=1)
    return relaxed_kernel(arch, options, objective)
