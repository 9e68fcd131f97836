"""Aggregation over seeds (issue 13), on hand-made records whose statistics are worked out by
hand here: means and standard errors over seeds, paired intervals (Student's t over seeds,
normal over test points with one seed), ranks, the verdict, time to quality and the
learning-curve bands.
"""
import math

import numpy as np
import pytest

from sbn_ppl.comparison.aggregate import (
    curve_band,
    normal_interval,
    paired_difference,
    summarize,
    t_interval,
    time_to_reach,
)

T_975_2 = 4.302652729749464  # Student's t quantile: P(T_2 <= 4.3027) = 0.975 (2 degrees of freedom)
Z_975 = 1.959963984540054  # the standard normal's 0.975 quantile


def curve(points, step_every=10):
    """A learning curve from ``[(seconds, test log p(x)), ...]``, the first point at step 0."""
    return [{"step": i * step_every, "epoch": i / 10, "seconds": float(s), "objective": v,
             "test_log_likelihood": float(v), "test_stderr": 0.1} for i, (s, v) in enumerate(points)]


def record(method, seed, ll, pointwise=None, backend="numpyro", points=None, **fields):
    """One record of ``sbn_ppl.compare``, with what the statistics read; the rest plausible."""
    pointwise = pointwise if pointwise is not None else [ll] * 4
    r = {"method": method, "backend": backend, "seed": seed, "guide": None, "options": {"lr": 0.1},
         "steps": 100, "epochs": 1.0, "seconds": 10.0, "steps_per_second": 10.0, "objective": ll,
         "test_log_likelihood": ll, "test_stderr": 0.05, "test_estimator": "exact",
         "test_is_log_likelihood": None, "test_is_stderr": None, "test_is_khat": None, "test_is_ess": None,
         "train_log_likelihood": ll + 0.5, "bound": None, "kl_q_p": None, "warnings": [],
         "test_pointwise": list(pointwise), "params": f"{method}-{backend}-seed{seed}/params.npz",
         "curve": curve(points if points is not None else [(0, -30.0), (10, ll)]), "error": None}
    r.update(fields)
    return r


def failed(method, seed, error="RuntimeError: no luck", backend="numpyro"):
    r = {k: None for k in record("x", 0, 0.0)}
    r.update(method=method, backend=backend, seed=seed, options={"lr": 0.1}, curve=[], error=error)
    return r


def three_seeds():
    """a: -10, -11, -12; b = a - (1, 2, 3); c = a - (3, 3.1, 2.9)."""
    a = [-10.0, -11.0, -12.0]
    return ([record("a", s, v) for s, v in enumerate(a)]
            + [record("b", s, v - d) for s, (v, d) in enumerate(zip(a, [1, 2, 3]))]
            + [record("c", s, v - d) for s, (v, d) in enumerate(zip(a, [3, 3.1, 2.9]))])


def by_label(summary):
    return {row.label: row for row in summary.rows}


def test_intervals_by_hand():
    i = t_interval([1.0, 2.0, 3.0])
    assert (i.mean, i.n, i.over) == (2.0, 3, "seeds")
    assert i.stderr == pytest.approx(1 / math.sqrt(3), rel=1e-12)
    assert (i.low, i.high) == pytest.approx((2 - T_975_2 / math.sqrt(3), 2 + T_975_2 / math.sqrt(3)), rel=1e-12)
    j = normal_interval([-1.0, -2.0, -3.0, -2.0])  # mean -2, sd sqrt(2/3), se sqrt(2/3)/2
    se = math.sqrt(2 / 3) / 2
    assert (j.mean, j.n, j.over) == (-2.0, 4, "test points")
    assert j.stderr == pytest.approx(se, rel=1e-12)
    assert (j.low, j.high) == pytest.approx((-2 - Z_975 * se, -2 + Z_975 * se), rel=1e-12)
    assert j.contains_zero is False
    one = t_interval([5.0])  # no spread from one value
    assert (one.mean, one.stderr, one.low, one.contains_zero) == (5.0, None, None, None)


def test_t_interval_contains_zero():
    # d = (1, 2, 3): 2 +- 4.303 / sqrt(3) = [-0.484, 4.484] contains 0
    assert t_interval([1.0, 2.0, 3.0]).contains_zero is True


