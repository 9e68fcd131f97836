"""Issue 21's acceptance, on tiny nets with a validation split: ``tune`` chooses each method's
grid point on the validation split only (a planted point that wins on test loses), every
method has a learning curve (AIS where it has no guide to importance-sample with), and
``select="best"`` and ``patience`` act on Gibbs and the fixed point as on the rest."""
import json

import numpy as np
import pytest

from sbn_ppl import compare, inference
from sbn_ppl.base.data import load_file, synthetic
from sbn_ppl.base.methods import Entry, Kernel
from sbn_ppl.base.options import Option

ARCH = "16-4-2"
RUNS = []  # the options of every run of the planted toy method (nothing trains before a refusal)


def splits_file(path, valid_mean=None, test_mean=None, seed=0):
    """An ``.npz`` with ``train``, ``valid`` and ``test``: a teacher SBN's samples (``synthetic``),
    split in three. ``valid_mean``/``test_mean`` (a probability per pixel, or a function of the
    training means giving one) replace that split by independent pixels, each on with that
    probability: a split unlike the training data."""
    data = synthetic(ARCH, seed, n_train=300, n_test=200)
    rng = np.random.default_rng(seed + 7)
    valid, test = data.test[:100], data.test[100:]

    def independent(like, mean):
        mean = mean(data.train.mean(0)) if callable(mean) else mean
        return (rng.random(like.shape) < mean).astype(np.float32)

    if valid_mean is not None:
        valid = independent(valid, valid_mean)
    if test_mean is not None:
        test = independent(test, test_mean)
    np.savez(path, train=data.train, valid=valid, test=test)
    return str(path)


