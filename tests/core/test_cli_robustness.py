"""What a new user and an audit tripped over (issue 14), through the command line: huge
requests, stray options, invalid JSON, unwritable or shared output folders, divergence,
resuming, and budgets."""
import contextlib
import io
import json
import os
import subprocess

import numpy as np
import pytest

from sbn_ppl import SBNParams
from sbn_ppl.cli import main


def run(*args, cwd):
    """``sbn-ppl ARGS`` in this process (``main``, as the console script calls it), with its
    exit status and what it wrote; tests/core/test_cli.py runs the real command in a
    subprocess, so these need not pay a fresh interpreter's imports each."""
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's own errors
                code = e.code
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["sbn-ppl", *args], code, out.getvalue(), err.getvalue())


def one_line_error(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("sbn-ppl: error:"), proc.stderr
    return lines[0]


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "p.npz"
    SBNParams.init("64-6-3", seed=0, guide=("recognition",)).save(path)
    return str(path)


@pytest.mark.parametrize("args, message", [
    (["fit", "--method", "rws", "--arch", "64-1000000000-3", "--steps", "1"], "would need about"),
    (["fit", "--method", "rws", "--k", "1000000000", "--steps", "1"], "would need about"),
    (["evaluate", "--params", "P", "--data", "synthetic:100000000-5:0"], "would need about"),
    (["sample", "--params", "P", "--n", "1000000000000"], "would need about"),
])
def test_requests_beyond_the_machine_are_refused_before_allocating(args, message, params_file, tmp_path):
    args = [params_file if a == "P" else a for a in args]
    assert message in one_line_error(run(*args, "--out" if args[0] == "fit" else "--seed",
                                         str(tmp_path / "o") if args[0] == "fit" else "0", cwd=tmp_path))


@pytest.mark.parametrize("args", [
    ["--estimator", "exact", "--is-particles", "5"],
    ["--estimator", "exact", "--guide", "recognition"],
    ["--estimator", "is", "--ais-temperatures", "10"],
    ["--estimator", "ais", "--is-particles", "10"],
])
def test_evaluate_refuses_options_of_another_estimator(args, params_file, tmp_path):
    assert "do(es) not apply" in one_line_error(run("evaluate", "--params", params_file, *args, cwd=tmp_path))


def test_evaluate_prints_valid_json_with_null_for_no_standard_error(params_file, capsys):
    assert main(["evaluate", "--params", params_file, "--estimator", "is", "--is-particles", "1", "--limit", "5",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert result["stderr"] is None and result["n"] == 5 and result["of"] == 359


def test_evaluate_scores_all_of_a_one_array_file_and_says_so(params_file, tmp_path, capsys):
    data = tmp_path / "one.npy"
    np.save(data, (np.random.default_rng(0).random((30, 64)) < 0.3).astype(np.float32))
    assert main(["evaluate", "--params", params_file, "--data", str(data)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n"] == 30 and "scoring all of it" in captured.err


def test_an_unwritable_out_is_found_before_training(tmp_path):
    proc = run("fit", "--method", "rws", "--steps", "3000", "--out", "/proc/late", cwd=tmp_path)
    assert "cannot write to output folder '/proc/late'" in one_line_error(proc)


def test_divergence_is_detected_and_the_last_finite_checkpoint_kept(tmp_path):
    out = tmp_path / "run"
    proc = run("fit", "--method", "rws", "--arch", "64-6-3", "--steps", "200", "--checkpoint-every", "1",
               "--lr", "1e30", "--out", str(out), "--quiet", cwd=tmp_path)
    line = one_line_error(proc)
    assert "training diverged at step" in line and "lower --lr" in line
    if (out / "params.npz").exists():  # whatever was kept is finite
        params = SBNParams.load(out / "params.npz")
        assert all(np.all(np.isfinite(v)) and np.max(np.abs(v)) <= 1e6 for k, v in params.items() if k != "sizes")


def test_a_finished_run_is_not_overwritten_and_resume_continues(tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["fit", "--method", "rws", "--arch", "64-6-3", "--out", out, "--quiet", "--checkpoint-every", "10"]
    assert main(base + ["--steps", "20"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["steps"] == 20
    assert main(base + ["--steps", "20"]) == 2
    assert "holds a finished run; use --resume" in capsys.readouterr().err
    assert main(base + ["--steps", "40", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 40
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert [r["step"] for r in metrics["curve"]] == [10, 20, 30, 40] and metrics["finished"] and metrics["step"] == 40
    assert SBNParams.load(os.path.join(out, "params.npz")).has_guide("recognition")
    assert main(base + ["--steps", "20", "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 20


def test_a_folder_in_use_is_locked(tmp_path):
    from sbn_ppl.engine.rundir import RunDir

    with RunDir(tmp_path / "run"):
        with pytest.raises(ValueError, match="in use by another run"):
            RunDir(tmp_path / "run")


def test_a_seconds_budget_alone_has_no_step_cap():
    """A cheap step (no compilation): 1.5 s of training stops by the clock (within one step's
    time or 2% of the budget), not at the old default cap of 1,000 steps."""
    from sbn_ppl.engine.fitting import Budget, fit
    from sbn_ppl.base.methods import Entry, Kernel, Method

    kernel = Kernel(lambda key, p, train: p, lambda key, p, b: (p, {"objective": 0.0}), lambda p: p)
    method = Method(Entry("cheap", "pyro", "", "", jit=False), lambda arch, options: kernel)
    params = SBNParams.init("4-2", seed=0, guide=())
    x = (np.random.default_rng(0).random((50, 4)) < 0.5).astype(np.float32)
    result = fit(method, params, x, budget=Budget(seconds=1.5), batch_size=10, progress=False)
    last = result.metrics[-1]
    per_step = last["seconds"] / last["step"]
    assert abs(last["seconds"] - 1.5) <= max(0.03, 2 * per_step)  # stopped by the clock, not by a step cap
    assert last["step"] != 1000


def test_the_fitted_file_holds_only_the_trained_guide(tmp_path, capsys):
    assert main(["fit", "--method", "mean-field-svi", "--arch", "64-6-3", "--steps", "5", "--out",
                 str(tmp_path / "mf"), "--quiet"]) == 0
    params = SBNParams.load(tmp_path / "mf" / "params.npz")
    assert params.has_guide("mean_field") and not params.has_guide("recognition")


def test_old_spelling_local_names_the_new_flag(tmp_path):
    proc = run("fit", "--method", "mean-field-svi", "--local", cwd=tmp_path)
    assert "--no-amortised" in one_line_error(proc)
