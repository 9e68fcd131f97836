"""Mean-field SVI (Pyro and NumPyro): ELBOs, gradients and training checked against enumeration."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import optax
import pyro.optim
import pytest

from sbn_ppl import SBNParams
from sbn_ppl.base import density
from sbn_ppl.base.data import synthetic
from sbn_ppl.yardstick.exact import exact_kl, exact_log_likelihood, hidden_states
from sbn_ppl.engine.fitting import Budget, Checkpointing, fit
from sbn_ppl.inference import get_method
from sbn_ppl.inference.mean_field import numpyro as mn
from sbn_ppl.inference.mean_field import pyro as mp
from sbn_ppl.base.params import recognition_keys
from sbn_ppl.engine.runner import runner_for

BACKENDS = {"numpyro": mn, "pyro": mp}
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # Pyro's many small ops: 10x faster


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

SAMPLES = {"numpyro": 300, "pyro": 100}  # warm-up steps = samples


@pytest.fixture(scope="module")
def gradient_moments(teacher):
    """Per backend and baseline: single-sample gradient moments at fixed parameters, same seed."""
    data, params = teacher
    x = data.train[:20]
    return {(b, name): BACKENDS[b].mean_field_gradient_moments(params, x, name, warmup=SAMPLES[b],
                                                               num_samples=SAMPLES[b], seed=0)
            for b in BACKENDS for name in ("none", "decaying", "nvil")}


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize("baseline", ["none", "decaying", "nvil"])
def test_gradient_estimators_are_unbiased(teacher, gradient_moments, backend, baseline):
    data, params = teacher
    exact = exact_amortised_gradient(params, data.train[:20].astype(np.float64))
    moments = gradient_moments[(backend, baseline)]
    for key, truth in exact.items():
        stderr = np.sqrt(moments.variance[key] / SAMPLES[backend])
        # fixed seed; 4 standard errors per element (~50 elements: p(any false alarm) ~ 3e-3);
        # elements whose x is always 0 have a zero gradient exactly (1e-4 absorbs float32 rounding)
        assert np.all(np.abs(moments.mean[key] - truth) <= 4 * stderr + 1e-4), key


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize("baseline", ["decaying", "nvil"])
def test_baselines_reduce_gradient_variance(gradient_moments, backend, baseline):
    plain = gradient_moments[(backend, "none")].total_variance
    reduced = gradient_moments[(backend, baseline)].total_variance
    # measured 6.1-6.5x on this net (one site per layer); a ratio of 3 leaves room for sampling error
    assert plain / reduced > 3.0, (plain, reduced)


@pytest.mark.parametrize("baseline", ["none", "decaying", "nvil"])
def test_backends_have_the_same_gradient_variance(gradient_moments, baseline):
    """The same estimator in both PPLs: total variances agree (measured within 12%; 100 Pyro
    samples put ~10% sampling error on a total variance, hence the factor 1.4)."""
    numpyro_var, pyro_var = (gradient_moments[(b, baseline)].total_variance for b in ("numpyro", "pyro"))
    assert 1 / 1.4 < numpyro_var / pyro_var < 1.4, (numpyro_var, pyro_var)


def test_local_variant_gradient_is_unbiased_under_subsampling():
    """The subsampled plate scales the cost by N/B, not the score (NumPyro's stock surrogate scales both)."""
    data = synthetic("6-2-1", 3)
    params, x = data.teacher, data.train[:8].astype(np.float64)
    moments = mn.mean_field_gradient_moments(params, x, "nvil", amortised=False, subsample_size=4, warmup=100,
                                             num_samples=600, seed=0)
    exact = exact_guide_gradient(params, x, np.zeros((8, 3)))  # local logits start at 0
    estimate = np.concatenate([moments.mean["q_mf_local_1"], moments.mean["q_mf_local_2"]], axis=1)
    var = np.concatenate([moments.variance["q_mf_local_1"], moments.variance["q_mf_local_2"]], axis=1)
    # 24 elements, 600 samples, fixed seed: 4 standard errors
    assert np.all(np.abs(estimate - exact) <= 4 * np.sqrt(var / 600) + 1e-4)


@pytest.mark.parametrize("backend,samples", [("numpyro", 600), ("pyro", 200)])
def test_gradient_on_the_runners_batch_is_the_exact_gradient_scaled_by_n_over_b(backend, samples):
    """The method's own path: a batch's rows and indices, scaled by N / B. Points in the batch
    get ``N / B`` times their exact ELBO gradient (here 2x), the others none."""
    data = synthetic("6-2-1", 3)
    params, x = data.teacher, data.train[:8].astype(np.float64)
    batch = np.array([1, 4, 6, 7])
    moments = BACKENDS[backend].mean_field_gradient_moments(params, x, "nvil", amortised=False, index=batch,
                                                            warmup=100, num_samples=samples, seed=0)
    in_batch = np.isin(np.arange(8), batch)[:, None]
    exact = np.where(in_batch, 8 / 4 * exact_guide_gradient(params, x, np.zeros((8, 3))), 0.0)
    estimate = np.concatenate([moments.mean["q_mf_local_1"], moments.mean["q_mf_local_2"]], axis=1)
    var = np.concatenate([moments.variance["q_mf_local_1"], moments.variance["q_mf_local_2"]], axis=1)
    assert np.all(estimate[~in_batch[:, 0]] == 0) and np.all(var[~in_batch[:, 0]] == 0)
    # 12 elements, fixed seed: 4 standard errors; a score scaled by N/B too would be off by 2x
    assert np.all(np.abs(estimate - exact) <= 4 * np.sqrt(var / samples) + 1e-4)


# -- training through fit() ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend,amortised,steps,options", [
    ("numpyro", True, 600, {}), ("numpyro", False, 300, {"baseline": "decaying"}),
    ("pyro", True, 150, {}), ("pyro", False, 150, {"jit": False, "baseline": "decaying"})])
