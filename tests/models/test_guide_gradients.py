"""SVI gradients with the guides against the exact gradient of the ELBO by enumeration.

The ELBO of data ``x`` (rows ``x_n``) is

    L(theta, phi) = sum_n sum_h q(h | x_n) [log p(x_n, h) - log q(h | x_n)],

a finite sum over every hidden state for these small nets, differentiated exactly by
torch autograd (float64). The TraceGraph ELBO of each backend gives an unbiased
estimate of its gradient only if the guide's plates tell the truth: it prunes the learning
signal of a site to the terms that its plates say can depend on it. Before the fix each
hidden layer of the guides sat in a plate over its units (``units_h<l>``), which is false in
the recognition guide (``h2`` depends on all of ``h1``), and the gradient was biased.

Each test draws ``M`` independent gradient estimates, each the mean of ``K`` vectorised
particles, and checks every coordinate of their mean against the exact gradient within
5 standard errors (``std / sqrt(M)``; the means of ``K`` particles are very nearly normal,
so z is Student-t with M - 1 = 99 degrees of freedom). A false alarm then has probability
about 2e-6 per coordinate, 1e-3 over the ~500 coordinates of all the tests; the seeds are
fixed, so the outcome is reproducible.

Measured with the old per-unit-plate guides on these same nets, seeds and sample counts
(reconstructed temporarily, not kept): the recognition guide's phi-gradient was off by

    Pyro    TraceGraph_ELBO, 6-3-2 layered: max |z| = 34.7 (15% of the norm)   5-3-2 dense: 14.3 (2%)
    NumPyro TraceGraph_ELBO, 6-3-2 layered: max |z| = 35.8 (15% of the norm)   5-3-2 dense: 13.4 (2%)

so the recognition tests below fail on the old structure. The mean-field guide's phi-gradient
(max |z| 2.3) and every theta-gradient (max |z| 2.5) were unbiased even then: pruning by
plates is harmless where the units really are independent, and theta takes no
score-function term. With the current one-site-per-layer guides: max |z| 1.5-2.5 throughout.
"""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pyro
import pytest
import torch

from sbn_ppl import SBNParams
import sbn_ppl.yardstick.exact as enumeration
from sbn_ppl.base.params import generative_keys, mean_field_keys, recognition_keys
from sbn_ppl.models import numpyro_sbn, pyro_sbn
from tests.conftest import all_binary, z_scores

# two small nets, 5 hidden units each (32 hidden states)
NETS = [("6-3-2", "layered"), ("5-3-2", "dense")]
GUIDES = ["recognition", "mean_field"]
# A crossed design keeps the suite short: each backend sees both nets and both guides, and
# every (net, guide) pair is checked on one backend (the model and guide code is shared).
PYRO_CASES = [(NETS[0], "mean_field"), (NETS[1], "recognition")]
NUMPYRO_CASES = [(NETS[0], "recognition"), (NETS[1], "mean_field")]
Z_MAX = 5.0
# gradient estimates: M batches of K vectorised particles (M * K = 400,000 samples)
PYRO_K, PYRO_M = 4_000, 100
NUMPYRO_K, NUMPYRO_M = 4_000, 100


def net_params(arch: str, connectivity: str, seed: int = 0) -> SBNParams:
    """Strong weights and non-zero biases everywhere (generative and both guides), so that
    ``h2`` really depends on ``h1`` in the recognition network and nothing cancels by symmetry."""
    params = SBNParams.init(arch, seed=seed, scale=1.5, connectivity=connectivity)
    rng = np.random.default_rng(seed + 100)
    redraw = [k for k in params if k.startswith(("q_", "b_"))]  # guide weights, all biases
    return params.replace(**{k: rng.normal(0.0, 1.5 if "W_" in k else 1.0, params[k].shape) for k in redraw})


def data_rows(arch: str) -> np.ndarray:
    d = int(arch.split("-")[0])
    return all_binary(d)[[5, 22, 13, 30]]


