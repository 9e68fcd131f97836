"""Data parallelism over several devices (issue 12), on the CPU with forced host devices.

XLA_FLAGS=--xla_force_host_platform_device_count must be set before JAX is imported, so
the several-device runs are subprocesses: ONE for the single-process checks (every JAX
method and IS/AIS, each on 1 and on 4 devices in the same process), and one pair of
processes for the multi-process launch (2 processes x 2 devices, coordinator on 127.0.0.1).

Tolerance. The 4-device runs do the same float32 arithmetic as the 1-device ones except
that XLA splits each batch sum over the devices and adds the partial sums (the gradient
all-reduce), and compiles the per-device work for a quarter of the batch: the sums are
taken in another order, a few float32 ulps apart (measured: at most 3.6e-8 after two
steps, parameters of order 0.1-1). We allow ``ATOL = 1e-5`` (about 100 ulps of a
parameter of order 1), far below what a real difference makes: one training step moves a
parameter by about the learning rate (1e-3), and a wrong reduction (a device's shard
taken for the batch) changes the objective by far more than 1e-5 nats. The discrete draws
(particles, Gibbs flips) are the same on both: JAX's random bits do not depend on the
sharding; a draw would change only if a probability landed within a few ulps of its
uniform, which the measured 1e-8 differences make vanishingly rare for these few draws.
Both runs use ``jax_disable_most_optimizations`` (compile time is most of this test's cost).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ATOL = 1e-5  # see the module docstring
JAX_METHODS = ("rws", "vimco", "nvil", "wake-sleep", "mean-field-svi", "mean-field-svi/local", "mean-field-fixed-point",
               "gibbs")  # NAME/local: the non-amortised guide (per-training-case logits)
# The resume on several devices goes through the runner, not the method: one method whose
# state is all replicated (rws) and the two that split per-training-case state over the mesh.
RESUMED = ("rws", "mean-field-fixed-point", "gibbs")
STEPS = 2

_COMMON = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import jax
    jax.config.update("jax_disable_most_optimizations", True)
    from sbn_ppl import SBNParams
    from sbn_ppl.inference import get_method

    train = (np.random.default_rng(0).random((64, 16)) < 0.3).astype(np.float32)

    def initial(m):
        return SBNParams.init("16-6-3", seed=0, guide=tuple(g for g in (m.guide,) if g))

    def arrays(p):
        return {k: np.asarray(v, np.float64).tolist() for k, v in p.items() if k != "sizes"}
""")

_SINGLE = _COMMON + textwrap.dedent("""
    from sbn_ppl import score
    from sbn_ppl.engine.runner import runner_for

    out = {"device_count": jax.device_count(), "methods": {}}
    for name in sys.argv[1].split(","):
        m = get_method(name.split("/")[0], "numpyro")
        opts = m.check_options({"amortised": False} if name.endswith("/local") else {})
        rec = {}
        for d in (1, 4):
            r = runner_for(m, initial(m), opts, train, 0, 8, devices=d)
            info = r.run(0, %(steps)d)
            leaves = jax.tree_util.tree_leaves(r.state)
            rec[str(d)] = {"info": info, "params": arrays(r.params()), "num_devices": r.num_devices,
                           "train_devices": len(r.train.sharding.device_set),
                           "split_leaves": sum(1 for v in leaves if not v.sharding.is_fully_replicated),
                           "state": [np.asarray(v).astype(np.float64).tolist() for v in leaves]}
        out["methods"][name] = rec
        if name not in sys.argv[2].split(","):
            continue
        # an exact resume on 4 devices: the saved leaves back onto the mesh, then the same steps
        again = runner_for(m, initial(m), opts, train, 0, 8, devices=4)
        rec["resumed"] = again.load_state_arrays(r.state_arrays())
        rec["resumed_split_leaves"] = sum(1 for v in jax.tree_util.tree_leaves(again.state)
                                          if not v.sharding.is_fully_replicated)
        again.run(%(steps)d, %(steps)d), r.run(%(steps)d, %(steps)d)
        rec["resumed_params"], rec["continued_params"] = arrays(again.params()), arrays(r.params())
    x = (np.random.default_rng(1).random((8, 16)) < 0.3).astype(np.float32)
    p = SBNParams.init("16-6-3", seed=0, guide=("recognition",))
    for est, kw in (("is", {"is_particles": 50}), ("ais", {"ais_temperatures": 20, "ais_chains": 4})):
        out[est] = {str(d): score(p, x, est, seed=0, devices=d, **kw).per_point.tolist() for d in (1, 4)}
        # 7 points: not a multiple of the device count
        out[est + "-7"] = {str(d): score(p, x[:7], est, seed=0, devices=d, **kw).per_point.tolist() for d in (1, 4)}
    m = get_method("rws", "numpyro")
    try:
        runner_for(m, initial(m), m.check_options({}), train, 0, 6, devices=4)
        out["indivisible"] = None
    except ValueError as e:
        out["indivisible"] = str(e)
    from sbn_ppl.engine import runner
    out["sharded_programs"] = [len(runner._SHARDED), runner._SHARDED_KEEP]
    print(json.dumps(out))
""") % {"steps": STEPS}