def test_means_stderrs_paired_intervals_ranks_and_verdict_over_three_seeds():
    s = summarize(three_seeds())
    rows = by_label(s)
    a, b, c = rows["a (numpyro)"], rows["b (numpyro)"], rows["c (numpyro)"]
    assert [r.label for r in s.rows] == ["a (numpyro)", "b (numpyro)", "c (numpyro)"]
    assert [r.rank for r in s.rows] == [1, 2, 3] and s.best is a and a.best and a.diff is None
    # means over seeds and their standard errors: sd(-10, -11, -12) = 1
    assert (a.test.mean, b.test.mean) == (-11.0, -13.0) and c.test.mean == pytest.approx(-14.0, abs=1e-12)
    assert a.test.stderr == pytest.approx(1 / math.sqrt(3), rel=1e-12) and a.test.over == "seeds"
    assert b.test.stderr == pytest.approx(2 / math.sqrt(3), rel=1e-12)  # sd(-11, -13, -15) = 2
    # b - a per seed: d = (-1, -2, -3): mean -2, se 1/sqrt(3), t interval with 2 degrees of freedom
    half = T_975_2 / math.sqrt(3)
    assert b.diff.mean == -2.0 and b.diff.stderr == pytest.approx(1 / math.sqrt(3), rel=1e-12)
    assert (b.diff.low, b.diff.high) == pytest.approx((-2 - half, -2 + half), rel=1e-12)
    assert b.diff.contains_zero and b.indistinguishable
    # c - a per seed: d = (-3, -3.1, -2.9): mean -3, se 0.1/sqrt(3): significant
    assert c.diff.mean == pytest.approx(-3.0, abs=1e-12)
    assert c.diff.stderr == pytest.approx(0.1 / math.sqrt(3), rel=1e-12)
    assert c.diff.high == pytest.approx(-3 + T_975_2 * 0.1 / math.sqrt(3), rel=1e-12) and c.diff.high < 0
    assert not c.indistinguishable
    assert s.verdict() == ("Verdict: a (numpyro) has the best mean test log p(x); indistinguishable from it at "
                           "this budget (95% paired interval contains 0): b (numpyro).")


def test_one_seed_pairs_the_test_points_and_says_so():
    base = [-1.0, -2.0, -3.0, -4.0]
    records = [record("best", 0, -2.5, base, test_stderr=0.6455),
               record("worse", 0, -4.5, np.add(base, [-1, -2, -3, -2]).tolist()),   # d = (-1, -2, -3, -2)
               record("close", 0, -2.5, np.add(base, [1, -1, 1, -1]).tolist())]   # d = (1, -1, 1, -1)
    s = summarize(records)
    rows = by_label(s)
    best, worse, close = rows["best (numpyro)"], rows["worse (numpyro)"], rows["close (numpyro)"]
    # one seed: the record's own standard error over test points
    assert (best.test.mean, best.test.stderr, best.test.over) == (-2.5, 0.6455, "test points")
    se = math.sqrt(2 / 3) / 2
    assert worse.diff.over == "test points" and worse.diff.n == 4 and worse.diff.mean == -2.0
    assert (worse.diff.low, worse.diff.high) == pytest.approx((-2 - Z_975 * se, -2 + Z_975 * se), rel=1e-12)
    se = math.sqrt(4 / 3) / 2
    assert close.diff.mean == 0.0 and close.diff.high == pytest.approx(Z_975 * se, rel=1e-12)
    # equal means share a rank; the first listed is the reference
    assert [(r.label, r.rank) for r in s.rows] == [("best (numpyro)", 1), ("close (numpyro)", 1),
                                                   ("worse (numpyro)", 3)]
    assert s.verdict() == ("Verdict: best (numpyro) has the best mean test log p(x); indistinguishable from it at "
                           "this budget (95% paired interval contains 0): close (numpyro) "
                           "(one seed: seed-to-seed variation is not included).")


def test_pairing_uses_only_common_seeds():
    best = {s: record("a", s, v) for s, v in enumerate([-10.0, -11.0, -12.0])}
    other = {0: record("b", 0, -10.5, [-10.5] * 4), 2: record("b", 2, -12.0)}
    d = paired_difference(other, best)
    assert (d.n, d.over, d.mean) == (2, "seeds", -0.25)  # d = (-0.5, 0)
    assert d.stderr == pytest.approx(0.25, rel=1e-12)
    assert paired_difference({5: record("b", 5, -1.0)}, best) is None


