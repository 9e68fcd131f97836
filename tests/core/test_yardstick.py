"""The yardstick: one entry point for every estimator, honest error bars, a guide for every method."""
import numpy as np
import pytest

from sbn_ppl import SBNParams, yardstick
from sbn_ppl.base import density
from sbn_ppl.yardstick import diagnostics
import sbn_ppl.yardstick.exact as enumeration
from sbn_ppl.yardstick import posthoc_guide, score


def teacher(arch="12-6-4", seed=3, scale=2.0, connectivity="layered"):
    """Strong weights (the posterior is far from any untrained guide), non-zero biases."""
    params = SBNParams.init(arch, seed=seed, scale=scale, connectivity=connectivity, guide=())
    rng = np.random.default_rng(7)
    return params.replace(**{k: rng.normal(0, 1, v.shape) for k, v in params.items() if k.startswith("b_")})


def model_data(params, n, seed):
    return density.sample_prior(params, n, np.random.default_rng(seed))[0]


def with_guide(params, seed=0):
    """``params`` with an untrained recognition network (``SBNParams.init``'s)."""
    fresh = SBNParams.init(params.architecture, seed=seed, connectivity=params.architecture.connectivity,
                           guide=("recognition",))
    return params.replace(**{k: v for k, v in fresh.items() if k.startswith("q_")})


def recognition_only(params):
    """``params`` without the mean-field guide's keys (as a fitted RWS file holds it)."""
    return SBNParams({k: v for k, v in params.items() if not k.startswith("q_mf_")},
                     params.architecture.connectivity)


def relative_variance(params, x, guide="recognition"):
    """``r = E_q[w^2] / p(x)^2 - 1`` per point, exactly, by enumeration (small nets)."""
    hidden = list(enumeration.hidden_states(params, 1 << params.architecture.num_hidden))[0]
    layers = [x[:, None, :]] + [h[None] for h in hidden]
    log_joint = density.log_joint(params, layers)
    log_q = density.guide_log_prob(params, guide, layers)
    log_px = np.logaddexp.reduce(log_joint, axis=1)
    return np.exp(np.logaddexp.reduce(2 * log_joint - log_q, axis=1) - 2 * log_px) - 1


# -- dispatch and options -----------------------------------------------------------------


def test_every_estimator_names_itself_and_is_seeded():
    params = with_guide(teacher("8-4-3"))
    x = model_data(params, 5, 0)
    exact = score(params, x)
    assert exact.estimator == "exact" and np.all(exact.stderr == 0) and exact.ess is None and exact.warnings == ()
    np.testing.assert_allclose(exact.per_point, enumeration.exact_log_likelihood(params, x))
    a = score(params, x, "is", is_particles=300, seed=2)
    b = score(params, x, "is", is_particles=300, seed=2)
    assert a.estimator == "is(K=300,recognition)" and a.ess.shape == a.khat.shape == (5,)
    np.testing.assert_array_equal(a.per_point, b.per_point)
    assert np.all(np.abs(a.per_point - exact.per_point) < 10 * a.stderr + 0.5)  # a loose sanity bound
    summary = a.summary()
    assert 1 <= summary["ess_min"] <= summary["ess_mean"] <= 300
    ais = score(params, x, "ais", ais_temperatures=20, ais_chains=5, seed=1)
    assert ais.estimator == "ais(T=20,C=5)"


@pytest.mark.parametrize("old, new", [("num_particles", "is_particles"), ("k", "is_particles"),
                                      ("num_temperatures", "ais_temperatures"), ("temperatures", "ais_temperatures"),
                                      ("num_chains", "ais_chains"), ("chains", "ais_chains")])
def test_old_option_names_give_a_one_line_error_naming_the_new_ones(old, new):
    params = with_guide(teacher("4-3"))
    with pytest.raises(ValueError, match=f"'{old}' was renamed: use '{new}'") as e:
        score(params, np.zeros((1, 4)), "is", **{old: 10})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("estimator, kwargs, message", [
    ("magic", {}, "unknown estimator"),
    ("exact", {"is_particles": 10}, "option is_particles does not apply to estimator 'exact'"),
    ("exact", {"guide": "recognition"}, "option guide does not apply"),
    ("is", {"ais_chains": 3}, "option ais_chains does not apply to estimator 'is'"),
    ("ais", {"is_particles": 3}, "option is_particles does not apply"),
    ("is", {"bogus": 1}, "unknown option 'bogus'"),
])
def test_options_of_another_estimator_are_refused_not_dropped(estimator, kwargs, message):
    params = with_guide(teacher("4-3"))
    with pytest.raises(ValueError, match=message):
        score(params, np.zeros((1, 4)), estimator, **kwargs)


def test_importance_sampling_uses_the_one_guide_a_file_holds_and_asks_when_there_are_two_or_none():
    both = SBNParams.init("4-3", seed=0)  # both guide families: one of them may be untrained
    x = np.zeros((1, 4))
    with pytest.raises(ValueError, match="both guides"):
        score(both, x, "is")
    with pytest.raises(ValueError, match="posthoc_guide"):
        score(both.generative(), x, "is")
    only_mf = SBNParams.init("4-3", seed=0, guide=("mean_field",))
    assert score(only_mf, x, "is", is_particles=30).estimator == "is(K=30,mean_field)"
    assert score(both, x, "is", guide="mean_field", is_particles=30).estimator == "is(K=30,mean_field)"


# -- error bars that say when they lie (issue 14) -----------------------------------------


