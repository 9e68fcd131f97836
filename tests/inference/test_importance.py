"""The streaming importance sampler against the float64 NumPy reference and the exact value."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbn_ppl import SBNParams
from sbn_ppl.base import density
from sbn_ppl.yardstick import diagnostics
import sbn_ppl.yardstick.exact as enumeration
from sbn_ppl.yardstick import estimates
from sbn_ppl.inference.shared.particles import numpyro as particles_jax
from sbn_ppl.yardstick import importance
from sbn_ppl.yardstick.importance import importance_log_weights, is_log_likelihood
from tests.conftest import all_binary


def loose_net():
    """6-4-3, untrained guide: a loose proposal whose weights still have finite variance."""
    return SBNParams.init("6-4-3", seed=2, scale=0.8)


@pytest.mark.parametrize("arch, connectivity", [("4-3-2", "dense"), ("4-2-2-2", "layered")])
@pytest.mark.parametrize("guide", ["recognition", "mean_field"])
def test_log_weights_equal_the_float64_reference_densities_on_the_same_particles(arch, connectivity, guide):
    params = SBNParams.init(arch, seed=3, scale=1.5, connectivity=connectivity)
    rng = np.random.default_rng(4)
    params = params.replace(**{k: rng.normal(0, 1, v.shape) for k, v in params.items() if "b_" in k})
    x = all_binary(4)[::3]
    theta = importance._guide_arrays(params, guide)
    points, particles = jnp.arange(len(x), dtype=jnp.uint32), jnp.arange(64, dtype=jnp.uint32)
    us = importance.uniforms(jax.random.PRNGKey(0), params.architecture, points, particles)
    layers, _ = particles_jax.sample_guide_from_uniforms(us, params.architecture, theta, jnp.asarray(x), guide)
    ours = np.asarray(importance.log_weights(jax.random.PRNGKey(0), params.architecture, theta, guide,
                                             jnp.asarray(x), points, particles))
    ref_layers = [x[None]] + [np.asarray(h, dtype=np.float64) for h in layers[1:]]
    reference = density.log_joint(params, ref_layers) - density.guide_log_prob(params, guide, ref_layers)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-5)  # float32 against float64


def test_streaming_equals_the_one_shot_estimate_on_the_same_weights_and_does_not_depend_on_chunks():
    params, x = loose_net(), all_binary(6)[::4]
    k = 600
    log_w = importance_log_weights(params, x, "recognition", k, seed=3, points_per_batch=5, rows_per_chunk=35)
    # the same particles when the work is cut into other batches and chunks (float32
    # arithmetic in other shapes: equal to rounding)
    np.testing.assert_allclose(importance_log_weights(params, x, "recognition", k, seed=3), log_w, rtol=0, atol=1e-5)
    streamed = is_log_likelihood(params, x, "recognition", k, seed=3, points_per_batch=5, rows_per_chunk=35)
    one_shot, stderr = estimates.log_mean_exp([log_w])
    np.testing.assert_allclose(streamed.per_point, one_shot, rtol=1e-12)
    np.testing.assert_allclose(streamed.stderr, stderr, rtol=1e-9)
    np.testing.assert_allclose(streamed.ess, diagnostics.effective_sample_size(log_w), rtol=1e-9)
    np.testing.assert_allclose(streamed.khat, diagnostics.pareto_khat(log_w, axis=0), rtol=1e-9)
    assert streamed.estimator == "is(K=600,recognition)"
    again = is_log_likelihood(params, x, "recognition", k, seed=3)  # default chunks
    np.testing.assert_allclose(again.per_point, streamed.per_point, rtol=0, atol=1e-5)
    other = is_log_likelihood(params, x, "recognition", k, seed=4, points_per_batch=5, rows_per_chunk=35)
    assert np.all(other.per_point != streamed.per_point)


@pytest.mark.parametrize("guide", ["recognition", "mean_field"])
def test_converges_to_the_exact_value_as_k_grows(guide):
    params, x = loose_net(), all_binary(6)[::4]
    exact = enumeration.exact_log_likelihood(params, x)
    # the exact relative variance of one weight, r = E_q[w^2] / p(x)^2 - 1, by enumeration
    hidden = list(enumeration.hidden_states(params, 1 << 7))[0]
    layers = [x[:, None, :]] + [h[None] for h in hidden]
    log_joint = density.log_joint(params, layers)
    log_q = density.guide_log_prob(params, guide, layers)
    r = np.exp(np.logaddexp.reduce(2 * log_joint - log_q, axis=1) - 2 * exact) - 1
    assert r.max() < 200  # finite and moderate: K = 8,000 gives errors of a few hundredths
    errors = {}
    for k in (8, 200, 8000):  # one chunk shape (8 particles x 16 points) for all three: one compilation
        est = is_log_likelihood(params, x, guide, k, seed=0, rows_per_chunk=8 * len(x))
        errors[k] = np.abs(est.per_point - exact)
        # log-mean-exp: standard deviation sqrt(r / K), bias -r / (2K) (delta method); at large K,
        # 4 standard deviations per point (16 points) keep a false alarm below 1e-3
        if k == 8000:
            assert np.all(errors[k] < 4 * np.sqrt(r / k) + r / (2 * k))
            # its reported standard error estimates the same sqrt(r / K); per point that estimate is
            # itself noisy (it needs the fourth moment of w), so check the median ratio over 16 points
            assert 0.6 < np.median(est.stderr / np.sqrt(r / k)) < 1.5
    assert errors[8].mean() > errors[200].mean() > errors[8000].mean()


def test_memory_is_bounded_whatever_k(monkeypatch):
    """Every jitted call draws one fixed chunk of particles x points, and the host keeps
    O(tail + chunk) numbers per point, however many particles are asked for."""
    params, x = SBNParams.init("4-3", seed=0), all_binary(4)[:6]
    shapes, tops = set(), []
    real_call, real_merge = importance._log_weights, estimates.ImportanceWeights._merge

    def recording_call(key, arch, theta, guide, xb, points, particles):
        shapes.add((xb.shape, points.shape, particles.shape))
        return real_call(key, arch, theta, guide, xb, points, particles)

    def recording_merge(self):
        real_merge(self)
        tops.append(self._top.shape)

    monkeypatch.setattr(importance, "_log_weights", recording_call)
    monkeypatch.setattr(estimates.ImportanceWeights, "_merge", recording_merge)
    k = 30_000
    est = is_log_likelihood(params, x, "recognition", k, seed=0, rows_per_chunk=600)
    assert shapes == {((6, 4), (6,), (100,))}  # 300 calls, one shape: 100 particles x 6 points
    keep = diagnostics.tail_size(k) + 1
    assert tops and max(t[1] for t in tops) == keep and keep < 600  # not K
    assert np.all(np.isfinite(est.per_point)) and est.estimator == f"is(K={k},recognition)"


def test_a_user_enabling_x64_gets_the_same_numbers():
    params, x = loose_net(), all_binary(6)[::8]
    plain = is_log_likelihood(params, x, "mean_field", 50, seed=1)
    with jax.enable_x64(True):
        wide = is_log_likelihood(params, x, "mean_field", 50, seed=1)
    np.testing.assert_allclose(wide.per_point, plain.per_point, rtol=1e-6)


def test_progress_bar_counts_particles_times_points(capsys):
    params, x = loose_net(), all_binary(6)[::8]
    is_log_likelihood(params, x, "recognition", 50, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "importance sampling" in err and "400/400" in err  # 50 particles x 8 points


@pytest.mark.parametrize("kwargs, message", [
    (dict(guide="posterior"), "unknown guide"),
    (dict(num_particles=0), "positive integer"),
    (dict(num_particles=2.5), "positive integer"),
    (dict(points_per_batch=0), "points_per_batch"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        is_log_likelihood(loose_net(), all_binary(6)[:2], **kwargs)


def test_a_missing_guide_or_wrong_width_is_refused():
    params = loose_net()
    with pytest.raises(ValueError, match="no 'recognition' guide"):
        is_log_likelihood(params.generative(), all_binary(6)[:2])
    with pytest.raises(ValueError, match="columns but the model has 6"):
        is_log_likelihood(params, np.zeros((2, 5)))


def test_rare_unit_values_are_drawn_at_the_probability_log_q_gives_them():
    """A mean-field unit with logit -9 is 1 with probability 1.2e-4, one with logit +9 is 0
    with that probability: counted over 10^6 draws (Poisson, 5 standard deviations)."""
    params = SBNParams.init("2-2", seed=0, guide=("mean_field",))
    params = params.replace(q_mf_b_1=np.array([-9.0, 9.0]), q_mf_W_0_1=np.zeros((2, 2)))
    theta = importance._guide_arrays(params, "mean_field")
    us = jax.jit(importance.uniforms, static_argnames="arch")(
        jax.random.PRNGKey(0), params.architecture, jnp.arange(100, dtype=jnp.uint32), jnp.arange(10_000, dtype=jnp.uint32))
    layers, log_q = particles_jax.sample_guide_from_uniforms(us, params.architecture, theta, jnp.zeros((100, 2)),
                                                           "mean_field")
    h = np.asarray(layers[1]).reshape(-1, 2)
    expected = 1e6 / (1 + np.exp(9.0))  # 123.4
    for rare_count in (h[:, 0].sum(), (1 - h[:, 1]).sum()):
        assert abs(rare_count - expected) < 5 * np.sqrt(expected)
    # and log q counts exactly those values
    np.testing.assert_allclose(np.asarray(log_q).ravel(), density.guide_log_prob(params, "mean_field", [
        np.zeros((1, 2)), h]), atol=1e-5)


def test_uniforms_resolve_probabilities_far_below_float32_epsilon():
    """48 random bits near 0 (a 24-bit uniform would be a multiple of 2^-24 everywhere, and
    would draw a unit of guide probability 1e-12 a million times too often)."""
    us = jax.jit(importance.uniforms, static_argnames="arch")(
        jax.random.PRNGKey(1), SBNParams.init("2-400", seed=0).architecture, jnp.arange(20, dtype=jnp.uint32),
        jnp.arange(250, dtype=jnp.uint32))
    u = np.asarray(us[0], dtype=np.float64).ravel()  # 2 million
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.002  # sd of the mean 0.0002
    small = u[u < 2.0**-10]
    assert len(small) > 1500 and np.mean(small * 2.0**24 % 1 != 0) > 0.9


def test_our_threefry_is_jaxs_bit_for_bit():
    from jax.extend.random import threefry_2x32

    rng = np.random.default_rng(0)
    key = jnp.asarray(rng.integers(0, 2**32, size=2, dtype=np.uint32))
    x = jnp.asarray(rng.integers(0, 2**32, size=(2, 1000), dtype=np.uint32))
    y0, y1 = importance.threefry2x32(key, x[0], x[1])
    reference = threefry_2x32(key, x.ravel()).reshape(2, 1000)
    np.testing.assert_array_equal(np.asarray(y0), np.asarray(reference[0]))
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(reference[1]))
