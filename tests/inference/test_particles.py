"""The shared particle arithmetic (:mod:`sbn_ppl.inference.shared.particles`) against enumeration.

The specification: on a small net (6-3-2, both connectivities, both guides) the sampler's
draws have the frequencies of the exact ``q(h | x)`` (computed by the NumPy float64
reference, :mod:`sbn_ppl.base.density`, over every hidden state), the ``log q`` it returns is
the reference's at the drawn states to float32 rounding, and the per-point reductions of
log-weights (the K-sample bound, the effective sample size) are the NumPy ones.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from sbn_ppl import SBNParams
from sbn_ppl.base import density
from sbn_ppl.inference.shared.particles import numpyro as particles_jax
from sbn_ppl.yardstick import diagnostics
from tests.conftest import all_binary

ARCH = "6-3-2"
DRAWS = 40_000  # particles per data point
Z_MAX = 5.0  # per-state |z| tolerance: about 200 states tested, P(any |z| > 5 by chance) ~ 1e-4
POOLED = 5.0  # states expected fewer than this many times are pooled into one count


def small_net(connectivity):
    """6-3-2 with both guides, weights ~ N(0, 1): q(h | x) spread over the 32 hidden states."""
    return SBNParams.init(ARCH, seed=5, scale=1.0, connectivity=connectivity)


def points():
    return np.random.default_rng(0).integers(0, 2, (3, 6)).astype(np.float32)


def guide_arrays(params):
    return {k: jnp.asarray(v, jnp.float32) for k, v in params.items() if k != "sizes"}


def exact_q(params, guide, x):
    """``q(h | x_n)`` for every hidden state ``h`` (rows of ``all_binary(5)``, h1 then h2): ``(32, B)``."""
    states = all_binary(5)
    layers = [np.broadcast_to(x, (32,) + x.shape)] + [
        np.broadcast_to(states[:, None, a:b], (32, len(x), b - a)) for a, b in ((0, 3), (3, 5))]
    return np.exp(density.guide_log_prob(params, guide, layers))


def state_index(layers):
    """The row of ``all_binary(5)`` of each drawn ``(h1, h2)``: ``(K, B)``."""
    h = np.concatenate([np.asarray(layers[1]), np.asarray(layers[2])], -1)
    return (h * (1 << np.arange(5))).sum(-1).astype(int)


@pytest.mark.parametrize("connectivity", ["layered", "dense"])
@pytest.mark.parametrize("guide", ["recognition", "mean_field"])
def test_the_draws_have_the_exact_guide_frequencies(connectivity, guide):
    """Per data point and hidden state, the count of DRAWS draws is within Z_MAX binomial
    standard errors of ``DRAWS q(h | x)``; the states expected fewer than POOLED times are
    tested as one pooled count. Fixed seed."""
    params, x = small_net(connectivity), points()
    arch = params.architecture
    sample = jax.jit(particles_jax.sample_guide, static_argnames=("arch", "shape", "guide"))
    layers, _ = sample(jax.random.PRNGKey(0), arch, guide_arrays(params), jnp.asarray(x), (DRAWS,), guide)
    assert [np.shape(h) for h in layers[1:]] == [(DRAWS, 3, 3), (DRAWS, 3, 2)]
    q = exact_q(params, guide, x)
    np.testing.assert_allclose(q.sum(0), 1.0, rtol=1e-12)
    index = state_index(layers)
    for n in range(len(x)):
        counts = np.bincount(index[:, n], minlength=32)
        expected = DRAWS * q[:, n]
        common = expected >= POOLED
        observed = np.r_[counts[common], counts[~common].sum()]
        p = np.r_[q[common, n], q[~common, n].sum()]
        keep = p > 0
        z = (observed[keep] - DRAWS * p[keep]) / np.sqrt(DRAWS * p[keep] * (1 - p[keep]))
        assert np.abs(z).max() < Z_MAX, (n, z)


@pytest.mark.parametrize("connectivity", ["layered", "dense"])
@pytest.mark.parametrize("guide", ["recognition", "mean_field"])
def test_the_returned_log_q_is_the_reference_density_at_the_draws(connectivity, guide):
    params, x = small_net(connectivity), points()
    arch, phi = params.architecture, guide_arrays(params)
    layers, log_q = particles_jax.sample_guide(jax.random.PRNGKey(1), arch, phi, jnp.asarray(x), (50,), guide)
    ref = density.guide_log_prob(params, guide, [np.broadcast_to(x, (50,) + x.shape)] +
                                 [np.asarray(h) for h in layers[1:]])
    np.testing.assert_allclose(np.asarray(log_q), ref, rtol=1e-5, atol=1e-5)
    # and guide_log_prob at given states is the same density
    np.testing.assert_allclose(np.asarray(particles_jax.guide_log_prob(arch, phi, layers, guide)), ref,
                               rtol=1e-5, atol=1e-5)


def test_one_flat_uniform_array_and_its_per_layer_cuts_draw_the_same_particles():
    params, x = small_net("dense"), jnp.asarray(points())
    arch, phi = params.architecture, guide_arrays(params)
    u = jax.random.uniform(jax.random.PRNGKey(2), (7, 3, arch.num_hidden))
    flat = particles_jax.sample_guide_from_uniforms(u, arch, phi, x)
    cut = particles_jax.sample_guide_from_uniforms([u[..., :3], u[..., 3:]], arch, phi, x)
    for a, b in zip(flat[0] + [flat[1]], cut[0] + [cut[1]]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_near_certain_unit_is_compared_on_its_rare_side():
    """A unit with ``P(h = 1) = sigma(30)`` (1 in float32) still takes 0 when its uniform is
    below ``sigma(-30)``: the comparison is on the rare side, not ``u < sigma(c)``."""
    params = SBNParams.init("2-2", seed=0, guide=("mean_field",))
    params = params.replace(q_mf_b_1=np.array([30.0, -30.0]), q_mf_W_0_1=np.zeros((2, 2)))
    phi = guide_arrays(params)
    u = jnp.asarray([[[0.0, 0.0]], [[0.5, 0.5]]], jnp.float32)  # (2 draws, 1 point, 2 units)
    layers, log_q = particles_jax.sample_guide_from_uniforms(u, params.architecture, phi, jnp.zeros((1, 2)),
                                                             "mean_field")
    np.testing.assert_array_equal(np.asarray(layers[1])[:, 0], [[0.0, 1.0], [1.0, 0.0]])
    assert float(log_q[0, 0]) == pytest.approx(-60.0, abs=1e-3)  # both units at their rare value


def test_the_bound_and_the_ess_are_the_numpy_reductions():
    log_w = np.random.default_rng(3).normal(-40.0, 8.0, (50, 7)).astype(np.float32)
    got = particles_jax.log_mean_exp(jnp.asarray(log_w))
    np.testing.assert_allclose(np.asarray(got), logsumexp(log_w.astype(np.float64), 0) - math.log(50), rtol=1e-6)
    ess = particles_jax.effective_sample_size(jnp.asarray(log_w))
    np.testing.assert_allclose(np.asarray(ess), diagnostics.effective_sample_size(log_w), rtol=1e-4)
    assert float(particles_jax.effective_sample_size(jnp.zeros((40, 1)))[0]) == pytest.approx(40.0, rel=1e-6)


def test_the_log_weights_are_the_reference_joint_less_log_q():
    params, x = small_net("layered"), points()
    arch = params.architecture
    layers, log_q = particles_jax.sample_guide(jax.random.PRNGKey(4), arch, guide_arrays(params), jnp.asarray(x),
                                               (20,))
    log_w = particles_jax.log_weights(arch, guide_arrays(params), layers, log_q)
    full = [np.broadcast_to(x, (20,) + x.shape)] + [np.asarray(h) for h in layers[1:]]
    ref = density.log_joint(params, full) - density.guide_log_prob(params, "recognition", full)
    np.testing.assert_allclose(np.asarray(log_w), ref, rtol=1e-5, atol=1e-4)
