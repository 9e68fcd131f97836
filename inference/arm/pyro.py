"""ARM as a Pyro loss on the user's model and guide traces (the math: this folder's
``__init__``; the twin: ``numpyro.py``).

Own part: the site's logit gradient. The branches (the guide run once per Bernoulli site plus
the forward pass, its draws made from given uniforms by a messenger, the model replayed on
each) are the shared :class:`~sbn_ppl.inference.shared.elbo.pyro.AntitheticELBO`. Used like
``pyro.infer.ReweightedWakeSleep``:

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 3e-3}), loss=ARM())
"""
from __future__ import annotations

import torch

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Kernel
from sbn_ppl.inference.shared.elbo.pyro import AntitheticELBO, surrogate_kernel


class ARM(AntitheticELBO):
    """ARM's estimator of the ELBO's gradient, per layer (each latent Bernoulli site of the
    guide) and data point. Arguments: :class:`~sbn_ppl.inference.shared.elbo.pyro.AntitheticELBO`."""

    @staticmethod
    def logit_gradient(f, f_anti, u, c, h, h_anti):
        """``(f(h~) - f(h)) (u' - 1/2)``, ``u' = 1 - u`` where ``c > 0`` (the rare side's uniform;
        the JAX twin: :func:`sbn_ppl.inference.arm.numpyro.arm_logit_gradient`)."""
        return (f_anti - f) * (torch.where(c > 0, 1.0 - u, u) - 0.5)


def build(arch: Architecture, options: dict) -> Kernel:
    """ARM on the Pyro model and recognition guide."""
    return surrogate_kernel(arch, options, ARM(max_plate_nesting=1))
