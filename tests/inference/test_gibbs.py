"""The single-unit Gibbs kernel (JAX and torch) and the stock DiscreteHMCGibbs against
exact posterior answers computed by enumeration on small nets."""
import functools
import re

import jax
import numpy as np
import pyro
import pytest
import torch
from numpyro.infer import MCMC, NUTS, DiscreteHMCGibbs

from sbn_ppl import SBNParams
from sbn_ppl.base import density
import sbn_ppl.yardstick.exact as enumeration
from sbn_ppl.inference.shared.gibbs import numpyro as gibbs_jax, pyro as gibbs_torch
from sbn_ppl.models import numpyro_sbn, pyro_sbn


def small_net(connectivity, sizes="6-4-3-2", seed=1):
    """Strong weights (scale 1.5), so explaining away matters, and non-zero biases, so
    nothing passes by symmetry."""
    params = SBNParams.init(sizes, seed=seed, scale=1.5, connectivity=connectivity, guide=())
    rng = np.random.default_rng(seed + 10)
    return params.replace(**{k: rng.normal(0, 1, v.shape) for k, v in params.items() if k.startswith("b_")})


def data(n, width, seed=0):
    return (np.random.default_rng(seed).random((n, width)) < 0.5).astype(np.float32)


def random_state(params, batch, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random(batch + (n,)) < 0.5).astype(np.float32) for n in params.architecture.hidden_sizes]


def brute_force_logits(params, x, hidden, beta):
    """logit p(h_lk = 1 | rest) = log f(h with h_lk = 1) - log f(h with h_lk = 0), f = p(h) p(x|h)^beta."""
    def log_f(h):
        lp = density.layer_log_probs(params, [np.broadcast_to(x, h[0].shape[:-1] + x.shape[-1:])] + h)
        return sum(lp[1:]) + beta * lp[0]

    out = []
    for l, size in enumerate(params.architecture.hidden_sizes):
        cols = []
        for k in range(size):
            on, off = [h.copy() for h in hidden], [h.copy() for h in hidden]
            on[l][..., k], off[l][..., k] = 1.0, 0.0
            cols.append(log_f(on) - log_f(off))
        out.append(np.stack(cols, -1))
    return out


def assert_marginals_match(per_chain_means, exact, what):
    """``per_chain_means``: per layer ``(C, N, n_l)``, each chain's time average after burn-in.
    Independent chains make the spread of their averages an honest standard error (it
    includes the within-chain autocorrelation); 5 standard errors (plus 0.005 for units
    whose posterior is nearly deterministic) is a false-alarm rate below 1e-5 per unit."""
    for est, ex in zip(per_chain_means, exact):
        mean = est.mean(0)
        se = est.std(0, ddof=1) / np.sqrt(est.shape[0])
        assert np.all(np.abs(mean - ex) < 5 * se + 0.005), f"{what}: max error {np.abs(mean - ex).max():.4f}"
    assert max(np.abs(e.mean(0) - ex).max() for e, ex in zip(per_chain_means, exact)) < 0.03


@pytest.mark.parametrize("connectivity", ["layered", "dense"])
@pytest.mark.parametrize("beta", [1.0, 0.6])
def test_jax_conditionals_are_the_exact_single_unit_conditionals(connectivity, beta):
    params = small_net(connectivity)
    x = data(3, 6)
    hidden = random_state(params, (5, 3))
    ours = gibbs_jax.conditional_logits(params, x, hidden, beta)
    for got, want in zip(ours, brute_force_logits(params, x, hidden, beta)):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)  # float32 vs float64


@pytest.mark.parametrize("connectivity", ["layered", "dense"])
def test_torch_and_jax_kernels_give_the_same_conditionals(connectivity):
    params = small_net(connectivity)
    x = data(3, 6)
    hidden = random_state(params, (4, 3), seed=2)
    ours_jax = gibbs_jax.conditional_logits(params, x, hidden, 0.8)
    ours_torch = gibbs_torch.conditional_logits(params, torch.tensor(x), [torch.tensor(h) for h in hidden], 0.8)
    for a, b in zip(ours_jax, ours_torch):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-5)


@jax.jit
def run_sweeps(key, state, params, x):
    """250 sweeps; returns each chain's average state over the last 200 and the final info."""
    def body(carry, k):
        state, _ = carry
        state, info = gibbs_jax.step(k, state, params, x)
        return (state, info), state.hidden

    info0 = gibbs_jax.GibbsInfo(*(jax.numpy.zeros(state.hidden[0].shape[:-1]),) * 3)
    (state, info), path = jax.lax.scan(body, (state, info0), jax.random.split(key, 250))
    return state, info, [h[50:].mean(0) for h in path]  # 50 sweeps of burn-in


