"""Run folders that know what they hold and refuse to be mixed (issue 20): one test (or a few)
per numbered item of the audit. The methods are toys (tests/core/toy_methods.py): a jitted
JAX one with state arrays, and one whose step swallows a Ctrl-C as a library can."""
import contextlib
import dataclasses
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import sbn_ppl
import sbn_ppl.comparison.harness as harness
from sbn_ppl import SBNParams
from sbn_ppl.cli import main
from sbn_ppl.engine.fitting import Budget, Checkpointing, fit
from tests.core import toy_methods

DATA = "synthetic:16-6-3:0"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True, scope="module")
def toys():
    """The toy methods, registered for this module only (other tests list every method)."""
    import sbn_ppl.inference as inference

    toy_methods.register()
    yield
    for entry in (toy_methods.TOY, toy_methods.SWALLOW):
        inference._REGISTRY.pop((entry.name, entry.backend), None)


def cli(*args):
    """``sbn-ppl ARGS`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def error(*args) -> str:
    """The one-line error of ``sbn-ppl ARGS`` (exit status 2)."""
    code, _, err = cli(*args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("sbn-ppl: error:"), (code, err)
    return lines[0]


def fit_args(out, *more):
    return ["fit", "--method", "toy-mean", "--data", DATA, "--checkpoint-every", "10", "--out", out, "--quiet", *more]


def compare_kwargs(out, **more):
    return dict(methods="toy-mean", steps=4, checkpoints=2, curve_points=5, test_points=5, out=str(out),
                progress=False, **more)


@pytest.fixture
def fitted(tmp_path):
    """A finished 20-step fit run folder (checkpoints at 10 and 20)."""
    out = tmp_path / "run"
    assert cli(*fit_args(out, "--steps", "20"))[0] == 0
    return out


# -- 1. two comparisons into one folder --------------------------------------------------------
def test_a_second_comparison_into_a_folder_in_use_is_refused(tmp_path):
    real_fit, seen = harness.fit, []

    def fit_and_start_another(m, *args, **kwargs):
        if not seen:  # while the first comparison runs, a second one into the same folder
            with pytest.raises(ValueError, match="in use by another comparison") as e:
                sbn_ppl.compare(DATA, **compare_kwargs(tmp_path, seed=1))
            seen.append(str(e.value))
        return real_fit(m, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness, "fit", fit_and_start_another)
        first = sbn_ppl.compare(DATA, **compare_kwargs(tmp_path))
    assert seen and f"process {os.getpid()}" in seen[0]  # the lock names its owner
    saved = SBNParams.load(tmp_path / "toy-mean-numpyro" / "params.npz")
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["records"][0]["steps"] == first[0]["steps"] == 4
    assert np.isfinite(saved["b_0"]).all()


# -- 2. fit --resume with other data, another net ----------------------------------------------
@pytest.mark.parametrize("change, field", [
    (["--data", "synthetic:16-6-3:1"], "data.name"),
    (["--arch", "16-4-2"], "architecture.sizes"),
    (["--connectivity", "dense"], "architecture.connectivity"),
    (["--seed", "1"], "settings.seed"),
])
def test_fit_resume_refuses_other_data_or_another_net_and_names_the_field(fitted, change, field):
    args = fit_args(fitted, "--steps", "30", "--resume")
    i = args.index(change[0]) if change[0] in args else None
    if i is not None:
        args[i + 1] = change[1]
    else:
        args += change
    line = error(*args)
    assert f"its {field} was" in line and "--overwrite" in line
    with open(fitted / "metrics.json") as f:
        assert json.load(f)["step"] == 20  # nothing was trained


def test_fit_resume_refuses_other_data_under_the_same_name(tmp_path):
    data = tmp_path / "d.npy"
    rng = np.random.default_rng(0)
    np.save(data, (rng.random((60, 16)) < 0.5).astype(np.float32))
    args = ["fit", "--method", "toy-mean", "--arch", "16-3", "--data", data, "--checkpoint-every", "5",
            "--batch-size", "10", "--out", tmp_path / "run", "--quiet"]
    assert cli(*args, "--steps", "5")[0] == 0
    np.save(data, (rng.random((60, 16)) < 0.5).astype(np.float32))
    assert "its data.sha256.train was" in error(*args, "--steps", "10", "--resume")


# -- 3. compare --resume after the data changed ------------------------------------------------
def test_compare_resume_refuses_changed_data(tmp_path):
    data, rng = tmp_path / "d.npz", np.random.default_rng(0)
    draw = lambda n: (rng.random((n, 16)) < 0.4).astype(np.float32)  # noqa: E731
    np.savez(data, train=draw(50), test=draw(20))
    out = tmp_path / "cmp"
    sbn_ppl.compare(str(data), arch="16-3", **compare_kwargs(out, batch_size=10))
    np.savez(data, train=draw(50), test=draw(20))
    with pytest.raises(ValueError, match=r"its data\.sha256\.train was"):
        sbn_ppl.compare(str(data), arch="16-3", **compare_kwargs(out, batch_size=10, resume=True))


# -- 4. compare into a folder that holds results -----------------------------------------------
def test_compare_into_a_finished_folder_needs_resume_or_overwrite(tmp_path):
    sbn_ppl.compare(DATA, **compare_kwargs(tmp_path, seeds="0,1"))
    with pytest.raises(ValueError, match="holds the results of a comparison; use --resume .* or --overwrite"):
        sbn_ppl.compare(DATA, **compare_kwargs(tmp_path))
    assert (tmp_path / "toy-mean-numpyro-seed1").is_dir()
    records = sbn_ppl.compare(DATA, **compare_kwargs(tmp_path, overwrite=True))
    assert len(records) == 1 and not (tmp_path / "toy-mean-numpyro-seed1").exists()  # no orphans
    code, _, err = cli("compare", "--data", DATA, "--methods", "toy-mean", "--steps", "4", "--out", tmp_path,
                       "--quiet", "--test-points", "5", "--curve-points", "5", "--checkpoints", "2")
    assert code == 2 and "--overwrite" in err


# -- 5. fit --resume after metrics.json is deleted ---------------------------------------------
def test_fit_resume_without_the_top_metrics_link_continues_from_the_checkpoint(fitted):
    os.unlink(fitted / "metrics.json")
    code, out, _ = cli(*fit_args(fitted, "--steps", "30", "--resume"))
    assert code == 0 and json.loads(out)["steps"] == 30
    with open(fitted / "metrics.json") as f:
        assert [r["step"] for r in json.load(f)["curve"]] == [10, 20, 30]  # continued, not restarted


def test_fit_resume_with_no_readable_learning_curve_refuses(fitted):
    os.unlink(fitted / "checkpoints" / "20" / "metrics.json")
    line = error(*fit_args(fitted, "--steps", "30", "--resume"))
    assert "checkpoints/20/metrics.json is missing" in line and "step 10 is intact" in line
    assert (fitted / "checkpoints" / "10").is_dir()  # nothing overwritten


# -- 6. a run deletes only inside its own folder -----------------------------------------------
def test_a_linked_checkpoints_folder_is_refused_and_what_it_points_to_kept(tmp_path):
    other = tmp_path / "elsewhere"
    for name in ("1", "2", "7"):
        (other / name).mkdir(parents=True)
    out = tmp_path / "run"
    out.mkdir()
    os.symlink(other, out / "checkpoints")
    assert "is a symbolic link" in error(*fit_args(out, "--steps", "30"))
    assert "is a symbolic link" in error(*fit_args(out, "--steps", "30", "--overwrite"))
    assert sorted(os.listdir(other)) == ["1", "2", "7"]


def test_overwrite_unlinks_a_link_and_keeps_its_target(tmp_path, fitted):
    other = tmp_path / "kept.npz"
    other.write_bytes(b"PK\x03\x04 not ours")
    os.unlink(fitted / "params.npz")
    os.symlink(other, fitted / "params.npz")
    assert cli(*fit_args(fitted, "--steps", "10", "--overwrite"))[0] == 0
    assert other.read_bytes() == b"PK\x03\x04 not ours"


# -- 7. report trusts nothing it reads ---------------------------------------------------------
@pytest.fixture
def results(tmp_path):
    sbn_ppl.compare(DATA, **compare_kwargs(tmp_path / "cmp"))
    return tmp_path / "cmp"


def edit_record(folder, **fields):
    path = folder / "results.json"
    text = path.read_text()
    saved = json.loads(text)
    saved["records"][0].update(fields)
    path.write_text(json.dumps(saved))  # NaN and Infinity as Python's json writes them


@pytest.mark.parametrize("fields, named", [
    ({"test_log_likelihood": float("nan")}, "field 'test_log_likelihood' is nan"),
    ({"test_pointwise": [-1.0, float("-inf")]}, "field 'test_pointwise' value 1 is -inf"),
    ({"seconds": -3.0}, "field 'seconds' is -3.0, negative"),
    ({"test_log_likelihood": "-7.1"}, "field 'test_log_likelihood' is '-7.1', not a number"),
])
def test_report_refuses_non_finite_or_mistyped_numbers_naming_record_and_field(results, fields, named):
    edit_record(results, **fields)
    line = error("report", results)
    assert "record 0 [toy-mean (numpyro), seed 0]" in line and named in line


# -- 8. corrupt run files: one line, no traceback ----------------------------------------------
def test_a_truncated_state_file_is_named_with_the_intact_earlier_checkpoint(fitted):
    state = fitted / "checkpoints" / "20" / "state.npz"
    state.write_bytes(state.read_bytes()[:40])
    line = error(*fit_args(fitted, "--steps", "30", "--resume"))
    assert str(state) in line and "corrupt" in line and "step 10 is intact" in line


@pytest.mark.parametrize("content, problem", [
    ("[]", "holds a JSON list"),
    ('{"seconds": 1.0, "curve": []}', "its 'step' is None"),
    ('{"step": "abc", "curve": []}', "its 'step' is 'abc'"),
    ("{not json", "not readable JSON"),
])
def test_a_hand_edited_metrics_file_is_named(fitted, content, problem):
    path = fitted / "checkpoints" / "20" / "metrics.json"
    path.write_text(content)
    line = error(*fit_args(fitted, "--steps", "30", "--resume"))
    assert str(path) in line and problem in line and "--overwrite" in line


@pytest.mark.parametrize("edit, problem", [
    (lambda s: s["records"][0].pop("method"), "field 'method' is missing"),
    (lambda s: s["records"].__setitem__(0, "rws"), "record 0 [?]: is 'rws', not a record"),
    (lambda s: s.__setitem__("config", None), "its 'config' is missing (null)"),
])
def test_a_hand_edited_results_file_is_named_on_resume(results, edit, problem):
    saved = json.loads((results / "results.json").read_text())
    edit(saved)
    (results / "results.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="results.json") as e:
        sbn_ppl.compare(DATA, **compare_kwargs(results, resume=True))
    assert problem in str(e.value) and "--overwrite" in str(e.value)


# -- 9. random bytes are a corrupt file, not "pickled data" ------------------------------------
@pytest.mark.parametrize("name", ["params.npz", "state.npz"])
def test_random_bytes_are_called_corrupt_never_pickled(fitted, name):
    path = fitted / "checkpoints" / "20" / name
    path.write_bytes(np.random.default_rng(0).bytes(300))
    line = error(*fit_args(fitted, "--steps", "30", "--resume"))
    assert str(path) in line and "corrupt" in line and "pickle" not in line and "step 10 is intact" in line


def test_evaluate_calls_random_bytes_a_corrupt_parameter_file(tmp_path):
    path = tmp_path / "p.npz"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    line = error("evaluate", "--params", path)
    assert str(path) in line and "corrupt" in line and "pickle" not in line


# -- 11. every check before the first step -----------------------------------------------------
def test_a_negative_seed_is_refused_before_any_method_trains(tmp_path):
    with pytest.raises(ValueError, match=r"seeds='0,-3' must be a non-negative integer, got -3"):
        sbn_ppl.compare(DATA, **compare_kwargs(tmp_path / "c", seeds="0,-3"))
    assert not (tmp_path / "c").exists()
    assert "--seed: a seed is a non-negative integer" in error(*fit_args(tmp_path / "f", "--seed", "-1"))
    assert not (tmp_path / "f").exists()


def test_more_devices_than_there_are_is_refused_before_any_method_trains(tmp_path):
    import jax

    too_many = len(jax.devices()) + 2
    with pytest.raises(ValueError, match=f"asked for {too_many} devices"):
        sbn_ppl.compare(DATA, **compare_kwargs(tmp_path / "c", devices=too_many))
    assert not (tmp_path / "c").exists()


# -- 12. Ctrl-C: never lost, exit status 130 ---------------------------------------------------
def test_a_ctrl_c_that_a_library_swallows_still_stops_the_run(tmp_path):
    method = sbn_ppl.get_method("toy-swallow")
    x = (np.random.default_rng(0).random((20, 4)) < 0.5).astype(np.float32)
    with pytest.raises(KeyboardInterrupt):
        fit(method, SBNParams.init("4-2", seed=0, guide=()), x, budget=Budget(steps=50), batch_size=5,
            checkpointing=Checkpointing(every=1, out=tmp_path / "run"), progress=False)
    with open(tmp_path / "run" / "metrics.json") as f:
        assert json.load(f)["step"] < 50  # stopped at the interrupt, the checkpoint before it kept


def test_ctrl_c_while_xla_compiles_exits_130(tmp_path):
    """A real process: SIGINT while the step compiles (a long unrolled graph)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.core.toy_methods", *fit_args(tmp_path / "run", "--unroll", "400", "--steps",
                                                                    "10")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "tracing the step" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "sbn-ppl: interrupted" in err and "Traceback" not in err


