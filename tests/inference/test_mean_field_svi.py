"""Mean-field SVI (Pyro and NumPyro): ELBOs, gradients and training checked against enumeration."""
import numpy as np
import pytest
import torch

from sbn_ppl import SBNParams
from sbn_ppl import density
from sbn_ppl.data import synthetic
from sbn_ppl.evaluation import exact_kl, exact_log_likelihood, hidden_states
from sbn_ppl.inference import mean_field_numpyro as mn
from sbn_ppl.inference import mean_field_pyro as mp
from sbn_ppl.methods import get_method

BACKENDS = {"numpyro": mn, "pyro": mp}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Pyro's many small ops run ~10x slower with 2 threads on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher():
    """A 10-4-2 teacher (strong weights) with a random amortised mean-field guide."""
    data = synthetic("10-4-2", 0)
    guide = {k: v for k, v in SBNParams.init("10-4-2", seed=1, scale=0.5).items() if k.startswith("q_mf")}
    return data, data.teacher.replace(**guide)


def exact_guide_gradient(params, x, logits):
    """``d/dc sum_n ELBO_n`` for the mean-field logits ``c`` ``(N, H)``, by enumeration:
    ``E_q[(h - mu) (log p(x, h) - log q(h))]`` (the score-function identity, computed exactly)."""
    (hidden,) = list(hidden_states(params, 1 << params.architecture.num_hidden))
    h = np.concatenate(hidden, axis=1)  # (S, H)
    log_p = density.log_joint(params, [x[:, None, :]] + [v[None] for v in hidden])  # (N, S)
    log_q = density.bernoulli_log_prob(h[None], logits[:, None, :]).sum(-1)  # (N, S)
    mu = 1.0 / (1.0 + np.exp(-logits))
    return np.einsum("ns,nsh->nh", np.exp(log_q) * (log_p - log_q), h[None] - mu[:, None, :])


def amortised_logits(params, x):
    return np.concatenate([density.mean_field_logits(params, x, l) for l in (1, 2)], axis=1)


def exact_amortised_gradient(params, x):
    dc = exact_guide_gradient(params, x, amortised_logits(params, x))
    split = np.cumsum(params.architecture.hidden_sizes)[:-1]
    out = {}
    for l, d in enumerate(np.split(dc, split, axis=1), start=1):  # chain rule through c = q_b + x @ q_W
        out[f"q_mf_b_{l}"], out[f"q_mf_W_0_{l}"] = d.sum(0), x.T @ d
    return out


# -- Monte Carlo ELBO --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_monte_carlo_elbo_matches_exact_elbo_and_lies_below_log_likelihood(teacher, backend):
    data, params = teacher
    x = data.test[:8]
    estimate, stderr = BACKENDS[backend].mc_elbo(params, x, num_particles=4000, seed=0)
    exact = exact_kl(params, "mean_field", x)
    # 8 points, 4000 particles each, fixed seed: 4 standard errors (two-sided p ~ 6e-5 per point)
    assert np.all(np.abs(estimate - exact.elbo) < 4 * stderr)
    assert np.all(estimate + 4 * stderr < exact.log_likelihood)  # ELBO = log p(x) - KL(q||p) < log p(x)


# -- gradient estimators -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gradient_moments(teacher):
    """Per backend and baseline: single-sample gradient moments at fixed parameters, same seed."""
    data, params = teacher
    x = data.train[:20]
    sizes = {"numpyro": (300, 300), "pyro": (100, 100)}  # (warmup, samples)
    return {(b, name): BACKENDS[b].guide_gradient_moments(params, x, name, warmup=sizes[b][0],
                                                          num_samples=sizes[b][1], seed=0)
            for b in BACKENDS for name in ("none", "decaying", "nvil")}


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize("baseline", ["none", "decaying", "nvil"])
def test_gradient_estimators_are_unbiased(teacher, gradient_moments, backend, baseline):
    data, params = teacher
    exact = exact_amortised_gradient(params, data.train[:20].astype(np.float64))
    moments = gradient_moments[(backend, baseline)]
    n = 300 if backend == "numpyro" else 100
    for key, truth in exact.items():
        stderr = np.sqrt(moments.variance[key] / n)
        # fixed seed; 4 standard errors per element (~50 elements: p(any false alarm) ~ 3e-3);
        # elements whose x is always 0 have a zero gradient exactly (1e-4 absorbs float32 rounding)
        assert np.all(np.abs(moments.mean[key] - truth) <= 4 * stderr + 1e-4), key


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize("baseline", ["decaying", "nvil"])
def test_baselines_reduce_gradient_variance(gradient_moments, backend, baseline):
    plain = gradient_moments[(backend, "none")].total_variance
    reduced = gradient_moments[(backend, baseline)].total_variance
    # measured ~7x on this net with 100-300 samples; a ratio of 3 leaves room for sampling error of ~10%
    assert plain / reduced > 3.0, (plain, reduced)


