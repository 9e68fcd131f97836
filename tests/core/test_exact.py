"""The yardstick's arithmetic, checked against brute force (explicit loops over states), and
the diagnostics of importance weights, checked against ArviZ and known tails."""
import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

from sbn_ppl import SBNParams
from sbn_ppl.yardstick import diagnostics
import sbn_ppl.yardstick.exact as enumeration
from sbn_ppl.yardstick import estimates
from sbn_ppl.base import density
from tests.conftest import all_binary


def brute_force_log_joint_table(params, x):
    """log p(x_n, h) for every hidden state, by the reference density: (N, 2^H), states."""
    arch = params.architecture
    states = list(itertools.product([0.0, 1.0], repeat=arch.num_hidden))
    bounds = np.cumsum((0,) + arch.hidden_sizes)
    table = np.empty((len(x), len(states)))
    for c, s in enumerate(states):
        s = np.array(s)
        layers = [x] + [np.broadcast_to(s[bounds[i] : bounds[i + 1]], (len(x), n)) for i, n in enumerate(arch.hidden_sizes)]
        table[:, c] = density.log_joint(params, layers)
    return table, np.array(states)


def test_probabilities_of_all_visible_vectors_sum_to_one(small_params):
    x = all_binary(small_params.architecture.visible_size)
    total = np.exp(enumeration.exact_log_likelihood(small_params, x)).sum()
    assert total == pytest.approx(1.0, abs=1e-10)


def test_exact_log_likelihood_and_marginals_match_brute_force(small_params):
    x = all_binary(small_params.architecture.visible_size)[::3]
    table, states = brute_force_log_joint_table(small_params, x)
    log_px = np.logaddexp.reduce(table, axis=1)
    np.testing.assert_allclose(enumeration.exact_log_likelihood(small_params, x), log_px, rtol=1e-12)
    post = np.exp(table - log_px[:, None])
    marg = np.concatenate(enumeration.posterior_marginals(small_params, x), axis=1)
    np.testing.assert_allclose(marg, post @ states, atol=1e-12)


def test_chunked_enumeration_gives_the_same_answer(small_params, monkeypatch):
    x = all_binary(small_params.architecture.visible_size)
    whole = enumeration.exact_log_likelihood(small_params, x)
    monkeypatch.setattr(enumeration, "ELEMENTS_PER_CHUNK", 64)  # forces many tiny chunks
    np.testing.assert_allclose(enumeration.exact_log_likelihood(small_params, x), whole, rtol=1e-12)


def test_dense_with_unit_widths_is_neals_general_ordering():
    """1-1-1-1 dense: four units s3 -> s2 -> s1 -> s0, p(s_i = 1) = sigma(b_i + sum_{j>i} w_ji s_j)."""
    rng = np.random.default_rng(0)
    params = SBNParams.init("1-1-1-1", seed=5, scale=2.0, connectivity="dense", guide=())
    params = params.replace(**{f"b_{l}": rng.normal(size=1) for l in range(4)})
    w = {(m, l): float(params[f"W_{m}_{l}"][0, 0]) for m in range(4) for l in range(m)}
    b = [float(params[f"b_{l}"][0]) for l in range(4)]

    def p_x1():
        total = 0.0
        for s3, s2, s1 in itertools.product([0, 1], repeat=3):
            s = {3: s3, 2: s2, 1: s1, 0: 1}
            prob = 1.0
            for i in range(4):
                a = b[i] + sum(w[(j, i)] * s[j] for j in range(i + 1, 4))
                p1 = 1 / (1 + math.exp(-a))
                prob *= p1 if s[i] == 1 else 1 - p1
            total += prob
        return total

    ll = enumeration.exact_log_likelihood(params, np.array([[1.0]]))
    assert ll[0] == pytest.approx(math.log(p_x1()), abs=1e-12)


@pytest.mark.parametrize("guide", ["recognition", "mean_field"])
def test_kl_divergences_and_elbo(small_params, guide):
    x = all_binary(small_params.architecture.visible_size)[::5]
    kl = enumeration.exact_kl(small_params, guide, x)
    assert np.all(kl.q_p > 0) and np.all(kl.p_q > 0)
    assert np.all(kl.elbo < kl.log_likelihood)
    # against brute force with the reference guide density
    table, states = brute_force_log_joint_table(small_params, x)
    arch = small_params.architecture
    bounds = np.cumsum((0,) + arch.hidden_sizes)
    layers = [x[:, None, :]] + [states[None, :, bounds[i] : bounds[i + 1]] for i in range(arch.num_layers)]
    log_q = density.guide_log_prob(small_params, guide, layers)
    np.testing.assert_allclose(np.exp(log_q).sum(1), 1.0, rtol=1e-12)
    log_post = table - np.logaddexp.reduce(table, axis=1, keepdims=True)
    np.testing.assert_allclose(kl.q_p, (np.exp(log_q) * (log_q - log_post)).sum(1), rtol=1e-10)
    np.testing.assert_allclose(kl.p_q, (np.exp(log_post) * (log_post - log_q)).sum(1), rtol=1e-10)