def test_a_ctrl_c_inside_a_gc_callback_is_noted_there_and_raised_after():
    """The race the test above can hit: SIGINT lands while JAX's garbage-collection callback
    runs. Raised there, Python would print it as an ignored exception with its traceback; the
    handler notes it instead, and the next check raises it."""
    import gc

    from sbn_ppl.engine import fitting

    returned = []

    def callback(phase, info):  # the handler, as Python calls it with the callback's frame
        returned.append(fitting._on_sigint(signal.SIGINT, sys._getframe()))

    fitting._INTERRUPTED[0] = False
    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
    try:
        assert returned and fitting._INTERRUPTED[0]  # the callback went on: noted, not raised there
        with pytest.raises(KeyboardInterrupt):
            fitting.check_interrupted()
        with pytest.raises(KeyboardInterrupt):  # outside a callback it raises at once
            fitting._on_sigint(signal.SIGINT, sys._getframe())
    finally:
        fitting._INTERRUPTED[0] = False


# -- 13. the smaller ones ----------------------------------------------------------------------
def test_a_non_utf8_toml_names_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b'data = "caf\xe9"\n')
    line = error("compare", "--config", path)
    assert str(path) in line and "UTF-8" in line


class _Slow(http.server.BaseHTTPRequestHandler):
    """Answers a GET with headers, then one byte every 0.3 s (forever, until the client leaves)."""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"0")
                self.wfile.flush()
                time.sleep(0.3)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