def keys_of(params: SBNParams, guide: str) -> tuple[list[str], list[str]]:
    arch = params.architecture
    return generative_keys(arch), (recognition_keys(arch) if guide == "recognition" else mean_field_keys(arch))


# -- the exact gradient --------------------------------------------------------------------------


def exact_elbo_torch(arch, values: dict, x: torch.Tensor, guide: str) -> torch.Tensor:
    """``sum_n sum_h q(h | x_n) [log p(x_n, h) - log q(h | x_n)]`` over every hidden state."""
    hidden = torch.as_tensor(all_binary(arch.num_hidden), dtype=x.dtype)  # (S, H)
    layers = [x[:, None, :]] + [h[None] for h in torch.split(hidden, list(arch.hidden_sizes), dim=-1)]
    log_p = pyro_sbn.log_joint(arch, values, layers)  # (N, S)
    log_q = 0.0
    for l in range(1, arch.num_layers + 1):
        if guide == "recognition":
            logits = pyro_sbn.recognition_logits(arch, values, layers, l)
        else:
            logits = pyro_sbn.mean_field_logits(values, layers[0], l)
        log_q = log_q + pyro_sbn.bernoulli_log_prob(layers[l], logits).sum(-1)
    return (log_q.exp() * (log_p - log_q)).sum()


def exact_gradient_torch(params: SBNParams, x: np.ndarray, guide: str) -> dict[str, np.ndarray]:
    theta_keys, phi_keys = keys_of(params, guide)
    values = {k: torch.tensor(np.asarray(params[k], dtype=np.float64), requires_grad=True)
              for k in theta_keys + phi_keys}
    elbo = exact_elbo_torch(params.architecture, values, torch.as_tensor(x, dtype=torch.float64), guide)
    elbo.backward()
    return {k: v.grad.numpy() for k, v in values.items()}


@pytest.mark.parametrize("guide", GUIDES)
@pytest.mark.parametrize("net", NETS, ids=[f"{a}-{c}" for a, c in NETS])
def test_exact_elbo_is_log_likelihood_minus_kl(net, guide):
    """The enumerated ELBO (torch) equals ``log p(x) - KL(q || p)`` of the NumPy evaluator."""
    params = net_params(*net)
    x = data_rows(net[0])
    theta_keys, phi_keys = keys_of(params, guide)
    values = {k: torch.tensor(np.asarray(params[k], dtype=np.float64)) for k in theta_keys + phi_keys}
    elbo = exact_elbo_torch(params.architecture, values, torch.as_tensor(x, dtype=torch.float64), guide)
    assert elbo.item() == pytest.approx(enumeration.exact_kl(params, guide, x).elbo.sum(), rel=1e-6)


# -- the estimates -------------------------------------------------------------------------------


