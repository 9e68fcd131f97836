"""The Pyro model and the NumPyro model: the same function of the same parameters."""
import functools

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

from sbn_ppl import SBNParams
from sbn_ppl.base import density
import sbn_ppl.yardstick.exact as enumeration
from sbn_ppl.base.architecture import site_name
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


def test_site_layout_is_one_to_event_site_per_layer_by_default():
    """Model and guides: one ``Bernoulli(...).to_event(1)`` site per layer in the "data" plate
    (dim -1), so no plate claims that the units of a layer are independent of anything."""
    params = SBNParams.init("6-4-3", seed=0)
    x = torch.zeros(5, 6)
    tr = _pyro_trace(pyro_sbn.model, params, x)
    names = [n for n, s in tr.nodes.items() if s["type"] == "sample" and n != "data"]
    assert names == ["h2", "h1", "x"]
    for fn, sites in ((pyro_sbn.model, ("h2", "h1", "x")), (pyro_sbn.recognition_guide, ("h1", "h2")),
                      (pyro_sbn.mean_field_guide, ("h1", "h2"))):
        tr = _pyro_trace(fn, params, x)
        assert not any(n.startswith("units") for n in tr.nodes)
        for name in sites:
            site, width = tr.nodes[name], params.architecture.sizes[int(name[1:]) if name != "x" else 0]
            assert site["fn"].event_shape == (width,) and site["fn"].batch_shape == (5,)
            assert site["value"].shape == (5, width)
            assert [(f.name, f.dim) for f in site["cond_indep_stack"]] == [("data", -1)]
    for fn, sites in ((numpyro_sbn.model, ("h2", "h1", "x")), (numpyro_sbn.recognition_guide, ("h1", "h2")),
                      (numpyro_sbn.mean_field_guide, ("h1", "h2"))):
        ntr = nhandlers.trace(nhandlers.seed(fn, 0)).get_trace(params, jnp.zeros((5, 6)))
        assert not any(n.startswith("units") for n in ntr)
        for name in sites:
            site = ntr[name]
            assert site["fn"].event_dim == 1 and site["fn"].batch_shape == (5,)
            base = site["fn"]
            while hasattr(base, "base_dist"):  # Independent(ExpandedDistribution(...)) by the plate
                base = base.base_dist
            assert isinstance(base, numpyro_sbn.Bernoulli)  # the softplus log-prob
            assert [(f.name, f.dim) for f in site["cond_indep_stack"]] == [("data", -1)]


def test_unit_plates_layout_is_elementwise_bernoulli_in_unit_plates():
    params = SBNParams.init("6-4-3", seed=0)
    tr = _pyro_trace(pyro_sbn.model, params, torch.zeros(5, 6), unit_plates=True)
    names = [n for n, s in tr.nodes.items() if s["type"] == "sample" and not n.startswith(("data", "units"))]
    assert names == ["h2", "h1", "x"]
    for name, width in (("h2", 3), ("h1", 4), ("x", 6)):
        site = tr.nodes[name]
        assert site["fn"].event_shape == () and site["value"].shape == (5, width)
        assert {f.name: f.dim for f in site["cond_indep_stack"]} == {"data": -2, f"units_{name}": -1}
    ntr = nhandlers.trace(nhandlers.seed(numpyro_sbn.model, 0)).get_trace(params, jnp.zeros((5, 6)), unit_plates=True)
    for name, width in (("h2", 3), ("h1", 4), ("x", 6)):
        assert ntr[name]["fn"].event_shape == () and ntr[name]["value"].shape == (5, width)
        assert {f.name: f.dim for f in ntr[name]["cond_indep_stack"]} == {"data": -2, f"units_{name}": -1}


