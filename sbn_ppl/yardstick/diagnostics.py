"""How far to trust an importance-sampling estimate: effective sample size and Pareto k-hat.

For one data point, ``K`` importance weights ``w_k = p(x, h_k) / q(h_k | x)``, ``h_k ~ q``:

* **Effective sample size** (Kong 1992): ``ESS = (sum_k w_k)^2 / sum_k w_k^2``, between 1
  (one weight carries everything) and ``K`` (all weights equal, ``q`` is the posterior).
* **Pareto k-hat** (PSIS; Vehtari, Simpson, Gelman, Yao & Gabry 2024, JMLR 25(72)): fit a
  generalized Pareto distribution to the ``M = ceil(min(K / 5, 3 sqrt(K)))`` largest
  weights (minus the next largest, the threshold) and report its shape ``k``. The weights'
  distribution has ``1 / k`` finite moments: for ``k < 1/2`` the variance is finite and the
  central limit theorem (and so the delta-method standard error) applies; for
  ``1/2 <= k < 0.7`` the estimate still converges at a practical rate; for ``k > 0.7`` the
  estimate may be far off, and its estimated standard error is not to be trusted: it is
  computed from the same few large weights that are missing (issue 14: an estimate 4.95 nats
  below the exact value with a reported standard error of 0.05).

The generalized-Pareto fit is the empirical-Bayes estimate of Zhang & Stephens (2009,
Technometrics 51(3)) with PSIS's weakly informative prior on ``k`` (``k <- (M k + 5) / (M +
10)``), as in the ``loo`` R package and ArviZ (``arviz.psislw``); the test suite checks it
against ArviZ. Ties follow ``loo``: the tail is the ``M`` largest weights by rank and the
threshold the ``(M + 1)``-th. But a generalized Pareto tail is continuous, and the weights
of a net with few hidden states are not: its ``M`` largest weights repeat a handful of
values, and a fit to them says nothing (k-hat of 2.5 on tails with an effective sample
size of 500 of 1,000, measured on a 12-6-4 net). So where the tail has fewer distinct
values than ``M / 4``, or a quarter of it equals the threshold (all of it, in the limit,
where ``loo`` says ``Inf``), k-hat is ``NaN``: not estimable. That happens with good
guides and with terrible ones (a guide that puts all its mass on a few states away from
the posterior's: errors of 15 nats at an ESS of 50, measured on a 10-5-3 net with weights
of +-6), so it is a warning of its own: the standard error cannot be checked there. Such
nets are small enough to score exactly.

The exceedances are computed in log space and measured in units of their first quartile
(the fit is scale-invariant), so a tail spanning hundreds of nats, as a poor guide's does,
is fitted rather than lost to underflow.

NumPy only; :func:`pareto_khat` takes all the weights, :func:`khat_from_top` only the
``M + 1`` largest (what a streaming sampler keeps).
"""
from __future__ import annotations

import math

import numpy as np

KHAT_THRESHOLD = 0.7  # above it the estimate and its standard error are unreliable (PSIS)
MIN_TAIL = 5  # the fewest tail points PSIS fits (loo's enough_tail_samples): K >= 21
MAX_TAIL = 2048  # a streaming sampler keeps at most this many largest weights per point
DISTINCT_FRACTION = 0.25  # a tail with fewer distinct values than this fraction of M is discrete: no k-hat
ESS_FLOOR = 10.0  # an effective sample size below max(ESS_FLOOR, ESS_FRACTION * K) is "tiny"
ESS_FRACTION = 0.01
_PRIOR_K_WEIGHT = 10  # PSIS's prior: k shrinks towards 1/2 as if by 10 more points
_GRID_MIN = 30  # Zhang & Stephens: the grid has 30 + floor(sqrt(M)) points
_ROWS_PER_FIT = 256  # data points fitted at once (bounds the (rows, grid, M) temporary)


def tail_size(num_samples: int) -> int:
    """PSIS's ``M = ceil(min(K / 5, 3 sqrt(K)))`` (independent draws, ``r_eff = 1``), capped
    at :data:`MAX_TAIL` (reached at ``K`` about 466,000: beyond it k-hat is fitted to a
    tail above a higher threshold, a valid estimate of the same shape)."""
    return int(min(math.ceil(min(num_samples / 5.0, 3.0 * math.sqrt(num_samples))), MAX_TAIL))


