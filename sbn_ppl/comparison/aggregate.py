"""The statistics of a comparison over seeds: what the table, the verdict and the plots say.

A comparison holds one record per (method, backend, seed) (see :func:`sbn_ppl.compare`).
With ``S`` seeds and, inside each seed, the same ``N`` test points for every method:

* **A method's score** is the mean over its seeds of the test ``log p(x)`` per data point,
  ``m = (1/S) sum_s L_s``, with the standard error over seeds ``sd(L_s) / sqrt(S)``. With
  one seed there is no spread over seeds to measure: the record's own standard error (over
  test points) stands in, and seed-to-seed variation is not included.
* **The paired difference to the best** (the method with the highest ``m``) is taken
  seed by seed on the seeds both have, so that what a seed shares (initial parameters,
  batches, test points) cancels. With ``S >= 2`` common seeds, ``d_s = L_s(method) -
  L_s(best)`` (each the mean over the same test points of the per-point differences)
  and the interval is Student's: ``mean(d) +- t_{(1+level)/2, S-1} sd(d) / sqrt(S)``.
  With one common seed the per-point differences ``d_n = log p_method(x_n) - log
  p_best(x_n)`` give a normal interval ``mean(d) +- z_{(1+level)/2} sd(d) / sqrt(N)``,
  which covers the test points' variation only.
* A difference whose interval contains 0 is **not significant**: that method is
  indistinguishable from the best at this budget.
* **Time to quality**: the training seconds until a learning curve first reaches the best
  final curve value minus ``quality_gap`` nats (median over seeds; a seed that never
  reaches it counts as infinite), at the resolution of the scored checkpoints.

NumPy, plus SciPy for Student's t quantile (``scipy.special.stdtrit``, imported when first needed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Mapping, Sequence

import numpy as np

LEVEL = 0.95  # confidence level of the paired intervals
QUALITY_GAP = 0.5  # nats below the best final curve value that count as "reached"

Record = Mapping[str, Any]

__all__ = [
    "LEVEL", "QUALITY_GAP", "Interval", "Row", "Summary", "curve_band", "final_curve_value", "label",
    "mean_stderr", "normal_interval", "paired_difference", "summarize", "t_interval", "time_to_reach",
]


def label(record: Record) -> str:
    """``"name (backend)"``: how a method is named in tables and legends."""
    return f"{record['method']} ({record['backend']})"


# -- intervals ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """A mean, its standard error and a two-sided interval at ``level``.

    ``over`` says what the spread is over: ``"seeds"`` (a t interval, ``n - 1`` degrees of
    freedom) or ``"test points"`` (a normal interval); ``n`` counts them. ``stderr``, ``low``
    and ``high`` are ``None`` where there is nothing to measure a spread on.
    """

    mean: float
    stderr: float | None
    low: float | None
    high: float | None
    n: int
    over: str
    level: float = LEVEL

    @property
    def contains_zero(self) -> bool | None:
        """Whether 0 lies in the interval (``None`` without an interval)."""
        if self.low is None or self.high is None:
            return None
        return self.low <= 0.0 <= self.high


def mean_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """``(mean, sd / sqrt(n))`` with the ``n - 1`` standard deviation; no standard error from one value."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values to average")
    if v.size == 1:
        return float(v[0]), None
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


def t_interval(values: Sequence[float], level: float = LEVEL, over: str = "seeds") -> Interval:
    """``mean +- t_{(1+level)/2, n-1} * se``: Student's interval for the mean of ``n >= 2`` values."""
    mean, se = mean_stderr(values)
    n = len(values)
    if se is None:
        return Interval(mean, None, None, None, n, over, level)
    from scipy.special import stdtrit  # Student's t quantile (inverse CDF): stdtrit(dof, p)

    half = float(stdtrit(n - 1, (1 + level) / 2)) * se
    return Interval(mean, se, mean - half, mean + half, n, over, level)


def normal_interval(values: Sequence[float], level: float = LEVEL, over: str = "test points") -> Interval:
    """``mean +- z_{(1+level)/2} * se``: the large-sample interval for the mean of ``n`` values."""
    mean, se = mean_stderr(values)
    n = len(values)
    if se is None:
        return Interval(mean, None, None, None, n, over, level)
    half = NormalDist().inv_cdf((1 + level) / 2) * se
    return Interval(mean, se, mean - half, mean + half, n, over, level)


