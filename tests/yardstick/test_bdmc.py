"""Bidirectional Monte Carlo brackets the exact log p(x) (enumeration) and tightens with T.

Forward AIS is a stochastic lower bound and reverse AIS from the exact posterior sample a
stochastic upper bound, per simulated point. Their means over the same points are compared
with the exact mean, paired: the Monte Carlo error of each per-point estimate is what can
push a bound across the truth, so the tolerance is three paired standard errors of the
difference (about 0.01-0.03 nats here at 200 points; the bias being tested is of order the
gap, 0.1-1.5 nats at T = 10).
"""
import numpy as np
import pytest

from sbn_ppl import SBNParams
import sbn_ppl.yardstick.exact as enumeration
from sbn_ppl.yardstick.bdmc import bdmc

POINTS, CHAINS = 200, 4


def _paired_se(a, b) -> float:
    d = np.asarray(a) - np.asarray(b)
    return float(d.std(ddof=1) / np.sqrt(len(d)))


@pytest.fixture(scope="module", params=["layered", "dense"])
def net(request):
    return SBNParams.init("12-5-4", seed=3, scale=2.0, guide=(), connectivity=request.param)


@pytest.fixture(scope="module")
def sandwiches(net):
    return {t: bdmc(net, num_points=POINTS, seed=1, num_temperatures=t, num_chains=CHAINS) for t in (10, 160)}


def test_the_sandwich_contains_the_exact_log_likelihood(net, sandwiches):
    for s in sandwiches.values():
        exact = enumeration.exact_log_likelihood(net, s.x)
        assert s.lower.mean <= exact.mean() + 3 * _paired_se(s.lower.per_point, exact)
        assert s.upper.mean >= exact.mean() - 3 * _paired_se(s.upper.per_point, exact)


def test_the_gap_shrinks_as_the_temperatures_grow(sandwiches):
    # AIS's bias falls like 1/T for large T; 16x the temperatures must at least quarter the
    # gap (measured: 0.53 -> 0.003 nats layered, 1.5 -> 0.02 dense, with T = 5 and 320)
    assert sandwiches[10].gap > 0
    assert sandwiches[160].gap <= sandwiches[10].gap / 4


def test_bdmc_is_seeded_and_checks_its_arguments(net):
    a = bdmc(net, num_points=8, seed=2, num_temperatures=5, num_chains=2)
    b = bdmc(net, num_points=8, seed=2, num_temperatures=5, num_chains=2)
    np.testing.assert_array_equal(a.upper.per_point, b.upper.per_point)
    assert set(a.summary()) >= {"bdmc_gap", "bdmc_lower", "bdmc_upper", "bdmc_points"}
    with pytest.raises(ValueError, match="simulated points"):
        bdmc(net, num_points=0)