def effective_sample_size(log_weights: np.ndarray, axis: int = 0) -> np.ndarray:
    """``(sum w)^2 / sum w^2`` along ``axis``, from log-weights (in float64, overflow-free)."""
    lw = np.asarray(log_weights, dtype=np.float64)
    lw = lw - np.max(lw, axis=axis, keepdims=True)
    w = np.exp(lw)
    return np.sum(w, axis=axis) ** 2 / np.sum(w * w, axis=axis)


def gpd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shape ``k`` and scale ``sigma`` of a generalized Pareto distribution (location 0)
    fitted to each row of ``x`` (``(..., M)``, sorted ascending, non-negative).

    Zhang & Stephens (2009): the profile likelihood of ``theta = -k / sigma`` is

        l(theta) = M (log(-theta / k(theta)) - k(theta) - 1),   k(theta) = mean_i log(1 - theta x_i)

    evaluated on the grid ``theta_j = 1 / x_(M) + (1 - sqrt(m / (j - 1/2))) / (3 x_*)``,
    ``j = 1..m``, ``m = 30 + floor(sqrt(M))``, ``x_*`` the first quartile; the estimate is
    the posterior mean ``theta^ = sum_j theta_j softmax(l)_j`` (weights below ``10 eps``
    dropped), ``k = mean log(1 - theta^ x)``, ``sigma = -k / theta^``, and then PSIS's prior
    ``k <- (M k + 10 / 2) / (M + 10)``.
    """
    x = np.asarray(x, dtype=np.float64)
    shape, n = x.shape[:-1], x.shape[-1]
    flat = x.reshape(-1, n)
    k, sigma = np.empty(len(flat)), np.empty(len(flat))
    for start in range(0, len(flat), _ROWS_PER_FIT):
        k[start:start + _ROWS_PER_FIT], sigma[start:start + _ROWS_PER_FIT] = _gpd_fit_rows(
            flat[start:start + _ROWS_PER_FIT])
    return k.reshape(shape), sigma.reshape(shape)


def _gpd_fit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[1]
    m = _GRID_MIN + int(math.sqrt(n))
    j = np.arange(1, m + 1, dtype=np.float64)
    quartile = x[:, int(n / 4 + 0.5) - 1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        theta = 1.0 / x[:, -1:] + (1.0 - np.sqrt(m / (j - 0.5)))[None, :] / (3.0 * quartile[:, None])  # (R, m)
        k_grid = np.log1p(-theta[:, :, None] * x[:, None, :]).mean(-1)  # (R, m)
        profile = n * (np.log(-theta / k_grid) - k_grid - 1.0)
        weights = np.exp(profile - profile.max(1, keepdims=True))
        weights /= weights.sum(1, keepdims=True)
        weights = np.where(weights >= 10 * np.finfo(float).eps, weights, 0.0)
        weights /= weights.sum(1, keepdims=True)
        theta_hat = (theta * weights).sum(1)
        k = np.log1p(-theta_hat[:, None] * x).mean(1)
        sigma = -k / theta_hat
    k = (n * k + _PRIOR_K_WEIGHT * 0.5) / (n + _PRIOR_K_WEIGHT)
    return k, sigma


def khat_from_top(top_log_weights: np.ndarray, num_samples: int) -> np.ndarray:
    """Pareto k-hat per row from its largest log-weights only.

    :param top_log_weights: ``(N, T)``, each row holding (in any order) at least the
        ``tail_size(K) + 1`` largest of that point's ``K`` log-weights; extra columns are
        ignored, ``-inf`` marks an empty slot.
    :param num_samples: ``K``, the number of weights each row was drawn from.
    :returns: ``(N,)`` k-hat; ``NaN`` where ``K < 21`` (too few for a tail of 5), or where
        the tail is discrete: fewer distinct values than a quarter of its length, or a
        quarter of it equal to the threshold (ties: a net with few hidden states).
    """
    top = np.asarray(top_log_weights, dtype=np.float64)
    m = tail_size(num_samples)
    if m < MIN_TAIL:
        return np.full(top.shape[0], np.nan)
    if top.shape[1] < m + 1:
        raise ValueError(f"k-hat from K = {num_samples} weights needs the {m + 1} largest, got {top.shape[1]}")
    top = np.sort(top, axis=1)[:, -(m + 1):]  # ascending: the threshold, then the tail
    threshold, tail = top[:, :1], top[:, 1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        # log of the exceedances w - w_threshold, exactly (no underflow however wide the
        # tail): log w + log(1 - w_threshold / w); -inf where w equals the threshold
        z = tail + np.log(-np.expm1(threshold - tail))
    quartile = z[:, int(m / 4 + 0.5) - 1]
    # the fit is invariant to the scale of the exceedances: measure them in quartiles, so a
    # tail spanning hundreds of nats neither underflows nor overflows (beyond e^700 they are
    # clipped, where k-hat is far above any threshold anyway)
    distinct = 1 + np.sum(np.diff(tail, axis=1) > 0, axis=1)
    # ties: a quarter of the tail equals the threshold, or the tail has fewer distinct
    # values than a quarter of its length (discrete weights: a net with few hidden states)
    unusable = ~np.isfinite(quartile) | (distinct < DISTINCT_FRACTION * m)
    y = np.exp(np.minimum(z - np.where(unusable, 0.0, quartile)[:, None], 700.0))
    k, _ = gpd_fit(np.where(unusable[:, None], 1.0, y))
    return np.where(unusable, np.nan, k)


def pareto_khat(log_weights: np.ndarray, axis: int = -1) -> np.ndarray:
    """PSIS's Pareto k-hat of each set of log-weights along ``axis`` (all the weights given)."""
    lw = np.moveaxis(np.asarray(log_weights, dtype=np.float64), axis, -1)
    shape, k = lw.shape[:-1], lw.shape[-1]
    flat = lw.reshape(-1, k)
    m = tail_size(k)
    keep = min(k, m + 1)
    top = np.partition(flat, k - keep, axis=1)[:, k - keep:] if keep < k else flat
    return khat_from_top(top, k).reshape(shape)


