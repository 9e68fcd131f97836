"""Neal's learning rule: its gradient against the exact gradient of log p(x) (by
enumeration), one step against its definition, learning from a teacher SBN's data (both
backends, and the stock DiscreteHMCGibbs path), and the method contract."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sbn_ppl import SBNParams
import sbn_ppl.yardstick.exact as enumeration
from sbn_ppl.cli import main
from sbn_ppl.base.data import load_dataset
from sbn_ppl.engine.fitting import Budget, Checkpointing, fit
from sbn_ppl.inference import get_method
from sbn_ppl.inference.shared.gibbs import numpyro as gibbs_jax, pyro as gibbs_torch
from sbn_ppl.inference.neal import discrete_hmc_gibbs, numpyro as neal_jax, pyro as neal_torch
from sbn_ppl.base.methods import Batch
from sbn_ppl.models import numpyro_sbn
from sbn_ppl.engine.runner import runner_for

TEACHER_DATA = "synthetic:10-5-3:0"


def exact_gradient(params, x):
    """grad (1/N) sum_n log p(x_n), with log p(x_n) = logsumexp over all 2^H hidden states."""
    states = [jnp.asarray(h) for h in next(enumeration.hidden_states(params, 1 << params.architecture.num_hidden))]
    arch = params.architecture

    def mean_log_px(theta):
        layers = [jnp.asarray(x)[:, None, :]] + [h[None] for h in states]
        return jnp.mean(jax.scipy.special.logsumexp(numpyro_sbn.log_joint(arch, theta, layers), axis=1))

    return jax.grad(mean_log_px)(jax.tree_util.tree_map(jnp.asarray, params.generative()))


@jax.jit
def learning_signal_path(key, params, x, state):
    """Neal's gradient (neal_jax.gradient, averaged over the chains) after each of 200 sweeps."""
    def body(state, k):
        state, _ = gibbs_jax.step(k, state, params, x)
        return state, neal_jax.gradient(params, x, state.hidden)[1]

    return jax.lax.scan(body, state, jax.random.split(key, 200))[1]


def test_learning_rule_gradient_matches_the_exact_gradient_of_log_px():
    params = SBNParams.init("6-4-3", seed=2, scale=1.5, connectivity="dense", guide=())
    rng = np.random.default_rng(5)  # non-zero biases: no gradient entry vanishes by symmetry
    params = params.replace(**{k: rng.normal(0, 1, v.shape) for k, v in params.items() if k.startswith("b_")})
    x = (np.random.default_rng(0).random((2, 6)) < 0.5).astype(np.float32)
    state = gibbs_jax.init(jax.random.PRNGKey(0), params, x, num_chains=200)
    theta = jax.tree_util.tree_map(jnp.asarray, params)
    path = learning_signal_path(jax.random.PRNGKey(1), theta, x, state)
    exact = exact_gradient(params, x)
    for name in exact.keys() - {"sizes"}:
        g = np.asarray(path[name])[40:]  # 40 sweeps of burn-in
        # 20 batch means over time (each already averaged over 200 independent chains):
        # their spread is an honest standard error; 5 of them is a < 1e-5 false alarm per entry
        batches = g.reshape((20, -1) + g.shape[1:]).mean(1)
        se = batches.std(0, ddof=1) / np.sqrt(20)
        err = np.abs(batches.mean(0) - np.asarray(exact[name]))
        assert np.all(err < 5 * se + 2e-3), f"{name}: max error {err.max():.4f}"
    flat = lambda tree: np.concatenate([np.ravel(tree[k]) for k in sorted(exact.keys() - {"sizes"})])
    estimate = {k: np.asarray(path[k])[40:].mean(0) for k in exact.keys() - {"sizes"}}
    assert np.linalg.norm(flat(estimate) - flat(exact)) < 0.05 * np.linalg.norm(flat(exact))


