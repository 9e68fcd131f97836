"""The aggregated table, results.csv, learning_curves.png, report.md and `sbn-ppl report`
(issue 13), on hand-made records (tests/core/test_aggregate.py builds them): the cells come
out as computed by hand, and a report of two output folders equals the report of the
combined run.
"""
import argparse
import csv
import importlib
import io
import json
import os

import pytest

import sbn_ppl
from sbn_ppl.base.files import write_json
from sbn_ppl.comparison.reporting import (
    CSV_FIELDS,
    add_report_command,
    csv_text,
    markdown_table,
    ranked,
    report,
    write_results,
)
from tests.core.test_aggregate import failed, record, three_seeds

CONFIG = {"data": "synthetic:16-6-3:0", "arch": "16-6-3", "connectivity": "layered", "backend": None,
          "steps": 40, "epochs": None, "seconds": None, "batch_size": 100, "seed": 0, "checkpoints": 2,
          "estimator": "exact", "options": {}, "lr": None, "train_size": 800, "test_size": 4,
          "curve_split": "valid", "curve_points_used": 4}
METHODS = ["a:numpyro", "b:numpyro", "c:pyro"]


def rows_of(table: str) -> dict[str, list[str]]:
    """The table's rows by method name, as lists of cells."""
    rows = [line.strip("|").split(" | ") for line in table.splitlines() if line.startswith("| ")][1:]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows}


HEAD = ["method", "backend", "steps", "seconds", "steps/s", "test log p(x) ± SE", "Δ to best [95% CI]", "rank",
        "seeds", "time to within 0.5", "estimator", "train log p(x)", "own bound", "KL(q‖p)", "IS k̂ / ESS"]
COL = {name: i for i, name in enumerate(HEAD)}


def test_the_table_aggregates_over_seeds():
    table = markdown_table(three_seeds())
    lines = table.splitlines()
    assert lines[0] == "| " + " | ".join(HEAD) + " |"
    rows = rows_of(table)
    assert list(rows) == ["a", "b", "c"]  # ranked
    a, b, c = rows["a"], rows["b"], rows["c"]
    # a: mean(-10, -11, -12) = -11, SE 1/sqrt(3); b - a = (-1, -2, -3): -2 +- 4.303/sqrt(3) = [-4.484, +0.484]
    assert a[COL["test log p(x) ± SE"]] == "-11.000 ± 0.577" and a[COL["Δ to best [95% CI]"]] == "best"
    assert b[COL["test log p(x) ± SE"]] == "-13.000 ± 1.155"
    assert b[COL["Δ to best [95% CI]"]] == "-2.000 [-4.484, +0.484] ≈"  # ≈: not significant
    assert c[COL["Δ to best [95% CI]"]] == "-3.000 [-3.248, -2.752]"  # -3 +- 4.303 * 0.1/sqrt(3)
    assert [r[COL["rank"]] for r in (a, b, c)] == ["1", "2", "3"]
    assert [r[COL["seeds"]] for r in (a, b, c)] == ["3", "3", "3"]
    assert a[:5] == ["a", "numpyro", "100", "10.0", "10.0"] and a[COL["estimator"]] == "exact"
    assert a[COL["train log p(x)"]] == "-10.50"
    assert lines[-1] == ("Verdict: a (numpyro) has the best mean test log p(x); indistinguishable from it at this "
                         "budget (95% paired interval contains 0): b (numpyro).")
    assert "- ≈: not significantly different from the best (the 95% interval contains 0)." in lines


def test_one_seed_says_so():
    base = [-1.0, -2.0, -3.0, -4.0]
    table = markdown_table([record("a", 0, -2.5, base, test_stderr=0.6457),
                            record("b", 0, -4.5, [-2.0, -4.0, -6.0, -6.0])])  # d = (-1, -2, -3, -2)
    a, b = rows_of(table)["a"], rows_of(table)["b"]
    assert a[COL["test log p(x) ± SE"]] == "-2.500 ± 0.646 (1 seed)"
    # -2 +- 1.96 * sqrt(2/3)/2 = [-2.800, -1.200]
    assert b[COL["Δ to best [95% CI]"]] == "-2.000 [-2.800, -1.200]"
    assert "seed-to-seed variation is not included" in table.splitlines()[-1]
    assert any(line.startswith("- Δ to best with one common seed: mean of the per-test-point differences")
               for line in table.splitlines())


