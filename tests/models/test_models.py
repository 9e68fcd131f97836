"""The Pyro model and the NumPyro model: the same function of the same parameters."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pyro
import pytest
import torch
from numpyro import handlers as nhandlers
from numpyro.infer.util import log_density
from pyro import poutine

from sbn_ppl import SBNParams, density, evaluation
from sbn_ppl.architecture import site_name
from sbn_ppl.models import numpyro_sbn, pyro_sbn
from tests.conftest import all_binary

ARCHS = [("6-4", "layered"), ("6-4-3", "layered"), ("6-4-3-2", "layered"), ("6-4-3", "dense"), ("6-4-3-2", "dense")]


@pytest.fixture(params=ARCHS, ids=[f"{a}-{c}" for a, c in ARCHS])
def params(request):
    return SBNParams.init(request.param[0], seed=1, scale=1.0, connectivity=request.param[1])


def _pyro_trace(fn, params, *args, **kwargs):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    return poutine.trace(fn).get_trace(params, *args, **kwargs)


def test_log_joint_agrees_across_pyro_numpyro_and_numpy(params):
    x = all_binary(6)[::5]
    tr = _pyro_trace(pyro_sbn.model, params, torch.as_tensor(x))
    sites = [site_name(l) for l in range(params.architecture.num_layers + 1)]
    values = {s: tr.nodes[s]["value"].numpy() for s in sites}
    lp_pyro = tr.log_prob_sum().item()
    hidden = {s: jnp.asarray(v) for s, v in values.items() if s != "x"}
    lp_numpyro, _ = log_density(numpyro_sbn.model, (params, jnp.asarray(x)), {}, hidden)
    lp_numpy = density.log_joint(params, [values[s] for s in sites]).sum()
    assert lp_pyro == pytest.approx(lp_numpy, rel=1e-5)
    assert float(lp_numpyro) == pytest.approx(lp_numpy, rel=1e-5)
    # the pure tensor functions used by the algorithms are the same densities
    theta_t = {k: v for k, v in params.to_torch().items()}
    layers = [torch.as_tensor(values[s]) for s in sites]
    assert pyro_sbn.log_joint(params.architecture, theta_t, layers).sum().item() == pytest.approx(lp_numpy, rel=1e-5)
    layers_j = [jnp.asarray(values[s]) for s in sites]
    assert float(numpyro_sbn.log_joint(params.architecture, params.to_jax(), layers_j).sum()) == pytest.approx(
        lp_numpy, rel=1e-5
    )


@pytest.mark.parametrize("guide", ["recognition", "mean_field"])
def test_guides_agree_across_backends(params, guide):
    x = all_binary(6)[::7]
    g_pyro = getattr(pyro_sbn, f"{guide}_guide")
    g_numpyro = getattr(numpyro_sbn, f"{guide}_guide")
    tr = _pyro_trace(g_pyro, params, torch.as_tensor(x))
    sites = ["x"] + [site_name(l) for l in range(1, params.architecture.num_layers + 1)]
    layers = [x] + [tr.nodes[s]["value"].numpy() for s in sites[1:]]
    ref = density.guide_log_prob(params, guide, layers).sum()
    assert tr.log_prob_sum().item() == pytest.approx(ref, rel=1e-5)
    hidden = {s: jnp.asarray(v) for s, v in zip(sites[1:], layers[1:])}
    lq, _ = log_density(g_numpyro, (params, jnp.asarray(x)), {}, hidden)
    assert float(lq) == pytest.approx(ref, rel=1e-5)


def test_site_layout_is_elementwise_bernoulli_in_unit_plates():
    params = SBNParams.init("6-4-3", seed=0)
    tr = _pyro_trace(pyro_sbn.model, params, torch.zeros(5, 6))
    names = [n for n, s in tr.nodes.items() if s["type"] == "sample" and not n.startswith(("data", "units"))]
    assert names == ["h2", "h1", "x"]
    for name, width in (("h2", 3), ("h1", 4), ("x", 6)):
        site = tr.nodes[name]
        assert site["fn"].event_shape == () and site["value"].shape == (5, width)
        assert {f.name: f.dim for f in site["cond_indep_stack"]} == {"data": -2, f"units_{name}": -1}
    ntr = nhandlers.trace(nhandlers.seed(numpyro_sbn.model, 0)).get_trace(params, jnp.zeros((5, 6)))
    assert ntr["h1"]["fn"].event_shape == () and ntr["h1"]["value"].shape == (5, 4)
    assert {f.name for f in ntr["h1"]["cond_indep_stack"]} == {"units_h1", "data"}


def test_ancestral_samples_match_exact_visible_marginals():
    """p(x_d = 1) from 20,000 ancestral samples, in both PPLs, against enumeration.

    Samples are independent, so each frequency has binomial standard error
    sqrt(p(1-p)/n) <= 0.0036; 5 standard errors over 2 backends x 4 units keeps the
    false-alarm probability below 1e-5.
    """
    params = SBNParams.init("4-3-2", seed=2, scale=1.5)
    xs = all_binary(4)
    p_x = np.exp(evaluation.exact_log_likelihood(params, xs))
    exact = p_x @ xs
    n = 20_000
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pred = pyro.infer.Predictive(pyro_sbn.model, num_samples=1, return_sites=["x"])
    x_pyro = pred(params, num_samples=n)["x"][0].numpy()
    npred = numpyro.infer.Predictive(numpyro_sbn.model, num_samples=1, return_sites=["x"])
    x_numpyro = np.asarray(npred(jax.random.PRNGKey(0), params, num_samples=n)["x"][0])
    se = np.sqrt(exact * (1 - exact) / n)
    for x in (x_pyro, x_numpyro):
        assert x.shape == (n, 4)
        assert np.all(np.abs(x.mean(0) - exact) < 5 * se)


def test_subsampling_in_the_data_plate():
    params = SBNParams.init("6-4-3", seed=0)
    x = torch.as_tensor(all_binary(6))
    tr = _pyro_trace(pyro_sbn.model, params, x, subsample_size=8)
    assert tr.nodes["x"]["value"].shape == (8, 6)
    idx = tr.nodes["data"]["value"]
    assert torch.equal(tr.nodes["x"]["value"], x[idx])
    # the log-density is scaled up to the full data set (64 / 8)
    assert tr.nodes["x"]["scale"] == pytest.approx(64 / 8)
    gtr = poutine.trace(poutine.replay(pyro_sbn.recognition_guide, trace=tr)).get_trace(params, x, subsample_size=8)
    assert torch.equal(gtr.nodes["data"]["value"], idx)
    ntr = nhandlers.trace(nhandlers.seed(numpyro_sbn.model, 1)).get_trace(params, jnp.asarray(x), subsample_size=8)
    assert ntr["x"]["value"].shape == (8, 6)
    assert ntr["x"]["scale"] == pytest.approx(64 / 8)


def test_pyro_param_store_holds_the_parameters():
    params = SBNParams.init("6-4-3", seed=0)
    _pyro_trace(pyro_sbn.model, params, torch.zeros(2, 6))
    back = pyro_sbn.read_params(params)
    assert all(np.array_equal(back[k], params[k]) for k in params)


def test_stock_numpyro_discrete_hmc_gibbs_runs_on_the_model():
    """NumPyro's own DiscreteHMCGibbs samples our posterior (sites in unit plates)."""
    from numpyro.infer import MCMC, DiscreteHMCGibbs, NUTS

    params = SBNParams.init("5-3-2", seed=0, scale=1.0)
    x = jnp.asarray(all_binary(5)[[3, 17]])
    # DiscreteHMCGibbs wraps an inner HMC kernel; the model has no continuous latents
    kernel = DiscreteHMCGibbs(NUTS(numpyro_sbn.model), modified=True)
    mcmc = MCMC(kernel, num_warmup=20, num_samples=100, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), params, x)
    s = mcmc.get_samples()
    assert s["h1"].shape == (100, 2, 3) and s["h2"].shape == (100, 2, 2)
    assert set(np.unique(np.asarray(s["h1"]))) <= {0.0, 1.0}