@pytest.fixture
def float64_torch():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def pyro_gradient_samples(model, guide, params, x, keys, *, num_particles, num_batches, seed=0,
                          max_plate_nesting=1) -> dict[str, np.ndarray]:
    """``num_batches`` estimates of the ELBO's gradient by Pyro's ``TraceGraph_ELBO``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    elbo = pyro.infer.TraceGraph_ELBO(num_particles=num_particles, vectorize_particles=True,
                                      max_plate_nesting=max_plate_nesting)
    xt = torch.as_tensor(x, dtype=torch.get_default_dtype())
    out = {k: [] for k in keys}
    for _ in range(num_batches):
        elbo.loss_and_grads(model, guide, params, xt)
        store = dict(pyro.get_param_store().named_parameters())
        for k in keys:
            out[k].append(-store[k].grad.numpy().copy())  # the loss is -ELBO
        for p in store.values():
            p.grad = None
    return {k: np.stack(v) for k, v in out.items()}


def numpyro_gradient_samples(model, guide, params, x, keys, *, num_particles, num_batches, seed=0):
    """``num_batches`` estimates of the ELBO's gradient by NumPyro's ``TraceGraph_ELBO``."""
    elbo = numpyro.infer.TraceGraph_ELBO(num_particles=num_particles)
    values = {k: jnp.asarray(params[k]) for k in keys}
    xj = jnp.asarray(x)

    def one(key):
        return jax.grad(lambda p: -elbo.loss(key, p, model, guide, params, xj))(values)

    grads = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(seed), num_batches))
    return {k: np.asarray(v, dtype=np.float64) for k, v in grads.items()}


def assert_unbiased(samples, exact, what):
    """Every coordinate within ``Z_MAX`` standard errors of the exact gradient, and the test
    sharp enough to matter: ``Z_MAX`` standard errors below 3% of the gradient's norm, so a
    bias of a few percent of the norm (the old plates': 4% on 10-5-3, 2-15% here) cannot hide."""
    norm = np.sqrt(sum((exact[k] ** 2).sum() for k in samples))
    m = next(iter(samples.values())).shape[0]
    se = max((v.std(0, ddof=1) / np.sqrt(m)).max() for v in samples.values())
    assert Z_MAX * se < 0.03 * norm, f"{what}: too few samples to see a 3% bias ({se=:.3g}, {norm=:.3g})"
    z = z_scores(samples, exact)
    worst = max(z, key=lambda k: np.abs(z[k]).max())
    assert np.abs(z[worst]).max() < Z_MAX, (
        f"{what}: SVI gradient off the exact gradient by z = {np.abs(z[worst]).max():.1f} at {worst} "
        f"(estimate {samples[worst].mean(0)}, exact {exact[worst]})")


@pytest.mark.parametrize("net, guide", PYRO_CASES, ids=[f"{a}-{c}-{g}" for (a, c), g in PYRO_CASES])
def test_pyro_trace_graph_elbo_gradient_is_exact_in_expectation(net, guide, float64_torch):
    """Pyro's TraceGraph_ELBO with each guide: theta- and phi-gradients within 5 standard
    errors of the exact gradient (K = 4,000 vectorised particles x M = 100 estimates, float64)."""
    params = net_params(*net)
    x = data_rows(net[0])
    theta_keys, phi_keys = keys_of(params, guide)
    samples = pyro_gradient_samples(pyro_sbn.model, getattr(pyro_sbn, f"{guide}_guide"), params, x,
                                    theta_keys + phi_keys, num_particles=PYRO_K, num_batches=PYRO_M)
    exact = exact_gradient_torch(params, x, guide)
    assert_unbiased({k: samples[k] for k in phi_keys}, exact, f"pyro {guide} phi")
    assert_unbiased({k: samples[k] for k in theta_keys}, exact, f"pyro {guide} theta")


@pytest.mark.parametrize("net, guide", NUMPYRO_CASES, ids=[f"{a}-{c}-{g}" for (a, c), g in NUMPYRO_CASES])
def test_numpyro_trace_graph_elbo_gradient_is_exact_in_expectation(net, guide):
    """NumPyro's TraceGraph_ELBO with each guide: theta- and phi-gradients within 5 standard
    errors of the exact gradient (K = 4,000 vectorised particles x M = 100 estimates, float32)."""
    params = net_params(*net)
    x = data_rows(net[0])
    theta_keys, phi_keys = keys_of(params, guide)
    samples = numpyro_gradient_samples(numpyro_sbn.model, getattr(numpyro_sbn, f"{guide}_guide"), params, x,
                                       theta_keys + phi_keys, num_particles=NUMPYRO_K, num_batches=NUMPYRO_M)
    exact = exact_gradient_torch(params, x, guide)
    assert_unbiased({k: samples[k] for k in phi_keys}, exact, f"numpyro {guide} phi")
    assert_unbiased({k: samples[k] for k in theta_keys}, exact, f"numpyro {guide} theta")
