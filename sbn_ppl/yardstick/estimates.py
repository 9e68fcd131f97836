"""What every estimator of ``log p(x)`` returns, and the streaming arithmetic of importance weights.

* :class:`LogLikelihood`: per-point estimates, their standard errors and the estimator's name
  (with the IS diagnostics where they apply).
* :class:`ImportanceWeights`: the streaming float64 accumulator every importance sampler
  here shares (log-mean-exp, delta-method standard error, effective sample size, the
  largest weights for the Pareto k-hat of :mod:`sbn_ppl.yardstick.diagnostics`);
  :func:`log_mean_exp` on chunks of log-weights.
* :func:`importance_log_likelihood`: ``log (1/K) sum_k p(x, h_k) / q(h_k | x)``, ``h_k ~ q``,
  the float64 NumPy reference (the jitted, streaming sampler for large nets is
  :mod:`sbn_ppl.yardstick.importance`).
"""
from __future__ import annotations

from typing import Iterable, NamedTuple

import numpy as np

import sbn_ppl.base.density as density
import sbn_ppl.yardstick.diagnostics as diagnostics
from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.base.params import SBNParams
from sbn_ppl.yardstick.exact import ELEMENTS_PER_CHUNK


class LogLikelihood(NamedTuple):
    """Per-data-point estimates of ``log p(x_n)`` in nats, and how far to trust them.

    ``stderr`` is the Monte Carlo standard error of each estimate (0 when exact). For
    importance sampling (and AIS) it is the delta-method one across the K weights,
    ``sd(w) / (sqrt(K) mean(w))``: the spread of the estimate that the *sample* variance of
    the weights implies. It ignores the estimator's downward bias (about ``-var(w) / (2 K
    mean(w)^2)``, Jensen) and is itself estimated from the same weights, so it is
    trustworthy only when the weights are not heavy-tailed: Pareto ``khat < 0.7``. With a
    poor guide the largest weights are simply not drawn, and both the estimate and its
    standard error come out far too small (issue 14: 4.95 nats below the exact value with a
    reported standard error of 0.05).

    ``ess`` (effective sample size ``(sum w)^2 / sum w^2``, 1..K) and ``khat`` (PSIS Pareto
    shape of the weights' tail, :mod:`sbn_ppl.yardstick.diagnostics`) are per data point, for
    importance sampling; ``None`` otherwise. ``warnings`` holds one line per problem found
    (k-hat above 0.7, a tiny ESS, K too small to check), empty when none.
    """

    per_point: np.ndarray
    stderr: np.ndarray
    estimator: str
    ess: np.ndarray | None = None
    khat: np.ndarray | None = None
    warnings: tuple[str, ...] = ()

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_point))

    @property
    def mean_stderr(self) -> float:
        """Standard error of :attr:`mean` from the estimator's own randomness (0 when exact;
        points are estimated independently)."""
        return float(np.sqrt(np.sum(self.stderr**2)) / len(self.per_point))

    def summary(self) -> dict:
        """The figures to print beside :attr:`mean`: ESS mean and min, k-hat max and mean
        (``None`` when not importance sampling; NaN k-hats, which cannot be estimated, left out)."""
        out = {"ess_mean": None, "ess_min": None, "khat_max": None, "khat_mean": None}
        if self.ess is not None:
            out["ess_mean"], out["ess_min"] = float(np.mean(self.ess)), float(np.min(self.ess))
        if self.khat is not None and np.isfinite(self.khat).any():
            out["khat_max"], out["khat_mean"] = float(np.nanmax(self.khat)), float(np.nanmean(self.khat))
        return out


