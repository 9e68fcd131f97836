"""The particle arithmetic on Pyro traces (torch; the JAX twin is :mod:`.numpyro`, the NumPy
float64 reference :mod:`sbn_ppl.base.density`).

Any Pyro model and guide: the guide is run with K particles in a plate at
``dim = -(max_plate_nesting + 1)``, the model replayed on its draws, and each trace reduced to
one log-density per particle and data point of the ``data_plate``:

    log p(x_n, h_nk),  log q(h_nk | x_n)      (K, B),  summed over every other dim
    log w_nk = log p(x_n, h_nk) - log q(h_nk | x_n)
    log (1/K) sum_k w_nk                      the K-sample bound (log-mean-exp)
    (sum_k w_nk)^2 / sum_k w_nk^2             the effective sample size
"""
from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import site_is_subsample
from pyro.util import check_model_guide_match

PARTICLES = "num_particles_vectorized"  # the particle plate's name (pyro.infer.ELBO's)


def per_point_log_prob(trace, nesting: int, data_plate: str | None = "data"):
    """A trace's unscaled log-probabilities, summed over every dim but the particle and data
    dims: ``(K, B)`` (``(1, B)`` for a trace without particles; ``(K, 1)`` with
    ``data_plate=None``), and the sites' one scale (the data plate's ``N / B`` times any
    ``poutine.scale``; 1 for a trace without sample sites).

    :param trace: a Pyro trace whose sample sites sit inside ``data_plate`` (subsample sites
        are skipped); its log-probabilities are computed here if they are not yet (memoised).
    :param nesting: the model's own plate nesting, without the particle plate, which sits at
        ``dim = -(nesting + 1)``.
    :param data_plate: the plate whose members are the data points; ``None`` weights the whole
        batch as one observation.
    """
    trace.compute_log_prob(lambda name, site: not site_is_subsample(site))
    total, scale = 0.0, None
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        log_p = site["unscaled_log_prob"]
        if site["mask"] is not None:
            log_p = scale_and_mask(log_p, 1.0, site["mask"])
        pad = nesting + 1 - log_p.dim()
        if pad < 0:
            raise ValueError(f"site {name!r} has more batch dims ({log_p.dim()}) than the plates allow "
                             f"(max_plate_nesting {nesting} + particles); enumeration is not supported")
        log_p = log_p.reshape((1,) * pad + log_p.shape)
        data_dim = None  # counted from the right, like a plate's dim
        if data_plate is not None:
            frame = next((f for f in site["cond_indep_stack"] if f.name == data_plate), None)
            if frame is None:
                raise ValueError(f"site {name!r} is outside the data plate {data_plate!r}: per-data-point "
                                 "weights need every sample site inside it (or data_plate=None)")
            data_dim = frame.dim
        # keep the particle dim (leftmost, -(nesting + 1)) and the data dim; sum the rest
        others = tuple(d for d in range(-nesting, 0) if d != data_dim)
        if others:
            log_p = log_p.sum(others)
        total = total + log_p.reshape(log_p.shape[0], -1)  # (K, B), or (K, 1) without a data plate
        site_scale = float(site["scale"])
        if scale is not None and not math.isclose(site_scale, scale, rel_tol=1e-6):
            raise ValueError(f"site {name!r} has scale {site_scale}, others {scale}: per-data-point weights "
                             "need one scale for the whole data plate (scale the model and guide alike)")
        scale = site_scale
    return total, (1.0 if scale is None else scale)


def in_particles(fn, size: int, nesting: int, name: str = PARTICLES):
    """``fn`` run inside a plate of ``size`` particles at ``dim = -(nesting + 1)``."""
    def wrapped(*args, **kwargs):
        with pyro.plate(name, size, dim=-(nesting + 1)):
            return fn(*args, **kwargs)
    return wrapped


def particle_traces(model, guide, num_particles: int, nesting: int, args=(), kwargs=None):
    """``(model trace, guide trace)``: ``h ~ q`` with ``num_particles`` particles per data point
    (the guide's values detached: every site is scored, none reparameterised) and the model
    replayed on them; ``model(*args, **kwargs)`` and ``guide(*args, **kwargs)``."""
    kwargs = kwargs or {}
    guide_trace = poutine.trace(in_particles(guide, num_particles, nesting)).get_trace(*args, **kwargs)
    guide_trace.detach_()
    model_trace = poutine.trace(
        poutine.replay(in_particles(model, num_particles, nesting), trace=guide_trace)).get_trace(*args, **kwargs)
    if is_validation_enabled():
        check_model_guide_match(model_trace, guide_trace, nesting + 1)
    return model_trace, guide_trace


def log_weights(model, guide, *args, num_particles: int, max_plate_nesting: int = 1, data_plate: str | None = "data",
                **kwargs) -> torch.Tensor:
    """``log w_nk = log p(x_n, h_nk) - log q(h_nk | x_n)``, ``h_nk ~ q``: ``(K, B)``, no gradient,
    for any Pyro ``model`` and ``guide`` called with ``(*args, **kwargs)``, the values of Pyro's
    param store (``max_plate_nesting``: the model's own, without the particles)."""
    with torch.no_grad():
        model_trace, guide_trace = particle_traces(model, guide, num_particles, max_plate_nesting, args, kwargs)
        log_p, _ = per_point_log_prob(model_trace, max_plate_nesting, data_plate)
        log_q, _ = per_point_log_prob(guide_trace, max_plate_nesting, data_plate)
        return log_p.expand(num_particles, -1) - log_q.expand(num_particles, -1)


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``log (1/K) sum_k w_k`` along ``dim`` (the K-sample bound per data point from ``(K, B)``)."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def effective_sample_size(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``(sum_k w_k)^2 / sum_k w_k^2`` along ``dim``, in log space: ``(B,)`` from ``(K, B)``."""
    return torch.exp(2 * torch.logsumexp(log_w, dim) - torch.logsumexp(2 * log_w, dim))