def test_every_other_method_significantly_worse():
    records = [record("a", s, -10.0 - s) for s in range(3)] + [record("b", s, -12.0 - s * 1.01) for s in range(3)]
    assert summarize(records).verdict() == (
        "Verdict: a (numpyro) has the best mean test log p(x); every other method is significantly worse at this "
        "budget (95% paired intervals exclude 0).")


def test_failures_are_kept_apart():
    records = three_seeds()[:3] + [record("b", 0, -11.0), failed("b", 1), record("b", 2, -13.0)]
    records += [failed("z", s, f"ValueError: bad {s}") for s in range(3)]
    summary = summarize(records)
    b, z = by_label(summary)["b (numpyro)"], by_label(summary)["z (numpyro)"]
    assert b.seeds == (0, 2) and b.failed == ((1, "RuntimeError: no luck"),) and b.test.mean == -12.0
    assert b.diff.n == 2 and b.diff.mean == -1.0 and b.rank == 2
    assert z.test is None and z.rank is None and z.diff is None and [s for s, _ in z.failed] == [0, 1, 2]
    assert summary.rows[-1] is z  # methods without a score last


def test_one_record_per_method_and_seed():
    with pytest.raises(ValueError, match=r"a \(numpyro\) has several records for one seed: seeds \[0, 0\]"):
        summarize([record("a", 0, -1.0), record("a", 0, -2.0)])


def test_time_to_quality_is_the_median_over_seeds():
    # a ends at -10 on average (-10, -10.2, -9.8): the threshold is -10.5
    a = [[(0, -30), (2, -10.4), (9, -10.0)], [(0, -30), (3, -10.45), (9, -10.2)], [(0, -30), (1, -11), (4, -10),
                                                                                   (9, -9.8)]]
    b = [[(0, -30), (5, -10.4), (9, -10.6)], [(0, -30), (9, -11)], [(0, -30), (9, -12)]]
    c = [[(0, -30), (1, -10.4), (9, -10.4)], [(0, -30), (7, -10.3), (9, -10.3)], [(0, -30), (9, -10.6)]]
    records = [record(m, s, -20.0, points=p) for m, pts in zip("abc", (a, b, c)) for s, p in enumerate(pts)]
    s = summarize(records)
    assert s.quality_reference == pytest.approx(-10.0) and s.quality_reference_label == "a (numpyro)"
    assert s.quality_threshold == pytest.approx(-10.5)
    rows = by_label(s)
    assert (rows["a (numpyro)"].time_to_quality, rows["a (numpyro)"].reached) == (3.0, 3)
    assert (rows["b (numpyro)"].time_to_quality, rows["b (numpyro)"].reached) == (math.inf, 1)
    assert (rows["c (numpyro)"].time_to_quality, rows["c (numpyro)"].reached) == (7.0, 2)
    # a larger gap: every first checkpoint past -30 counts
    rows = by_label(summarize(records, quality_gap=3.0))
    assert rows["b (numpyro)"].time_to_quality == 9.0 and rows["a (numpyro)"].time_to_quality == 2.0
    assert time_to_reach(curve([(0, -30), (4, -1)]), -2.0, x="step") == 10
    with pytest.raises(ValueError, match="quality gap"):
        summarize(records, quality_gap=-1)


def test_curve_band_interpolates_onto_the_checkpoints_every_seed_covers():
    one, two = curve([(0, -20), (2, -12), (4, -10)]), curve([(0, -20), (3, -11), (5, -9)])
    grid, mean, se = curve_band([one, two], "seconds")
    # two at 2 s: -20 + 9 * 2/3 = -14; one at 3 s: -11; two at 4 s: -10; 5 s is beyond one's end
    assert grid.tolist() == [0, 2, 3, 4]
    assert mean.tolist() == pytest.approx([-20, -13, -11, -10], abs=1e-12)
    assert se.tolist() == pytest.approx([0, 1, 0, 0], abs=1e-12)  # sd(-12, -14) / sqrt(2) = 1
    grid, mean, se = curve_band([one, two], "step")  # the same steps: point by point
    assert grid.tolist() == [0, 10, 20] and mean.tolist() == [-20, -11.5, -9.5] and se is not None
    grid, mean, se = curve_band([one], "seconds")
    assert mean.tolist() == [-20, -12, -10] and se is None
    unscored = [{"step": 5, "seconds": 1.0, "objective": -3.0}]  # a checkpoint without a test score is skipped
    assert curve_band([one[:1] + unscored + one[1:]], "seconds")[0].tolist() == [0, 2, 4]