def test_torch_and_jax_learning_signals_agree_at_the_same_states():
    params = SBNParams.init("6-4-3", seed=2, scale=1.5, connectivity="dense")
    rng = np.random.default_rng(1)
    x = (rng.random((3, 6)) < 0.5).astype(np.float32)
    hidden = [(rng.random((2, 3, n)) < 0.5).astype(np.float32) for n in (4, 3)]
    value_jax, grads_jax = neal_jax.gradient(jax.tree_util.tree_map(jnp.asarray, params.generative()), x, hidden)
    theta = {k: torch.tensor(params[k], requires_grad=True) for k in grads_jax.keys() - {"sizes"}}
    value_torch, grads_torch = neal_torch.gradient(gibbs_torch.TorchParams(params.architecture, theta),
                                                   torch.tensor(x), [torch.tensor(h) for h in hidden])
    assert float(value_torch) == pytest.approx(float(value_jax), abs=1e-5)
    for k, g in grads_torch.items():
        np.testing.assert_allclose(g.numpy(), np.asarray(grads_jax[k]), atol=1e-5)


def _np(a):
    return a.detach().numpy().copy() if isinstance(a, torch.Tensor) else np.array(a)


def _as_numpy(tree):
    return {k: _np(v) for k, v in tree.items() if k != "sizes"}


def _sweep_and_gradient(backend, key, theta, x, hidden, sweeps):
    """The batch's chains after ``sweeps`` sweeps from ``hidden`` under ``theta`` (a dict of
    arrays), recomputed with the backend's own Gibbs kernel, and the learning signal there."""
    arch = SBNParams.init("10-5-3").architecture
    if backend == "numpyro":
        params = jax.tree_util.tree_map(jnp.asarray, SBNParams({"sizes": np.asarray(arch.sizes), **theta}))
        after = jax.jit(neal_jax.advance_chains, static_argnums=4)(key, params, x, hidden, sweeps)[0].hidden
        return [np.asarray(h) for h in after], _as_numpy(jax.jit(neal_jax.gradient)(params, x, after)[1])
    p = gibbs_torch.TorchParams(arch, {k: torch.tensor(v, requires_grad=True) for k, v in theta.items()})
    frozen = gibbs_torch.TorchParams(arch, {k: v.detach() for k, v in p.theta.items()})
    generator = torch.Generator().manual_seed(key)
    gibbs = gibbs_torch.GibbsState(tuple(torch.as_tensor(h) for h in hidden))
    for _ in range(sweeps):
        gibbs, _ = gibbs_torch.step(generator, gibbs, frozen, torch.as_tensor(x))
    return [h.numpy() for h in gibbs.hidden], _as_numpy(neal_torch.gradient(p, torch.as_tensor(x), gibbs.hidden)[1])


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_one_step_advances_the_batchs_chains_then_steps_up_the_gradient(backend):
    """``step`` is its definition: the sweeps of the batch's chains (the runner's batch, no
    other), then an SGD step ``theta + lr grad log p(x, h)`` at the new states; it returns a
    new state and leaves the chains of the state it was given alone."""
    data = load_dataset(TEACHER_DATA)
    start = SBNParams.init("10-5-3", seed=1)  # with guides: the method drops them
    m = get_method("gibbs", backend)
    opts = m.check_options({"optimizer": "sgd", "lr": 0.05, "sweeps": 2, "chains": 3})
    key = jax.random.PRNGKey(7) if backend == "numpyro" else 7
    kernel = m.build(start.architecture, opts)
    state = kernel.init(key, start, data.train)
    chains0 = [_np(c) for c in state.chains]
    assert [c.shape for c in chains0] == [(3, 1000, 5), (3, 1000, 3)]
    theta0 = _as_numpy(state.params.theta if backend == "pyro" else state.params)
    assert set(theta0) == {"b_0", "b_1", "b_2", "W_1_0", "W_2_1"}

    index = np.array([3, 998, 41, 7])
    x = data.train[index]
    batch = Batch(index, x) if backend == "numpyro" else Batch(torch.as_tensor(index), torch.as_tensor(x))
    new, info = (jax.jit(kernel.step) if backend == "numpyro" else kernel.step)(key, state, batch)

    for c, c0 in zip(state.chains, chains0):  # the input state's chains are untouched
        np.testing.assert_array_equal(_np(c), c0)
    want, grads = _sweep_and_gradient(backend, key, theta0, x, [c0[:, index].astype(np.float32) for c0 in chains0], 2)
    others = np.setdiff1d(np.arange(1000), index)
    for c, c0, w in zip(new.chains, chains0, want):
        c = _np(c)
        np.testing.assert_array_equal(c[:, index], w)  # the batch's chains: swept
        np.testing.assert_array_equal(c[:, others], c0[:, others])  # the rest: waiting
    assert any(not np.array_equal(_np(c)[:, index], c0[:, index]) for c, c0 in zip(new.chains, chains0))
    theta1 = _as_numpy(kernel.get_params(new))
    assert set(theta1) == set(theta0)  # no guide
    for k in theta0:
        np.testing.assert_allclose(theta1[k], theta0[k] + 0.05 * grads[k], atol=1e-6)
    assert 0 < float(info.flip_rate) < 1 and float(info.objective) < 0


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_learning_from_a_teacher_raises_held_out_log_likelihood_towards_the_teachers(backend):
    data = load_dataset(TEACHER_DATA)
    start = SBNParams.init("10-5-3", seed=1)
    teacher_ll = enumeration.exact_log_likelihood(data.teacher, data.test).mean()
    start_ll = enumeration.exact_log_likelihood(start, data.test).mean()
    result = fit(get_method("gibbs", backend), start, data.train, budget=Budget(steps=200),
                 checkpointing=Checkpointing(every=100), batch_size=100, seed=0, options={"lr": 0.01},
                 progress=False)
    learned_ll = enumeration.exact_log_likelihood(result.params, data.test).mean()
    # measured: -6.98 -> -6.32 (numpyro and pyro) against the teacher's -6.02 (two thirds of the gap);
    # require at least half the gap closed, and never better than the teacher by > 0.05
    assert learned_ll > start_ll + 0.5 * (teacher_ll - start_ll)
    assert learned_ll < teacher_ll + 0.05
    objective = result.metrics[-1]["objective"]
    assert np.isfinite(objective) and objective < 0
    assert not any(k.startswith("q_") for k in result.params)  # Gibbs trains no guide: the file carries none