def test_pyro_training_never_writes_into_the_callers_parameters():
    params = SBNParams.init("6-4-3", seed=0)
    before = {k: v.copy() for k, v in params.items()}
    pyro.clear_param_store()
    svi = pyro.infer.SVI(pyro_sbn.model, pyro_sbn.mean_field_guide, pyro.optim.Adam({"lr": 0.1}),
                         pyro.infer.TraceGraph_ELBO())
    svi.step(params, torch.as_tensor(all_binary(6)))
    assert all(np.array_equal(params[k], before[k]) for k in params)
    assert not np.array_equal(pyro_sbn.read_params(params)["W_1_0"], before["W_1_0"])


def test_numpyro_model_gradient_is_right_at_zero_logits():
    """d log p / d b = s - sigma(b): at b = 0 (the initial biases) that is s - 1/2."""
    params = SBNParams.init("3-2", seed=0, guide=())
    x = jnp.asarray([[1.0, 0.0, 1.0]])
    h = {"h1": jnp.asarray([[1.0, 0.0]])}

    def log_p(b1):
        return log_density(numpyro_sbn.model, (params, x), {}, {**h, "b_1": b1})[0]

    grad = jax.grad(log_p)(jnp.zeros(2))
    np.testing.assert_allclose(np.asarray(grad), [0.5, -0.5], atol=1e-6)
