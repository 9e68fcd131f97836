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