@pytest.mark.parametrize("backend, options", [
    ("numpyro", {"lr": 0.05}),
    ("pyro", {"optimizer": "sgd", "lr": 0.05, "chains": 2, "sweeps": 2}),
])
def test_gibbs_method_contract(backend, options):
    data = load_dataset(TEACHER_DATA)
    start = SBNParams.init("10-5-3", seed=1)
    m = get_method("gibbs", backend)
    assert m.guide is None and m.build(start.architecture).bound is None and m.jit
    assert set(m.defaults) == {"lr", "optimizer", "lr_half_life", "lr_schedule", "sweeps", "chains"}
    a, b = (fit(m, start, data.train, budget=Budget(steps=10), checkpointing=Checkpointing(every=10),
                batch_size=20, seed=3, options=options, progress=False).params for _ in range(2))
    assert a.architecture == start.architecture
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])  # same seed, same numbers
    assert not np.array_equal(a["W_1_0"], start["W_1_0"])
    for bad in ({"lr": -1.0}, {"optimizer": "nesterov"}, {"sweeps": 0}, {"chains": 0}, {"chains": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            m.check_options(bad)
    with pytest.raises(ValueError, match="no option"):
        m.check_options({"batch_size": 20})  # the runner's, not the method's


BAD_DATA = {
    "non-binary": lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, 0.5, x),
    "NaN": lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x),
    "wrong width": lambda x: x[:, :-1],
}


@pytest.mark.parametrize("kind", sorted(BAD_DATA))
def test_the_gibbs_twins_refuse_bad_training_data_alike(kind):
    train = BAD_DATA[kind](load_dataset(TEACHER_DATA).train[:50]).astype(np.float32)
    start = SBNParams.init("10-5-3", seed=1)
    by_init, by_fit = [], []
    for backend in ("numpyro", "pyro"):
        m = get_method("gibbs", backend)
        key = jax.random.PRNGKey(0) if backend == "numpyro" else 0
        data = jnp.asarray(train) if backend == "numpyro" else torch.as_tensor(train)  # as the runners pass it
        with pytest.raises(ValueError) as e:
            m.build(start.architecture).init(key, start, data)
        by_init.append(str(e.value))
        with pytest.raises(ValueError) as e:
            fit(m, start, train, budget=Budget(steps=1), progress=False)
        by_fit.append(str(e.value))
    assert by_init[0] == by_init[1] and by_fit[0] == by_fit[1]
    assert {"non-binary": "non-binary value 0.5 at row 0, column 7", "NaN": "NaN at row 0, column 7",
            "wrong width": "rows have 9 columns"}[kind] in by_init[0]


