"""Annealed importance sampling (Neal 2001) of ``log p(x)`` for an SBN, with no guide.

The chain starts from the prior ``p(h)`` (exact ancestral samples) and is annealed
through ``f_t(h) = p(h) p(x | h)^{beta_t}``, ``0 = beta_0 < beta_1 < ... < beta_T = 1``,
with the tempered Gibbs sweep of :mod:`sbn_ppl.inference.shared.gibbs.numpyro` as the transition
that leaves ``f_t`` invariant. Each run's log-weight::

    log w = sum_{t=1..T} (beta_t - beta_{t-1}) log p(x | h_{t-1}),   h_t ~ T_t(h_{t-1}, .)

is an unbiased estimate of ``p(x)`` in ``w``; per data point, ``log mean_c w_c`` over
the ``C`` independent runs (log-sum-exp) estimates ``log p(x)``, below it on average
(Jensen), and its standard error is the delta-method one, ``sd(w) / (sqrt(C) mean(w))``.

The default schedule is the sigmoid one of Wu, Burda, Salakhutdinov & Grosse (2017),
``beta_t ~ sigmoid(delta (2 t / T - 1))`` rescaled to [0, 1] with ``delta = 4``: dense
near both ends, where ``log p(x | h)`` changes fastest under the prior and where the
posterior sharpens.
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax, random

from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.yardstick.estimates import LogLikelihood, log_mean_exp
from sbn_ppl.models import numpyro_sbn
from sbn_ppl.base.params import SBNParams

from sbn_ppl.inference.shared.gibbs import numpyro as gibbs_jax
from sbn_ppl.yardstick.defaults import AIS_CHAINS, AIS_TEMPERATURES

# Defaults sized for a CPU: the digits test set (359 points) on 64-32-16 in about a minute
# on 2 cores. Papers use more (T in the thousands, C = 100); pass them for final figures.
NUM_TEMPERATURES = AIS_TEMPERATURES  # default T: intermediate distributions (one Gibbs sweep each)
NUM_CHAINS = AIS_CHAINS  # default C: independent annealing runs per data point
_ROWS_PER_CHUNK = 1 << 14  # data points x chains annealed at once (bounds memory)
_ROUND = 8  # chunks are a multiple of this many points: the same draws on 1, 2, 4 or 8 devices


def sigmoid_schedule(num_temperatures: int, delta: float = 4.0) -> np.ndarray:
    """``beta_0 = 0 < ... < beta_T = 1`` (``T + 1`` values), sigmoid-spaced (Wu et al. 2017)."""
    s = 1.0 / (1.0 + np.exp(-delta * (2.0 * np.arange(num_temperatures + 1) / num_temperatures - 1.0)))
    return (s - s[0]) / (s[-1] - s[0])


def _log_likelihood(params: SBNParams, x, hidden):
    """``log p(x | h) = sum_d [x_d a_d - softplus(a_d)]``, per batch element."""
    layers = gibbs_jax._layers(x, hidden)
    return numpyro_sbn.bernoulli_log_prob(layers[0], numpyro_sbn.preactivation(params.architecture, params,
                                                                               layers, 0)).sum(-1)


SEGMENT = 250  # transitions per compiled call: a progress bar moves within a chunk, not only after it


@partial(jax.jit, static_argnames="num_chains")
def _prior_start(rng_key, params: SBNParams, x, *, num_chains: int):
    """``h_0 ~ p(h)`` for every chain and point, and the key of the sweeps after it."""
    key_prior, key_sweeps = random.split(rng_key)
    return gibbs_jax.init(key_prior, params, x, num_chains=num_chains), key_sweeps


def anneal(rng_key, params: SBNParams, x, betas, *, num_chains: int, on_sweeps=None):
    """One AIS pass for every data point of ``x`` ``(n, D)``, ``num_chains`` runs each,
    along the schedule ``betas`` ``(T + 1,)``: the log-weights, ``(num_chains, n)``.
    ``on_sweeps(k)`` is called as each run of ``k`` transitions ends (for a progress bar)."""
    state, key_sweeps = _prior_start(rng_key, params, x, num_chains=num_chains)
    return anneal_from(key_sweeps, params, x, betas, state, on_sweeps=on_sweeps)


@jax.jit
def _first(params: SBNParams, x, state):
    log_lik = _log_likelihood(params, x, state.hidden)
    return state, jnp.zeros_like(log_lik), log_lik


@jax.jit
def _sweeps(key_sweeps, params: SBNParams, x, betas, carry, ts):
    """The transitions ``T_t`` for ``t`` in ``ts``, each adding its weight factor first."""

    def body(carry, t):
        state, log_w, log_lik = carry
        # log f_t(h_{t-1}) - log f_{t-1}(h_{t-1}) = (beta_t - beta_{t-1}) log p(x | h_{t-1})
        log_w = log_w + (betas[t] - betas[t - 1]) * log_lik
        state, info = gibbs_jax.step(random.fold_in(key_sweeps, t), state, params, x, betas[t])
        return (state, log_w, info.log_likelihood), None

    return lax.scan(body, carry, ts)[0]


def anneal_from(key_sweeps, params: SBNParams, x, betas, state, *, on_sweeps=None):
    """AIS along ``betas`` from the hidden state ``state`` (an exact draw from ``f_{beta_0}``):
    ``log w = sum_t (beta_t - beta_{t-1}) log p(x | h_{t-1})``, one per chain and point.
    Increasing ``betas`` from 0 (``state`` from the prior) estimate ``p(x)``; decreasing ones
    from 1 (``state`` an exact posterior draw) estimate ``1 / p(x)`` (reverse AIS, for BDMC).

    The transitions ``T_1 .. T_{T-1}`` (the last weight factor needs none after it) run in
    compiled segments of :data:`SEGMENT` (two shapes at most: one compilation each); the
    transition ``t`` draws from ``fold_in(key_sweeps, t)`` whatever the segments, so the
    segments change nothing but when ``on_sweeps`` is called."""
    carry = _first(params, x, state)
    last = int(betas.shape[0]) - 1
    for start in range(1, last, SEGMENT):
        ts = jnp.arange(start, min(start + SEGMENT, last))
        carry = _sweeps(key_sweeps, params, x, betas, carry, ts)
        if on_sweeps is not None:
            carry[1].block_until_ready()
            on_sweeps(int(ts.shape[0]))
    _, log_w, log_lik = carry
    return log_w + (betas[-1] - betas[-2]) * log_lik


def ais_log_likelihood(
    params: SBNParams,
    x,
    seed: int = 0,
    num_temperatures: int = NUM_TEMPERATURES,
    num_chains: int = NUM_CHAINS,
    betas=None,
    *,
    progress: bool = False,
    devices: int | None = None,
) -> LogLikelihood:
    """AIS estimate of ``log p(x_n)`` for every row of ``x``, with its standard error.

    :param params: the SBN (:class:`~sbn_ppl.SBNParams`); no guide is needed.
    :param x: data ``(N, D)`` of 0./1.
    :param seed: seed of the prior draws and the Gibbs sweeps (same seed, same numbers).
    :param num_temperatures: ``T``, the number of annealing steps (default 500); each
        intermediate distribution gets one tempered Gibbs sweep.
    :param num_chains: ``C``, independent annealing runs per data point (default 20).
    :param betas: an explicit increasing schedule from 0 to 1 (overrides ``num_temperatures``);
        default :func:`sigmoid_schedule`.
    :param progress: show a progress bar (with an ETA), in point-sweeps: one transition of a
        point's ``C`` chains; ``N (T - 1)`` in all.
    :param devices: the points of each chunk are split over this many devices (``None``:
        every device). The chunk of points annealed at once is ``min(N, 16384 // C)``,
        rounded up to a multiple of 8 (of the least common multiple of 8 and the device
        count when that does not divide 8). The draws depend on the chunk's shape only, so on
        1, 2, 4 or 8 devices the estimates are the same (to float32 rounding) for any ``N``;
        on other counts they are other draws of the same estimator.
    :returns: :class:`~sbn_ppl.yardstick.estimates.LogLikelihood` (``estimator`` ``"ais(T=..,C=..)"``).
    """
    if betas is None:
        if int(num_temperatures) != num_temperatures or num_temperatures < 1:
            raise ValueError(f"the number of temperatures must be a positive integer, got {num_temperatures}")
        betas = sigmoid_schedule(int(num_temperatures))
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size < 2 or betas[0] != 0.0 or betas[-1] != 1.0 or np.any(np.diff(betas) <= 0):
        raise ValueError("an AIS schedule must increase strictly from beta = 0 to beta = 1")
    if int(num_chains) != num_chains or num_chains < 1:
        raise ValueError(f"the number of AIS chains must be a positive integer, got {num_chains}")
    x = validate_binary(x, width=params.architecture.visible_size, name="x").astype(np.float32)
    import sbn_ppl.engine.sharding as sharding

    mesh = sharding.data_mesh(devices)
    theta = jax.tree_util.tree_map(jnp.asarray, params.generative())
    n = x.shape[0]
    chunk = min(n, max(1, _ROWS_PER_CHUNK // int(num_chains)))
    ndev = sharding.mesh_size(mesh)
    # The draws depend on the chunk's shape: rounded up to a multiple of lcm(_ROUND, devices),
    # which is _ROUND on 1, 2, 4 or 8 devices, the chunk (and so every estimate) is the same
    multiple = math.lcm(_ROUND, ndev)
    chunk = -(-chunk // multiple) * multiple
    key, schedule = random.PRNGKey(seed), jnp.asarray(betas, jnp.float32)
    if mesh is not None:
        rep = sharding.replicated(mesh)
        theta = jax.tree_util.tree_map(lambda v: sharding.put(np.asarray(v), rep), theta)
        schedule = sharding.put(np.asarray(schedule), rep)
    estimates, errors = [], []
    bar = None
    if progress:  # counted in point-sweeps (a point's C chains, one transition): the bar moves within a chunk
        from tqdm.auto import tqdm

        bar = tqdm(total=n * (betas.size - 2), unit="point-sweep", unit_scale=True, desc="AIS", leave=False)
    try:
        for i, start in enumerate(range(0, n, chunk)):
            xb = np.zeros((chunk, x.shape[1]), np.float32)  # the last chunk padded: one compilation
            rows = min(chunk, n - start)
            xb[:rows] = x[start:start + rows]
            chunk_key = random.fold_in(key, i)
            if mesh is None:
                xb = jnp.asarray(xb)
            else:  # the chunk's points split over the devices
                xb, chunk_key = sharding.put(xb, sharding.along(mesh, 0, 2)), sharding.put(np.asarray(chunk_key), rep)
            log_w = anneal(chunk_key, theta, xb, schedule, num_chains=int(num_chains),
                           on_sweeps=None if bar is None else (lambda k, rows=rows: bar.update(rows * k)))
            est, err = log_mean_exp([sharding.to_host(log_w).astype(np.float64)[:, :rows]])
            estimates.append(est)
            errors.append(err)
    finally:
        if bar is not None:
            bar.close()
    return LogLikelihood(np.concatenate(estimates), np.concatenate(errors),
                         f"ais(T={betas.size - 1},C={int(num_chains)})")