def test_both_layouts_give_the_same_log_joint(params):
    """``unit_plates=True`` and the default are the same density at the same states, in both PPLs."""
    x = all_binary(6)[::5]
    tr = _pyro_trace(pyro_sbn.model, params, torch.as_tensor(x))
    hidden = {f"h{l}": tr.nodes[f"h{l}"]["value"] for l in range(1, params.architecture.num_layers + 1)}
    tr_units = poutine.trace(poutine.condition(pyro_sbn.model, data=hidden)).get_trace(
        params, torch.as_tensor(x), unit_plates=True)
    assert tr_units.log_prob_sum().item() == pytest.approx(tr.log_prob_sum().item(), rel=1e-6)
    hidden_j = {k: jnp.asarray(v.numpy()) for k, v in hidden.items()}
    lp = [float(log_density(numpyro_sbn.model, (params, jnp.asarray(x)), {"unit_plates": up}, hidden_j)[0])
          for up in (False, True)]
    assert lp[0] == pytest.approx(lp[1], rel=1e-6)
    assert lp[0] == pytest.approx(tr.log_prob_sum().item(), rel=1e-5)


@pytest.mark.parametrize("guide", ["recognition", "mean_field"])
def test_which_model_layouts_pair_with_the_guides(guide):
    """The default model pairs with the guides; ``unit_plates=True`` is refused by both PPLs'
    model/guide checks (event_dim 0 in the model, 1 in the guide), as the docstrings say."""
    from numpyro.infer import TraceGraph_ELBO

    params = SBNParams.init("5-3-2", seed=0, scale=1.0)
    x = all_binary(5)[[3, 17, 9]]
    g_pyro, g_numpyro = getattr(pyro_sbn, f"{guide}_guide"), getattr(numpyro_sbn, f"{guide}_guide")

    def numpyro_loss(unit_plates):  # traced only (NumPyro checks the pairing while tracing)
        model = functools.partial(numpyro_sbn.model, unit_plates=unit_plates)
        return jax.eval_shape(lambda: TraceGraph_ELBO().loss(jax.random.PRNGKey(0), {}, model, g_numpyro,
                                                               params, jnp.asarray(x)))

    for unit_plates in (False, True):
        pyro.clear_param_store()
        model = functools.partial(pyro_sbn.model, unit_plates=unit_plates)
        pyro_loss = functools.partial(pyro.infer.TraceGraph_ELBO().loss_and_grads, model, g_pyro, params,
                                      torch.as_tensor(x))
        if unit_plates:
            with pytest.raises(ValueError, match="event_dims disagree"):
                pyro_loss()
            with pytest.raises(ValueError, match="event_dims disagree"):
                numpyro_loss(unit_plates)
        else:
            assert np.isfinite(pyro_loss())
            assert numpyro_loss(unit_plates).shape == ()


def test_ancestral_samples_match_exact_visible_marginals():
    """p(x_d = 1) from 20,000 ancestral samples, in both PPLs, against enumeration.

    Samples are independent, so each frequency has binomial standard error
    sqrt(p(1-p)/n) <= 0.0036; 5 standard errors over 2 backends x 4 units keeps the
    false-alarm probability below 1e-5.
    """
    params = SBNParams.init("4-3-2", seed=2, scale=1.5)
    xs = all_binary(4)
    p_x = np.exp(enumeration.exact_log_likelihood(params, xs))
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


@pytest.mark.parametrize("unit_plates", [False, True])
def test_subsampling_in_the_data_plate(unit_plates):
    params = SBNParams.init("6-4-3", seed=0)
    x = torch.as_tensor(all_binary(6))
    tr = _pyro_trace(pyro_sbn.model, params, x, subsample_size=8, unit_plates=unit_plates)
    assert tr.nodes["x"]["value"].shape == (8, 6)
    idx = tr.nodes["data"]["value"]
    assert torch.equal(tr.nodes["x"]["value"], x[idx])
    # the log-density is scaled up to the full data set (64 / 8)
    assert tr.nodes["x"]["scale"] == pytest.approx(64 / 8)
    gtr = poutine.trace(poutine.replay(pyro_sbn.recognition_guide, trace=tr)).get_trace(params, x, subsample_size=8)
    assert torch.equal(gtr.nodes["data"]["value"], idx)
    ntr = nhandlers.trace(nhandlers.seed(numpyro_sbn.model, 1)).get_trace(
        params, jnp.asarray(x), subsample_size=8, unit_plates=unit_plates)
    assert ntr["x"]["value"].shape == (8, 6)
    assert ntr["x"]["scale"] == pytest.approx(64 / 8)


IDX = [5, 40, 17, 63, 0]  # an explicit mini-batch of B = 5 of the N = 64 rows (any order)