def test_kl_is_zero_when_the_guide_is_the_posterior():
    """One hidden unit: its posterior is a Bernoulli, which mean field represents exactly."""
    params = SBNParams.init("3-1", seed=0, scale=2.0)
    x = np.array([[1.0, 0.0, 1.0]])
    (m,) = enumeration.posterior_marginals(params, x)
    logit = np.log(m[0, 0]) - np.log1p(-m[0, 0])
    exact_guide = params.replace(q_mf_b_1=np.array([logit]), q_mf_W_0_1=np.zeros((3, 1)))
    kl = enumeration.exact_kl(exact_guide, "mean_field", x)
    assert kl.q_p[0] == pytest.approx(0.0, abs=1e-6) and kl.p_q[0] == pytest.approx(0.0, abs=1e-6)


def test_importance_sampling_approaches_the_exact_value_as_k_grows():
    params = SBNParams.init("6-4-3", seed=2, scale=0.8)  # untrained guide: a loose proposal
    x = all_binary(6)[::4]
    exact = enumeration.exact_log_likelihood(params, x)
    # the exact relative variance of one weight, r = E_q[w^2] / p(x)^2 - 1, by enumeration
    table, states = brute_force_log_joint_table(params, x)
    layers = [x[:, None, :], states[None, :, :4], states[None, :, 4:]]
    log_q = density.guide_log_prob(params, "recognition", layers)
    r = np.exp(np.logaddexp.reduce(2 * table - log_q, axis=1) - 2 * exact) - 1
    assert r.max() < 100  # so K = 10,000 gives a standard error below 0.1 nat
    errors = []
    for k in (3, 100, 10_000):
        est = estimates.importance_log_likelihood(params, x, "recognition", k, seed=0)
        errors.append(np.mean(np.abs(est.per_point - exact)))
        if k == 3:  # log of a mean of unbiased weights: biased low (Jensen), clearly so at K = 3
            assert est.mean < exact.mean()
    # delta method: log-mean-exp has standard deviation sqrt(r / K) and bias -r / (2K);
    # 4 standard deviations per point (16 points) keeps a false alarm below 1e-3.
    k = 10_000
    est = estimates.importance_log_likelihood(params, x, "recognition", k, seed=0)
    assert np.all(np.abs(est.per_point - exact) < 4 * np.sqrt(r / k) + r / (2 * k))
    # the reported standard error estimates the same sqrt(r / K), within a factor of 2
    assert np.all((est.stderr > 0.5 * np.sqrt(r / k)) & (est.stderr < 2 * np.sqrt(r / k)))
    assert errors[0] > errors[1] > errors[2]


def test_importance_sampling_is_seeded():
    params = SBNParams.init("6-4-3", seed=2)
    x = all_binary(6)[:5]
    a = estimates.importance_log_likelihood(params, x, "mean_field", 50, seed=7)
    b = estimates.importance_log_likelihood(params, x, "mean_field", 50, seed=7)
    np.testing.assert_array_equal(a.per_point, b.per_point)


def test_exact_enumeration_refuses_too_many_hidden_units():
    params = SBNParams.init("4-15-6", seed=0)
    with pytest.raises(ValueError, match="at most 20 hidden units"):
        enumeration.exact_log_likelihood(params, np.zeros((1, 4)))


def test_bad_estimator_arguments():
    params = SBNParams.init("4-3", seed=0)
    x = np.zeros((2, 4))
    with pytest.raises(ValueError, match="at least 1"):
        estimates.importance_log_likelihood(params, x, num_particles=0)
    with pytest.raises(ValueError, match="unknown guide"):
        estimates.importance_log_likelihood(params, x, guide="posterior")
    with pytest.raises(ValueError, match="no 'recognition' guide"):
        estimates.importance_log_likelihood(params.generative(), x)
    with pytest.raises(ValueError, match="columns but the model has 4"):
        enumeration.exact_log_likelihood(params, np.zeros((2, 5)))


def test_numpy_importance_sampling_reports_ess_and_khat_of_its_weights():
    params = SBNParams.init("6-4-3", seed=2, scale=0.8)
    x = all_binary(6)[::8]
    est = estimates.importance_log_likelihood(params, x, "recognition", 500, seed=1)
    assert est.ess.shape == est.khat.shape == (8,) and np.all((est.ess >= 1) & (est.ess <= 500))
    few = estimates.importance_log_likelihood(params, x, "recognition", 5, seed=1)
    assert np.all(np.isnan(few.khat)) and any("too few to estimate the Pareto k-hat" in w for w in few.warnings)