def test_jax_sweep_samples_the_exact_posterior_marginals():
    params = small_net("dense")  # every layer feeds every layer below: the most children per unit
    x = data(3, 6)
    state = gibbs_jax.init(jax.random.PRNGKey(0), params, x, num_chains=100)
    state, info, means = run_sweeps(jax.random.PRNGKey(1), state, params, x)
    assert_marginals_match([np.asarray(m) for m in means], enumeration.posterior_marginals(params, x), "jax sweep")
    # the cached pre-activations give log p(x, h) at the new state
    layers = [np.broadcast_to(x, (100, 3, 6))] + [np.asarray(h) for h in state.hidden]
    np.testing.assert_allclose(np.asarray(info.log_joint), density.log_joint(params, layers), atol=1e-4)
    # same seed, same numbers
    again, _, _ = run_sweeps(jax.random.PRNGKey(1), gibbs_jax.init(jax.random.PRNGKey(0), params, x, 100), params, x)
    for u, v in zip(state.hidden, again.hidden):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def extreme_net(connectivity, max_w):
    """10-4-3 with weights up to ``max_w`` and visible biases of +-90: children's ``sigmoid(-a)``
    or ``sigmoid(a)`` below float32's smallest normal number (e^-87), and flips that move them back."""
    params = SBNParams.init("10-4-3", seed=3, scale=1.0, connectivity=connectivity, guide=())
    rng = np.random.default_rng(4)
    weights = {k: np.clip(rng.normal(0, max_w / 2, v.shape), -max_w, max_w) for k, v in params.items()
               if k.startswith("W_")}
    biases = {"b_0": np.where(np.arange(10) % 2 == 0, 90.0, -90.0), "b_1": rng.normal(0, 3, 4), "b_2": rng.normal(0, 1, 3)}
    return params.replace(**weights, **biases)


def one_sweep_each_way(params, x, seed):
    """The ratio sweep and the softplus sweep from the same states with the same noise."""
    p = gibbs_jax._as_jax(params)
    state = gibbs_jax.init(jax.random.PRNGKey(seed), params, x, num_chains=8)
    layers = [v.reshape((-1, v.shape[-1])) for v in gibbs_jax._layers(jax.numpy.asarray(x), state.hidden)]
    a = gibbs_jax._preactivations(p, layers)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), 2)
    noises = [jax.random.logistic(keys[l - 1], (n, layers[0].shape[0])) for l, n in ((1, 4), (2, 3))]
    ratios = jax.jit(gibbs_jax._sweep_ratios)(p, layers, a, noises, 0.7)
    softplus = jax.jit(gibbs_jax._sweep_softplus)(p, layers, a, noises, 0.7)
    return ratios, softplus


@pytest.mark.parametrize("connectivity", ["layered", "dense"])
def test_the_ratio_sweep_makes_the_softplus_sweeps_flips(connectivity):
    # the same conditionals to float32 rounding, so the same noise makes the same flips: a flip
    # differs only where the log-odds and the noise are within rounding (about 1e-5 apart:
    # a logistic density below 1/4, so under 1e-5 of 8,000 x 7 decisions, 0.6 expected), and the
    # kept pre-activations agree to rounding
    params = extreme_net(connectivity, max_w=19.0)
    assert bool(gibbs_jax._ratios_apply(gibbs_jax._as_jax(params)))
    x = data(1000, 10, seed=5)
    (h_r, a_r), (h_s, a_s) = one_sweep_each_way(params, x, seed=6)
    differing = sum(int(np.sum(np.asarray(u) != np.asarray(v))) for u, v in zip(h_r[1:], h_s[1:]))
    assert differing <= 3, differing
    same = np.all(np.asarray(h_r[1]) == np.asarray(h_s[1]), -1) & np.all(np.asarray(h_r[2]) == np.asarray(h_s[2]), -1)
    for u, v in zip(a_r, a_s):
        np.testing.assert_allclose(np.asarray(u)[same], np.asarray(v)[same], atol=1e-3)