def test_a_poor_guide_gives_an_estimate_far_off_with_a_tiny_error_bar_and_is_flagged():
    """20-10-8 dense, strong weights, an untrained recognition network: the largest weights
    are never drawn, so the estimate is nats too low and its delta-method standard error far
    too small; the Pareto k-hat of the weights says so (issue 14)."""
    params = recognition_only(SBNParams.init("20-10-8", seed=1, scale=1.5, connectivity="dense"))
    x = model_data(params, 6, 2)
    exact = enumeration.exact_log_likelihood(params, x)  # 2^18 states
    est = score(params, x, "is", is_particles=1000, seed=0)
    error = est.per_point - exact
    z = error / est.stderr
    assert np.all(error < -2.0)  # measured: 4 to 14 nats too low
    assert np.all(z < -4)  # the standard error does not cover the error: it lies
    assert np.all(est.khat > diagnostics.KHAT_THRESHOLD)  # and k-hat says so (measured 1.3 to 4.3)
    assert np.all(diagnostics.unreliable(est.ess, est.khat, 1000))
    assert any("k-hat of the importance weights is above 0.7 on 6 of 6 points" in w for w in est.warnings)


def test_every_point_whose_error_bar_lies_is_flagged_on_a_net_with_weights_of_plus_minus_6():
    """10-5-3 with weights +-6 (issue 14's second case): a guide concentrated on a few
    states far from the posterior's. Its tail is discrete, so k-hat is often not estimable,
    but no point whose error is more than 4 of its standard errors goes unflagged."""
    params = recognition_only(SBNParams.init("10-5-3", seed=1, scale=1.0))
    rng = np.random.default_rng(0)
    params = params.replace(**{k: 6.0 * np.sign(rng.normal(size=v.shape)) for k, v in params.items()
                               if k.startswith("W_")})
    x = model_data(params, 12, 2)
    est = score(params, x, "is", is_particles=1000, seed=0)
    z = (est.per_point - enumeration.exact_log_likelihood(params, x)) / est.stderr
    lying = np.abs(z) > 4
    assert lying.sum() >= 3  # measured: 5 of 12 (errors from +4.7 to -13 nats)
    assert np.all(diagnostics.unreliable(est.ess, est.khat, 1000)[lying])
    assert est.warnings


def test_a_good_guide_is_not_flagged():
    """The exact posterior as a guide (one hidden unit, mean field): all weights equal p(x)."""
    params = SBNParams.init("3-1", seed=0, scale=2.0, guide=("mean_field",))
    x = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    (m,) = enumeration.posterior_marginals(params, x)
    # q(h = 1 | x) = m(x) exactly: logit m is affine in x here only per point, so score one point at a time
    for i in range(2):
        logit = np.log(m[i, 0]) - np.log1p(-m[i, 0])
        exact_guide = params.replace(q_mf_b_1=np.array([logit]), q_mf_W_0_1=np.zeros((3, 1)))
        est = score(exact_guide, x[i:i + 1], "is", is_particles=200)
        assert est.per_point[0] == pytest.approx(enumeration.exact_log_likelihood(params, x[i:i + 1])[0], abs=1e-5)
        assert est.ess[0] == pytest.approx(200, rel=1e-4) and est.stderr[0] < 1e-5
        # k-hat: the weights are all equal (to float32 rounding); nothing to warn about
        assert not any("above 0.7" in w or "effective sample size" in w for w in est.warnings)


# -- a guide for every method (issue 10) ----------------------------------------------------


@pytest.mark.slow
def test_a_posthoc_guide_scores_a_frozen_model_within_stated_error_of_exact():
    model = teacher()  # 12-6-4, no guide: as Gibbs or the fixed point leaves it
    train, test = model_data(model, 2000, 0), model_data(model, 30, 1)
    exact = enumeration.exact_log_likelihood(model, test)
    fitted = posthoc_guide(model, train, steps=1500, seed=0)
    assert fitted.has_guide("recognition") and not fitted.has_guide("mean_field")
    for key in model:
        np.testing.assert_array_equal(fitted[key], model[key])  # the model is frozen
    k = 2000
    est = score(fitted, test, "is", is_particles=k, seed=1)
    r = relative_variance(fitted, test)
    # delta method: sd sqrt(r / K), bias -r / (2K); 4 sd per point (30 points): false alarm < 2e-3
    assert np.all(np.abs(est.per_point - exact) < 4 * np.sqrt(r / k) + r / (2 * k))
    assert np.abs(est.per_point - exact).mean() < 0.05  # measured 0.01-0.03
    # and far better than the untrained network it started from
    untrained = with_guide(model, seed=0)
    before = score(untrained, test, "is", is_particles=k, seed=1)
    assert np.abs(before.per_point - exact).mean() > 3 * np.abs(est.per_point - exact).mean()
    assert enumeration.exact_kl(fitted, "recognition", test).p_q.mean() < \
        0.25 * enumeration.exact_kl(untrained, "recognition", test).p_q.mean()  # measured 0.4 against 4.2
    assert est.ess.mean() > 5 * before.ess.mean()


def test_posthoc_guide_is_seeded_and_checks_its_settings():
    model = teacher("6-3")
    train = model_data(model, 200, 0)
    a, b = (posthoc_guide(model, train, steps=20, seed=4) for _ in range(2))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        posthoc_guide(model, train, steps=0)
    with pytest.raises(ValueError, match="insomnia"):
        posthoc_guide(model, train, steps=5, insomnia=1.5)
    with pytest.raises(ValueError, match="columns but the model has 6"):
        posthoc_guide(model, np.zeros((3, 5)), steps=5)
    assert yardstick.ESTIMATORS == ("exact", "is", "ais")