def _reference(params, x, idx, tr_values):
    """``N / B * sum_{n in idx} log p(x_n, h_n)`` by the plain NumPy density."""
    sites = [site_name(l) for l in range(params.architecture.num_layers + 1)]
    layers = [x[idx]] + [np.asarray(tr_values[s]) for s in sites[1:]]
    return len(x) / len(idx) * density.log_joint(params, layers).sum()


@pytest.mark.parametrize("unit_plates", [False, True])
def test_explicit_subsample_pyro(unit_plates):
    """``subsample=idx``: the traced log_prob_sum is the full-data log-joint of those rows x N/B."""
    params = SBNParams.init("6-4-3", seed=0, scale=1.0)
    x = all_binary(6)
    tr = _pyro_trace(pyro_sbn.model, params, torch.as_tensor(x), subsample=torch.tensor(IDX), unit_plates=unit_plates)
    assert tr.nodes["data"]["value"].tolist() == IDX
    assert np.array_equal(tr.nodes["x"]["value"].numpy(), x[IDX])
    values = {s: tr.nodes[s]["value"].numpy() for s in ("h1", "h2")}
    assert tr.log_prob_sum().item() == pytest.approx(_reference(params, x, IDX, values), rel=1e-5)
    # the same with subsample_size given as well (it must agree), and with a plain list
    tr2 = _pyro_trace(pyro_sbn.model, params, torch.as_tensor(x), subsample=IDX, subsample_size=5,
                      unit_plates=unit_plates)
    assert tr2.nodes["data"]["value"].tolist() == IDX
    with pytest.raises(ValueError, match="subsample_size does not match"):
        _pyro_trace(pyro_sbn.model, params, torch.as_tensor(x), subsample=IDX, subsample_size=4)
    with pytest.raises(ValueError, match="integer array"):
        _pyro_trace(pyro_sbn.model, params, torch.as_tensor(x), subsample=[0.0, 3.0])
    # the guides take the same rows, and their log q is scaled the same way
    for guide in ("recognition", "mean_field"):
        gtr = _pyro_trace(getattr(pyro_sbn, f"{guide}_guide"), params, torch.as_tensor(x), subsample=IDX)
        assert gtr.nodes["data"]["value"].tolist() == IDX
        layers = [x[IDX]] + [gtr.nodes[s]["value"].numpy() for s in ("h1", "h2")]
        ref = 64 / 5 * density.guide_log_prob(params, guide, layers).sum()
        assert gtr.log_prob_sum().item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("unit_plates", [False, True])
def test_explicit_subsample_numpyro(unit_plates):
    """numpyro.plate has no ``subsample``: ours substitutes the plate's indices. The
    log-density is the full-data log-joint of those rows x N/B, also under jit."""
    params = SBNParams.init("6-4-3", seed=0, scale=1.0)
    x = all_binary(6)
    idx = jnp.asarray(IDX)
    kwargs = {"subsample": idx, "unit_plates": unit_plates}
    ntr = nhandlers.trace(nhandlers.seed(numpyro_sbn.model, 1)).get_trace(params, jnp.asarray(x), **kwargs)
    assert np.asarray(ntr["data"]["value"]).tolist() == IDX
    assert np.array_equal(np.asarray(ntr["x"]["value"]), x[IDX])
    assert ntr["x"]["scale"] == pytest.approx(64 / 5)
    values = {s: ntr[s]["value"] for s in ("h1", "h2")}
    ref = _reference(params, x, IDX, values)
    lp, _ = log_density(numpyro_sbn.model, (params, jnp.asarray(x)), kwargs, values)
    assert float(lp) == pytest.approx(ref, rel=1e-5)
    # traced indices (under jit) work the same
    lp_jit = jax.jit(lambda i: log_density(numpyro_sbn.model, (params, jnp.asarray(x)),
                                           {"subsample": i, "unit_plates": unit_plates}, values)[0])(idx)
    assert float(lp_jit) == pytest.approx(ref, rel=1e-5)
    lp2, _ = log_density(numpyro_sbn.model, (params, jnp.asarray(x)), {**kwargs, "subsample_size": 5}, values)
    assert float(lp2) == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError, match="subsample_size does not match"):
        log_density(numpyro_sbn.model, (params, jnp.asarray(x)), {**kwargs, "subsample_size": 4}, values)
    with pytest.raises(ValueError, match="integer array"):
        log_density(numpyro_sbn.model, (params, jnp.asarray(x)), {"subsample": jnp.asarray([0.0, 3.0])}, values)
    for guide in ("recognition", "mean_field"):
        g = getattr(numpyro_sbn, f"{guide}_guide")
        gtr = nhandlers.trace(nhandlers.seed(g, 2)).get_trace(params, jnp.asarray(x), subsample=idx)
        assert np.asarray(gtr["data"]["value"]).tolist() == IDX
        layers = [x[IDX]] + [np.asarray(gtr[s]["value"]) for s in ("h1", "h2")]
        ref_q = 64 / 5 * density.guide_log_prob(params, guide, layers).sum()
        lq, _ = log_density(g, (params, jnp.asarray(x)), {"subsample": idx}, {s: gtr[s]["value"] for s in ("h1", "h2")})
        assert float(lq) == pytest.approx(ref_q, rel=1e-5)