def test_a_trickling_download_meets_its_deadline_says_so_first_and_leaves_no_part_file(tmp_path, monkeypatch,
                                                                                    capsys):
    import sbn_ppl.base.datasets as datasets

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(datasets.URL_ENV, f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "DOWNLOAD_DEADLINE_S", 1.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(ValueError, match="deadline"):
            datasets.load_benchmark("uci:nips")
        assert time.monotonic() - t0 < 10
    finally:
        server.shutdown()
    assert "downloading http://127.0.0.1" in capsys.readouterr().err
    leftovers = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / "cache") for f in files]
    assert leftovers == []


def test_a_content_hash_warning_is_recorded_with_the_results(tmp_path, monkeypatch):
    import sbn_ppl.base.datasets as datasets

    rng = np.random.default_rng(0)
    (tmp_path / "cache" / "uci").mkdir(parents=True)
    np.savez(tmp_path / "cache" / "uci" / "nips.npz",
             **{s: (rng.random((n, 500)) < 0.3).astype(np.uint8) for s, n in datasets.benchmark("uci:nips").rows.items()})
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path / "cache"))
    with pytest.warns(datasets.ContentHashWarning):
        sbn_ppl.compare("uci:nips", arch="500-3", train_points=5, **compare_kwargs(tmp_path / "c"))
    with open(tmp_path / "c" / "results.json") as f:
        assert "content sha256" in json.load(f)["config"]["data_warnings"][0]
    assert "**Data warning:**" in (tmp_path / "c" / "report.md").read_text()


