"""The comparison harness (issue 6): every installed method, fitted on a teacher SBN's data
from the same start for the same budget and scored by exact enumeration; the same seed
gives the same records; a run stopped by Ctrl-C resumes to the records of an unbroken one.

The budget is tiny (4 steps): what is under test is the harness, not how well the
methods learn (their own tests do that).
"""
import csv
import dataclasses
import json
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest

import sbn_ppl
from sbn_ppl import SBNParams, load_dataset
from sbn_ppl.base import density
from sbn_ppl.comparison import harness
import sbn_ppl.yardstick.exact as enumeration
from sbn_ppl.comparison.harness import compare, initial_params, plan
from sbn_ppl.engine import runner
from sbn_ppl.inference import backends_of, get_method, method_names
from sbn_ppl.base.methods import Entry, Kernel, Method
from sbn_ppl.base.options import LR, Option, positive_int
from sbn_ppl.comparison.reporting import CSV_FIELDS

DATA = "synthetic:16-6-3:0"  # a teacher SBN, 9 hidden units: exact log p(x) costs milliseconds
BUDGET = dict(steps=4, checkpoints=2)
TIMES = ("seconds", "steps_per_second", "cell_seconds")


def without_times(records):
    """Records with the wall-clock fields (and the output folder in the params path) removed."""
    def clean(r):
        r = {k: v for k, v in r.items() if k not in TIMES}
        r["params"] = r["params"] and os.path.relpath(r["params"], os.path.dirname(os.path.dirname(r["params"])))
        r["curve"] = [{k: v for k, v in c.items() if k not in TIMES} for c in r["curve"]]
        return r

    return [clean(r) for r in records]


# -- a test-only method: gradient ascent on the exact log-likelihood (DESIGN.md section 2) --------
def exact_gradient(params: SBNParams, x: np.ndarray) -> dict:
    """``mean_n d log p(x_n) / d theta = mean_n E_{p(h|x_n)}[(s_l - sigma(a_l)) h_m]``, by enumeration."""
    post, hidden = enumeration.posterior_probabilities(params, x)  # (N, C) and [(C, n_l)]
    layers = [x[:, None, :].astype(np.float64)] + [h[None] for h in hidden]
    arch, shape = params.architecture, post.shape
    grads = {}
    for l in range(arch.num_layers + 1):
        resid = layers[l] - 1 / (1 + np.exp(-density.preactivation(params, layers, l)))
        resid = np.broadcast_to(resid, shape + resid.shape[-1:])
        grads[f"b_{l}"] = np.einsum("nc,ncj->j", post, resid) / len(x)
        for m in arch.parents(l):
            below = np.broadcast_to(layers[m], shape + layers[m].shape[-1:])
            grads[f"W_{m}_{l}"] = np.einsum("nc,nci,ncj->ij", post, below, resid) / len(x)
    return grads


def exact_ascent(name="exact-ascent", fail_after=None, backend="pyro", seen=None) -> Method:
    """Gradient ascent on the exact log-likelihood of the runner's batches (a NumPy state, looped
    in Python by either runner); ``fail_after`` steps, it raises; ``seen`` collects the batch
    indices it was given."""
    def build(arch, options):
        return Kernel(lambda key, params, train: SimpleNamespace(params=params, lr=options["lr"], steps=0), step,
                      lambda s: s.params.generative())

    def step(key, state, batch):
        if fail_after is not None and state.steps >= fail_after:
            raise FloatingPointError("the weights diverged")
        x, idx = np.asarray(batch.x, dtype=np.float64), np.asarray(batch.index)
        if seen is not None:
            seen.append(idx.tolist())
        p = state.params
        p = p.replace(**{k: p[k] + state.lr * g for k, g in exact_gradient(p, x).items()})
        return SimpleNamespace(params=p, lr=state.lr, steps=state.steps + 1), {
            "objective": float(enumeration.exact_log_likelihood(p, x).mean())}

    options = (LR._replace(default=0.5), Option("extra", 1, positive_int, "unused"))
    return Method(Entry(name, backend, "", "build", options, jit=False), build)


