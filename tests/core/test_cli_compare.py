"""`sbn-ppl compare`: options from the command line and from a TOML file (the command line
wins), the Markdown table on stdout, the files in --out, --resume, and one-line errors."""
import json
import os
import subprocess
import sys

import pytest

from sbn_ppl import cli, methods
from sbn_ppl.cli import build_parser, compare_arguments, load_compare_config, main
from sbn_ppl.methods import Method

DATA = "synthetic:16-6-3:0"
RUNS = []  # (method name, options) of every run of the test-only methods below


def still_method(name="still", fail=False) -> Method:
    """Test-only: leaves the parameters where they start (the CLI's plumbing is under test)."""
    def init(params, train, seed, lr, shrink):
        RUNS.append((name, {"lr": lr, "shrink": shrink}))
        return params

    def run(params, num_steps):
        if fail:
            raise RuntimeError("no luck")
        return params, {"objective": 0.0}

    return Method(name, "numpy", init, run, lambda p: p, defaults={"lr": 0.1, "shrink": 1.0})


def failing_method() -> Method:
    return still_method("fails", fail=True)


@pytest.fixture
def registered(monkeypatch):
    """The test-only methods, registered like real ones (by import path)."""
    monkeypatch.setitem(methods._REGISTRY, ("still", "numpy"), f"{__name__}:still_method")
    monkeypatch.setitem(methods._REGISTRY, ("fails", "numpy"), f"{__name__}:failing_method")
    RUNS.clear()


def test_config_file_values_and_command_line_overrides(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        'data = "digits"\narch = "64-10-5"\nmethods = ["rws", "gibbs"]\nsteps = 50\nseed = 3\n'
        'curve-points = 20\nk = 200\ntemperatures = 100\nchains = 4\nquiet = true\n'
        '[options]\nlr = 0.01\n[options.rws]\nk = 7\n'
    )
    args = build_parser().parse_args(
        ["compare", "--config", str(config), "--steps", "80", "--backend", "pyro", "--option", "rws.insomnia=0.5",
         "--batch-size", "25"]
    )
    assert compare_arguments(args) == {
        "data": "digits", "arch": "64-10-5", "methods": ["rws", "gibbs"], "steps": 80, "seed": 3,
        "curve_points": 20, "num_particles": 200, "ais_temperatures": 100, "ais_chains": 4, "backend": "pyro",
        "progress": False, "out": cli.COMPARE_DEFAULT_OUT,
        "options": {"lr": 0.01, "batch_size": 25, "rws": {"k": 7, "insomnia": 0.5}},
    }


def test_every_command_line_option_can_be_set_in_the_config():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["compare"]
    dests = {a.dest for a in sub._actions} - {"help", "config", "option"}  # --option is the [options] table
    assert dests <= set(cli._COMPARE_OPTIONS), dests - set(cli._COMPARE_OPTIONS)


def test_compare_prints_the_table_and_writes_the_files(registered, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["compare", "--data", DATA, "--methods", "still,rws:pyro", "--steps", "4", "--checkpoints", "2",
                 "--out", str(out), "--quiet", "--lr", "0.05"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith(f"{DATA}, 16-6-3, seed 0, budget 4 steps of training per method")
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert sorted(row.split(" | ")[0].strip("| ") for row in rows) == ["rws", "still"]
    with open(out / "results.json") as f:
        records = json.load(f)["records"]
    assert [(r["method"], r["backend"], r["steps"], r["test_estimator"]) for r in records] == [
        ("still", "numpy", 4, "exact"), ("rws", "pyro", 4, "exact")]
    assert records[0]["options"] == {"lr": 0.05, "shrink": 1.0} and records[1]["options"]["lr"] == 0.05
    for name in ("results.csv", "learning_curves.png", "still-numpy/params.npz", "rws-pyro/params.npz"):
        assert os.path.exists(out / name), name

    # --resume keeps both methods: nothing runs again, the same table comes out
    RUNS.clear()
    assert main(["compare", "--data", DATA, "--methods", "still,rws:pyro", "--steps", "4", "--checkpoints", "2",
                 "--out", str(out), "--quiet", "--lr", "0.05", "--resume"]) == 0
    assert RUNS == [] and capsys.readouterr().out == stdout


def test_a_failed_method_is_in_the_table_and_the_exit_status(registered, tmp_path, capsys):
    code = main(["compare", "--data", DATA, "--methods", "fails,still", "--steps", "2", "--out", str(tmp_path),
                 "--quiet", "--option", "fails.shrink=0.5"])
    assert code == 1
    assert "| fails | numpy | – | – | – | failed: RuntimeError: no luck |" in capsys.readouterr().out
    assert RUNS == [("fails", {"lr": 0.1, "shrink": 0.5}), ("still", {"lr": 0.1, "shrink": 1.0})]


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("stpes = 10\n")
    with pytest.raises(ValueError, match="unknown option 'stpes'"):
        load_compare_config(str(bad))
    bad.write_text('steps = "10"\n')
    with pytest.raises(ValueError, match="steps must be int, got '10'"):
        load_compare_config(str(bad))
    bad.write_text("steps = \n")
    with pytest.raises(ValueError, match="cannot read config file"):
        load_compare_config(str(bad))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "gibbs,no-such-method"], "unknown method 'no-such-method'"),
        (["--arch", "10-4"], "10 visible units but data 'digits' has 64"),
        (["--steps", "0"], "at least 1"),
        (["--seconds", "0"], "must be positive"),
        (["--config", "missing.toml"], "does not exist"),
    ],
)
def test_bad_options_are_one_line_errors(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sbn_ppl.cli", "compare", *args], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sbn-ppl: error:") and message in lines[0], proc.stderr


def test_the_example_config_names_real_methods_and_options():
    from pathlib import Path

    from sbn_ppl.harness import method_options, plan

    example = Path(__file__).resolve().parents[2] / "examples" / "compare.toml"
    kwargs = compare_arguments(build_parser().parse_args(["compare", "--config", str(example)]))
    planned = plan(kwargs["methods"], kwargs.get("backend"))
    assert {m.name for m in planned} == set(kwargs["methods"])
    assert method_options(planned, kwargs["options"])[("rws", "numpyro")]["k"] == 5