def test_evaluation_imports_no_algorithm_and_no_jax():
    code = ("import sys, sbn_ppl.yardstick.exact, sbn_ppl.yardstick.diagnostics; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'torch') or m.startswith('sbn_ppl.inference')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the streaming accumulator --------------------------------------------------------------


def test_streaming_weights_equal_the_one_shot_formulas_whatever_the_chunks():
    rng = np.random.default_rng(0)
    log_w = rng.normal(-50.0, 3.0, size=(1000, 7))  # weights spanning e^20: a running max is needed
    acc = estimates.ImportanceWeights(7, 1000)
    cuts = [0, 1, 4, 100, 333, 999, 1000]
    for a, b in zip(cuts[:-1], cuts[1:]):
        acc.add(log_w[a:b])
    w = np.exp(log_w - log_w.max(0))
    mean = w.mean(0)
    np.testing.assert_allclose(acc.log_mean(), log_w.max(0) + np.log(mean), rtol=1e-12)
    np.testing.assert_allclose(acc.stderr(), w.std(0, ddof=1) / np.sqrt(1000) / mean, rtol=1e-9)
    np.testing.assert_allclose(acc.ess(), w.sum(0) ** 2 / (w**2).sum(0), rtol=1e-12)
    np.testing.assert_allclose(acc.khat(), diagnostics.pareto_khat(log_w, axis=0), rtol=1e-12)
    est, err = estimates.log_mean_exp([log_w[:10], log_w[10:]])
    np.testing.assert_allclose(est, acc.log_mean(), rtol=1e-12)
    np.testing.assert_allclose(err, acc.stderr(), rtol=1e-12)


def test_accumulator_refuses_to_give_khat_from_a_wrong_count_and_nothing_from_no_weights():
    acc = estimates.ImportanceWeights(2, 100)
    with pytest.raises(ValueError, match="at least 1"):
        acc.log_mean()
    acc.add(np.zeros((50, 2)))
    with pytest.raises(ValueError, match="expected 100 weights per point, got 50"):
        acc.khat()
    with pytest.raises(ValueError, match="at least 1"):
        estimates.log_mean_exp([])


# -- effective sample size and Pareto k-hat ---------------------------------------------------


def test_ess_of_equal_weights_is_k_and_of_one_dominant_weight_is_one():
    assert diagnostics.effective_sample_size(np.zeros(40)) == pytest.approx(40)
    assert diagnostics.effective_sample_size(np.r_[0.0, np.full(39, -800.0)]) == pytest.approx(1.0)


def test_khat_equals_arviz_psis_on_continuous_weights():
    arviz = pytest.importorskip("arviz")
    rng = np.random.default_rng(1)
    for k in (21, 200, 5000):
        log_w = np.concatenate([rng.normal(size=(3, k)) * 2.0, rng.standard_t(3, size=(3, k)) * 2.0,
                                np.log(rng.pareto(0.8, size=(2, k)))])
        _, reference = arviz.psislw(log_w.copy())
        np.testing.assert_allclose(diagnostics.pareto_khat(log_w), reference, rtol=1e-9)


@pytest.mark.parametrize("shape", [0.2, 0.5, 1.0])
def test_khat_recovers_the_shape_of_a_pareto_tail(shape):
    """Weights w = U^(-k) have a generalized Pareto tail of shape k exactly; k-hat from the
    M = 213 largest of K = 5000 has a standard deviation about (1 + k) / sqrt(M) <= 0.14."""
    rng = np.random.default_rng(2)
    log_w = -shape * np.log(rng.random(size=(20, 5000)))
    khat = diagnostics.pareto_khat(log_w)
    assert abs(khat.mean() - shape) < 0.06  # the mean of 20: sd <= 0.03, plus the prior's pull to 1/2
    assert np.all(np.abs(khat - shape) < 0.45)


def test_khat_of_a_tail_wider_than_floating_point_is_large_not_lost():
    """A poor guide's log-weights can span hundreds of nats; the fit still sees the tail."""
    rng = np.random.default_rng(3)
    log_w = rng.standard_cauchy(size=(4, 2000)) * 50.0
    assert np.all(diagnostics.pareto_khat(log_w) > 5)


def test_khat_is_nan_and_flagged_where_the_weights_are_discrete_or_too_few():
    discrete = np.repeat(np.arange(5.0), 200)[None]  # five values: no tail to fit
    assert np.isnan(diagnostics.pareto_khat(discrete))[0]
    assert np.isnan(diagnostics.pareto_khat(np.zeros((1, 100))))[0]
    assert np.isnan(diagnostics.pareto_khat(np.random.default_rng(0).normal(size=(1, 20))))[0]  # K < 21
    warnings = diagnostics.importance_warnings(np.array([50.0, 60.0]), np.array([np.nan, 0.3]), 1000)
    assert len(warnings) == 1 and "could not be estimated on 1 of 2 points" in warnings[0]


def test_warnings_name_each_problem_and_the_points_it_touches():
    ess, khat = np.array([500.0, 3.0, 400.0]), np.array([0.2, 0.9, 0.75])
    warnings = diagnostics.importance_warnings(ess, khat, 1000)
    assert len(warnings) == 2
    assert "above 0.7 on 2 of 3 points (max 0.90)" in warnings[0]
    assert "below 10 (of K = 1000) on 1 of 3 points (min 3.0)" in warnings[1]
    assert diagnostics.importance_warnings(np.array([900.0]), np.array([0.4]), 1000) == ()
    assert list(diagnostics.unreliable(ess, khat, 1000)) == [False, True, True]
    assert diagnostics.ess_floor(5000) == 50 and diagnostics.ess_floor(100) == 10