def any_float(value, name):
    """The toy's ``bias``: any finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def planted(arch, options) -> Kernel:
    """Test-only: every visible bias set to ``bias`` (the weights zeroed), whatever the data:
    ``p(x_d = 1) = sigmoid(bias)`` for every pixel, independently."""
    def init(key, params, train):
        RUNS.append(dict(options))
        return params.generative()

    def step(key, params, batch):
        zeroed = {k: np.zeros_like(v) for k, v in params.items() if k.startswith("W_")}
        return params.replace(b_0=np.full(arch.sizes[0], options["bias"]), **zeroed), {"objective": 0.0}

    return Kernel(init, step, lambda p: p)


@pytest.fixture
def toy(monkeypatch):
    """The planted toy method, registered like a real one."""
    entry = Entry("planted", "numpyro", __name__, "planted", (Option("bias", 0.0, any_float, "visible bias"),),
                  "toy: visible biases set to an option", jit=False)
    monkeypatch.setitem(inference._REGISTRY, ("planted", "numpyro"), (None, entry))
    RUNS.clear()


QUIET = dict(progress=False, seed=0)


# -- 1. tuning chooses on the validation split only ---------------------------------------------
def test_tune_chooses_on_validation_even_where_another_point_wins_on_test(toy, tmp_path):
    # validation pixels are mostly on, test pixels mostly off: bias=+2 wins on validation, -2 on test
    data = splits_file(tmp_path / "d.npz", valid_mean=0.85, test_mean=0.15)
    out = tmp_path / "run"
    records = compare(data, ARCH, methods="planted", steps=4, checkpoints=2, batch_size=50, tune="bias=-2,2",
                      out=str(out), **QUIET)
    assert len(records) == 1 and records[0]["tuning"] == {"bias": 2}
    tuned = records[0]["tuned"]
    assert tuned["chosen"] == {"bias": 2} and tuned["selection_seconds"] >= 0
    scores = {g["point"]["bias"]: g["validation_log_likelihood"] for g in tuned["grid"]}
    assert set(scores) == {-2, 2} and scores[2] > scores[-2]

    with open(out / "results.json") as f:
        saved = json.load(f)
    assert [r["tuning"] for r in saved["records"]] == [{"bias": 2}]
    grid = {r["tuning"]["bias"]: r for r in saved["grid"]}
    assert set(grid) == {-2, 2}
    # the plant: the point not chosen is the better one on the test split
    assert grid[-2]["test_log_likelihood"] > grid[2]["test_log_likelihood"] + 1.0
    for bias, r in grid.items():  # every grid point's validation score is its curve's (the last point)
        assert r["curve"][-1]["test_log_likelihood"] == pytest.approx(scores[bias])
    report = (out / "report.md").read_text()
    assert "## Tuning (chosen on the validation split)" in report
    assert "| planted | numpyro | bias=2 |" in report and "**chosen**" in report and "Selection cost:" in report
    # the chosen bias is the grid's largest: the best may lie beyond it, and the report says so
    assert tuned["at_edge"] == ["bias=2 (the largest of 2)"]
    assert "Chosen at the edge of the grid" in report and "planted (numpyro): bias=2 (the largest of 2)" in report

    # the grid's cells resume like seeds: nothing runs again, the same point is chosen
    RUNS.clear()
    again = compare(out=str(out), resume=True, progress=False)
    assert RUNS == [] and again == records


def test_a_choice_at_the_end_of_a_grid_axis_is_flagged_and_an_interior_one_is_not():
    from sbn_ppl.comparison.tuning import at_edge

    def tuned(chosen, points):
        return {"chosen": chosen, "grid": [{"point": p, "validation_log_likelihood": 0.0} for p in points]}

    lrs = [{"lr": v, "k": k} for v in (3e-4, 1e-3, 3e-3) for k in (5, 10)]
    assert at_edge(tuned({"lr": 1e-3, "k": 5}, lrs)) == ["k=5 (the smallest of 2)"]
    assert at_edge(tuned({"lr": 3e-4, "k": 10}, lrs)) == ["lr=0.0003 (the smallest of 3)", "k=10 (the largest of 2)"]
    assert at_edge(tuned({"lr": 1e-3}, [{"lr": 1e-3}])) == []  # one value: no axis to be at the end of
    flags = [{"amortised": True}, {"amortised": False}]
    assert at_edge(tuned({"amortised": True}, flags)) == []  # a switch has no "beyond"
    names = [{"schedule": "cosine"}, {"schedule": "constant"}]
    assert at_edge(tuned({"schedule": "cosine"}, names)) == []


def test_each_method_is_tuned_over_the_options_it_takes(toy, tmp_path):
    # gibbs has no option 'bias': it runs once, at its own options; planted runs at both points
    data = splits_file(tmp_path / "d.npz", valid_mean=0.85, test_mean=0.15)
    records = compare(data, ARCH, methods="planted,gibbs", steps=2, checkpoints=1, batch_size=50, tune="bias=-2,2",
                      lr=0.01, out=str(tmp_path / "run"), **QUIET)
    assert [(r["method"], r.get("tuning")) for r in records] == [("planted", {"bias": 2}), ("gibbs", None)]
    assert records[1]["tuned"]["chosen"] == {} and len(records[1]["tuned"]["grid"]) == 1
    assert [run["bias"] for run in RUNS] == [-2, 2]
    with open(tmp_path / "run" / "results.json") as f:
        assert len(json.load(f)["grid"]) == 3


def test_tune_without_a_validation_split_is_refused_before_any_training(toy, tmp_path):
    with pytest.raises(ValueError, match="tune chooses by the validation split"):
        compare("synthetic:16-4-2:0", methods="planted", steps=2, tune="bias=-1,1", out=str(tmp_path / "r"),
                **QUIET)
    assert RUNS == [] and not (tmp_path / "r").exists()


def test_an_invalid_grid_value_is_refused_before_any_training(toy, tmp_path):
    data = splits_file(tmp_path / "d.npz")
    with pytest.raises(ValueError, match="bias must be a finite number, got 'x'"):
        compare(data, ARCH, methods="planted", steps=2, tune="bias=1,x", out=str(tmp_path / "r"), **QUIET)
    with pytest.raises(ValueError, match="no method compared takes option.s. bais"):
        compare(data, ARCH, methods="planted", steps=2, tune="bais=1,2", out=str(tmp_path / "r"), **QUIET)
    with pytest.raises(ValueError, match="sweeps must be an integer >= 1, got 0"):
        compare(data, ARCH, methods="gibbs", steps=2, tune="sweeps=1,0", out=str(tmp_path / "r"), **QUIET)
    assert RUNS == [] and not (tmp_path / "r").exists()


# -- 2. a validation curve for every method, and select="best" on it ----------------------------
def curve_settings(**extra):
    """Gibbs and the fixed point under the ``is`` yardstick (no guide: AIS curve points), tiny,
    from visible biases at 0 (``data_bias=False``) with a learning rate that moves them fast."""
    return {**dict(estimator="is", steps=40, checkpoints=4, batch_size=50, curve_points=30, curve_ais_temperatures=20,
                   curve_ais_chains=2, posthoc_steps=0, test_points=20, data_bias=False, lr=0.03, **QUIET), **extra}


@pytest.fixture(scope="module")
def overfitting_data(tmp_path_factory):
    """Validation pixels independent, each on with probability halfway between 1/2 (the start:
    ``data_bias=False``, tiny weights) and its training mean: as training moves the visible
    biases from 0 towards the training data, the validation curve rises, then falls."""
    path = tmp_path_factory.mktemp("data") / "overfit.npz"
    return splits_file(path, valid_mean=lambda train_mean: (0.5 + train_mean) / 2)


@pytest.mark.parametrize("method", ["gibbs", "mean-field-fixed-point"])
def test_select_best_picks_a_checkpoint_of_the_ais_curve(method, overfitting_data, tmp_path):
    out = tmp_path / "run"
    [r] = compare(overfitting_data, ARCH, methods=method, select="best", out=str(out), **curve_settings())
    assert r["error"] is None, r["error"]
    curve = [p for p in r["curve"] if p.get("test_log_likelihood") is not None]
    assert len(curve) == 5 and [p["step"] for p in curve] == [0, 10, 20, 30, 40]
    assert all(p["curve_estimator"].startswith("ais") for p in curve[1:])
    scores = [p["test_log_likelihood"] for p in curve]
    assert r["selected_step"] == curve[int(np.argmax(scores))]["step"]  # the rule: the best validation score
    assert 0 < r["selected_step"] < r["steps"]  # the plant: the curve rises, then falls
    assert (out / f"{method}-numpyro" / "selected_params.npz").exists()


def test_the_start_of_the_curve_is_scored_by_ais_too(overfitting_data):
    [r] = compare(overfitting_data, ARCH, methods="gibbs", **curve_settings(steps=10, checkpoints=1))
    curve = [p for p in r["curve"] if p.get("test_log_likelihood") is not None]
    assert [p["step"] for p in curve] == [0, 10]
    assert all(p["curve_estimator"].startswith("ais") for p in curve)


# -- 3. early stopping acts on Gibbs -------------------------------------------------------------
def test_patience_stops_gibbs_when_its_validation_curve_falls(overfitting_data):
    budget = 80
    [r] = compare(overfitting_data, ARCH, methods="gibbs", patience=1, **curve_settings(steps=budget, checkpoints=8))
    assert r["error"] is None, r["error"]
    assert r["steps"] < budget  # stopped early
    scored = [p for p in r["curve"] if p.get("test_log_likelihood") is not None]
    assert scored[-1]["test_log_likelihood"] <= max(p["test_log_likelihood"] for p in scored[:-1])


# -- 3. the guide each method is scored with is chosen on validation; the test set is scored once --
def test_guide_is_chosen_on_validation_and_the_test_set_scored_once(tmp_path, monkeypatch):
    from sbn_ppl.comparison import harness

    calls = []  # (rows, guide) of every importance-sampling score the final yardstick makes
    original = harness.Yardstick.log_likelihood

    def counting(self, params, x, guide, *args, **kwargs):
        if self.is_particles == 40:  # the final yardstick (the curve's has 10 particles)
            calls.append((len(x), guide))
        return original(self, params, x, guide, *args, **kwargs)

    monkeypatch.setattr(harness.Yardstick, "log_likelihood", counting)
    data = splits_file(tmp_path / "d.npz")
    [r] = compare(data, ARCH, methods="rws", steps=30, estimator="is", is_particles=40, curve_particles=10,
                  curve_points=30, test_points=20, train_points=25, posthoc_steps=30, **QUIET)
    assert r["error"] is None, r["error"]
    assert r["guide_chosen_on"] == "valid"
    scores = {"own": r["own_guide_log_likelihood"], "posthoc": r["posthoc_log_likelihood"]}
    assert all(np.isfinite(v) for v in scores.values())
    assert r["test_guide"] == max(scores, key=scores.get)
    # both guides on the 30 validation points, then the chosen one on the 20 test points and the 25
    # training points, each once: the test set is never scored with the guide that was not chosen
    assert sorted(calls) == [(20, "recognition"), (25, "recognition"), (30, "recognition"), (30, "recognition")]


# -- 4. a run at the points a tuning run chose (a grid at a short budget, then the long run) -----
def test_tuned_from_runs_each_method_at_the_point_chosen_on_validation(toy, tmp_path):
    data = splits_file(tmp_path / "d.npz", valid_mean=0.85, test_mean=0.15)
    grid = tmp_path / "grid"
    compare(data, ARCH, methods="planted", steps=4, checkpoints=2, batch_size=50, tune="bias=-2,2", out=str(grid),
            **QUIET)
    RUNS.clear()
    [r] = compare(data, ARCH, methods="planted", steps=8, checkpoints=2, batch_size=50, tuned_from=str(grid),
                  out=str(tmp_path / "long"), **QUIET)
    assert r["error"] is None and r["options"]["bias"] == 2 and RUNS == [r["options"]]
    # a method's own options still win over the tuned point
    RUNS.clear()
    [r] = compare(data, ARCH, methods="planted", steps=4, batch_size=50, tuned_from=str(grid),
                  options={"planted": {"bias": -1.0}}, **QUIET)
    assert r["options"]["bias"] == -1.0
    with pytest.raises(ValueError, match="did not tune gibbs:numpyro"):
        compare(data, ARCH, methods="planted,gibbs", steps=4, tuned_from=str(grid), **QUIET)
    untuned = tmp_path / "untuned"
    compare(data, ARCH, methods="planted", steps=2, batch_size=50, out=str(untuned), **QUIET)
    with pytest.raises(ValueError, match="is not a tuning run"):
        compare(data, ARCH, methods="planted", steps=2, tuned_from=str(untuned), **QUIET)


def test_a_grid_extended_by_a_second_run_merges_and_chooses_again_on_validation(toy, tmp_path):
    # validation pixels mostly on: the larger the bias, the better on validation. The first grid's
    # best is its edge (bias=0); a second run extends the grid that way, and report merges them
    from sbn_ppl.comparison.reporting import merge_tuning_runs, read_results, report

    data = splits_file(tmp_path / "d.npz", valid_mean=0.85, test_mean=0.15)
    first, second, merged = tmp_path / "first", tmp_path / "second", tmp_path / "merged"
    common = dict(methods="planted", steps=4, checkpoints=2, batch_size=50, **QUIET)
    [a] = compare(data, ARCH, tune="bias=-2,0", out=str(first), **common)
    assert a["tuning"] == {"bias": 0} and a["tuned"]["at_edge"] == ["bias=0 (the largest of 2)"]
    compare(data, ARCH, tune="bias=0,2", out=str(second), **common)  # bias=0 run in both: pooled once
    text = report([str(first), str(second)], out=str(merged))
    config, [r] = read_results(str(merged))
    assert config["tune"] == {"bias": [-2, 0, 2]} and r["tuning"] == {"bias": 2}
    assert sorted(g["point"]["bias"] for g in r["tuned"]["grid"]) == [-2, 0, 2]
    scores = {g["point"]["bias"]: g["validation_log_likelihood"] for g in r["tuned"]["grid"]}
    assert scores[2] > scores[0] > scores[-2]  # each point's own validation score, as its run gave it
    assert "| planted | numpyro | bias=2 |" in text and "bias=2 (the largest of 3)" in text
    with open(merged / "results.json") as f:
        assert sorted(g["tuning"]["bias"] for g in json.load(f)["grid"]) == [-2, 0, 2]
    # the merged folder is a tuning run like any other: --tuned-from takes its choice
    RUNS.clear()
    [long] = compare(data, ARCH, methods="planted", steps=4, batch_size=50, tuned_from=str(merged), **QUIET)
    assert long["options"]["bias"] == 2

    untuned = tmp_path / "untuned"
    compare(data, ARCH, methods="planted", steps=4, checkpoints=2, batch_size=50, out=str(untuned), **QUIET)
    with pytest.raises(ValueError, match="cannot merge a tuning run"):
        report([str(first), str(untuned)], out=str(tmp_path / "x"))
    longer = tmp_path / "longer"
    compare(data, ARCH, tune="bias=1", out=str(longer), **{**common, "steps": 6})
    with pytest.raises(ValueError, match="settings differ in steps"):
        report([str(first), str(longer)], out=str(tmp_path / "y"))
    with pytest.raises(ValueError, match="cannot merge tuning runs over different options"):
        merge_tuning_runs([("p", {"tune": {"bias": [1]}}, []), ("q", {"tune": {"lr": [1]}}, [])])


def test_a_one_chain_ais_curve_and_yardstick_save_results_that_read_back(overfitting_data, tmp_path):
    """One chain a point (C = 1) has no spread to estimate AIS's standard error from: the curve
    point and the test score store None, not NaN (which no JSON reader takes, and which
    ``read_results`` refuses), and the folder reads back."""
    from sbn_ppl.comparison.reporting import read_results

    out = tmp_path / "run"
    [r] = compare(overfitting_data, ARCH, methods="gibbs", out=str(out),
                  **curve_settings(steps=10, checkpoints=1, curve_ais_chains=1))
    assert r["error"] is None, r["error"]
    assert all(p["test_stderr"] is None for p in r["curve"] if p.get("test_log_likelihood") is not None)
    [again] = read_results(str(out))[1]
    assert again["curve"][-1]["test_log_likelihood"] == r["curve"][-1]["test_log_likelihood"]
    [r] = compare(overfitting_data, ARCH, methods="gibbs", out=str(tmp_path / "ais"),
                  **curve_settings(steps=10, checkpoints=1, estimator="ais", ais_temperatures=20, ais_chains=1))
    assert r["error"] is None and r["test_estimator"] == "ais(T=20,C=1)" and r["test_stderr"] is None
    assert np.isfinite(r["test_log_likelihood"])
    [again] = read_results(str(tmp_path / "ais"))[1]
    assert again["test_log_likelihood"] == r["test_log_likelihood"]
