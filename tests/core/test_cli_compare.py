"""`sbn-ppl compare`: options from the command line and from a TOML file (the command line
wins), the Markdown table on stdout, the files in --out, --resume, and one-line errors."""
import json
import os
import subprocess
import sys

from pathlib import Path

import pytest

from sbn_ppl import cli, inference
from sbn_ppl.cli import build_parser, compare_arguments, main
from sbn_ppl.comparison.config import CompareConfig, cli_fields, load_toml
from sbn_ppl.base.methods import Entry, Kernel
from sbn_ppl.base.options import LR, Option, positive_float

DATA = "synthetic:16-6-3:0"
RUNS = []  # (method name, options) of every run of the test-only methods below
STILL_OPTIONS = (LR._replace(default=0.1), Option("shrink", 1.0, positive_float, "unused"))


def still_method(arch, options, name="still", fail=False) -> Kernel:
    """Test-only: leaves the parameters where they start (the CLI's plumbing is under test)."""
    def init(key, params, train):
        RUNS.append((name, dict(options)))
        return params

    def step(key, params, batch):
        if fail:
            raise RuntimeError("no luck")
        return params, {"objective": 0.0}

    return Kernel(init, step, lambda p: p.generative())


def failing_method(arch, options) -> Kernel:
    return still_method(arch, options, "fails", fail=True)


@pytest.fixture
def registered(monkeypatch):
    """The test-only methods, registered like real ones (one entry each)."""
    monkeypatch.setitem(inference._REGISTRY, ("still", "pyro"),
                        (None, Entry("still", "pyro", __name__, "still_method", STILL_OPTIONS, jit=False)))
    monkeypatch.setitem(inference._REGISTRY, ("fails", "pyro"),
                        (None, Entry("fails", "pyro", __name__, "failing_method", STILL_OPTIONS, jit=False)))
    RUNS.clear()


def test_config_file_values_and_command_line_overrides(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        'data = "digits"\narch = "64-10-5"\nmethods = ["rws", "gibbs"]\nsteps = 50\nseed = 3\n'
        'curve-points = 20\nis-particles = 200\nais-temperatures = 100\nais_chains = 4\n'
        '[options]\nlr = 0.01\n[options.rws]\nk = 7\n'
    )
    args = build_parser().parse_args(
        ["compare", "--config", str(config), "--steps", "80", "--backend", "pyro", "--option", "rws.insomnia=0.5",
         "--batch-size", "25", "--quiet"]
    )
    assert compare_arguments(args) == {
        "data": "digits", "arch": "64-10-5", "methods": ["rws", "gibbs"], "steps": 80, "seed": 3,
        "curve_points": 20, "is_particles": 200, "ais_temperatures": 100, "ais_chains": 4, "backend": "pyro",
        "batch_size": 25, "progress": False, "out": cli.COMPARE_DEFAULT_OUT,
        "options": {"lr": 0.01, "rws": {"k": 7, "insomnia": 0.5}},
    }


def test_every_command_line_option_is_a_field_of_the_one_config_record():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["compare"]
    dests = {a.dest for a in sub._actions if not a.dest.startswith("renamed_")} - {"help", "config", "option", "quiet"}
    assert dests == {f.name for f in cli_fields()}  # generated from CompareConfig, nothing kept in sync by hand
    assert set(CompareConfig.__dataclass_fields__) >= dests


@pytest.mark.parametrize("old, new", [("--k", "--is-particles"), ("--temperatures", "--ais-temperatures"),
                                      ("--chains", "--ais-chains")])
@pytest.mark.parametrize("command", ["compare", "evaluate"])
def test_renamed_yardstick_options_name_the_new_spelling(command, old, new, tmp_path):
    extra = ["--params", "p.npz"] if command == "evaluate" else []
    proc = subprocess.run([sys.executable, "-m", "sbn_ppl.cli", command, *extra, old, "5"], capture_output=True,
                          text=True, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and f"{old} was renamed to {new}" in lines[0], proc.stderr


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
        ("still", "pyro", 4, "exact"), ("rws", "pyro", 4, "exact")]
    assert records[0]["options"] == {"lr": 0.05, "shrink": 1.0} and records[1]["options"]["lr"] == 0.05
    for name in ("results.csv", "learning_curves.png", "report.md", "still-pyro/params.npz", "rws-pyro/params.npz"):
        assert os.path.exists(out / name), name

    # --resume keeps both methods: nothing runs again, the same table comes out; the settings are
    # read from results.json (none need repeating), and only a conflicting one is refused
    RUNS.clear()
    assert main(["compare", "--out", str(out), "--quiet", "--resume"]) == 0
    assert RUNS == [] and capsys.readouterr().out == stdout
    assert main(["compare", "--out", str(out), "--quiet", "--resume", "--steps", "5"]) == 2
    assert "steps was 4, now 5" in capsys.readouterr().err


def test_a_failed_method_is_in_the_table_and_the_exit_status(registered, tmp_path, capsys):
    code = main(["compare", "--data", DATA, "--methods", "fails,still", "--steps", "2", "--out", str(tmp_path),
                 "--quiet", "--option", "fails.shrink=0.5"])
    assert code == 1
    assert "| fails | pyro | – | – | – | failed: RuntimeError: no luck |" in capsys.readouterr().out
    assert RUNS == [("fails", {"lr": 0.1, "shrink": 0.5}), ("still", {"lr": 0.1, "shrink": 1.0})]


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"

    def check(text):
        bad.write_text(text)
        return CompareConfig.from_mapping(load_toml(bad), where=str(bad))

    with pytest.raises(ValueError, match="unknown option 'stpes'"):
        check("stpes = 10\n")
    with pytest.raises(ValueError, match="steps must be int, got '10'"):
        check('steps = "10"\n')
    with pytest.raises(ValueError, match="option 'k' was renamed to 'is_particles'"):
        check("k = 10\n")
    with pytest.raises(ValueError, match="cannot read config file"):
        check("steps = \n")


def test_method_options_in_a_config_are_checked_before_any_method_trains(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('methods = ["gibbs", "rws"]\nsteps = 2\n[options.rws]\nk = "many"\n')
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "sbn_ppl.cli", "compare", "--config", str(config), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "k must be an integer >= 1, got 'many'" in proc.stderr
    assert not (out / "gibbs-numpyro").exists()  # nothing trained, nothing claimed written


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "gibbs,no-such-method"], "unknown method 'no-such-method'"),
        (["--arch", "10-4"], "10 visible units but data 'digits' has 64"),
        (["--steps", "0"], "integer >= 1"),
        (["--seconds", "0"], "positive number of seconds"),
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

    from sbn_ppl.comparison.harness import method_options, plan

    example = Path(__file__).resolve().parents[2] / "examples" / "compare.toml"
    kwargs = compare_arguments(build_parser().parse_args(["compare", "--config", str(example)]))
    planned = plan(kwargs["methods"], kwargs.get("backend"))
    assert {m.name for m in planned} == set(kwargs["methods"])
    assert method_options(planned, kwargs["options"])[("rws", "numpyro")]["k"] == 5


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).resolve().parents[2] / "examples").glob("*.toml")))
def test_every_example_config_is_valid(name):
    from pathlib import Path

    from sbn_ppl.comparison.harness import method_options, plan

    raw = load_toml(Path(__file__).resolve().parents[2] / "examples" / name)
    config = CompareConfig.from_mapping(raw, where=name)
    planned = plan(config.methods, config.backend)
    method_options(planned, dict(config.options))  # every option is one a compared method takes