def test_failures_warnings_and_is_diagnostics_are_in_the_table():
    records = three_seeds()[:3] + [record("b", 0, -11.0), failed("b", 1), record("b", 2, -13.0)]
    records += [failed("z", s) for s in range(2)]
    records[0] = {**records[0], "test_is_khat": 0.83, "test_is_ess": 12.4, "warnings": ["k-hat 0.83 > 0.7"]}
    records[1] = {**records[1], "test_is_khat": 0.5, "test_is_ess": 40.0, "warnings": ["k-hat 0.83 > 0.7"]}
    table = markdown_table(records)
    rows = rows_of(table)
    assert rows["a"][COL["test log p(x) ± SE"]] == "-11.000 ± 0.577 ⚠1"
    assert rows["a"][COL["IS k̂ / ESS"]] == "0.83 / 12"  # the worst seed's k-hat and ESS
    assert rows["b"][COL["seeds"]] == "2 of 3 †2" and rows["b"][COL["IS k̂ / ESS"]] == "–"
    assert "| z | numpyro | – | – | – | failed: RuntimeError: no luck | – | – | 0 of 2 |" in table
    lines = table.splitlines()
    assert "- ⚠1 a (numpyro), seeds 0, 1: k-hat 0.83 > 0.7" in lines
    assert "- †2 b (numpyro), seed 1: failed: RuntimeError: no luck" in lines
    assert list(rows)[-1] == "z"


def test_time_to_quality_column():
    a = [[(0, -30), (2, -10.4), (9, -10.0)], [(0, -30), (3, -10.45), (9, -10.2)], [(0, -30), (4, -10), (9, -9.8)]]
    b = [[(0, -30), (5, -10.4), (9, -10.6)], [(0, -30), (9, -11)], [(0, -30), (9, -12)]]
    c = [[(0, -30), (1, -10.4), (9, -10.4)], [(0, -30), (7, -10.3), (9, -10.3)], [(0, -30), (9, -10.6)]]
    records = [record(m, s, -20.0 - i, points=p) for i, (m, pts) in enumerate(zip("abc", (a, b, c)))
               for s, p in enumerate(pts)]
    rows = rows_of(markdown_table(records))
    assert [rows[m][COL["time to within 0.5"]] for m in "abc"] == ["3.0 s", "not reached", "7.0 s (2/3 seeds)"]
    rows = rows_of(markdown_table(records, quality_gap=3.0))
    assert rows["b"][COL["time to within 0.5"]] == "9.0 s"  # (the column is now named "time to within 3")


def test_csv_is_long_form():
    records = three_seeds() + [failed("z", 0)]
    records[0] = {**records[0], "warnings": ["one", "two"]}
    rows = list(csv.DictReader(io.StringIO(csv_text(records))))
    assert tuple(rows[0]) == CSV_FIELDS
    assert [(r["method"], int(r["seed"])) for r in rows] == [(r["method"], r["seed"]) for r in records]
    assert rows[0]["warnings"] == "one; two" and rows[-1]["error"] == "RuntimeError: no luck"
    assert float(rows[4]["test_log_likelihood"]) == records[4]["test_log_likelihood"]


def test_ranked_orders_records_by_their_method_then_seed():
    records = list(reversed(three_seeds()))
    assert [(r["method"], r["seed"]) for r in ranked(records)] == [(m, s) for m in "abc" for s in range(3)]


# -- report(): merging output folders ------------------------------------------------------------
def combined_records():
    """One record per (method, seed), in the order one run of three seeds makes them."""
    values = {"a": [-10.0, -11.0, -12.0], "b": [-11.0, -13.0, -15.0], "c": [-13.0, -14.1, -14.9]}
    out = []
    for seed in range(3):
        for label in METHODS:
            name, backend = label.split(":")
            ll = values[name][seed]
            out.append(record(name, seed, ll, [ll - 1, ll + 1, ll - 0.5, ll + 0.5], backend=backend,
                              points=[(0, -30.0), (1 + seed, ll - 1), (5 + seed, ll)]))
    return out


def save_run(folder, records, methods, seeds, **changes):
    config = {**CONFIG, "methods": methods, "seeds": seeds, **changes}
    write_json(os.path.join(folder, "results.json"), {"config": config, "records": records})
    return str(folder)


@pytest.fixture
def runs(tmp_path):
    records = combined_records()
    full = save_run(tmp_path / "full", records, METHODS, [0, 1, 2])
    return tmp_path, records, full


@pytest.fixture
def no_plots(monkeypatch):
    """Skip drawing learning_curves.png (a second or more each) where the plot is not under test."""
    module = importlib.import_module("sbn_ppl.comparison.reporting")
    monkeypatch.setattr(module, "plot_learning_curves", lambda path, *a, **k: open(path, "wb").close())


def read(folder, name):
    with open(os.path.join(folder, name), "rb") as f:
        return f.read()


