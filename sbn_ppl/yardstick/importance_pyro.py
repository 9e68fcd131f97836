"""Importance sampling of ``log p(x)`` with any Pyro guide of any Pyro model, per data point
(the NumPyro twin, jitted and streaming for the SBN's own guides: :mod:`sbn_ppl.yardstick.importance`)."""
from __future__ import annotations

import torch

from sbn_ppl.inference.shared.particles.pyro import log_weights
from sbn_ppl.yardstick.estimates import LogLikelihood, log_mean_exp


def guide_importance_log_likelihood(model, guide, *args, num_particles: int = 1000, particles_per_batch: int = 100,
                              seed: int = 0, max_plate_nesting: int = 2, **kwargs) -> LogLikelihood:
    """Importance-sampled ``log p(x_n)`` with **any** Pyro guide of the model, per data point.

    ``log (1/K) sum_k p(x_n, h_nk) / q(h_nk | x_n)``, ``h_nk ~ q``, for every point of the
    model's ``"data"`` plate; ``model(*args, **kwargs)`` and ``guide(*args, **kwargs)`` are
    traced ``particles_per_batch`` particles at a time (memory stays bounded for any K),
    with the values of Pyro's param store. The standard error is the delta-method one.
    Seeded: the global torch RNG is restored afterwards.
    """
    if isinstance(num_particles, bool) or int(num_particles) != num_particles or num_particles < 1:
        raise ValueError(f"the number of importance samples must be an integer >= 1, got {num_particles!r}")
    if particles_per_batch < 1:
        raise ValueError(f"particles_per_batch must be at least 1, got {particles_per_batch}")
    sizes = [min(particles_per_batch, num_particles - k0) for k0 in range(0, num_particles, particles_per_batch)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        chunks = (log_weights(model, guide, *args, num_particles=k, max_plate_nesting=max_plate_nesting, **kwargs)
                  .double().cpu().numpy() for k in sizes)
        estimate, stderr = log_mean_exp(chunks)
    return LogLikelihood(estimate, stderr, f"is(K={num_particles},pyro guide)")
