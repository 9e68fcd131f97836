"""``compare(executor="ray")``: every (method, seed, tuning point) a Ray task on a local Ray
with 2 CPUs; the driver alone writes the folder.

* The records equal the sequential run's for a step budget (timings aside), and the
  parameter files are bitwise the same.
* A task whose worker dies is retried; with no retries left its cell is recorded as failed,
  and no finished cell is lost.
* ``resume`` skips the finished cells.
"""
import json
import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from sbn_ppl.comparison.harness import compare  # noqa: E402
from tests.comparison import ray_toys  # noqa: E402

DATA, STEPS = "synthetic:16-6-3:0", 20
TIMING = ("seconds", "steps_per_second", "cell_seconds")


@pytest.fixture(scope="module")
def local_ray():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"worker_process_setup_hook": "tests.comparison.ray_toys.register",
                          "env_vars": {"PYTHONPATH": root}})
    ray_toys.register()
    yield
    ray.shutdown()


def _run(out, methods, executor="ray", **kw):
    return compare(DATA, methods=methods, steps=STEPS, seeds=[0, 1], checkpoints=2, out=str(out),
                   executor=executor, progress=False, **kw)


def _untimed(record):
    """A record less its timings and the path of its parameter file (the folders differ)."""
    drop = lambda d: {k: v for k, v in d.items() if k not in TIMING + ("params", "posthoc_params")}  # noqa: E731
    return {**drop(record), "curve": [drop(p) for p in record["curve"]]}


def test_ray_records_equal_the_sequential_runs(local_ray, tmp_path):
    methods = ["gibbs:pyro", "rws:pyro"]
    # IS with a post-hoc guide: Gibbs (no guide of its own) is scored with it, which is saved too
    scoring = dict(estimator="is", is_particles=50, posthoc_steps=20)
    ray_records = _run(tmp_path / "ray", methods, **scoring)
    plain = _run(tmp_path / "plain", methods, executor="sequential", **scoring)
    assert [r["error"] for r in ray_records] == [None] * 4
    assert all(r["posthoc_params"] for r in ray_records if r["method"] == "gibbs")
    for a, b in zip(plain, ray_records):
        assert _untimed(a) == _untimed(b)
        for key in ("params", "posthoc_params"):
            if a[key] is None:
                assert b[key] is None
                continue
            assert os.path.relpath(a[key], tmp_path / "plain") == os.path.relpath(b[key], tmp_path / "ray")
            pa, pb = np.load(a[key]), np.load(b[key])
            assert sorted(pa.files) == sorted(pb.files)
            assert all(np.array_equal(pa[k], pb[k]) for k in pa.files)


def test_a_dead_worker_is_retried_and_no_finished_cell_is_lost(local_ray, tmp_path):
    marker = tmp_path / "died"
    records = _run(tmp_path / "out", ["gibbs:pyro", "ray-toy:pyro"], ray_retries=1,
                   options={"ray-toy": {"die_once": str(marker)}})
    assert marker.exists()  # a worker did die
    assert [r["error"] for r in records] == [None] * 4  # ... and its task ran again


def test_with_no_retry_left_the_cell_fails_and_the_others_are_kept(local_ray, tmp_path):
    marker = tmp_path / "died"
    records = _run(tmp_path / "out", ["gibbs:pyro", "ray-toy:pyro"], ray_retries=0,
                   options={"ray-toy": {"die_once": str(marker)}})
    failed = [r for r in records if r["error"]]
    assert len(failed) == 1 and failed[0]["method"] == "ray-toy"
    saved = json.loads((tmp_path / "out" / "results.json").read_text())["records"]
    assert sum(r["error"] is None for r in saved) == 3
    assert all(os.path.isfile(r["params"]) for r in saved if r["error"] is None)


def test_resume_skips_the_finished_cells(local_ray, tmp_path):
    out = tmp_path / "out"
    first = _run(out, ["gibbs:pyro", "rws:pyro"])
    lost = first[-1]["params"]
    os.remove(lost)  # one finished cell's file is gone: only that cell runs again
    kept = {r["params"]: os.stat(r["params"]).st_mtime_ns for r in first[:-1]}
    again = compare(out=str(out), resume=True, progress=False, executor="ray")
    assert [r["error"] for r in again] == [None] * 4
    assert os.path.isfile(lost)
    assert {p: os.stat(p).st_mtime_ns for p in kept} == kept  # the finished cells were not run again