def test_explicit_subsample_under_svi():
    """The ELBOs replay the guide's explicit mini-batch into the model: with ``subsample=idx``
    the loss is N/B times the loss of those rows alone (same random draws), in both PPLs."""
    params = SBNParams.init("5-3-2", seed=0, scale=1.0)
    x = all_binary(5)
    idx = [3, 17, 9, 30]
    pyro.clear_param_store()
    elbo = pyro.infer.TraceGraph_ELBO(num_particles=50, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(0)
    full = elbo.loss(pyro_sbn.model, pyro_sbn.recognition_guide, params, torch.as_tensor(x[idx]))
    pyro.set_rng_seed(0)
    sub = elbo.loss(pyro_sbn.model, pyro_sbn.recognition_guide, params, torch.as_tensor(x), subsample=idx)
    assert sub == pytest.approx(32 / 4 * full, rel=1e-6)
    from numpyro.infer import TraceGraph_ELBO

    nelbo = TraceGraph_ELBO(num_particles=50)

    @jax.jit
    def losses(key):
        g = numpyro_sbn.recognition_guide
        return (nelbo.loss(key, {}, numpyro_sbn.model, g, params, jnp.asarray(x[idx])),
                nelbo.loss(key, {}, numpyro_sbn.model, g, params, jnp.asarray(x), subsample=jnp.asarray(idx)))

    full, sub = losses(jax.random.PRNGKey(0))
    assert float(sub) == pytest.approx(32 / 4 * float(full), rel=1e-5)


def test_pyro_param_store_holds_the_parameters():
    params = SBNParams.init("6-4-3", seed=0)
    _pyro_trace(pyro_sbn.model, params, torch.zeros(2, 6))
    back = pyro_sbn.read_params(params)
    assert all(np.array_equal(back[k], params[k]) for k in params)


def test_stock_numpyro_discrete_hmc_gibbs_runs_on_the_unit_plates_model():
    """NumPyro's own DiscreteHMCGibbs samples our posterior with ``unit_plates=True`` (elementwise
    sites); the default layout's ``.to_event(1)`` sites have no ``enumerate_support``."""
    from numpyro.infer import MCMC, DiscreteHMCGibbs, NUTS

    params = SBNParams.init("5-3-2", seed=0, scale=1.0)
    x = jnp.asarray(all_binary(5)[[3, 17]])
    # DiscreteHMCGibbs wraps an inner HMC kernel; the model has no continuous latents
    kernel = DiscreteHMCGibbs(NUTS(functools.partial(numpyro_sbn.model, unit_plates=True)), modified=True)
    mcmc = MCMC(kernel, num_warmup=20, num_samples=100, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), params, x)
    s = mcmc.get_samples()
    assert s["h1"].shape == (100, 2, 3) and s["h2"].shape == (100, 2, 2)
    assert set(np.unique(np.asarray(s["h1"]))) <= {0.0, 1.0}
    mcmc = MCMC(DiscreteHMCGibbs(NUTS(numpyro_sbn.model)), num_warmup=1, num_samples=1, progress_bar=False)
    with pytest.raises(NotImplementedError):
        mcmc.run(jax.random.PRNGKey(0), params, x)


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