def paired_difference(method: Mapping[int, Record], best: Mapping[int, Record],
                      level: float = LEVEL) -> Interval | None:
    """``method - best`` in test ``log p(x)``, paired on the seeds both have (see the module doc).

    :param method: the method's scored records by seed.
    :param best: the best method's scored records by seed.
    :returns: ``None`` when no seed is common; with one common seed, the per-point interval
        (no interval when a record lacks ``test_pointwise`` or the points differ).
    """
    common = [s for s in method if s in best]
    if not common:
        return None
    if len(common) >= 2:
        d = [method[s]["test_log_likelihood"] - best[s]["test_log_likelihood"] for s in common]
        return t_interval(d, level, over="seeds")
    s = common[0]
    a, b = method[s].get("test_pointwise"), best[s].get("test_pointwise")
    if a is None or b is None or len(a) != len(b) or len(a) == 0:
        d = method[s]["test_log_likelihood"] - best[s]["test_log_likelihood"]
        return Interval(float(d), None, None, None, 1, "seeds", level)
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return normal_interval(d, level, over="test points")


# -- learning curves ---------------------------------------------------------------------------
def _scored(curve: Sequence[Record] | None, x: str = "seconds") -> list[tuple[float, float]]:
    return [(float(c[x]), float(c["test_log_likelihood"])) for c in curve or []
            if c.get("test_log_likelihood") is not None and c.get(x) is not None]


def final_curve_value(curve: Sequence[Record] | None) -> float | None:
    """The last scored value of a learning curve."""
    points = _scored(curve)
    return points[-1][1] if points else None


def time_to_reach(curve: Sequence[Record] | None, threshold: float, x: str = "seconds") -> float:
    """``x`` (training seconds) at the first scored checkpoint with test ``log p(x) >= threshold``;
    ``inf`` if the curve never gets there."""
    for at, value in _scored(curve, x):
        if value >= threshold:
            return at
    return math.inf


def curve_band(curves: Sequence[Sequence[Record]], x: str = "seconds",
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Mean and standard error over seeds of the learning curves, against ``x``.

    Each seed's curve is interpolated linearly between its checkpoints onto the union of
    all seeds' ``x`` values, kept within the range every seed covers (so the mean is over
    all seeds at every point). Curves whose checkpoints coincide (a step budget, against
    steps) are averaged point by point without interpolation.

    :returns: ``(grid, mean, stderr)``; ``stderr`` is ``None`` with one curve.
    """
    points = [p for p in (_scored(c, x) for c in curves) if p]
    if not points:
        return np.empty(0), np.empty(0), None
    end = min(p[-1][0] for p in points)
    grid = np.unique(np.concatenate([[at for at, _ in p] for p in points]))
    grid = grid[grid <= end]
    ys = np.stack([np.interp(grid, *map(np.asarray, zip(*p))) for p in points])
    if len(ys) == 1:
        return grid, ys[0], None
    return grid, ys.mean(axis=0), ys.std(axis=0, ddof=1) / math.sqrt(len(ys))


# -- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One (method, backend) of a comparison, aggregated over its seeds.

    ``test`` is the mean test ``log p(x)`` with its standard error (``over="seeds"``, or the
    record's own over ``"test points"`` with one seed); ``diff`` the paired difference to
    the best (``None`` for the best itself and where no seed is common); the other numbers
    are means over the scored seeds, except ``khat`` (the worst, largest) and ``ess`` (the
    worst, smallest). ``time_to_quality`` is the median over seeds (``inf``: not reached).
    """

    method: str
    backend: str
    seeds: tuple[int, ...]
    failed: tuple[tuple[int, str], ...]
    unscored: tuple[int, ...]
    test: Interval | None
    diff: Interval | None
    rank: int | None
    best: bool
    steps: float | None
    seconds: float | None
    steps_per_second: float | None
    estimator: str | None
    train: float | None
    bound: float | None
    kl: float | None
    khat: float | None
    ess: float | None
    warnings: tuple[tuple[int, str], ...]
    final_curve: float | None
    time_to_quality: float | None
    reached: int

    @property
    def label(self) -> str:
        return f"{self.method} ({self.backend})"

    @property
    def indistinguishable(self) -> bool:
        """Not significantly different from the best (the best itself included)."""
        return self.best or (self.diff is not None and self.diff.contains_zero is True)


@dataclass(frozen=True)
class Summary:
    """The aggregated comparison: rows best first (rows without a score last)."""

    rows: tuple[Row, ...]
    level: float
    quality_gap: float
    quality_reference: float | None  # the best final learning-curve value (mean over seeds)
    quality_reference_label: str | None
    num_seeds: int  # distinct seeds over all records

    @property
    def best(self) -> Row | None:
        return next((r for r in self.rows if r.best), None)

    @property
    def quality_threshold(self) -> float | None:
        return None if self.quality_reference is None else self.quality_reference - self.quality_gap

    def verdict(self) -> str:
        """One line: which methods cannot be told apart from the best at this budget."""
        best = self.best
        scored = [r for r in self.rows if r.test is not None]
        if best is None:
            return "Verdict: no method has a test log p(x) estimate."
        if len(scored) == 1:
            return f"Verdict: only {best.label} has a test log p(x) estimate; nothing to compare it with."
        pct = f"{self.level:.0%}"
        tied = [r.label for r in scored if not r.best and r.indistinguishable]
        untested = [r.label for r in scored if not r.best and (r.diff is None or r.diff.contains_zero is None)]
        text = f"Verdict: {best.label} has the best mean test log p(x)"
        if tied:
            text += f"; indistinguishable from it at this budget ({pct} paired interval contains 0): {', '.join(tied)}"
        else:
            text += f"; every other method is significantly worse at this budget ({pct} paired intervals exclude 0)"
        if untested:
            text += f"; not tested (no paired interval): {', '.join(untested)}"
        if any(r.diff is not None and r.diff.over == "test points" for r in scored):
            text += " (one seed: seed-to-seed variation is not included)"
        return text + "."


