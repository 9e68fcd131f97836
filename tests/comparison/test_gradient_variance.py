"""The gradient-variance diagnostic (``gradient_variance_draws``).

* On a tiny net, each scored checkpoint of a method with a recognition network carries
  ``guide_gradient_variance`` (positive), as does its record and results.csv, and the report
  draws gradient_variance.png; Gibbs (no guide) has none. Off by default: no field, no column,
  no plot, the settings as before.
* The helper's number is the sum over coordinates of NumPy's per-coordinate variance (ddof 1)
  of the same draws.
* Drawing leaves training alone: the parameters are bitwise those of a run without it.
"""
import csv
import os

import numpy as np
import pytest

from sbn_ppl import SBNParams
from sbn_ppl.comparison.gradient_variance import draw_guide_gradients, total_variance
from sbn_ppl.comparison.harness import compare
from sbn_ppl.comparison.reporting import CSV_FIELDS
from sbn_ppl.engine.runner import runner_for
from sbn_ppl.inference import get_method

DATA, STEPS = "synthetic:8-4-2:0", 20
METHODS = ["vimco:numpyro", "nvil:numpyro", "rws:pyro", "gibbs:numpyro"]


def _run(out, **kw):
    return compare(DATA, methods=METHODS, steps=STEPS, checkpoints=2, out=str(out), progress=False,
                   is_particles=50, posthoc_steps=0, bdmc_points=0, **kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gradient_variance")
    return root, _run(root / "on", gradient_variance_draws=8), _run(root / "off")


def test_guided_methods_record_a_positive_variance_gibbs_none(runs):
    root, on, _ = runs
    by_name = {r["method"]: r for r in on}
    for name in ("vimco", "nvil", "rws"):
        r = by_name[name]
        assert r["error"] is None
        values = [p["guide_gradient_variance"] for p in r["curve"] if "test_log_likelihood" in p]
        assert len(values) == len(r["curve"]) >= 2  # step 0 and every scored checkpoint
        assert all(v > 0 and np.isfinite(v) for v in values)
        assert r["guide_gradient_variance"] == values[-1]
    gibbs = by_name["gibbs"]
    assert "guide_gradient_variance" not in gibbs
    assert all("guide_gradient_variance" not in p for p in gibbs["curve"])
    with open(root / "on" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert float({r["method"]: r for r in rows}["vimco"]["guide_gradient_variance"]) > 0
    assert {r["method"]: r for r in rows}["gibbs"]["guide_gradient_variance"] == ""
    assert os.path.exists(root / "on" / "gradient_variance.png")
    assert "gradient_variance.png" in (root / "on" / "report.md").read_text()


def test_off_by_default(runs):
    root, on, off = runs
    assert all("guide_gradient_variance" not in r and all("guide_gradient_variance" not in p for p in r["curve"])
               for r in off)
    with open(root / "off" / "results.csv") as f:
        assert tuple(next(csv.reader(f))) == CSV_FIELDS
    assert not os.path.exists(root / "off" / "gradient_variance.png")
    assert "gradient_variance" not in (root / "off" / "report.md").read_text()
    for label in METHODS:  # drawing the gradients does not touch training
        folder = label.replace(":", "-")
        a, b = np.load(root / "on" / folder / "params.npz"), np.load(root / "off" / folder / "params.npz")
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_total_variance_is_numpys_variance_of_the_same_draws():
    params = SBNParams.init("8-4-2", seed=1)
    x = (np.random.default_rng(0).random((10, 8)) < 0.5).astype(np.float32)
    runner = runner_for(get_method("rws", "numpyro"), params, {}, x, seed=0, batch_size=10)
    draws = draw_guide_gradients(runner, x, 6, seed=0, step=0)
    names = sorted(draws[0])
    assert names and all(k.startswith("q_") for k in names)
    flat = np.stack([np.concatenate([np.ravel(np.asarray(d[k], np.float64)) for k in names]) for d in draws])
    assert total_variance(draws) == pytest.approx(float(np.var(flat, axis=0, ddof=1).sum()), rel=1e-12)
    assert total_variance(draws) > 0
    with pytest.raises(ValueError, match="at least 2"):
        total_variance(draws[:1])


def test_a_single_draw_is_refused():
    with pytest.raises(ValueError, match="gradient_variance_draws"):
        compare(DATA, methods=["vimco:numpyro"], steps=2, progress=False, gradient_variance_draws=1)
