"""``sbn-ppl certify`` (issue 21): AIS with its BDMC gap beside a finished comparison's IS figures,
on a net small enough for the exact log-likelihood (enumeration) to be the check."""
import json

import numpy as np
import pytest

from sbn_ppl import SBNParams, compare
from sbn_ppl.base.arrays import random_subset, subset_indices
from sbn_ppl.comparison import certify as certify_module
from sbn_ppl.comparison.certify import CERTIFY_SEED, certify
from sbn_ppl.yardstick.exact import exact_log_likelihood
from tests.comparison.test_validation_and_tuning import ARCH, splits_file


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """rws (a guide: IS) and gibbs (no guide: IS with a post-hoc one) on 16-4-2, 60 test points."""
    root = tmp_path_factory.mktemp("certify")
    data = splits_file(root / "d.npz")
    out = root / "run"
    compare(data, ARCH, methods="rws,gibbs", steps=60, checkpoints=2, batch_size=50, estimator="is",
            is_particles=200, curve_particles=20, curve_points=30, test_points=60, posthoc_steps=60,
            out=str(out), progress=False, seed=0)
    return data, out


def test_ais_beside_is_on_the_same_points_with_the_bdmc_gap(finished):
    data, out = finished
    records = certify(out, points=25, temperatures=300, chains=4, bdmc_points=10, progress=False)
    test = random_subset(np.load(data)["test"], 60, 0)
    idx = subset_indices(60, 25, CERTIFY_SEED)
    for r in records:
        c = r["certified"]
        assert (c["points"], c["temperatures"], c["chains"], c["bdmc_points"]) == (25, 300, 4, 10)
        # IS on the same 25 points, read from the record's per-point figures
        assert c["is_log_likelihood"] == pytest.approx(np.mean(np.asarray(r["test_pointwise"])[idx]))
        # AIS against the exact mean log p(x) of those points: at T = 300 on 16-4-2 the bias is
        # far below 0.05 nats; 5 standard errors of C = 4 runs per point cover the rest
        exact = exact_log_likelihood(SBNParams.load(r["params"]), test[idx]).mean()
        assert abs(c["ais_log_likelihood"] - exact) < 0.05 + 5 * c["ais_stderr"], (r["method"], c, exact)
        assert c["ais_minus_is"] == pytest.approx(c["ais_log_likelihood"] - c["is_log_likelihood"])
        assert c["ais_minus_is_stderr"] > 0
        # the sandwich: lower <= upper up to noise, and tight on a net this small
        assert c["bdmc_lower"] <= c["bdmc_upper"] + 0.05 and c["bdmc_gap"] < 0.5
        # IS on the simulated points with the guide that scored the test set (Gibbs has none of its
        # own: its post-hoc one, saved by the comparison): a lower bound, below the sandwich's top
        assert c["bdmc_is_guide"] == {"posthoc": "posthoc", "own": "own"}[r["test_guide"]]
        assert c["bdmc_is"] < c["bdmc_upper"] + 0.05
    report = (out / "report.md").read_text()
    assert "## AIS beside IS, with its certified gap" in report and "Ranked by the higher of the two lower bounds" in report
    assert "(post hoc) |" in report  # Gibbs's row says which guide made its IS on the simulated points
    assert "![AIS beside IS](certified.png)" in report
    assert (out / "certified.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the plot the report shows
    saved = json.loads((out / "results.json").read_text())
    assert all(r["certified"]["ais_log_likelihood"] is not None for r in saved["records"])


def test_the_post_hoc_guide_that_scored_the_test_set_is_saved(finished):
    """Gibbs has no guide of its own, so its test figure is IS with the post-hoc one: the
    comparison saves it, and the saved guide gives the record's figure again."""
    from sbn_ppl.yardstick import score

    data, out = finished
    saved = json.loads((out / "results.json").read_text())
    gibbs = next(r for r in saved["records"] if r["method"] == "gibbs")
    assert gibbs["test_guide"] == "posthoc" and gibbs["posthoc_params"].endswith("posthoc_params.npz")
    fitted = SBNParams.load(gibbs["posthoc_params"])
    assert fitted.has_guide("recognition")
    test = random_subset(np.load(data)["test"], 60, 0)
    again = score(fitted, test, "is", guide="recognition", seed=0, is_particles=200)
    # the same guide, particles and seed: the same estimate up to float summation order
    assert again.mean == pytest.approx(gibbs["test_log_likelihood"], abs=1e-4)
    for r in saved["records"]:  # only where the post-hoc guide scored the test set
        assert (r["posthoc_params"] is not None) == (r["test_guide"] == "posthoc")


def test_a_certified_record_is_not_certified_again_at_the_same_settings(finished, monkeypatch):
    _, out = finished
    certify(out, points=10, temperatures=20, chains=2, bdmc_points=0, progress=False)
    import sbn_ppl.yardstick as yardstick

    def refuse(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(yardstick, "score", refuse)
    certify(out, points=10, temperatures=20, chains=2, bdmc_points=0, progress=False)  # nothing to do
    with pytest.raises(AssertionError, match="scored again"):  # other settings: certified again
        certify(out, points=10, temperatures=30, chains=2, bdmc_points=0, progress=False)


def test_max_gap_chooses_each_models_schedule_by_bdmc(finished):
    _, out = finished
    # a gap any schedule meets: the first schedule tried is the one used
    for r in certify(out, points=10, temperatures=5, chains=2, bdmc_points=8, max_gap=100.0, progress=False):
        c = r["certified"]
        assert [s["temperatures"] for s in c["schedule_search"]] == [5] and c["ais_temperatures"] == 5
        assert c["bdmc_temperatures"] == 5 and c["bdmc_gap"] == c["schedule_search"][0]["bdmc_gap"]
    # the search itself, with a sandwich whose gap is 8/T nats (the net here is too small for a real gap
    # to fall over a range of schedules: it is within noise of 0 from T = 5): T = 5, 10 have gaps 1.6,
    # 0.8; a 0.9 target stops at 10. A 0.1 target is not met by T = 40 (0.2), the limit
    import sbn_ppl.yardstick.bdmc as bdmc_module

    real = bdmc_module.bdmc

    def gap_8_over_t(params, n, seed, temperatures, chains, devices=None):
        sandwich = real(params, n, seed, temperatures, chains, devices=devices)
        return sandwich._replace(upper=sandwich.lower._replace(per_point=sandwich.lower.per_point + 8 / temperatures))

    patched = pytest.MonkeyPatch()
    patched.setattr(bdmc_module, "bdmc", gap_8_over_t)
    try:
        for max_gap, tried in ((0.9, [5, 10]), (0.1, [5, 10, 20, 40])):
            for r in certify(out, points=10, temperatures=5, chains=2, bdmc_points=8, max_gap=max_gap,
                             max_temperatures=40, progress=False):
                c = r["certified"]
                assert [s["temperatures"] for s in c["schedule_search"]] == tried
                assert [s["bdmc_gap"] for s in c["schedule_search"]] == pytest.approx([8 / t for t in tried])
                assert c["ais_temperatures"] == tried[-1] and c["bdmc_temperatures"] == tried[-1]
                assert c["bdmc_gap"] == pytest.approx(8 / tried[-1])
    finally:
        patched.undo()
    report = (out / "report.md").read_text()
    assert "T temperatures chosen per model: the first of 5, 10, ... (at most 40)" in report
    assert "| rws | numpyro | 0 | 40 |" in report


@pytest.mark.parametrize("kw, message", [
    (dict(max_gap=0.0), "max_gap must be a positive number"),
    (dict(max_gap=1.0, bdmc_points=0), "max_gap chooses the schedule by BDMC, which needs bdmc_points >= 1"),
    (dict(max_gap=1.0, temperatures=100, max_temperatures=50), "max_temperatures must be a whole number >= "
                                                                 "temperatures"),
    (dict(points=0), "points must be a whole number >= 1"),
    (dict(temperatures=1.5), "temperatures must be a whole number"),
    (dict(bdmc_points=-1), "bdmc_points must be a whole number >= 0"),
    (dict(methods=["nope"]), "has no record of 'nope' \\(it has gibbs, rws\\)"),
    (dict(methods=["rws", "nope"]), "has no record of 'nope'"),  # not silently only rws
])
def test_bad_settings_are_refused(finished, kw, message):
    _, out = finished
    with pytest.raises(ValueError, match=message):
        certify(out, progress=False, **kw)


def test_certify_needs_a_comparison(tmp_path):
    with pytest.raises(ValueError, match="results"):
        certify(tmp_path, progress=False)


def test_methods_are_certified_in_the_order_given(finished, monkeypatch):
    """``methods`` orders the work, so the records wanted first are done first should a long
    run be cut short (the others resume later)."""
    _, out = finished
    loaded = []
    real = certify_module._params_path

    def spy(folder, saved):
        loaded.append(saved)
        return real(folder, saved)

    monkeypatch.setattr(certify_module, "_params_path", spy)
    certify(out, points=5, temperatures=3, chains=1, bdmc_points=0, methods=["gibbs", "rws"], progress=False)
    assert ["gibbs" in p for p in loaded] == [True, False]


def test_the_verdict_ranks_by_the_tighter_lower_bound_and_says_which_way_they_disagree():
    """Both figures are stochastic lower bounds: AIS below IS by more than its noise means the
    schedule was too short to improve on the guide, and IS is the one to rank by; a one-chain
    AIS has no standard error of its own (None, shown as "–", never NaN)."""
    from sbn_ppl.comparison.reporting import _certified_section

    def record(method, ais, is_, d_se, ais_se):
        return {"method": method, "backend": "numpyro", "seed": 0, "test_log_likelihood": is_,
                "certified": {"points": 1000, "temperatures": 500, "chains": 1, "bdmc_points": 50,
                              "ais_log_likelihood": ais, "ais_stderr": ais_se, "is_log_likelihood": is_,
                              "ais_minus_is": ais - is_, "ais_minus_is_stderr": d_se, "bdmc_lower": -110.0,
                              "bdmc_upper": -108.0, "bdmc_gap": 2.0, "bdmc_is": None}}

    text = "\n".join(_certified_section([
        record("a", -99.4, -98.4, 0.1, None),    # AIS 1 nat below IS: IS (-98.4) ranks it
        record("b", -98.9, -100.0, 0.1, 0.02),   # AIS above IS: AIS (-98.9) ranks it
        record("c", -99.0, -99.05, 0.1, 0.02)]))  # within noise
    assert "a (numpyro, IS -98.40), b (numpyro, AIS -98.90), c (numpyro, AIS -99.00)" in text
    assert "AIS is below IS by more than twice their paired standard error for a (numpyro)" in text
    assert "AIS is above IS by more than twice their paired standard error for b (numpyro)" in text
    assert "nan" not in text.lower() and "one chain a point" in text


def test_a_one_chain_ais_stores_none_for_its_standard_error(finished):
    """C = 1 gives AIS no spread to estimate its standard error from: the record holds None (as
    every JSON reader takes it), in memory and in results.json, never NaN."""
    _, out = finished
    records = certify(out, points=5, temperatures=3, chains=1, bdmc_points=0, methods=["gibbs"], progress=False)
    [r] = [r for r in records if r["method"] == "gibbs"]
    assert r["certified"]["ais_stderr"] is None and np.isfinite(r["certified"]["ais_log_likelihood"])
    text = (out / "results.json").read_text()
    assert "NaN" not in text
    saved = [s for s in json.loads(text)["records"] if s["method"] == "gibbs"]
    assert saved[0]["certified"]["ais_stderr"] is None