def ess_floor(num_samples: int) -> float:
    """The effective sample size below which an estimate rests on too few weights:
    ``max(10, 1% of K)``."""
    return max(ESS_FLOOR, ESS_FRACTION * num_samples)


def unreliable(ess: np.ndarray, khat: np.ndarray, num_samples: int) -> np.ndarray:
    """Per point: is its standard error not to be trusted? ``khat > 0.7``, or k-hat not
    estimable (``NaN``: ``K < 21`` or a discrete tail), or ``ESS < max(10, 1% of K)``."""
    khat = np.asarray(khat, dtype=np.float64)
    return np.isnan(khat) | (khat > KHAT_THRESHOLD) | (np.asarray(ess, dtype=np.float64) < ess_floor(num_samples))


def importance_warnings(ess: np.ndarray, khat: np.ndarray, num_samples: int) -> tuple[str, ...]:
    """One line per problem with a set of per-point IS estimates (empty when none): the
    points that :func:`unreliable` flags, by cause.

    * k-hat above :data:`KHAT_THRESHOLD`: heavy-tailed weights;
    * k-hat not estimable: ``K < 21``, or the largest weights take few distinct values;
    * ESS below ``max(10, 1% of K)``: the estimate rests on a few weights.
    """
    ess, khat = np.asarray(ess, dtype=np.float64), np.asarray(khat, dtype=np.float64)
    n, out = ess.size, []
    if tail_size(num_samples) < MIN_TAIL:
        out.append(f"K = {num_samples} importance samples are too few to estimate the Pareto k-hat of the weights "
                   f"(it needs K >= 21), so the standard error cannot be checked")
    else:
        missing = np.isnan(khat)
        if missing.any():
            out.append(f"Pareto k-hat of the importance weights could not be estimated on {int(missing.sum())} of {n} "
                       f"points: their largest weights take few distinct values (a net with few hidden states, or a "
                       f"guide concentrated on a few), so the standard error cannot be checked there; score a small "
                       f"net exactly")
    bad = np.nan_to_num(khat, nan=-np.inf) > KHAT_THRESHOLD
    if bad.any():
        out.append(f"Pareto k-hat of the importance weights is above {KHAT_THRESHOLD} on {int(bad.sum())} of {n} "
                   f"points (max {np.nanmax(khat):.2f}): the weights are heavy-tailed, the estimate may be far off and "
                   f"its standard error is not trustworthy; use a better guide (e.g. one fitted post hoc) or more "
                   f"particles")
    floor = ess_floor(num_samples)
    tiny = ess < floor
    if tiny.any():
        out.append(f"effective sample size of the importance weights is below {floor:g} (of K = {num_samples}) on "
                   f"{int(tiny.sum())} of {n} points (min {ess.min():.1f}): those estimates rest on a few weights")
    return tuple(out)
