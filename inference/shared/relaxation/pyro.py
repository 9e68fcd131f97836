"""The Concrete relaxation on Pyro traces: a messenger that swaps a program's latent Bernoulli
sites for relaxed ones (the math: this folder's ``__init__``; the JAX twin: ``numpyro.py``).

``relax_sites(fn, make)`` runs ``fn`` with every unobserved ``Bernoulli(logits)`` site
(``.to_event`` kept) drawn from ``make(logits)`` instead, e.g. Pyro's own
``RelaxedBernoulli(temperature, logits=...)``: a reparameterised site, so Pyro's
``Trace_ELBO`` differentiates through it.
"""
from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch.distributions import Independent
from pyro.poutine.messenger import Messenger


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
