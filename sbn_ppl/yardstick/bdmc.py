"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015): AIS's own gap, certified on
data simulated from the model.

Draw ``(h, x) ~ p`` ancestrally from the fitted model: ``h`` is then an exact sample of
``p(h | x)``. Two runs of annealed importance sampling bracket ``log p(x)``:

* forward AIS (:func:`sbn_ppl.yardstick.ais.ais_log_likelihood`), prior to posterior:
  ``E[w] = p(x)``, so ``log mean_c w_c`` is a stochastic **lower** bound (Jensen);
* reverse AIS, from the exact posterior sample ``h`` back to the prior through the same
  tempered distributions ``f_t(h) = p(h) p(x | h)^{beta_t}`` in reverse order::

      log w_rev = sum_{t = T..1} (beta_{t-1} - beta_t) log p(x | h_t),   E[w_rev] = 1 / p(x),

  so ``-log mean_c w_rev,c`` is a stochastic **upper** bound.

The sandwich's width, ``upper - lower`` averaged over the simulated points, bounds the
error of forward AIS at that schedule on data like that (Wu et al. 2017 use it to validate
AIS on decoders). An importance-sampling estimate with a guide on the same simulated
points, set against the sandwich, says how far below the truth that guide's IS falls.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import random

from sbn_ppl.base import density
from sbn_ppl.base.params import SBNParams
from sbn_ppl.inference.shared.gibbs import numpyro as gibbs_jax
from sbn_ppl.yardstick.ais import anneal_from, ais_log_likelihood, sigmoid_schedule
from sbn_ppl.yardstick.defaults import AIS_CHAINS, AIS_TEMPERATURES
from sbn_ppl.yardstick.estimates import LogLikelihood, log_mean_exp

BDMC_POINTS = 100  # simulated data points (Grosse et al. use tens to hundreds)
_ROWS_PER_CHUNK = 1 << 14  # points x chains annealed at once


class Sandwich(NamedTuple):
    """BDMC on ``x`` (simulated from the model): per-point forward-AIS ``lower`` and
    reverse-AIS ``upper`` estimates of ``log p(x)``, and the schedule that made them."""

    lower: LogLikelihood
    upper: LogLikelihood
    x: np.ndarray
    num_temperatures: int
    num_chains: int

    @property
    def gap(self) -> float:
        """The mean width ``upper - lower`` (nats): a bound on forward AIS's error on such data."""
        return float(np.mean(self.upper.per_point - self.lower.per_point))

    def summary(self) -> dict:
        return {"bdmc_points": int(len(self.x)), "bdmc_temperatures": self.num_temperatures,
                "bdmc_chains": self.num_chains, "bdmc_lower": self.lower.mean,
                "bdmc_upper": self.upper.mean, "bdmc_gap": self.gap}


def simulate(params: SBNParams, num_points: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(x, [h1, ..., hL]) ~ p`` ancestrally: ``x`` ``(n, D)`` and each ``h_l`` an exact
    posterior sample given its ``x`` (float32 0./1.)."""
    layers = density.sample_prior(params, int(num_points), np.random.default_rng([int(seed), 0xBD]))
    return layers[0].astype(np.float32), [h.astype(np.float32) for h in layers[1:]]


def reverse_anneal(rng_key, params: SBNParams, x, hidden, betas, *, num_chains: int):
    """Reverse AIS from the exact posterior samples ``hidden`` (each ``(n, n_l)``) along
    ``betas`` from 1 down to 0: ``log w_rev`` ``(num_chains, n)``, ``E[w_rev] = 1 / p(x)``."""
    start = gibbs_jax.GibbsState(tuple(jnp.broadcast_to(h, (num_chains,) + h.shape) for h in hidden))
    return anneal_from(rng_key, params, x, betas, start)


def reverse_ais_log_likelihood(params: SBNParams, x, hidden, seed: int = 0,
                               num_temperatures: int = AIS_TEMPERATURES, num_chains: int = AIS_CHAINS,
                               betas=None) -> LogLikelihood:
    """Stochastic upper bound ``-log mean_c w_rev,c`` on ``log p(x_n)`` per point, from the
    exact posterior samples ``hidden`` of the points ``x``; the delta-method standard error."""
    betas = np.asarray(sigmoid_schedule(int(num_temperatures)) if betas is None else betas, np.float64)
    theta = jax.tree_util.tree_map(jnp.asarray, params.generative())
    schedule = jnp.asarray(betas[::-1], jnp.float32)  # 1 -> 0
    chunk = max(1, _ROWS_PER_CHUNK // int(num_chains))
    estimates, errors = [], []
    for i, s in enumerate(range(0, len(x), chunk)):
        log_w = reverse_anneal(random.fold_in(random.PRNGKey(seed), i), theta, jnp.asarray(x[s:s + chunk]),
                               tuple(jnp.asarray(h[s:s + chunk]) for h in hidden), schedule,
                               num_chains=int(num_chains))
        est, err = log_mean_exp([np.asarray(log_w, np.float64)])  # log mean w_rev estimates -log p(x)
        estimates.append(-est)
        errors.append(err)
    return LogLikelihood(np.concatenate(estimates), np.concatenate(errors),
                         f"reverse-ais(T={betas.size - 1},C={int(num_chains)})")


def bdmc(params: SBNParams, num_points: int = BDMC_POINTS, seed: int = 0,
         num_temperatures: int = AIS_TEMPERATURES, num_chains: int = AIS_CHAINS, betas=None,
         devices: int | None = None) -> Sandwich:
    """The BDMC sandwich on ``num_points`` points simulated from ``params`` (seeded): forward
    AIS below, reverse AIS above, at the schedule the yardstick's AIS uses (same ``T``, ``C``)."""
    if int(num_points) != num_points or num_points < 1:
        raise ValueError(f"BDMC needs a positive whole number of simulated points, got {num_points!r}")
    x, hidden = simulate(params, num_points, seed)
    lower = ais_log_likelihood(params, x, seed, num_temperatures, num_chains, betas, devices=devices)
    upper = reverse_ais_log_likelihood(params, x, hidden, seed, num_temperatures, num_chains, betas)
    return Sandwich(lower, upper, x, int(num_temperatures if betas is None else len(betas) - 1), int(num_chains))