def test_the_ratio_sweeps_probabilities_come_back_from_underflow():
    # every pixel on, its pre-activation -95 (sigmoid(-95) is 0 in float32) and each of the 8
    # units raising it by 19: the sweep turns them on until a is past 0, and the kept
    # p = sigmoid(a), q = sigmoid(-a) must follow (products of ratios alone would keep p at 0)
    params = SBNParams.init("10-8-3", seed=0, guide=())
    params = params.replace(b_0=np.full(10, -95.0), W_1_0=np.full((8, 10), 19.0), b_1=np.zeros(8))
    p = gibbs_jax._as_jax(params)
    layers = [jax.numpy.ones((5, 10)), jax.numpy.zeros((5, 8)), jax.numpy.zeros((5, 3))]
    a = gibbs_jax._preactivations(p, layers)
    pq = {c: (jax.nn.sigmoid(v), jax.nn.sigmoid(-v)) for c, v in enumerate(a)}
    assert float(pq[0][0].max()) == 0.0  # underflowed
    noise = jax.random.logistic(jax.random.PRNGKey(0), (8, 5))
    refresh = int(gibbs_jax._REFRESH_NATS // 19.0)
    h1 = gibbs_jax._sweep_layer_ratios(p, 1, layers, a, pq, noise, 1.0, refresh)
    on = np.asarray(h1).sum(-1)  # units turned on: each of the first five is worth 19 nats a pixel
    assert np.all(on >= 5)  # a climbed from -95 past 0 in every row
    np.testing.assert_allclose(np.asarray(a[0]), np.broadcast_to((-95.0 + 19.0 * on)[:, None], (5, 10)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pq[0][0]), np.asarray(jax.nn.sigmoid(a[0])), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(pq[0][1]), np.asarray(jax.nn.sigmoid(-a[0])), rtol=1e-4)


def test_weights_beyond_20_take_the_softplus_sweep():
    params = extreme_net("layered", max_w=19.0)
    params = params.replace(W_1_0=params["W_1_0"] * (25.0 / np.abs(params["W_1_0"]).max()))
    assert not bool(gibbs_jax._ratios_apply(gibbs_jax._as_jax(params)))
    x = data(100, 10, seed=5)
    state = gibbs_jax.init(jax.random.PRNGKey(6), params, x, num_chains=8)
    stepped, info = gibbs_jax.step(jax.random.PRNGKey(7), state, params, x, 0.7)
    layers = [np.broadcast_to(x, (8, 100, 10))] + [np.asarray(h) for h in stepped.hidden]
    np.testing.assert_allclose(np.asarray(info.log_joint), density.log_joint(params, layers), rtol=1e-5, atol=1e-3)
    p = gibbs_jax._as_jax(params)
    flat = [v.reshape((-1, v.shape[-1])) for v in gibbs_jax._layers(jax.numpy.asarray(x), state.hidden)]
    keys = jax.random.split(jax.random.PRNGKey(7), 2)
    noises = [jax.random.logistic(keys[l - 1], (n, flat[0].shape[0]), dtype=flat[l].dtype) for l, n in ((1, 4), (2, 3))]
    expected, _ = gibbs_jax._sweep_softplus(p, flat, gibbs_jax._preactivations(p, flat), noises, 0.7)
    for got, want in zip(stepped.hidden, expected[1:]):
        np.testing.assert_array_equal(np.asarray(got).reshape(want.shape), np.asarray(want))


def test_torch_sweep_samples_the_exact_posterior_marginals():
    params = small_net("dense", sizes="5-3-2")
    x = torch.tensor(data(2, 5))
    generator = torch.Generator().manual_seed(0)
    state = gibbs_torch.init(generator, params, x, num_chains=60)
    p = gibbs_torch.as_torch(params)
    sums = [0.0] * 2
    for i in range(150):
        state, _ = gibbs_torch.step(generator, state, p, x)
        if i >= 30:
            sums = [s + h.numpy() for s, h in zip(sums, state.hidden)]
    assert_marginals_match([s / 120 for s in sums], enumeration.posterior_marginals(params, x.numpy()), "torch")


def test_numpyro_mcmc_runs_our_kernel_on_the_numpyro_model():
    params = small_net("layered")
    x = data(2, 6)
    mcmc = MCMC(gibbs_jax.SBNGibbs(numpyro_sbn.model), num_warmup=50, num_samples=400, num_chains=40,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), params, x)
    samples = mcmc.get_samples(group_by_chain=True)
    assert set(samples) == {"h1", "h2", "h3"} and samples["h1"].shape == (40, 400, 2, 4)
    per_chain = [np.asarray(samples[f"h{l}"]).mean(1) for l in (1, 2, 3)]
    assert_marginals_match(per_chain, enumeration.posterior_marginals(params, x), "numpyro MCMC")


def test_pyro_mcmc_runs_our_kernel_on_the_pyro_model():
    params = small_net("layered", sizes="5-3-2")
    x = torch.tensor(data(2, 5, seed=4))
    pyro.clear_param_store()
    kernel = gibbs_torch.SBNGibbs(pyro_sbn.model, seed=0, chains=50)
    mcmc = pyro.infer.MCMC(kernel, num_samples=120, warmup_steps=20, disable_progbar=True)
    mcmc.run(params, x)
    samples = mcmc.get_samples()
    assert samples["h1"].shape == (120, 50, 2, 3)  # (samples, kernel's chains, N, n_1)
    per_chain = [samples[f"h{l}"].mean(0).numpy() for l in (1, 2)]
    assert_marginals_match(per_chain, enumeration.posterior_marginals(params, x.numpy()), "pyro MCMC")