@pytest.mark.parametrize("split", ["methods", "seeds"])
def test_report_of_two_folders_equals_report_of_the_combined_run(runs, split, request):
    if split == "seeds":
        request.getfixturevalue("no_plots")  # the plots are drawn (and compared) once, split by methods
    tmp, records, full = runs
    if split == "methods":  # a and b in one run, c in another
        one = save_run(tmp / "one", [r for r in records if r["method"] != "c"], METHODS[:2], [0, 1, 2])
        two = save_run(tmp / "two", [r for r in records if r["method"] == "c"], METHODS[2:], [0, 1, 2])
    else:  # seeds 0, 1 in one run, seed 2 in another (as the runs would write them)
        one = save_run(tmp / "one", [r for r in records if r["seed"] < 2], METHODS, [0, 1])
        two = save_run(tmp / "two", [r for r in records if r["seed"] == 2], METHODS, [2])
    merged = report([one, two], out=str(tmp / "merged"))
    alone = report([full], out=str(tmp / "alone"))
    assert merged == alone
    assert "| b | numpyro | 100 | 10.0 | 10.0 | -13.000 ± 1.155 | -2.000 [-4.484, +0.484] ≈ | 2 | 3 |" in merged
    for name in ("results.csv", "report.md", "results.json"):
        assert read(tmp / "merged", name) == read(tmp / "alone", name), name
    saved = json.loads(read(tmp / "merged", "results.json"))
    assert saved["records"] == records and saved["config"]["seeds"] == [0, 1, 2]
    assert saved["config"]["methods"] == METHODS
    if split == "methods":
        png = read(tmp / "merged", "learning_curves.png")
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
        assert png == read(tmp / "alone", "learning_curves.png")


def test_report_renders_into_the_first_folder_and_keeps_its_results(runs, no_plots):
    tmp, records, full = runs
    one = save_run(tmp / "one", records[:3], METHODS, [0])
    before = read(one, "results.json")
    text = report([one, save_run(tmp / "two", records[3:], METHODS, [1, 2])])
    assert read(one, "results.json") == before  # a run's own results.json is never changed
    assert read(one, "report.md").decode() == text
    assert len(list(csv.DictReader(io.StringIO(read(one, "results.csv").decode())))) == len(records)
    assert text.startswith("# synthetic:16-6-3:0, 16-6-3: 3 method(s), 3 seed(s)\n")
    for part in ("![learning curves](learning_curves.png)", "## Settings", "| steps | 40 |", "## Every run",
                 f"sbn-ppl {sbn_ppl.__version__}", "CPU(s)", "- Python 3."):
        assert part in text, part


def test_report_refuses_runs_with_other_settings(runs, no_plots):
    tmp, records, full = runs
    other = save_run(tmp / "other", records[:3], METHODS, [5], steps=50, estimator="ais")
    with pytest.raises(ValueError) as e:
        report([full, other], out=str(tmp / "out"))
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"cannot merge {full!r} and {other!r}")
    assert f"estimator ('exact' in {full}, 'ais' in {other}); steps (40 in {full}, 50 in {other})" in message
    assert message.endswith("; only their methods and seeds may differ")
    assert not os.path.exists(tmp / "out")


def test_report_refuses_two_different_records_of_one_method_and_seed(runs, no_plots):
    tmp, records, full = runs
    changed = [{**records[0], "test_log_likelihood": -99.0}]
    with pytest.raises(ValueError, match=r"a \(numpyro\), seed 0 is in both .* with different results"):
        report([full, save_run(tmp / "other", changed, METHODS[:1], [0])], out=str(tmp / "out"))
    other_options = [{**records[0], "seed": 7, "options": {"lr": 0.5}}]
    with pytest.raises(ValueError, match=r"a \(numpyro\) has options \{'lr': 0.1\} in .* but \{'lr': 0.5\}"):
        report([full, save_run(tmp / "opts", other_options, METHODS[:1], [7])], out=str(tmp / "out"))
    # the same record twice (a merged folder reported with one of its sources) is one record
    assert report([full, save_run(tmp / "same", records[:1], METHODS[:1], [0])], out=str(tmp / "a")) == \
        report([full], out=str(tmp / "b"))


def test_report_needs_results(tmp_path):
    with pytest.raises(ValueError, match="holds no results.json"):
        report([str(tmp_path)])
    (tmp_path / "results.json").write_text('{"records": []}')
    with pytest.raises(ValueError, match="not the results of sbn-ppl compare"):
        report(tmp_path)
    with pytest.raises(ValueError, match="at least one output folder"):
        report([])


def test_sbn_ppl_report_is_the_function(runs, no_plots):

    tmp, _, full = runs
    assert sbn_ppl.report([full], out=str(tmp / "x")) == report(full, out=str(tmp / "y"))


