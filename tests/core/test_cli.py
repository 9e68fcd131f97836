import json
import subprocess
import sys

import numpy as np
import pytest

from sbn_ppl import SBNParams, load_dataset
import sbn_ppl.yardstick.exact as enumeration
from sbn_ppl.cli import main


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "p.npz"
    SBNParams.init("64-6-3", seed=0).save(path)
    return path


def test_info(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sbn_ppl"] and info["torch"] and info["numpyro"] and "jax" in info["devices"]


def test_sample_writes_binary_rows(params_file, tmp_path, capsys):
    assert main(["sample", "--params", str(params_file), "--n", "5", "--seed", "1"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 5 and all(len(r.split()) == 64 and set(r.split()) <= {"0", "1"} for r in rows)
    out = tmp_path / "s.npy"
    assert main(["sample", "--params", str(params_file), "--n", "7", "--out", str(out)]) == 0
    assert np.load(out).shape == (7, 64)


def test_evaluate_exact_prints_json(params_file, capsys):
    assert main(["evaluate", "--params", str(params_file), "--data", "digits", "--estimator", "exact"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = enumeration.exact_log_likelihood(SBNParams.load(params_file), load_dataset("digits").test).mean()
    assert result["log_likelihood"] == pytest.approx(expected, rel=1e-12)
    assert result["estimator"] == "exact" and result["n"] == 359 and result["stderr"] == 0


def test_evaluate_importance_sampling(params_file, capsys):
    assert main(["evaluate", "--params", str(params_file), "--estimator", "is", "--is-particles", "50", "--limit", "20", "--guide", "recognition"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["estimator"] == "is(K=50,recognition)" and result["n"] == 20
    assert np.isfinite(result["log_likelihood"]) and result["stderr"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "--params", "missing.npz"], "does not exist"),
        (["sample", "--params", "P", "--n", "0"], "at least 1"),
        (["evaluate", "--params", "P", "--data", "synthetic:8-4:0"], "8 columns but the model has 64"),
        (["evaluate", "--params", "P", "--data", "BAD"], "non-binary value 3"),
        (["fit", "--method", "no-such-method", "--steps", "1"], "unknown method"),
        (["fit", "--method", "gibbs", "--arch", "10-4", "--steps", "1"], "10 visible units but data 'digits' has 64"),
    ],
)
def test_errors_are_one_line_on_stderr(args, message, params_file, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("0 1\n3 0\n1 1\n0 0\n1 0\n")
    args = [str(params_file) if a == "P" else str(bad) if a == "BAD" else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "sbn_ppl.cli", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sbn-ppl: error:") and message in lines[0], proc.stderr