def test_stock_discrete_hmc_gibbs_samples_the_exact_posterior_marginals():
    params = small_net("layered", sizes="4-3-2", seed=5)
    x = data(1, 4, seed=1)
    # the stock kernel enumerates each discrete site's support: it needs the per-unit sites
    model = functools.partial(numpyro_sbn.model, unit_plates=True)
    mcmc = MCMC(DiscreteHMCGibbs(NUTS(model)), num_warmup=100, num_samples=4000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), params, x)
    samples = mcmc.get_samples()
    assert samples["h1"].shape == (4000, 1, 3)
    # one chain: 20 batch means of 200 samples each stand in for independent chains
    batch_means = [np.asarray(samples[f"h{l}"]).reshape(20, 200, 1, -1).mean(1) for l in (1, 2)]
    assert_marginals_match(batch_means, enumeration.posterior_marginals(params, x), "stock DiscreteHMCGibbs")


def test_a_sweep_returns_a_new_state_and_leaves_the_callers_alone():
    params = small_net("layered", sizes="5-3-1")  # one data point, a one-unit layer: views are contiguous
    x = torch.tensor(data(1, 5))
    generator = torch.Generator().manual_seed(0)
    state = gibbs_torch.init(generator, params, x)
    before = [h.clone() for h in state.hidden]
    for _ in range(10):
        gibbs_torch.step(generator, state, params, x)
    assert all(torch.equal(a, b) for a, b in zip(before, state.hidden))


def test_bad_kernel_settings_are_refused():
    with pytest.raises(ValueError, match="sweeps"):
        gibbs_jax.SBNGibbs(sweeps=0)
    with pytest.raises(ValueError, match="beta"):
        gibbs_torch.SBNGibbs(beta=1.5)
    with pytest.raises(ValueError, match="chains"):
        gibbs_jax.init(jax.random.PRNGKey(0), small_net("layered"), data(1, 6), num_chains=0)


def test_our_kernels_read_the_same_problem_from_either_site_layout():
    """SBNGibbs finds the parameters and the data by site name, so the model with one
    ``.to_event(1)`` site per layer (the default, run under MCMC above) and the one with
    per-unit plates pose it the same problem: the same weights and the same data."""
    params = small_net("layered")
    x = data(2, 6)
    problems = [gibbs_jax.model_problem(model, (params, x), {})
                for model in (numpyro_sbn.model, functools.partial(numpyro_sbn.model, unit_plates=True))]
    pyro.clear_param_store()
    problems += [gibbs_torch.model_problem(model, params, (params, torch.tensor(x)), {})
                 for model in (pyro_sbn.model, functools.partial(pyro_sbn.model, unit_plates=True))]
    for theta, x_seen in problems:
        theta = theta.theta if isinstance(theta, gibbs_torch.TorchParams) else theta
        np.testing.assert_array_equal(np.asarray(x_seen), x)
        for k in params.generative():
            if k != "sizes":
                np.testing.assert_allclose(np.asarray(theta[k]), params[k], rtol=1e-6)


BAD_DATA = {
    "non-binary": lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, 0.5, x),
    "NaN": lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x),
    "wrong width": lambda x: x[:, :-1],
}


@pytest.mark.parametrize("kind", sorted(BAD_DATA))
def test_both_kernels_refuse_bad_data_alike(kind):
    params = small_net("layered")
    bad = BAD_DATA[kind](data(3, 6)).astype(np.float32)
    errors = []
    for init in (lambda: gibbs_jax.init(jax.random.PRNGKey(0), params, bad, num_chains=2),
                 lambda: gibbs_torch.init(torch.Generator().manual_seed(0), params, torch.tensor(bad), 2),
                 lambda: gibbs_torch.init(torch.Generator().manual_seed(0), params, bad, 2)):
        with pytest.raises(ValueError) as e:
            init()
        errors.append(str(e.value))
    assert errors[0] == errors[1] == errors[2]
    assert {"non-binary": "non-binary value 0.5", "NaN": "NaN at row 1", "wrong width": "5 columns"}[kind] in errors[0]
    # and the MCMC adapters, which start from init
    with pytest.raises(ValueError, match=re.escape(errors[0])):
        MCMC(gibbs_jax.SBNGibbs(), num_warmup=0, num_samples=1, progress_bar=False).run(
            jax.random.PRNGKey(0), params, bad)
    with pytest.raises(ValueError, match=re.escape(errors[0])):
        pyro.infer.MCMC(gibbs_torch.SBNGibbs(), num_samples=1, disable_progbar=True).run(params, torch.tensor(bad))