def test_training_on_teacher_data_raises_held_out_log_likelihood(backend, amortised, steps, options):
    data = synthetic("12-4-3", 0)
    start = SBNParams.init("12-4-3", seed=1, scale=0.5)  # with both guide families
    bounds = []
    result = fit(get_method("mean-field-svi", backend), start, data.train, budget=Budget(steps=steps),
                 checkpointing=Checkpointing(every=steps), batch_size=100, seed=0,
                 options={"amortised": amortised, "lr": 0.01, **options}, progress=False,
                 on_finish=lambda runner: bounds.append(runner.bound(data.test[:50])))
    fitted, objective = result.params, result.metrics[-1]["objective"]
    before, after = (exact_log_likelihood(p, data.test).mean() for p in (start, fitted))
    assert after > before + 0.5, (before, after)  # measured: -8.21 -> about -6.4 (teacher -6.02)
    assert objective < exact_log_likelihood(fitted, data.train).mean() + 0.1  # an ELBO, noisy
    assert not any(k in fitted for k in recognition_keys(fitted.architecture))  # only the trained guide
    if amortised:
        assert fitted.has_guide("mean_field") and "q_mf_local_1" not in fitted
        assert bounds[0].mean() < exact_log_likelihood(fitted, data.test[:50]).mean()
    else:
        assert fitted["q_mf_local_1"].shape == (len(data.train), 4) and not fitted.has_guide("mean_field")
        assert bounds == [None]  # no bound on new data: local parameters only


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_objective_is_an_unbiased_elbo_per_data_point(backend):
    """With the parameters frozen (learning rate 0), the mean reported objective over many
    batches is the exact mean ELBO of the training set (the N / B scaling, divided by N)."""
    data = synthetic("10-4-2", 0)
    params = data.teacher.replace(**{k: v for k, v in SBNParams.init("10-4-2", seed=1, scale=0.5).items()
                                     if k.startswith("q_mf")})
    frozen = optax.sgd(0.0) if backend == "numpyro" else pyro.optim.SGD({"lr": 0.0})
    m = get_method("mean-field-svi", backend)
    runner = runner_for(m, params, m.check_options({"optimizer": frozen, "baseline": "none"}), data.train, 0, 50)
    chunks = np.array([runner.run(20 * i, 20)["objective"] for i in range(20)])  # 400 steps of 50 points
    exact = exact_kl(params, "mean_field", data.train).elbo.mean()
    stderr = chunks.std(ddof=1) / np.sqrt(len(chunks))
    assert abs(chunks.mean() - exact) < 4 * stderr, (chunks.mean(), exact, stderr)  # fixed seed, 4 s.e.
    assert runner.params()["q_mf_b_1"] == pytest.approx(params["q_mf_b_1"])  # nothing moved