_MULTI = _COMMON + textwrap.dedent("""
    from sbn_ppl.engine.fitting import Budget, Checkpointing, fit

    m = get_method("rws", "numpyro")
    r = fit(m, initial(m), train, budget=Budget(steps=%(steps)d), batch_size=8, seed=0, progress=False,
            checkpointing=Checkpointing(every=%(steps)d, out=sys.argv[1]))
    from sbn_ppl import score

    x = (np.random.default_rng(1).random((8, 16)) < 0.3).astype(np.float32)
    p = SBNParams.init("16-6-3", seed=0, guide=("recognition",))
    scores = {"is": score(p, x, "is", is_particles=50, seed=0).per_point.tolist()}
    print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                      "devices": jax.device_count(), "params": arrays(r.params), "scores": scores}))
""") % {"steps": STEPS}


def _env(devices: int, **extra) -> dict:
    env = dict(os.environ)
    for name in ("SBN_PPL_NUM_PROCESSES", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"):
        env.pop(name, None)
    flags = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)  # conftest's
    env.update(XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}".strip(), JAX_PLATFORMS="cpu",
               PYTHONWARNINGS="ignore", **extra)
    return env


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])  # Gloo prints its own lines to stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The multi-process pair (started first, so on an idle machine it overlaps the
    single-process run, which compiles on one core), then the single-process run."""
    out = tmp_path_factory.mktemp("multi") / "run"
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", _MULTI, str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=_env(2, SBN_PPL_COORDINATOR=f"127.0.0.1:{port}", SBN_PPL_NUM_PROCESSES="2",
                                       SBN_PPL_PROCESS_ID=str(i)))
             for i in range(2)]
    try:
        one = subprocess.run([sys.executable, "-c", _SINGLE, ",".join(JAX_METHODS), ",".join(RESUMED)], env=_env(4),
                             capture_output=True, text=True, timeout=300)
        multi = [(p.communicate(timeout=240), p.returncode) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return {"single": (one.returncode, one.stdout, one.stderr),
            "multi": [(rc, stdout, stderr) for (stdout, stderr), rc in multi], "out": out}


@pytest.fixture(scope="module")
def single(runs):
    rc, stdout, stderr = runs["single"]
    assert rc == 0, stderr[-3000:]
    return _last_json(stdout)


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in a)


@pytest.mark.parametrize("name", JAX_METHODS)
def test_a_training_step_does_not_depend_on_the_device_count(single, name):
    assert single["device_count"] == 4
    one, four = single["methods"][name]["1"], single["methods"][name]["4"]
    assert (one["num_devices"], four["num_devices"]) == (1, 4)
    assert four["train_devices"] == 4  # the training rows are really spread over the mesh
    assert set(one["params"]) == set(four["params"])
    assert _max_diff(one["params"], four["params"]) < ATOL
    for k, v in one["info"].items():
        assert four["info"][k] == pytest.approx(v, rel=ATOL, abs=ATOL), k
    # the whole state too (optimiser moments, Gibbs chains, fixed-point rows)
    assert len(one["state"]) == len(four["state"])
    for a, b in zip(one["state"], four["state"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=ATOL, atol=ATOL)
    # per-training-case state is split: the chains (gibbs), the variational rows (fixed point) and
    # the local guide's logits with their optimiser moments (mean-field-svi/local)
    if name in ("gibbs", "mean-field-fixed-point", "mean-field-svi/local"):
        assert four["split_leaves"] >= 1
    else:
        assert four["split_leaves"] == 0


@pytest.mark.parametrize("name", RESUMED)
def test_a_resume_on_several_devices_continues_exactly(single, name):
    rec = single["methods"][name]
    assert rec["resumed"] is True
    assert rec["resumed_split_leaves"] == rec["4"]["split_leaves"]  # the state went back onto the mesh as it was
    assert _max_diff(rec["continued_params"], rec["resumed_params"]) == 0.0  # the same program on the same inputs
    assert _max_diff(rec["4"]["params"], rec["continued_params"]) > 0  # and it did take further steps


@pytest.mark.parametrize("estimator", ["is", "ais", "is-7", "ais-7"])
def test_scoring_does_not_depend_on_the_device_count(single, estimator):
    """8 test points, and 7 (which do not divide over 4 devices: the padding must not change the draws)."""
    one, four = np.asarray(single[estimator]["1"]), np.asarray(single[estimator]["4"])
    assert one.shape == ((7,) if estimator.endswith("-7") else (8,)) and np.all(np.isfinite(one))
    np.testing.assert_allclose(four, one, rtol=0, atol=ATOL)


def test_a_batch_that_does_not_divide_over_the_devices_is_a_one_line_error(single):
    message = single["indivisible"]
    assert message is not None and "\n" not in message
    assert "batch size 6" in message and "4 devices" in message


def test_the_sharded_program_cache_keeps_only_the_recent_ones(single):
    # every runner above made its own sharded scan (8 methods and 3 resumes on 4 devices: 11
    # programs); a long grid in one process must not hold every cell's compiled program
    held, keep = single["sharded_programs"]
    assert held == keep


def test_the_pyro_backend_refuses_several_devices():
    from sbn_ppl import SBNParams
    from sbn_ppl.inference import get_method
    from sbn_ppl.engine.runner import runner_for

    m = get_method("rws", "pyro")
    train = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError, match="one device.*devices=2"):
        runner_for(m, SBNParams.init("16-6-3", seed=0, guide=("recognition",)), m.check_options({}), train, 0, 8,
                   devices=2)


def test_bad_device_counts_are_one_line_errors():
    from sbn_ppl.engine.sharding import data_mesh

    import jax

    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="devices must be a positive integer"):
            data_mesh(bad)
    with pytest.raises(ValueError, match=f"asked for {jax.device_count() + 1} devices but JAX sees"):
        data_mesh(jax.device_count() + 1)
    assert data_mesh(1) is None  # one device: nothing is sharded


def test_devices_is_a_compare_setting_and_a_flag(tmp_path):
    from sbn_ppl.cli import build_parser, main
    from sbn_ppl.comparison.config import CompareConfig

    assert CompareConfig.from_mapping({"devices": 2}).devices == 2
    with pytest.raises(ValueError, match="devices must be int"):
        CompareConfig.from_mapping({"devices": "all"})
    parser = build_parser()
    for command in (["compare"], ["fit", "--method", "rws"], ["evaluate", "--params", "p.npz"]):
        assert parser.parse_args(command + ["--devices", "3"]).devices == 3
    assert main(["fit", "--method", "rws", "--backend", "pyro", "--data", "synthetic:16-6-3:0", "--arch", "16-6-3",
                 "--steps", "1", "--devices", "2", "--out", str(tmp_path / "r"), "--quiet"]) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_multi_process_run_equals_the_single_process_one(single, runs):
    """2 processes x 2 CPU devices (jax.distributed, Gloo collectives) train RWS for a few
    steps, then score by IS over all four devices; the parameters and the scores
    equal the single-process one-device run's, and only process 0 writes."""
    results = []
    for rc, stdout, stderr in runs["multi"]:
        assert rc == 0, stderr[-3000:]
        results.append(_last_json(stdout))
    out = runs["out"]
    assert sorted(r["process"] for r in results) == [0, 1]
    assert all(r["processes"] == 2 and r["devices"] == 4 for r in results)
    reference = single["methods"]["rws"]["1"]["params"]
    for r in results:
        assert _max_diff(reference, r["params"]) < ATOL
        # IS across the two processes' four devices (AIS is left out: its compilation would
        # double this test's time, and it shards the same way)
        np.testing.assert_allclose(r["scores"]["is"], single["is"]["1"], rtol=0, atol=ATOL)
    # process 0 wrote the run folder (one checkpoint); process 1 did not take its lock
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == STEPS and metrics["finished"]
    assert sorted(os.listdir(out / "checkpoints")) == [str(STEPS)]
