"""Saul-Jaakkola-Jordan mean field: the bound, its coordinate ascent, and learning, against enumeration."""
import numpy as np
import pytest

from sbn_ppl import SBNParams
from sbn_ppl.data import synthetic
from sbn_ppl.evaluation import exact_kl, exact_log_likelihood, posterior_marginals
from sbn_ppl.inference.fixed_point import numpyro as fp
from sbn_ppl.methods import get_method

FLOAT32_SLACK = 1e-4  # nats per data point: the bound is computed in float32 (terms of size ~10)


@pytest.fixture(scope="module")
def teacher():
    data = synthetic("12-4-3", 0)  # strong weights (scale 2): a posterior far from factorised
    return data.teacher, data.test[:16]


def random_variational(rng, n):
    lam = [rng.normal(0.0, 2.0, (n, k)) for k in (4, 3)]
    xi = [rng.uniform(0.0, 1.0, (n, k)) for k in (12, 4, 3)]
    return lam, xi


def test_bound_lies_below_the_exact_mean_field_elbo_for_any_mu_and_xi(teacher):
    """L(mu, xi) <= E_q[log p(x, h)] + H(q) <= log p(x): Jensen's bound under the factorised q."""
    params, x = teacher
    lam, xi = random_variational(np.random.default_rng(0), len(x))
    bound, mu, _ = fp.mean_field_bound(params, x, sweeps=0, init=(lam, xi))
    for n in range(len(x)):  # the exact ELBO of q = prod Bernoulli(mu): a mean-field guide with logits lam
        guide = {"q_mf_b_1": lam[0][n], "q_mf_b_2": lam[1][n], "q_mf_W_0_1": np.zeros((12, 4)),
                 "q_mf_W_0_2": np.zeros((12, 3))}
        elbo = exact_kl(params.replace(**guide), "mean_field", x[n : n + 1]).elbo[0]
        assert bound[n] <= elbo + FLOAT32_SLACK
    assert np.all(bound <= exact_log_likelihood(params, x) + FLOAT32_SLACK)


def test_coordinate_ascent_never_decreases_the_bound(teacher):
    params, x = teacher
    lam, xi = random_variational(np.random.default_rng(1), len(x))
    history = [fp.mean_field_bound(params, x, sweeps=0, init=(lam, xi))[0]]
    for _ in range(6):  # one sweep at a time (xi, then every hidden unit in turn), from the last state
        bound, mu, xi = fp.mean_field_bound(params, x, sweeps=1, init=(lam, xi))
        lam = [np.log(m) - np.log1p(-m) for m in mu]
        history.append(bound)
    steps = np.diff(np.stack(history), axis=0)
    assert np.all(steps >= -FLOAT32_SLACK)
    assert np.all(history[-1] - history[0] > 0.1)  # it does climb from a random start
    assert np.all(history[-1] <= exact_log_likelihood(params, x) + FLOAT32_SLACK)


def test_one_hidden_unit_recovers_the_exact_posterior_and_log_likelihood():
    """One hidden unit: q is exact, and each visible z takes two values, so some xi makes Jensen tight."""
    data = synthetic("8-1", 2)
    x = data.test[:20]
    bound, mu, _ = fp.mean_field_bound(data.teacher, x, sweeps=40)
    assert np.abs(mu[0] - posterior_marginals(data.teacher, x)[0]).max() < 1e-3
    assert np.abs(bound - exact_log_likelihood(data.teacher, x)).max() < 1e-3


def test_learning_on_teacher_data_raises_held_out_log_likelihood():
    data = synthetic("12-4-3", 0)
    start = SBNParams.init("12-4-3", seed=1, scale=0.5)
    m = get_method("mean-field-fixed-point")
    state = m.init(start, data.train, seed=0, lr=0.03, iterations=3, batch_size=100)
    state, info = m.run(state, 100)
    fitted = m.get_params(state)
    before, after = (exact_log_likelihood(p, data.test).mean() for p in (start, fitted))
    assert after > before + 1.0, (before, after)  # measured: -8.21 -> -6.11 (teacher -6.02)
    assert set(fitted.generative()) == set(start.generative()) and fitted["q_mf_local_1"].shape == (1000, 4)
    assert info["objective"] < exact_log_likelihood(fitted, data.train).mean()  # a lower bound (train batches)
    # the same seed gives the same numbers
    again = m.run(m.init(start, data.train, seed=0, lr=0.03, iterations=3, batch_size=100), 100)[1]
    assert again["objective"] == info["objective"]


def test_method_record_and_bad_options():
    m = get_method("mean-field-fixed-point")
    assert (m.name, m.backend, m.guide) == ("mean-field-fixed-point", "numpyro", None)
    train = synthetic("12-4-3", 0).train
    for options, message in [({"lr": 0.0}, "learning rate"), ({"iterations": 0}, "iterations"),
                             ({"optimizer": "rmsprop"}, "optimizer"), ({"amortised": True}, "unknown option")]:
        with pytest.raises(ValueError, match=message):
            m.init(SBNParams.init("12-4-3"), train, seed=0, **options)