def test_local_variant_gradient_is_unbiased_under_subsampling():
    """The subsampled plate scales the cost by N/B, not the score (NumPyro's stock surrogate scales both)."""
    data = synthetic("6-2-1", 3)
    params, x = data.teacher, data.train[:8].astype(np.float64)
    moments = mn.guide_gradient_moments(params, x, "nvil", amortised=False, subsample_size=4, warmup=100,
                                        num_samples=600, seed=0)
    exact = exact_guide_gradient(params, x, np.zeros((8, 3)))  # local logits start at 0
    estimate = np.concatenate([moments.mean["q_mf_local_1"], moments.mean["q_mf_local_2"]], axis=1)
    var = np.concatenate([moments.variance["q_mf_local_1"], moments.variance["q_mf_local_2"]], axis=1)
    # 24 elements, 600 samples, fixed seed: 4 standard errors
    assert np.all(np.abs(estimate - exact) <= 4 * np.sqrt(var / 600) + 1e-4)


# -- training ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend,amortised,steps", [("numpyro", True, 600), ("pyro", True, 150),
                                                     ("pyro", False, 150)])
def test_training_on_teacher_data_raises_held_out_log_likelihood(backend, amortised, steps):
    data = synthetic("12-4-3", 0)
    start = SBNParams.init("12-4-3", seed=1, scale=0.5)
    m = get_method("mean-field-svi", backend)
    state = m.init(start, data.train, seed=0, amortised=amortised, lr=0.01, batch_size=100)
    state, info = m.run(state, steps)
    fitted = m.get_params(state)
    before, after = (exact_log_likelihood(p, data.test).mean() for p in (start, fitted))
    assert after > before + 0.5, (before, after)  # measured: -8.21 -> about -6.4 (teacher -6.02)
    assert info["objective"] < exact_log_likelihood(fitted, data.train).mean() + 0.1  # an ELBO, noisy
    if amortised:
        bound = m.bound(state, data.test[:50])
        assert bound.mean() < exact_log_likelihood(fitted, data.test[:50]).mean()
    else:
        assert "q_mf_local_1" in fitted and not fitted.has_guide("mean_field")
        assert m.bound(state, data.test) is None  # no bound on new data: local parameters only


# -- the Method record ---------------------------------------------------------------------------


def test_same_seed_same_numbers():
    data = synthetic("12-4-3", 0)
    start = SBNParams.init("12-4-3", seed=1)
    m = get_method("mean-field-svi", "pyro")
    runs = [m.run(m.init(start, data.train, seed=5, batch_size=50), 5)[1]["objective"] for _ in range(2)]
    assert runs[0] == runs[1]
    runner = mn.build(start, len(data.train), seed=5, batch_size=50)  # one compiled step, two runs
    losses = [runner.step(mn.init_state(runner, start, data.train, seed=5))[1] for _ in range(2)]
    assert float(losses[0]) == float(losses[1])


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize("options,message", [({"lr": -1.0}, "learning rate"), ({"baseline": "mean"}, "baseline"),
                                             ({"batch_size": 0}, "batch_size"), ({"k": 3}, "unknown option"),
                                             ({"amortised": "yes"}, "amortised")])
def test_bad_options_are_refused(backend, options, message):
    data = synthetic("12-4-3", 0)
    m = get_method("mean-field-svi", backend)
    assert m.name == "mean-field-svi" and m.backend == backend and m.guide == "mean_field"
    with pytest.raises(ValueError, match=message):
        m.init(SBNParams.init("12-4-3"), data.train, seed=0, **options)