def _mean(values) -> float | None:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return float(np.mean(v)) if v else None


def summarize(records: Sequence[Record], quality_gap: float = QUALITY_GAP, level: float = LEVEL) -> Summary:
    """Aggregate a comparison's records over seeds (see the module doc).

    :param records: dicts with at least ``method``, ``backend``, ``seed``,
        ``test_log_likelihood`` (``None``: no estimate), ``error`` and ``curve``; the other
        fields of :func:`sbn_ppl.compare`'s records are averaged where present.
    """
    if not quality_gap >= 0:
        raise ValueError(f"the quality gap must be a non-negative number of nats, got {quality_gap!r}")
    if not 0 < level < 1:
        raise ValueError(f"the confidence level must lie strictly between 0 and 1, got {level!r}")
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r["method"], r["backend"]), []).append(r)
    for (name, backend), rs in groups.items():
        seeds = [r.get("seed", 0) for r in rs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{name} ({backend}) has several records for one seed: seeds {seeds}")

    def scored(rs):
        return {r.get("seed", 0): r for r in rs if not r.get("error") and r.get("test_log_likelihood") is not None}

    by_seed = {key: scored(rs) for key, rs in groups.items()}
    means = {key: float(np.mean([r["test_log_likelihood"] for r in s.values()])) for key, s in by_seed.items() if s}
    best_key = max(means, key=lambda k: means[k]) if means else None  # the first listed wins a tie

    finals = {key: _mean(final_curve_value(r.get("curve")) for r in rs if not r.get("error"))
              for key, rs in groups.items()}
    finals = {k: v for k, v in finals.items() if v is not None}
    ref_key = max(finals, key=lambda k: finals[k]) if finals else None
    threshold = finals[ref_key] - quality_gap if ref_key is not None else None

    order = sorted(means, key=lambda k: -means[k])
    rank = {k: 1 + sum(means[j] > means[k] for j in means) for k in order}  # ties share a rank

    rows = []
    for key in order + [k for k in groups if k not in means]:
        rs, s = groups[key], by_seed[key]
        ok = [r for r in rs if not r.get("error")]
        if len(s) >= 2:
            test = t_interval([r["test_log_likelihood"] for r in s.values()], level)
        elif len(s) == 1:
            (r,) = s.values()
            se = r.get("test_stderr")
            test = Interval(float(r["test_log_likelihood"]), se, None, None,
                            len(r.get("test_pointwise") or ()), "test points", level)
        else:
            test = None
        times = [time_to_reach(r.get("curve"), threshold) for r in ok] if threshold is not None else []
        rows.append(Row(
            method=key[0], backend=key[1],
            seeds=tuple(sorted(s)),
            failed=tuple((r.get("seed", 0), str(r["error"])) for r in rs if r.get("error")),
            unscored=tuple(r.get("seed", 0) for r in ok if r.get("test_log_likelihood") is None),
            test=test,
            diff=None if key == best_key or not s else paired_difference(s, by_seed[best_key], level),
            rank=rank.get(key), best=key == best_key,
            steps=_mean(r.get("steps") for r in ok), seconds=_mean(r.get("seconds") for r in ok),
            steps_per_second=_mean(r.get("steps_per_second") for r in ok),
            estimator=next((r.get("test_estimator") for r in ok if r.get("test_estimator")), None),
            train=_mean(r.get("train_log_likelihood") for r in ok), bound=_mean(r.get("bound") for r in ok),
            kl=_mean(r.get("kl_q_p") for r in ok),
            khat=max((r["test_is_khat"] for r in ok if r.get("test_is_khat") is not None), default=None),
            ess=min((r["test_is_ess"] for r in ok if r.get("test_is_ess") is not None), default=None),
            warnings=tuple((r.get("seed", 0), str(w)) for r in ok for w in (r.get("warnings") or [])),
            final_curve=finals.get(key),
            time_to_quality=float(np.median(times)) if times else None,
            reached=sum(math.isfinite(t) for t in times),
        ))
    seeds = {r.get("seed", 0) for r in records}
    return Summary(tuple(rows), level, float(quality_gap), finals.get(ref_key),
                   None if ref_key is None else f"{ref_key[0]} ({ref_key[1]})", len(seeds))
