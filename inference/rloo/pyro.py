"""REINFORCE leave-one-out as a Pyro loss on the user's model and guide traces (the math: this
folder's ``__init__``; the twin: ``numpyro.py``).

Own tricks: the K particles are a plate at ``dim = -(max_plate_nesting + 1)`` (the shared
:func:`~sbn_ppl.inference.shared.particles.pyro.particle_traces`), each trace reduced to one
log-density per particle and data point of the ``data_plate``; the loss carries the data
plate's scale, so a mini-batch is unbiased for the full data. Used like
``pyro.infer.ReweightedWakeSleep``:

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 3e-3}), loss=RLOO(num_particles=5))
"""
from __future__ import annotations

import torch

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Kernel
from sbn_ppl.inference.shared.elbo.pyro import SurrogateELBO, densities, surrogate_kernel
from sbn_ppl.inference.shared.particles.pyro import particle_traces


def leave_one_out_signals(f: torch.Tensor) -> torch.Tensor:
    """``f_k - (1/(K-1)) sum_{j != k} f_j`` for every k, ``(K, B)`` (the JAX twin:
    :func:`sbn_ppl.inference.rloo.numpyro.leave_one_out_signals`)."""
    return f - (f.sum(0) - f) / (f.shape[0] - 1)


class RLOO(SurrogateELBO):
    """REINFORCE leave-one-out on the single-sample ELBO, per data point.

    :param int num_particles: K >= 2 samples ``h ~ q(. | x)`` per data point.
    :param max_plate_nesting: the model's own plate nesting (1 for our SBN's default layout);
        guessed by one run of the guide and model when left infinite.
    :param str data_plate: the plate whose members are the data points.
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: float = float("inf"), data_plate: str = "data"):
        if isinstance(num_particles, bool) or int(num_particles) != num_particles or num_particles < 2:
            raise ValueError(f"REINFORCE leave-one-out needs num_particles >= 2 (each sample's baseline is the "
                             f"mean of the others'), got {num_particles!r}")
        super().__init__(int(num_particles), max_plate_nesting, data_plate)

    def _surrogate(self, model, guide, args, kwargs):
        nesting = self._nesting(model, guide, args, kwargs)
        traces = particle_traces(model, guide, self.num_particles, nesting, args, kwargs)
        log_p, log_q, scale = densities(*traces, nesting, self.data_plate)
        f = (log_p - log_q).detach()  # (K, B)
        score = leave_one_out_signals(f) * (log_q - log_q.detach())  # zero in value
        return (log_p - log_q.detach() + score).mean(0).sum(), f, scale


def build(arch: Architecture, options: dict) -> Kernel:
    """REINFORCE leave-one-out on the Pyro model and recognition guide (``k`` particles)."""
    return surrogate_kernel(arch, options, RLOO(num_particles=options["k"], max_plate_nesting=1))
