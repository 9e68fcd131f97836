"""``compare --resume`` continues a cell that was interrupted mid-training from its last
checkpoint, with its best-so-far checkpoint (``select="best"``) and patience count as they were:
the record equals an uninterrupted run's, and only the steps left are trained."""
import numpy as np
import pytest

from sbn_ppl import compare
from sbn_ppl.base.methods import Entry, Kernel
from sbn_ppl.base.params import SBNParams
from sbn_ppl.inference import add
from tests.comparison.test_validation_and_tuning import ARCH, splits_file

BREAK_AT = [None]  # the step at which the toy raises (None: never)
TAKEN = []  # every step the toy takes


def rise_and_fall(arch, options):
    """The visible biases along a path that peaks at step 6: ``b_0 = L (1 - |s - 6| / 6)`` with
    ``L`` the logit of the training mean, so the validation curve's best point is step 6."""
    import jax.numpy as jnp

    def init(key, params, train):
        mean = np.clip(np.asarray(train).mean(0), 0.05, 0.95)
        base = {k: jnp.asarray(v) for k, v in params.items() if k != "sizes"}
        return {**base, "target": jnp.asarray(np.log(mean / (1 - mean))), "n": jnp.asarray(0)}

    def step(key, state, batch):
        n = int(state["n"]) + 1
        if BREAK_AT[0] is not None and n == BREAK_AT[0]:
            raise RuntimeError(f"killed at step {n}")
        TAKEN.append(n)
        b = state["target"] * (1.0 - abs(n - 6) / 6.0)
        return {**state, "b_0": b, "n": jnp.asarray(n)}, {"objective": jnp.float32(-n)}

    def get_params(state):
        return SBNParams.from_arrays(arch, {k: np.asarray(v) for k, v in state.items() if k not in ("target", "n")})

    return Kernel(init, step, get_params)


@pytest.fixture(scope="module", autouse=True)
def toy():
    add(Entry("toy-rise-fall", "numpyro", __name__, "rise_and_fall", (), "test toy", jit=False))


def settings(out, **more):
    return dict(methods="toy-rise-fall", steps=12, checkpoints=6, batch_size=50, select="best", estimator="exact",
                curve_points=40, test_points=40, data_bias=False, out=str(out), progress=False, seed=0, **more)


def comparable(record):
    out = {k: v for k, v in record.items() if k not in ("seconds", "steps_per_second", "cell_seconds", "params")}
    out["curve"] = [{k: v for k, v in c.items() if k != "seconds"} for c in record["curve"]]
    return out


def test_an_interrupted_cell_resumes_from_its_checkpoint_with_its_best(tmp_path):
    data = splits_file(tmp_path / "d.npz")
    BREAK_AT[0] = None
    [reference] = compare(data, ARCH, **settings(tmp_path / "reference"))
    assert reference["selected_step"] == 6 and reference["steps"] == 12

    BREAK_AT[0] = 9  # the cell dies after its checkpoint at step 8, with its best (step 6) behind it
    [broken] = compare(data, ARCH, **settings(tmp_path / "run"))
    assert "killed at step 9" in broken["error"]
    assert (tmp_path / "run" / "toy-rise-fall-numpyro" / "best_params.npz").exists()

    BREAK_AT[0] = None
    TAKEN.clear()
    [resumed] = compare(data, ARCH, **settings(tmp_path / "run", resume=True))
    assert resumed["error"] is None
    assert TAKEN == [9, 10, 11, 12]  # only the steps after the checkpoint
    assert comparable(resumed) == comparable(reference)
    assert not (tmp_path / "run" / "toy-rise-fall-numpyro" / "best_params.npz").exists()  # done: removed


def test_a_cell_whose_best_cannot_be_had_starts_afresh(tmp_path):
    data = splits_file(tmp_path / "d.npz")
    BREAK_AT[0] = 9
    compare(data, ARCH, **settings(tmp_path / "run"))
    (tmp_path / "run" / "toy-rise-fall-numpyro" / "best_params.npz").unlink()  # the step-6 parameters: gone
    BREAK_AT[0] = None
    TAKEN.clear()
    [resumed] = compare(data, ARCH, **settings(tmp_path / "run", resume=True))
    assert resumed["error"] is None and resumed["selected_step"] == 6
    assert TAKEN == list(range(1, 13))  # trained again from step 0