# -- the Method record ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_same_seed_same_numbers(backend):
    data = synthetic("12-4-3", 0)
    start = SBNParams.init("12-4-3", seed=1)
    m = get_method("mean-field-svi", backend)
    runs = [fit(m, start, data.train, budget=Budget(steps=5), checkpointing=Checkpointing(every=5), batch_size=50,
                seed=5, progress=False)
            for _ in range(2)]
    assert runs[0].metrics[-1]["objective"] == runs[1].metrics[-1]["objective"]
    assert all(np.array_equal(runs[0].params[k], runs[1].params[k]) for k in runs[0].params)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize("options,message", [({"lr": -1.0}, "lr"), ({"baseline": "mean"}, "baseline"),
                                             ({"batch_size": 10}, "no option"), ({"k": 3}, "no option"),
                                             ({"amortised": "yes"}, "amortised"), ({"num_particles": 0}, "particles")])
def test_bad_options_are_refused(backend, options, message):
    m = get_method("mean-field-svi", backend)
    assert m.name == "mean-field-svi" and m.backend == backend and m.guide == "mean_field"
    with pytest.raises(ValueError, match=message):
        m.check_options(options)


def test_jit_means_compile_the_step_on_both_backends():
    """``jit`` (default true) compiles the step on both; what a backend cannot do is refused, not ignored."""
    data = synthetic("12-4-3", 0)
    for backend in ("numpyro", "pyro"):
        assert get_method("mean-field-svi", backend).defaults["jit"] is True
    with pytest.raises(ValueError, match="always compiled"):
        fit(get_method("mean-field-svi", "numpyro"), SBNParams.init("12-4-3"), data.train, budget=Budget(steps=1),
            options={"jit": False}, progress=False)
    with pytest.raises(ValueError, match="decaying"):
        fit(get_method("mean-field-svi", "pyro"), SBNParams.init("12-4-3"), data.train, budget=Budget(steps=1),
            options={"baseline": "decaying"}, progress=False)


def test_numpyro_method_runs_under_x64():
    """A user's ``numpyro.enable_x64()`` must not break the method (x64 is global: a subprocess).
    The configuration with the most state: the decaying averages, two particles, the bound."""
    script = textwrap.dedent("""
        import json, numpyro
        numpyro.enable_x64()
        from sbn_ppl import SBNParams
        from sbn_ppl.base.data import synthetic
        from sbn_ppl.engine.fitting import Budget, Checkpointing, fit
        from sbn_ppl.inference import get_method
        data, bounds = synthetic("12-4-3", 0), []
        r = fit(get_method("mean-field-svi", "numpyro"), SBNParams.init("12-4-3", seed=1), data.train,
                budget=Budget(steps=4), checkpointing=Checkpointing(every=2), options={"baseline": "decaying", "num_particles": 2}, progress=False,
                on_finish=lambda runner: bounds.append(runner.bound(data.test[:5])))
        print(json.dumps([m["objective"] for m in r.metrics] + bounds[0].tolist()))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr[-3000:]
    values = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(values) == 2 + 5 and all(np.isfinite(v) and -20 < v < 0 for v in values), values


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("rows", [1, 20])
def test_pyro_method_fits_at_batch_size_one(rows, jit):
    """Issue 20: a batch of one row (or a one-row training set). Pyro's ``TraceGraph_ELBO`` sums
    each learning signal with ``MultiFrameTensor.sum_to``, which squeezes leading dims of size 1:
    at B = 1 the signal is ``()``, and the NVIL baseline ``(1,)`` was refused."""
    m = get_method("mean-field-svi", "pyro")
    train = synthetic("8-4-2", 0).train[:rows]
    runner = runner_for(m, SBNParams.init("8-4-2", seed=0), m.check_options({"jit": jit}), train, seed=0,
                        batch_size=1)
    assert np.isfinite(runner.run(0, 3)["objective"])