def test_gibbs_step_traces_under_x64():
    """A user's ``jax_enable_x64`` must not break the method: the step's loop carries keep
    their dtypes (a mismatch fails when the step is traced, so tracing it is the check)."""
    data = load_dataset(TEACHER_DATA)
    m = get_method("gibbs")
    with jax.enable_x64(True):
        train = jnp.asarray(data.train)
        kernel = m.build("10-5-3")
        state = kernel.init(jax.random.PRNGKey(0), SBNParams.init("10-5-3", seed=1), train)
        index = jnp.arange(10)
        new, info = jax.eval_shape(kernel.step, jax.random.PRNGKey(1), state, Batch(index, train[index]))
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(state)
    assert info.objective.shape == () and info.flip_rate.shape == ()


def test_stock_discrete_hmc_gibbs_learning_runs_on_a_small_net():
    data = load_dataset(TEACHER_DATA)
    start = SBNParams.init("10-5-3", seed=1)
    m = get_method("numpyro-discrete-gibbs")
    assert "small" in m.description and not m.jit and m.guide is None
    assert set(m.defaults) == {"lr", "optimizer", "lr_half_life", "lr_schedule", "sweeps"}  # one chain per training case
    runner = runner_for(m, start, m.check_options({"lr": 0.01}), data.train, seed=0, batch_size=5)
    info = runner.run(0, 5)  # the runner loops the step in Python
    learned = runner.params()
    assert np.isfinite(info["objective"]) and not np.array_equal(learned["W_1_0"], start["W_1_0"])
    assert np.isfinite(enumeration.exact_log_likelihood(learned, data.test[:10])).all()
    # the stock kernel samples under the weights it is given, not those it saw when it was set up:
    # its cached energy follows them, and 100 chains from the batch's states sample their exact posterior
    kernel_state = runner.state.kernel_state
    block = kernel_state.block_states[0]
    x = jnp.asarray(data.train[:5])
    kernel, _ = discrete_hmc_gibbs.stock_kernel(jax.random.PRNGKey(2), jax.tree_util.tree_map(jnp.asarray, learned), x,
                                                (block.z["h1"], block.z["h2"]))  # set up under the learned weights
    rng = np.random.default_rng(6)
    other = learned.replace(**{k: v + rng.normal(0, 1, v.shape) for k, v in learned.items() if k != "sizes"})
    theta = jax.tree_util.tree_map(jnp.asarray, other)
    energy = kernel.blocks[0][0].refresh(block, (theta, x), {}).potential_energy
    want = -numpyro_sbn.log_joint(other.architecture, theta, [x] + [block.z[f"h{l}"] for l in (1, 2)]).sum()
    assert float(energy) == pytest.approx(float(want), rel=1e-5)

    def chain(key):
        def body(h, k):
            h = discrete_hmc_gibbs.stock_sweeps(kernel, kernel_state, k, theta, x, h, sweeps=1)[1]
            return h, h
        return jax.lax.scan(body, (block.z["h1"], block.z["h2"]), jax.random.split(key, 120))[1]

    path = jax.vmap(chain)(jax.random.split(jax.random.PRNGKey(1), 100))  # per layer (100 chains, 120, 5, n_l)
    exact = enumeration.posterior_marginals(other, data.train[:5])
    for h, ex in zip(path, exact):
        est = np.asarray(h)[:, 20:].mean(1)  # each chain's average after 20 sweeps of burn-in
        se = est.std(0, ddof=1) / np.sqrt(est.shape[0])
        assert np.all(np.abs(est.mean(0) - ex) < 5 * se + 0.005)
    before = enumeration.posterior_marginals(learned, data.train[:5])
    assert max(np.abs(e - f).max() for e, f in zip(exact, before)) > 0.1  # the two posteriors differ


def test_sbn_ppl_fit_method_gibbs_writes_params_and_learning_curve(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["fit", "--method", "gibbs", "--data", TEACHER_DATA, "--arch", "10-5-3", "--steps", "20",
                 "--checkpoint-every", "10", "--seed", "0", "--out", str(out), "--quiet"])
    assert code == 0
    assert SBNParams.load(out / "params.npz").architecture.sizes == (10, 5, 3)
    curve = json.loads((out / "metrics.json").read_text())["curve"]
    assert [r["step"] for r in curve] == [10, 20] and all("objective" in r and "seconds" in r for r in curve)