def test_sbn_ppl_data_naming_a_file_gives_a_clear_error(tmp_path, monkeypatch):
    import sbn_ppl.base.datasets as datasets

    path = tmp_path / "nips.npz"
    path.write_bytes(b"PK\x05\x06" + bytes(18))
    monkeypatch.setenv(datasets.DATA_ENV, str(path))
    with pytest.raises(ValueError, match=r"\$SBN_PPL_DATA is .*a file; it names the cache folder"):
        sbn_ppl.load_dataset("uci:nips")


def test_compare_resume_reruns_a_finished_method_whose_folder_is_gone(results):
    import shutil

    shutil.rmtree(results / "toy-mean-numpyro")
    records = sbn_ppl.compare(DATA, **compare_kwargs(results, resume=True))
    assert os.path.isfile(records[0]["params"]) and (results / "toy-mean-numpyro" / "params.npz").is_file()


@pytest.mark.parametrize("methods", [5, [1, 2], {"rws": 1}])
def test_compare_refuses_methods_of_the_wrong_type_at_the_top(methods):
    with pytest.raises(TypeError, match="compare: methods must be"):
        sbn_ppl.compare(DATA, methods=methods, steps=1, progress=False)


def test_report_merges_two_runs_that_differ_only_in_timings(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    sbn_ppl.compare(DATA, **compare_kwargs(a))
    sbn_ppl.compare(DATA, **compare_kwargs(b))
    saved = json.loads((b / "results.json").read_text())
    saved["records"][0]["seconds"] += 1.0  # another machine, another load
    (b / "results.json").write_text(json.dumps(saved))
    code, out, err = cli("report", a, b, "--out", tmp_path / "merged")
    assert code == 0 and "different results" not in err


# -- the manifest itself -----------------------------------------------------------------------
def test_the_manifest_records_settings_data_architecture_code_and_owner(fitted, results):
    for folder, kind in ((fitted, "fit"), (results, "compare")):
        with open(folder / "manifest.json") as f:
            manifest = json.load(f)
        assert manifest["kind"] == kind and manifest["data"]["name"] == DATA
        assert len(manifest["data"]["sha256"]["train"]) == 64
        assert manifest["architecture"]["connectivity"] == "layered" and manifest["architecture"]["sizes"][0] == 16
        assert manifest["code"]["sbn_ppl"] == sbn_ppl.__version__ and "git" in manifest["code"]
        assert manifest["owner"]["pid"] == os.getpid()
    assert set(json.load(open(results / "manifest.json"))["data"]["sha256"]) == {"train", "test"}
    again = sbn_ppl.compare(DATA, **compare_kwargs(results, resume=True))  # the same run: kept
    assert again[0]["steps"] == 4
    assert dataclasses.is_dataclass(Budget) and dataclasses.is_dataclass(Checkpointing)


def test_a_resume_compares_the_code_by_its_revision_where_it_has_one():
    from sbn_ppl.engine.rundir import check_manifest

    saved = {"settings": {"x": 1}, "code": {"sbn_ppl": "0.2.0", "git": "abc"}}
    # the same revision, another version string (an editable install's metadata lags its pyproject): resumed
    check_manifest("out", saved, {"settings": {"x": 1}, "code": {"sbn_ppl": "0.4.0", "git": "abc"}})
    with pytest.raises(ValueError, match="its code.git was 'abc', now 'def'"):
        check_manifest("out", saved, {"settings": {"x": 1}, "code": {"sbn_ppl": "0.2.0", "git": "def"}})
    installed = {"settings": {"x": 1}, "code": {"sbn_ppl": "0.2.0", "git": None}}  # no revision: the version decides
    with pytest.raises(ValueError, match="its code.sbn_ppl was '0.2.0', now '0.4.0'"):
        check_manifest("out", installed, {"settings": {"x": 1}, "code": {"sbn_ppl": "0.4.0", "git": None}})
