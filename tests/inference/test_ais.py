"""AIS against the exact log-likelihood (by enumeration) on small nets."""
import json

import numpy as np
import pytest

from sbn_ppl import SBNParams, yardstick
from sbn_ppl.base import density
import sbn_ppl.yardstick.exact as enumeration
from sbn_ppl.cli import main
from sbn_ppl.yardstick.ais import NUM_CHAINS, NUM_TEMPERATURES, ais_log_likelihood, sigmoid_schedule


def strong_net(connectivity="layered", sizes="12-6-4"):
    """Strong weights (scale 2): the posterior is far from the prior, so annealing matters;
    non-zero biases."""
    params = SBNParams.init(sizes, seed=3, scale=2.0, connectivity=connectivity, guide=())
    rng = np.random.default_rng(7)
    return params.replace(**{k: rng.normal(0, 1, v.shape) for k, v in params.items() if k.startswith("b_")})


def model_data(params, n=6, seed=0):
    return density.sample_prior(params, n, np.random.default_rng(seed))[0]


def test_ais_approaches_the_exact_log_likelihood_as_temperatures_grow_and_never_lies_far_above():
    params = strong_net(sizes="24-6-4")  # 24 pixels: a posterior much sharper than the prior
    x = model_data(params)
    exact = enumeration.exact_log_likelihood(params, x)
    errors = {}
    for t in (1, 30, 400):
        ais = ais_log_likelihood(params, x, seed=0, num_temperatures=t, num_chains=100)
        errors[t] = ais.per_point - exact
        # E[w] = p(x), so log mean w lies above log p(x) only by chance: its estimated
        # standard error covers that; 4 of them (+0.02 for the delta method's own error at
        # small C) is a false alarm below 1e-4 per point
        assert np.all(errors[t] < 4 * ais.stderr + 0.02), (t, errors[t], ais.stderr)
    mean_abs = {t: np.abs(e).mean() for t, e in errors.items()}
    assert mean_abs[400] < mean_abs[30] < mean_abs[1]  # measured: 0.02 < 0.06 < 0.30 nats
    # at T = 400, C = 100 the estimate is within a few hundredths of a nat (measured 0.02)
    assert mean_abs[400] < 0.05
    assert np.all(np.abs(errors[400]) < 4 * ais.stderr + 0.02)


def test_ais_is_exact_enough_on_a_dense_three_layer_net():
    params = strong_net("dense", "8-4-3-2")
    x = model_data(params, n=4, seed=1)
    ais = ais_log_likelihood(params, x, seed=1, num_temperatures=300, num_chains=100)
    exact = enumeration.exact_log_likelihood(params, x)
    assert np.all(np.abs(ais.per_point - exact) < 4 * ais.stderr + 0.02)
    assert ais.estimator == "ais(T=300,C=100)" and ais.mean_stderr > 0


def test_score_and_cli_reach_ais_with_the_same_seed_giving_the_same_numbers(tmp_path, capsys):
    params = strong_net()
    x = model_data(params, n=3)
    a = yardstick.score(params, x, "ais", seed=5, ais_temperatures=20, ais_chains=10)
    b = ais_log_likelihood(params, x, seed=5, num_temperatures=20, num_chains=10)
    np.testing.assert_array_equal(a.per_point, b.per_point)
    np.testing.assert_array_equal(a.stderr, b.stderr)
    path = tmp_path / "params.npz"
    params.save(path)
    code = main(["evaluate", "--params", str(path), "--data", "synthetic:12-6-4:0", "--estimator", "ais",
                 "--ais-temperatures", "20", "--ais-chains", "10", "--limit", "3", "--seed", "5"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["estimator"] == "ais(T=20,C=10)" and report["n"] == 3 and np.isfinite(report["log_likelihood"])


def test_the_yardstick_refuses_the_old_option_names_naming_the_new_ones():
    params = strong_net()
    x = model_data(params, n=1)
    for old, new in (("num_temperatures", "ais_temperatures"), ("num_chains", "ais_chains")):
        with pytest.raises(ValueError, match=f"'{old}' was renamed: use '{new}'") as e:
            yardstick.score(params, x, "ais", **{old: 10})
        assert "\n" not in str(e.value)


def test_defaults_and_schedule():
    assert NUM_TEMPERATURES == 500 and NUM_CHAINS == 20  # the documented defaults
    betas = sigmoid_schedule(50)
    assert betas[0] == 0.0 and betas[-1] == 1.0 and np.all(np.diff(betas) > 0) and betas.size == 51


@pytest.mark.parametrize("options", [{"num_temperatures": 0}, {"num_chains": 0}, {"betas": [0.0, 0.7, 0.5, 1.0]},
                                     {"betas": [0.1, 1.0]}])
def test_bad_ais_settings_are_refused(options):
    params = strong_net()
    with pytest.raises(ValueError):
        ais_log_likelihood(params, model_data(params, n=1), **options)


def test_the_segments_of_the_schedule_change_no_draw_and_move_the_progress_count(monkeypatch):
    """``anneal`` runs the transitions in compiled segments (for the progress bar): against one
    scan over the whole schedule written here, the log-weights are the same to float32 rounding
    (the same keys, ``fold_in(key, t)``), for a schedule of several segments and a remainder,
    and ``on_sweeps`` counts every transition once."""
    import jax
    import jax.numpy as jnp
    from jax import lax, random

    import sbn_ppl.yardstick.ais as ais
    from sbn_ppl.inference.shared.gibbs import numpyro as gibbs_jax

    params = strong_net()
    theta = jax.tree_util.tree_map(jnp.asarray, params.generative())
    x = jnp.asarray(model_data(params, n=5), jnp.float32)
    betas = jnp.asarray(sigmoid_schedule(23), jnp.float32)
    key = random.PRNGKey(4)

    def one_scan():
        key_prior, key_sweeps = random.split(key)
        state = gibbs_jax.init(key_prior, theta, x, num_chains=3)

        def body(carry, t):
            state, log_w, log_lik = carry
            log_w = log_w + (betas[t] - betas[t - 1]) * log_lik
            state, info = gibbs_jax.step(random.fold_in(key_sweeps, t), state, theta, x, betas[t])
            return (state, log_w, info.log_likelihood), None

        log_lik0 = ais._log_likelihood(theta, x, state.hidden)
        (_, log_w, log_lik), _ = lax.scan(body, (state, jnp.zeros_like(log_lik0), log_lik0), jnp.arange(1, 23))
        return log_w + (betas[-1] - betas[-2]) * log_lik

    monkeypatch.setattr(ais, "SEGMENT", 5)  # 22 transitions: 5, 5, 5, 5, 2
    counts = []
    segmented = ais.anneal(key, theta, x, betas, num_chains=3, on_sweeps=counts.append)
    assert counts == [5, 5, 5, 5, 2]
    np.testing.assert_allclose(np.asarray(segmented), np.asarray(one_scan()), rtol=1e-6, atol=1e-5)
    # a schedule shorter than a segment: one call; T = 1: no transition at all
    assert np.asarray(ais.anneal(key, theta, x, jnp.asarray([0.0, 1.0]), num_chains=3)).shape == (3, 5)
