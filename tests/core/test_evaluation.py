"""The yardstick itself, checked against brute force (explicit loops over states)."""
import itertools
import math

import numpy as np
import pytest

from sbn_ppl import SBNParams, evaluation
from sbn_ppl import density
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
    total = np.exp(evaluation.exact_log_likelihood(small_params, x)).sum()
    assert total == pytest.approx(1.0, abs=1e-10)


def test_exact_log_likelihood_and_marginals_match_brute_force(small_params):
    x = all_binary(small_params.architecture.visible_size)[::3]
    table, states = brute_force_log_joint_table(small_params, x)
    log_px = np.logaddexp.reduce(table, axis=1)
    np.testing.assert_allclose(evaluation.exact_log_likelihood(small_params, x), log_px, rtol=1e-12)
    post = np.exp(table - log_px[:, None])
    marg = np.concatenate(evaluation.posterior_marginals(small_params, x), axis=1)
    np.testing.assert_allclose(marg, post @ states, atol=1e-12)


def test_chunked_enumeration_gives_the_same_answer(small_params, monkeypatch):
    x = all_binary(small_params.architecture.visible_size)
    whole = evaluation.exact_log_likelihood(small_params, x)
    monkeypatch.setattr(evaluation, "_ELEMENTS_PER_CHUNK", 64)  # forces many tiny chunks
    np.testing.assert_allclose(evaluation.exact_log_likelihood(small_params, x), whole, rtol=1e-12)


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

    ll = evaluation.exact_log_likelihood(params, np.array([[1.0]]))
    assert ll[0] == pytest.approx(math.log(p_x1()), abs=1e-12)


@pytest.mark.parametrize("guide", ["recognition", "mean_field"])
def test_kl_divergences_and_elbo(small_params, guide):
    x = all_binary(small_params.architecture.visible_size)[::5]
    kl = evaluation.exact_kl(small_params, guide, x)
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
    (m,) = evaluation.posterior_marginals(params, x)
    logit = np.log(m[0, 0]) - np.log1p(-m[0, 0])
    exact_guide = params.replace(q_mf_b_1=np.array([logit]), q_mf_W_0_1=np.zeros((3, 1)))
    kl = evaluation.exact_kl(exact_guide, "mean_field", x)
    assert kl.q_p[0] == pytest.approx(0.0, abs=1e-6) and kl.p_q[0] == pytest.approx(0.0, abs=1e-6)


def test_importance_sampling_approaches_the_exact_value_as_k_grows():
    params = SBNParams.init("6-4-3", seed=2, scale=0.8)  # untrained guide: a loose proposal
    x = all_binary(6)[::4]
    exact = evaluation.exact_log_likelihood(params, x)
    # the exact relative variance of one weight, r = E_q[w^2] / p(x)^2 - 1, by enumeration
    table, states = brute_force_log_joint_table(params, x)
    layers = [x[:, None, :], states[None, :, :4], states[None, :, 4:]]
    log_q = density.guide_log_prob(params, "recognition", layers)
    r = np.exp(np.logaddexp.reduce(2 * table - log_q, axis=1) - 2 * exact) - 1
    assert r.max() < 100  # so K = 10,000 gives a standard error below 0.1 nat
    errors = []
    for k in (3, 100, 10_000):
        est = evaluation.importance_log_likelihood(params, x, "recognition", k, seed=0)
        errors.append(np.mean(np.abs(est.per_point - exact)))
        if k == 3:  # log of a mean of unbiased weights: biased low (Jensen), clearly so at K = 3
            assert est.mean < exact.mean()
    # delta method: log-mean-exp has standard deviation sqrt(r / K) and bias -r / (2K);
    # 4 standard deviations per point (16 points) keeps a false alarm below 1e-3.
    k = 10_000
    est = evaluation.importance_log_likelihood(params, x, "recognition", k, seed=0)
    assert np.all(np.abs(est.per_point - exact) < 4 * np.sqrt(r / k) + r / (2 * k))
    # the reported standard error estimates the same sqrt(r / K), within a factor of 2
    assert np.all((est.stderr > 0.5 * np.sqrt(r / k)) & (est.stderr < 2 * np.sqrt(r / k)))
    assert errors[0] > errors[1] > errors[2]


def test_importance_sampling_is_seeded():
    params = SBNParams.init("6-4-3", seed=2)
    x = all_binary(6)[:5]
    a = evaluation.importance_log_likelihood(params, x, "mean_field", 50, seed=7)
    b = evaluation.importance_log_likelihood(params, x, "mean_field", 50, seed=7)
    np.testing.assert_array_equal(a.per_point, b.per_point)


def test_exact_enumeration_refuses_too_many_hidden_units():
    params = SBNParams.init("4-15-6", seed=0)
    with pytest.raises(ValueError, match="at most 20 hidden units"):
        evaluation.exact_log_likelihood(params, np.zeros((1, 4)))


def test_bad_estimator_arguments():
    params = SBNParams.init("4-3", seed=0)
    x = np.zeros((2, 4))
    with pytest.raises(ValueError, match="unknown estimator"):
        evaluation.score(params, x, "magic")
    with pytest.raises(ValueError, match="at least 1"):
        evaluation.importance_log_likelihood(params, x, num_particles=0)
    with pytest.raises(ValueError, match="unknown guide"):
        evaluation.importance_log_likelihood(params, x, guide="posterior")
    with pytest.raises(ValueError, match="no 'recognition' guide"):
        evaluation.importance_log_likelihood(params.generative(), x)
    with pytest.raises(ValueError, match="columns but the model has 4"):
        evaluation.exact_log_likelihood(params, np.zeros((2, 5)))