def test_report_command(runs, capsys, no_plots):
    tmp, records, full = runs
    parser = argparse.ArgumentParser()
    add_report_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", full, "--out", str(tmp / "cli"), "--within", "2"])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert captured.out == read(tmp / "cli", "report.md").decode() + "\n"
    assert "time to within 2 |" in captured.out
    assert captured.err.startswith(f"wrote {os.path.join(str(tmp / 'cli'), 'results.csv')}")


def test_write_results_under_an_epoch_budget(tmp_path):
    config = {**CONFIG, "steps": None, "epochs": 2.0, "methods": METHODS[:2], "seeds": [0, 1]}
    records = [r for r in combined_records() if r["seed"] < 2 and r["method"] != "c"]
    write_results(str(tmp_path), config, records)
    assert json.loads(read(tmp_path, "results.json")) == {"config": config, "records": records}
    png = read(tmp_path, "learning_curves.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "a budget of 2 epochs of training" in read(tmp_path, "report.md").decode()


def test_published_figures_are_printed_only_beside_their_benchmark():
    from sbn_ppl.comparison.published import published_for, published_table

    mnist = published_table("binarized-mnist", "784-200-200")
    assert "| REBAR | -95.4 | single-sample-ELBO" in mnist and "| ARM | -96.7 ± 0.3 |" in mnist
    assert "read in the source table" in mnist
    # the 3-layer VIMCO figure could not be read in the paper: a note says so, no figure
    assert published_for("binarized-mnist", "784-200-200-200") == []
    three = published_table("binarized-mnist", "784-200-200-200")
    assert "could not check" in three and "|" not in three
    assert published_table("digits", "64-12-6") == "" and published_table("binarized-mnist", "784-100") == ""


# -- one table across data sets ------------------------------------------------------------------
def test_across_data_sets_puts_each_run_in_a_column(tmp_path, capsys):
    """Two runs on two data sets: a column each, the cells as each run's own table computes
    them, bold where the method is the best or indistinguishable from it, and one CSV line
    per (data set, method)."""
    first = save_run(tmp_path / "one", three_seeds(), ["a:numpyro", "b:numpyro", "c:numpyro"], [0, 1, 2],
                     data="uci:mushrooms", arch="112-100", estimator="is", is_particles=200, seconds=45.0,
                     steps=None, select="best")
    # one seed: c best, a failed, b not run; the per-point interval of a - c decides nothing here
    second = save_run(tmp_path / "two", [record("c", 0, -20.0, [-19.0, -21.0, -20.5, -19.5]),
                                         failed("a", 0)], ["c:numpyro", "a:numpyro"], [0],
                      data="uci:nips", arch="500-100")
    from sbn_ppl.comparison.reporting import ACROSS_FIELDS, across_data_sets

    text = across_data_sets([first, second], tmp_path / "out")
    lines = text.splitlines()
    assert lines[0] == "| method | backend | uci:mushrooms (112-100) | uci:nips (500-100) | mean rank |"
    rows = rows_of(text)
    # a: -11 +- 1/sqrt(3), the best of the first; b indistinguishable from it (bold); c significantly worse
    assert rows["a"][2:] == ["**-11.000 ± 0.577**", "failed", "1.0"]
    assert rows["b"][2:] == ["**-13.000 ± 1.155**", "—", "2.0"]
    # c: (-13, -14.1, -14.9), SE 0.954 / sqrt(3), third on the first set; first on the second (one
    # seed: the record's own standard error stands in), so a mean rank of 2
    assert rows["c"][2:] == ["-14.000 ± 0.551", "**-20.000 ± 0.050**", "2.0"]
    assert list(rows) == ["a", "b", "c"]  # by mean rank (ties in table order)
    assert "IS, K = 200 on all test points; seconds 45 per method; 3 seeds; selected by best" in text
    assert read(tmp_path / "out", "across.md").decode() == text
    with open(tmp_path / "out" / "across.csv") as f:
        lines_csv = list(csv.DictReader(f))
    assert list(lines_csv[0]) == list(ACROSS_FIELDS)
    assert {(r["data"], r["method"]) for r in lines_csv} == {
        ("uci:mushrooms", "a"), ("uci:mushrooms", "b"), ("uci:mushrooms", "c"), ("uci:nips", "c"), ("uci:nips", "a")}
    # the command line: `sbn-ppl report --across DIR DIR --out OUT`
    from sbn_ppl.cli import main

    assert main(["report", "--across", first, second, "--out", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().out == text
    # two runs on the same data and architecture are merged first, not put side by side
    with pytest.raises(ValueError, match="same data and architecture"):
        across_data_sets([first, first])

