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

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Kernel
from sbn_ppl.inference.shared.relaxation.pyro import RelaxedLoss, concrete, relax_sites, relaxed_kernel


class Concrete(RelaxedLoss):
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
        super().__init__(**kwargs)

    def _relaxed(self, model, guide):
        return relax_sites(model, concrete(self.prior_temperature)), relax_sites(guide, concrete(self.temperature))


def build(arch: Architecture, options: dict) -> Kernel:
    """Concrete on the Pyro model and recognition guide (one optimiser over theta and phi);
    its bound: the discrete single-sample ELBO, mean of 16 draws; ``guide_gradient`` one draw of
    the loss's gradient in phi."""
    objective = Concrete(options["temperature"], options["prior_temperature"], max_plate_nesting=1)
    return relaxed_kernel(arch, options, objective)
