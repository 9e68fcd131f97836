"""DisARM as a Pyro loss on the user's model and guide traces (the math: this folder's
``__init__``; the twin: ``numpyro.py``).

Own part: the site's logit gradient; the branches are the shared
:class:`~sbn_ppl.inference.shared.elbo.pyro.AntitheticELBO` (ARM's, so ARM and DisARM on one
torch seed see the same samples). Used like ``pyro.infer.ReweightedWakeSleep``:

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 3e-3}), loss=DisARM())
"""
from __future__ import annotations

import torch

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Kernel
from sbn_ppl.inference.shared.elbo.pyro import AntitheticELBO, surrogate_kernel


class DisARM(AntitheticELBO):
    """DisARM's estimator of the ELBO's gradient, per layer (each latent Bernoulli site of the
    guide) and data point. Arguments: :class:`~sbn_ppl.inference.shared.elbo.pyro.AntitheticELBO`."""

    @staticmethod
    def logit_gradient(f, f_anti, u, c, h, h_anti):
        """``1/2 (f(h) - f(h~)) (-1)^{h~} [h != h~] sigma(|c|)`` (the JAX twin:
        :func:`sbn_ppl.inference.disarm.numpyro.disarm_logit_gradient`)."""
        return 0.5 * (f - f_anti) * (1.0 - 2.0 * h_anti) * (h != h_anti) * torch.sigmoid(c.abs())


def build(arch: Architecture, options: dict) -> Kernel:
    """DisARM on the Pyro model and recognition guide."""
    return surrogate_kernel(arch, options, DisARM(max_plate_nesting=1))