# -- every installed method, once straight through, once stopped and resumed ----------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    names = method_names()
    assert len(names) >= 2, f"the harness needs methods to compare; installed: {names}"
    full_dir, stopped_dir = str(tmp_path_factory.mktemp("full")), str(tmp_path_factory.mktemp("stopped"))
    full = compare(DATA, out=full_dir, progress=False, **BUDGET)

    # the stopped-and-resumed run: three of them (a JAX one, a Pyro one), enough to show the resume
    stop_names = [n for n in ("gibbs", "pyro-rws", "rws") if n in names] or names[:3]
    real_fit, calls = harness.fit, []

    def fit_with_ctrl_c(m, *args, **kwargs):  # Ctrl-C at the second method's first checkpoint
        calls.append(m.name)
        if len(calls) == 2:
            def ctrl_c(params, record):
                raise KeyboardInterrupt
            kwargs["checkpointing"] = dataclasses.replace(kwargs["checkpointing"], on_checkpoint=ctrl_c)
        return real_fit(m, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness, "fit", fit_with_ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            compare(DATA, methods=stop_names, out=stopped_dir, progress=False, **BUDGET)
    with open(os.path.join(stopped_dir, "results.json")) as f:
        after_stop = json.load(f)["records"]
    stopped_calls, calls[:] = list(calls), []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness, "fit", lambda m, *a, **k: calls.append(m.name) or real_fit(m, *a, **k))
        resumed = compare(DATA, out=stopped_dir, resume=True, progress=False, **BUDGET)
    return SimpleNamespace(names=names, stop_names=stop_names, full=full, full_dir=full_dir, after_stop=after_stop,
                           stopped_calls=stopped_calls, resumed=resumed, resumed_calls=list(calls))


def test_every_installed_method_has_a_record_with_a_finite_exact_test_log_likelihood(runs):
    assert [r["method"] for r in runs.full] == runs.names  # one record per method, none missing
    data = load_dataset(DATA)
    starts = set()
    for r in runs.full:
        m = get_method(r["method"])
        assert r["error"] is None, r["error"]
        assert r["backend"] == m.backend and r["guide"] == m.guide and r["options"] == harness._normalised(m.defaults)
        assert r["steps"] == 4 and r["seconds"] > 0 and r["steps_per_second"] == pytest.approx(4 / r["seconds"])
        assert r["cell_seconds"] >= r["seconds"]  # the whole cell: training, then the curve and the final scores
        assert r["test_estimator"] == "exact" and r["test_stderr"] == 0
        assert math.isfinite(r["test_log_likelihood"]) and math.isfinite(r["train_log_likelihood"])
        assert math.isfinite(r["objective"])
        # the saved parameters are the ones scored: re-scoring the file gives the record's numbers
        params = SBNParams.load(r["params"])
        assert r["params"] == os.path.join(runs.full_dir, f"{r['method']}-{r['backend']}", "params.npz")
        assert params.architecture.sizes == (16, 6, 3)
        exact = enumeration.exact_log_likelihood(params, data.test)
        assert r["test_log_likelihood"] == pytest.approx(exact.mean(), rel=1e-10)
        assert r["train_log_likelihood"] == pytest.approx(enumeration.exact_log_likelihood(params, data.train).mean(),
                                                          rel=1e-10)
        if m.guide is None:
            assert r["kl_q_p"] is None
        else:
            kl = enumeration.exact_kl(params, m.guide, data.test).q_p.mean()
            assert r["kl_q_p"] == pytest.approx(kl, rel=1e-10) and r["kl_q_p"] >= 0
        if m.build(params.architecture).bound is None:
            assert r["bound"] is None
        else:
            # a lower bound on log p(x); a stochastic one (RWS's IWAE bound) averages 500 test
            # points, so its Monte Carlo error is far below the 0.1 nats allowed here
            assert math.isfinite(r["bound"]) and r["bound"] < r["test_log_likelihood"] + 0.1
        # learning curve: the common start, then one point per checkpoint (2 steps apart)
        assert [c["step"] for c in r["curve"]] == [0, 2, 4]
        assert all(math.isfinite(c["test_log_likelihood"]) for c in r["curve"])
        assert r["curve"][-1]["seconds"] == r["seconds"]
        starts.add(r["curve"][0]["test_log_likelihood"])
    assert len(starts) == 1  # every method started from the same parameters