class ImportanceWeights:
    """Streaming statistics of ``N`` points' importance weights, in float64.

    Fed chunks ``(K_i, N)`` of log-weights (float32 or float64), it keeps per point a
    running maximum ``m`` and the rescaled sums ``s1 = sum_k e^{log w_k - m}``, ``s2 = sum_k
    e^{2 (log w_k - m)}`` (rescaled by ``e^{m_old - m_new}`` when the maximum grows, so
    nothing overflows), and, if ``num_samples`` is given, the ``tail_size(K) + 1`` largest
    log-weights (for the Pareto k-hat; merged lazily, so the cost stays linear in K).
    Memory: ``O(N (tail + chunk))`` whatever K is. Then

        log p^(x) = m + log(s1 / K)                       (log-mean-exp)
        stderr    = sqrt(var(w) / K) / mean(w)            (delta method; var with K - 1 dof)
        ESS       = s1^2 / s2

    :param num_points: ``N``.
    :param num_samples: the total ``K`` the chunks will add up to; needed for the k-hat
        (``None``: no tail is kept and :meth:`khat` is unavailable).
    """

    def __init__(self, num_points: int, num_samples: int | None = None):
        self.log_max = np.full(num_points, -np.inf)
        self.s1, self.s2 = np.zeros(num_points), np.zeros(num_points)
        self.count = 0
        self.num_samples = num_samples
        self._keep = diagnostics.tail_size(num_samples) + 1 if num_samples else 0
        self._top = np.full((num_points, 0), -np.inf)
        self._pending: list[np.ndarray] = []
        self._pending_size = 0

    def add(self, log_w) -> None:
        """Add a chunk ``(K_i, N)`` of log-weights."""
        log_w = np.asarray(log_w, dtype=np.float64)
        new_max = np.maximum(self.log_max, log_w.max(0))
        r = np.exp(self.log_max - new_max)
        w = np.exp(log_w - new_max)
        self.s1, self.s2 = self.s1 * r + w.sum(0), self.s2 * r**2 + (w * w).sum(0)
        self.log_max, self.count = new_max, self.count + log_w.shape[0]
        if self._keep:
            self._pending.append(log_w.T)
            self._pending_size += log_w.shape[0]
            if self._pending_size >= max(self._keep, 256):
                self._merge()

    def _merge(self) -> None:
        if self._pending:
            both = np.concatenate([self._top] + self._pending, axis=1)
            cut = both.shape[1] - self._keep
            self._top = np.partition(both, cut, axis=1)[:, cut:] if cut > 0 else both
            self._pending, self._pending_size = [], 0

    def _check(self) -> None:
        if self.count == 0:
            raise ValueError("no importance weights: the number of samples must be at least 1")

    def log_mean(self) -> np.ndarray:
        """``log (1/K) sum_k w_k`` per point."""
        self._check()
        return self.log_max + np.log(self.s1 / self.count)

    def stderr(self) -> np.ndarray:
        """The delta-method standard error of :meth:`log_mean` (NaN for a single sample)."""
        self._check()
        k = self.count
        if k == 1:
            return np.full_like(self.s1, np.nan)
        mean_w = self.s1 / k
        var_w = np.maximum(self.s2 / k - mean_w**2, 0.0) * k / (k - 1)
        return np.sqrt(var_w / k) / mean_w

    def ess(self) -> np.ndarray:
        """Effective sample size ``(sum w)^2 / sum w^2`` per point (1..K)."""
        self._check()
        return self.s1**2 / self.s2

    def khat(self) -> np.ndarray:
        """PSIS Pareto k-hat of each point's weights (:func:`sbn_ppl.yardstick.diagnostics.khat_from_top`)."""
        self._check()
        if not self._keep:
            raise ValueError("the Pareto k-hat needs the accumulator built with num_samples")
        if self.count != self.num_samples:
            raise ValueError(f"expected {self.num_samples} weights per point, got {self.count}")
        self._merge()
        return diagnostics.khat_from_top(self._top, self.count)

    def result(self, estimator: str) -> LogLikelihood:
        """A :class:`LogLikelihood` with ESS, k-hat and the warnings they call for."""
        ess, khat = self.ess(), self.khat()
        return LogLikelihood(self.log_mean(), self.stderr(), estimator, ess, khat,
                             diagnostics.importance_warnings(ess, khat, self.count))


def log_mean_exp(log_weight_chunks: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``log (1/K) sum_k w_k`` for each column, from chunks ``(K_i, N)`` of log-weights.

    Runs in log space with a running maximum, so no weight overflows; also returns the
    delta-method standard error ``sd(w) / (sqrt(K) mean(w))`` of each estimate (``sd`` with
    ``K - 1`` degrees of freedom; NaN for a single sample, where it cannot be estimated).
    """
    acc = None
    for log_w in log_weight_chunks:
        log_w = np.asarray(log_w, dtype=np.float64)
        if acc is None:
            acc = ImportanceWeights(log_w.shape[1])
        acc.add(log_w)
    if acc is None:
        raise ValueError("no importance weights: the number of samples must be at least 1")
    return acc.log_mean(), acc.stderr()


def importance_log_likelihood(
    params: SBNParams,
    x: np.ndarray,
    guide: str = "recognition",
    num_particles: int = 1000,
    seed: int = 0,
) -> LogLikelihood:
    """``log (1/K) sum_k p(x, h_k) / q(h_k | x)`` with ``h_k ~ q(. | x)``, per data point.

    The float64 NumPy reference. Batched over data points and particles so the largest
    temporary holds about ``2^22`` numbers whatever K is. The standard error is the
    delta-method one (:class:`LogLikelihood` says when to trust it); ESS, Pareto k-hat and
    warnings come with it. At scale use ``sbn_ppl.yardstick.score(params, x, "is")`` (jitted
    and streaming); for a guide of your own written in Pyro, see
    ``sbn_ppl.yardstick.importance_pyro.guide_importance_log_likelihood``.
    """
    if num_particles < 1:
        raise ValueError(f"the number of importance samples must be at least 1, got {num_particles}")
    density.check_guide(params, guide)
    x = validate_binary(x, width=params.architecture.visible_size, name="x").astype(np.float64)
    rng = np.random.default_rng(seed)
    width = max(params.architecture.sizes)
    n_chunk = max(1, min(x.shape[0], ELEMENTS_PER_CHUNK // width))
    k_chunk = max(1, min(num_particles, ELEMENTS_PER_CHUNK // (n_chunk * width)))
    results = []
    for i in range(0, x.shape[0], n_chunk):
        xb = x[i : i + n_chunk]
        acc = ImportanceWeights(xb.shape[0], num_particles)
        for k0 in range(0, num_particles, k_chunk):
            layers = density.sample_guide(params, guide, xb, min(k_chunk, num_particles - k0), rng)
            acc.add(density.log_joint(params, layers) - density.guide_log_prob(params, guide, layers))
        results.append(acc)
    ess = np.concatenate([a.ess() for a in results])
    khat = np.concatenate([a.khat() for a in results])
    return LogLikelihood(np.concatenate([a.log_mean() for a in results]), np.concatenate([a.stderr() for a in results]),
                         f"is(K={num_particles},{guide})", ess, khat,
                         diagnostics.importance_warnings(ess, khat, num_particles))