def test_results_files_hold_the_records(runs):
    with open(os.path.join(runs.full_dir, "results.json")) as f:
        saved = json.load(f)
    assert saved["records"] == runs.full
    assert saved["config"]["data"] == DATA and saved["config"]["arch"] == "16-6-3"
    assert saved["config"]["estimator"] == "exact" and saved["config"]["steps"] == 4
    with open(os.path.join(runs.full_dir, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_FIELDS
    assert [(row["method"], float(row["test_log_likelihood"])) for row in rows] == [
        (r["method"], r["test_log_likelihood"]) for r in runs.full]
    with open(os.path.join(runs.full_dir, "learning_curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    lines = harness.reporting.markdown_table(runs.full).splitlines()
    table = [line for line in lines if line.startswith("|")]  # header, rule, one row per method
    assert len(table) == 2 + len(runs.full) and table[0].startswith("| method | backend | steps")
    assert set(table[1]) == {"|", "-"}


def _of(records, names):
    return [r for r in records if r["method"] in names]


def test_same_seed_gives_the_same_records(runs):
    # every record of the resumed run was computed afresh, in other runs, with the same seed
    assert without_times(runs.resumed) == without_times(_of(runs.full, runs.stop_names))
    # ... and the seed matters: it draws the initial weights and the method's random numbers
    again = [compare(DATA, methods=[exact_ascent()], seed=s, progress=False, **BUDGET)[0] for s in (0, 0, 1)]
    assert without_times(again[:1]) == without_times(again[1:2])
    assert again[2]["test_log_likelihood"] != again[0]["test_log_likelihood"]


def test_a_run_stopped_after_the_first_method_resumes_to_the_same_records(runs):
    assert runs.stopped_calls == runs.stop_names[:2]
    assert [r["method"] for r in runs.after_stop] == runs.stop_names[:1]  # only what finished was kept
    assert runs.resumed_calls == runs.stop_names[1:]  # the finished method was not run again
    assert runs.resumed[0] == runs.after_stop[0]
    assert without_times(runs.resumed) == without_times(_of(runs.full, runs.stop_names))


def test_resume_refuses_other_settings(runs):
    with pytest.raises(ValueError, match=r"cannot resume .*steps was 4, now 5") as e:
        compare(DATA, out=runs.full_dir, resume=True, progress=False, steps=5, checkpoints=2)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(methods="no-such-method"), "unknown method 'no-such-method'"),
        (dict(arch="64-12-6"), "64 visible units but data 'synthetic:16-6-3:0' has 16"),
        (dict(steps=0), "integer >= 1"),
        (dict(steps=None, seconds=0), "positive number of seconds"),
        (dict(backend="stan"), "backend must be one of numpyro, pyro, all, got 'stan'"),
        (dict(methods="gibbs:stan"), "no 'stan' backend"),
        (dict(estimator="exact", arch="16-15-6"), "at most 20 hidden units"),
        (dict(estimator="guess"), "estimator must be one of"),
        (dict(checkpoints=0), "checkpoints must be a positive integer"),
        (dict(options={"no_such_option": 1}), "no method compared takes option(s) no_such_option"),
        (dict(methods="gibbs", options={"rws": {"k": 3}}), "'rws', which is not among the methods compared"),
        (dict(methods="rws", options={"rws": {"sweeps": 3}}), "has no option(s) sweeps"),
        (dict(methods="gibbs,gibbs"), "listed twice"),
    ],
)
def test_bad_options_are_one_line_value_errors(kwargs, message):
    args = {"steps": 1, **kwargs}
    with pytest.raises(ValueError) as e:
        compare(DATA, progress=False, **args)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_plan_runs_each_method_on_its_default_backend_unless_told():
    assert [(m.name, m.backend) for m in plan()] == [(n, get_method(n).backend) for n in method_names()]
    every = [(m.name, m.backend) for m in plan(backend="all")]
    assert every == [(n, b) for n in method_names() for b in backends_of(n)]
    pyro_only = plan(backend="pyro")
    assert pyro_only and all(m.backend == "pyro" for m in pyro_only)
    assert [(m.name, m.backend) for m in plan("rws:pyro, gibbs")] == [("rws", "pyro"), ("gibbs", "numpyro")]


def test_every_method_starts_from_the_same_parameters_with_data_visible_biases():
    data = load_dataset(DATA)
    params = initial_params(sbn_ppl.Architecture.parse("16-6-3"), data.train, seed=3)
    mean = (data.train.sum(0) + 1) / (len(data.train) + 2)
    np.testing.assert_allclose(1 / (1 + np.exp(-params["b_0"])), mean, rtol=1e-5)  # sigma(b_0) = smoothed mean
    plain = SBNParams.init("16-6-3", seed=3)
    assert set(params) == set(plain) and params.has_guide("recognition") and params.has_guide("mean_field")
    assert all(np.array_equal(params[k], plain[k]) for k in plain if k not in ("b_0",))


def test_a_failing_method_is_recorded_and_the_others_still_run(tmp_path):
    records = compare(DATA, methods=[exact_ascent("breaks", fail_after=1), exact_ascent()], out=str(tmp_path),
                      progress=False, **BUDGET)
    assert records[0]["error"] == "FloatingPointError: the weights diverged"
    assert records[0]["test_log_likelihood"] is None and records[0]["curve"] == []
    assert records[1]["error"] is None and math.isfinite(records[1]["test_log_likelihood"])
    # a resumed run retries the failed method only
    calls = []
    again = compare(DATA, methods=[_counting(exact_ascent("breaks", fail_after=1), calls), _counting(exact_ascent(), calls)],
                    out=str(tmp_path), resume=True, progress=False, **BUDGET)
    assert calls == ["breaks"] and again[1] == records[1]


def _counting(m: Method, calls: list) -> Method:
    def build(arch, options):
        kernel = m.factory(arch, options)

        def init(*args, **kwargs):
            calls.append(m.name)
            return kernel.init(*args, **kwargs)

        return kernel._replace(init=init)

    return Method(m.entry, build)


def test_options_go_to_the_methods_that_take_them():
    a, b = exact_ascent("a"), exact_ascent("b")
    records = compare(DATA, methods=[a, b], options={"lr": 0.1, "b": {"extra": 7}}, progress=False, **BUDGET)
    assert records[0]["options"] == {"lr": 0.1, "extra": 1}
    assert records[1]["options"] == {"lr": 0.1, "extra": 7}


def test_a_time_budget_checkpoints_by_the_clock():
    (r,) = compare(DATA, methods=[exact_ascent()], seconds=0.6, checkpoints=3, progress=False)
    steps = [c["step"] for c in r["curve"]]
    chunks = np.diff(steps)
    assert r["steps"] == steps[-1]
    # one step (compilation), one timed step, then one fixed power of two (one scan length),
    # shorter only at the end, where the clock says a full chunk would overrun the budget
    assert list(chunks[:2]) == [1, 1] and chunks[2] & (chunks[2] - 1) == 0 and all(c <= chunks[2] for c in chunks[2:])
    # The budget is kept by the clock's own rule, checked on what it measured (a wall-clock
    # tolerance would fail on a loaded machine, where one chunk can run slower than the last):
    # no chunk starts once the budget is spent; a run that ends early leaves less than one step's
    # time (at the slowest timed speed); and the last chunk was no longer than the time left at
    # the fastest timed speed, so any overrun comes only from that chunk running slow.
    seconds = [c["seconds"] for c in r["curve"]]  # from step 0
    per_step = np.diff(seconds)[1:] / chunks[1:]  # the first chunk pays for compilation
    assert all(s < 0.6 for s in seconds[:-1])
    if r["seconds"] < 0.6:
        assert 0.6 - r["seconds"] <= per_step.max() * (1 + 1e-9)
    else:
        assert chunks[-1] <= (0.6 - seconds[-2]) / per_step[:-1].min() + 1
    # test scores: the start, about one per 0.2 s of training (at most one per mark), and the end
    scored = [c for c in r["curve"] if "test_log_likelihood" in c]
    assert scored[0]["step"] == 0 and scored[-1] == r["curve"][-1] and 2 <= len(scored) <= 3 + 2
    marks = [int(c["seconds"] // 0.2) for c in scored[1:-1]]
    assert marks == sorted(set(marks))


def test_compare_is_the_package_api():
    assert sbn_ppl.compare is compare


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_every_method_of_a_comparison_gets_the_same_batches(backend, monkeypatch):
    """The runners draw the batches (never the methods): two test methods on each backend,
    and every real method on this backend, see one index sequence, fixed by the seed."""
    drawn = []  # (runner's method, first step, indices) of every chunk a runner ran
    real = runner.batch_indices

    def recording(seed, num_data, batch_size, start, count):
        out = real(seed, num_data, batch_size, start, count)
        drawn.append((seed, start, out.tolist()))
        return out

    monkeypatch.setattr(runner, "batch_indices", recording)
    seen_a, seen_b = [], []
    real_methods = [f"{n}:{backend}" for n in method_names() if backend in backends_of(n)
                    and n != "numpyro-discrete-gibbs"]
    records = compare(DATA, methods=[exact_ascent("a", backend=backend, seen=seen_a),
                                     exact_ascent("b", backend=backend, seen=seen_b)] + real_methods,
                      steps=6, checkpoints=3, batch_size=50, progress=False)
    assert all(r["error"] is None for r in records), [r["error"] for r in records]
    expected = real(0, 1000, 50, 0, 6).tolist()
    assert seen_a == seen_b == expected  # what each step was given
    assert len({i for b in expected for i in b}) == 300  # one epoch's permutation: no point twice
    per_method = [sum((c for _, _, c in drawn[i:i + 3]), []) for i in range(0, len(drawn), 3)]
    assert len(per_method) == len(records) and all(seq == expected for seq in per_method)
    # another seed, another order
    assert real(1, 1000, 50, 0, 6).tolist() != expected


def test_without_exact_scoring_ais_for_every_method_and_importance_sampling_with_a_guide(tmp_path):
    # forced onto the sampling yardstick on a net small enough to check it against enumeration
    with_guide = next(n for n in method_names() if get_method(n).guide is not None)
    records = compare(DATA, methods=[exact_ascent(), with_guide], estimator="ais", ais_temperatures=100,
                      ais_chains=10, is_particles=200, out=str(tmp_path), progress=False, **BUDGET)
    test = load_dataset(DATA).test
    for r in records:
        exact = enumeration.exact_log_likelihood(SBNParams.load(r["params"]), test).mean()
        assert r["test_estimator"] == "ais(T=100,C=10)" and 0 < r["test_stderr"] < 0.01
        # AIS: Monte Carlo error ~4e-4 here, and an annealing bias that for 100 temperatures
        # on a 9-unit posterior is of the same order (measured 7e-4): 0.01 nats is ample
        assert r["test_log_likelihood"] == pytest.approx(exact, abs=0.01)
        assert r["kl_q_p"] is None  # KL(q||p) only where it is exact
        if r["guide"] is None:
            assert r["test_is_log_likelihood"] is None
        else:  # K = 200 importance samples from a trained guide: same tolerance
            assert r["test_is_log_likelihood"] == pytest.approx(exact, abs=0.01) and r["test_is_stderr"] > 0
    with open(tmp_path / "results.json") as f:
        config = json.load(f)["config"]
    assert config["train_points_used"] == len(test)  # AIS on every training point would take minutes


def test_the_callers_pyro_parameters_survive_a_comparison():
    import pyro
    import torch

    on_pyro = next(f"{n}:pyro" for n in method_names() if "pyro" in backends_of(n))
    pyro.clear_param_store()
    pyro.param("mine", torch.tensor(3.0))
    compare(DATA, methods=[exact_ascent(), on_pyro], progress=False, **BUDGET)
    assert list(pyro.get_param_store().keys()) == ["mine"] and pyro.param("mine").item() == 3.0
    pyro.clear_param_store()


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_a_method_without_a_bound_on_new_data_is_still_scored(backend):
    """Local mean field has parameters for its training points only: no own bound on the
    test set, but the yardstick (exact here) still scores it."""
    (r,) = compare(DATA, methods=[f"mean-field-svi:{backend}"], options={"amortised": False}, progress=False, **BUDGET)
    assert r["error"] is None
    assert r["bound"] is None and np.isfinite(r["test_log_likelihood"])


def test_two_seeds_give_one_record_per_method_and_seed_and_an_aggregated_table(tmp_path):
    methods = [exact_ascent("a"), exact_ascent("b")]
    records = compare(DATA, methods=methods, seeds=[0, 1], out=str(tmp_path), progress=False, **BUDGET)
    assert [(r["method"], r["seed"]) for r in records] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert records[0]["test_log_likelihood"] != records[2]["test_log_likelihood"]  # the seed matters
    assert len(records[0]["test_pointwise"]) == len(load_dataset(DATA).test)
    table = harness.reporting.markdown_table(records)
    rows = [line for line in table.splitlines() if line.startswith("| a ") or line.startswith("| b ")]
    assert len(rows) == 2  # aggregated over the seeds: one row per method
    assert os.path.exists(tmp_path / "a-pyro-seed1" / "params.npz") and os.path.exists(tmp_path / "report.md")


def test_resuming_after_the_first_method_and_seed_gives_the_same_records(tmp_path):
    methods = lambda: [exact_ascent("a"), exact_ascent("b")]  # noqa: E731
    full = compare(DATA, methods=methods(), seeds=[0, 1], progress=False, **BUDGET)
    real_fit, calls = harness.fit, []

    def fit_stopping_at_the_second_run(m, *args, **kwargs):
        calls.append(m.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(m, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness, "fit", fit_stopping_at_the_second_run)
        with pytest.raises(KeyboardInterrupt):
            compare(DATA, methods=methods(), seeds=[0, 1], out=str(tmp_path), progress=False, **BUDGET)
    resumed = compare(DATA, methods=methods(), out=str(tmp_path), resume=True, progress=False)
    def scores(records):
        return [(r["method"], r["seed"], r["steps"], r["test_log_likelihood"], r["test_pointwise"],
                 [c.get("test_log_likelihood") for c in r["curve"]]) for r in records]

    assert calls == ["a", "b"] and scores(resumed) == scores(full)


# -- model selection on the validation split and early stopping ---------------------------------
def _away_and_back(teacher: SBNParams, best_step: int) -> Method:
    """A test-only method whose parameters at step ``t`` are the teacher's with every weight
    moved by ``|t - best_step|``: the validation score rises to step ``best_step`` and then falls."""
    def at(t):
        return teacher.replace(**{k: teacher[k] + abs(t - best_step) for k in teacher if k.startswith("W_")})

    def init(key, params, train):
        return SimpleNamespace(t=0)

    def step(key, state, batch):
        return SimpleNamespace(t=state.t + 1), {"objective": -float(state.t)}

    def bound(state, x):  # a stand-in "own bound" that says which state it came from
        return np.full(len(x), -float(state.t))

    kernel = Kernel(init, step, lambda s: at(s.t), bound)
    return Method(Entry("away-and-back", "pyro", "", "build", jit=False), lambda arch, options: kernel)


def _with_valid():
    """The teacher's data with its last 300 training rows (i.i.d. draws like the rest) kept apart
    as a validation split."""
    data = load_dataset(DATA)
    return sbn_ppl.Dataset(data.name, data.train[:-300], data.test, data.teacher, valid=data.train[-300:])


def test_select_best_scores_the_best_validation_checkpoint_and_patience_stops(tmp_path):
    data = _with_valid()
    (r,) = compare(data, methods=[_away_and_back(data.teacher, best_step=2)], select="best", patience=2,
                   steps=10, checkpoints=10, out=str(tmp_path), progress=False)
    assert r["error"] is None
    assert r["steps"] == 4  # steps 3 and 4 scored worse than step 2: two in a row, so it stopped
    assert r["selected_step"] == 2
    exact = float(enumeration.exact_log_likelihood(data.teacher, data.test).mean())
    assert r["test_log_likelihood"] == pytest.approx(exact, abs=1e-4)  # the teacher's own score, not step 4's
    curve = [c["test_log_likelihood"] for c in r["curve"]]
    assert np.argmax(curve) == 2 and len(curve) == 5  # steps 0..4
    # the method's own bound is the last state's (step 4), not the selected one's: not reported
    assert r["bound"] is None and any("own bound not reported" in w and "step 2" in w for w in r["warnings"])
    saved = SBNParams.load(r["params"])
    assert os.path.basename(r["params"]) == "selected_params.npz"
    for k in data.teacher:
        np.testing.assert_allclose(saved[k], data.teacher[k], atol=1e-6)


def test_select_best_at_the_last_checkpoint_saves_one_parameter_file(tmp_path):
    data = _with_valid()
    (r,) = compare(data, methods=[_away_and_back(data.teacher, best_step=4)], select="best", steps=4, checkpoints=4,
                   out=str(tmp_path), progress=False)
    assert r["error"] is None and r["selected_step"] == 4 and r["steps"] == 4
    assert os.path.basename(r["params"]) == "params.npz"
    assert not any(name == "selected_params.npz" for _, _, files in os.walk(tmp_path) for name in files)
    assert r["bound"] is not None  # the last state is the selected one: its bound is reported


def test_select_last_keeps_the_end_of_training():
    data = _with_valid()
    (r,) = compare(data, methods=[_away_and_back(data.teacher, best_step=2)], steps=6, checkpoints=6,
                   progress=False)
    assert r["steps"] == 6 and r["selected_step"] == 6 and r["bound"] == -6.0
    far = _away_and_back(data.teacher, 2).build(data.teacher.architecture).get_params(SimpleNamespace(t=6))
    assert r["test_log_likelihood"] == pytest.approx(
        float(enumeration.exact_log_likelihood(far, data.test).mean()), abs=1e-4)


def test_selection_without_a_validation_split_is_refused():
    for args in ({"select": "best"}, {"patience": 3}):
        with pytest.raises(ValueError, match="validation split"):
            compare(DATA, methods=[exact_ascent()], progress=False, **BUDGET, **args)
    with pytest.raises(ValueError, match="select must be one of"):
        compare(_with_valid(), methods=[exact_ascent()], select="first", progress=False, **BUDGET)


def test_test_points_scores_a_seeded_random_subset(tmp_path):
    from sbn_ppl.base.arrays import random_subset

    (r,) = compare(DATA, methods=[exact_ascent()], test_points=50, out=str(tmp_path), progress=False, **BUDGET)
    subset = random_subset(load_dataset(DATA).test, 50, harness.CURVE_SUBSET_SEED)
    assert len(r["test_pointwise"]) == 50
    exact = enumeration.exact_log_likelihood(SBNParams.load(r["params"]), subset)
    np.testing.assert_allclose(r["test_pointwise"], exact, atol=1e-4)
    with open(os.path.join(str(tmp_path), "results.json")) as f:
        assert json.load(f)["config"]["test_points_used"] == 50
