"""Learning-rate schedules over the fraction of the training budget (issue 21): the multiplier
``m(f)``, its checks, and that both runners apply it at every step exactly as the budget says.

The toys take a constant gradient of 1 with plain SGD, so after ``n`` steps the parameter is
exactly ``-lr * sum_s m(f_s)``: the schedule is read off the parameter, not inferred from a loss."""
import math

import numpy as np
import pytest

from sbn_ppl import SBNParams, fit
from sbn_ppl.base import schedules
from sbn_ppl.base.methods import Entry, Kernel
from sbn_ppl.base.options import TRAINING
from sbn_ppl.engine.fitting import Budget, Checkpointing, budget_progress
from sbn_ppl.inference import add, get_method

ARCH, LR = "6-3", 0.01


@pytest.mark.parametrize("spec, values", [
    ("constant", [1, 1, 1, 1, 1]),
    ("cosine", [1, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0]),
    ("linear", [1, 0.75, 0.5, 0.25, 0]),
    ("halvings@0.5/0.75", [1, 1, 0.5, 0.25, 0.25]),
])
def test_multiplier_at_fractions_of_the_budget(spec, values):
    fractions = [0, 0.25, 0.5, 0.75, 1]
    assert [schedules.multiplier(spec, f) for f in fractions] == pytest.approx(values, abs=1e-12)
    import jax.numpy as jnp

    assert np.asarray(schedules.multiplier(spec, jnp.asarray(fractions), jnp)) == pytest.approx(values, abs=1e-6)
    assert schedules.multiplier(spec, 1.5) == pytest.approx(values[-1])  # past the budget: clipped


@pytest.mark.parametrize("bad, message", [
    ("cosin", "lr_schedule must be one of constant, cosine, linear"),
    ("halvings@", "halvings@ takes fractions"),
    ("halvings@0.75/0.5", "must increase strictly, each in"),
    ("halvings@0.5/1", "must increase strictly, each in"),
    (0.5, "lr_schedule must be one of"),
])
def test_bad_schedules_are_refused_by_every_method(bad, message):
    assert "lr_schedule" in [o.name for o in TRAINING]
    for name, backend in [("rws", "numpyro"), ("rws", "pyro"), ("gibbs", "numpyro"), ("mean-field-fixed-point",
                                                                                       "numpyro")]:
        with pytest.raises(ValueError, match=message):
            get_method(name, backend).check_options({"lr_schedule": bad})


# -- the toys: d theta = -lr * m(f) * 1 per step ---------------------------------------------------
def jax_toy(arch, options):
    import jax.numpy as jnp

    from sbn_ppl.base.optimizers import optax_optimizer

    opt = optax_optimizer("sgd", options["lr"], options["lr_half_life"], options["lr_schedule"])

    def init(key, params, train):
        theta = jnp.zeros(arch.sizes[0])
        return {"theta": theta, "opt": opt.init(theta)}

    def step(key, state, batch):
        updates, opt_state = opt.update(jnp.ones_like(state["theta"]), state["opt"], state["theta"])
        return {"theta": state["theta"] + updates, "opt": opt_state}, {"objective": jnp.float32(0.0)}

    return Kernel(init, step, lambda state: _params(arch, state["theta"]))


def torch_toy(arch, options):
    import torch

    from sbn_ppl.base.optimizers import torch_optimizer

    def init(seed, params, train):
        theta = torch.zeros(arch.sizes[0], requires_grad=True)
        return {"theta": theta, "opt": torch_optimizer("sgd", options["lr"], options["lr_half_life"],
                                                       options["lr_schedule"])([theta])}

    def step(seed, state, batch):
        state["opt"].zero_grad()
        state["theta"].grad = torch.ones_like(state["theta"])
        state["opt"].step()
        return state, {"objective": 0.0}

    return Kernel(init, step, lambda state: _params(arch, state["theta"].detach().numpy()))


def _params(arch, theta):
    params = SBNParams.init(arch, seed=0)
    return params.replace(b_0=np.asarray(theta, dtype=np.float64))


@pytest.fixture(scope="module", autouse=True)
def toys():
    add(Entry("schedule-toy", "numpyro", __name__, "jax_toy", TRAINING, "test toy"))
    add(Entry("schedule-toy", "pyro", __name__, "torch_toy", TRAINING, "test toy", jit=False))
    add(Entry("schedule-toy-loop", "numpyro", __name__, "jax_toy", TRAINING, "test toy", jit=False))


def expected(spec, n, half_life=None):
    """``theta_n = -lr sum_{s<n} 0.5^(s / half_life) m(s / n)``: the fraction of step s is s / n."""
    return -LR * sum((0.5 ** (s / half_life) if half_life else 1.0) * schedules.multiplier(spec, s / n)
                     for s in range(n))


def train_toy(backend, spec, steps=50, every=7, half_life=None, **kw):
    x = np.zeros((20, 6), np.float32)
    return fit(get_method("schedule-toy", backend), SBNParams.init(ARCH, seed=0), x,
               budget=Budget(steps=steps, **kw), checkpointing=Checkpointing(every=every), batch_size=10,
               options={"lr": LR, "optimizer": "sgd", "lr_schedule": spec, "lr_half_life": half_life},
               progress=False)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize("spec", ["constant", "cosine", "linear", "halvings@0.5/0.75"])
def test_every_step_gets_the_rate_of_its_fraction_of_a_step_budget(backend, spec):
    # 50 steps in chunks of 7 (the chunks do not meet the halvings): exact per step, not per chunk
    result = train_toy(backend, spec)
    assert result.params["b_0"] == pytest.approx(np.full(6, expected(spec, 50)), rel=1e-5)
    multipliers = [r.get("lr_multiplier") for r in result.metrics]
    if spec == "constant":
        assert multipliers == [None] * len(multipliers)
    else:  # each checkpoint records the rate's multiplier at its last step
        assert multipliers == pytest.approx([schedules.multiplier(spec, (r["step"] - 1) / 50)
                                             for r in result.metrics], abs=1e-6)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_a_schedule_composes_with_a_half_life(backend):
    result = train_toy(backend, "cosine", half_life=20)
    assert result.params["b_0"] == pytest.approx(np.full(6, expected("cosine", 50, half_life=20)), rel=1e-5)


def test_an_epochs_budget_is_a_step_budget():
    # 2.5 epochs of 20 points in batches of 10: 5 steps
    result = train_toy("numpyro", "linear", steps=None, every=2, epochs=2.5)
    assert result.metrics[-1]["step"] == 5
    assert result.params["b_0"][0] == pytest.approx(expected("linear", 5), rel=1e-6)


def test_budget_progress():
    assert budget_progress(30, 1.0, 100, None, None) == (0.3, 0.01)
    assert budget_progress(30, 5.0, None, 10.0, 0.02) == (0.5, 0.002)
    assert budget_progress(30, 5.0, None, 10.0, None) == (0.5, 0.0)  # no step timed yet
    assert budget_progress(80, 5.0, 100, 10.0, 0.02) == (0.8, 0.01)  # both: the one further along
    assert budget_progress(30, 5.0, 100, 10.0, 0.02) == (0.5, 0.002)


def test_a_time_budget_anneals_over_the_seconds():
    x = np.zeros((20, 6), np.float32)
    result = fit(get_method("schedule-toy", "numpyro"), SBNParams.init(ARCH, seed=0), x, budget=Budget(seconds=2.0),
                 batch_size=10, options={"lr": LR, "optimizer": "sgd", "lr_schedule": "cosine"}, progress=False)
    multipliers = [r["lr_multiplier"] for r in result.metrics]
    # the fraction is the time spent, so the multiplier falls from 1 with the seconds; by the
    # budget's end it is past its half-way value (m(0.5) = 0.5) whatever the machine's speed
    assert multipliers[0] == pytest.approx(1.0, abs=0.05)
    assert all(b <= a + 1e-9 for a, b in zip(multipliers, multipliers[1:]))
    assert multipliers[-1] < 0.5


def test_a_python_looped_jax_method_gets_the_same_rates():
    x = np.zeros((20, 6), np.float32)
    result = fit(get_method("schedule-toy-loop", "numpyro"), SBNParams.init(ARCH, seed=0), x,
                 budget=Budget(steps=50), checkpointing=Checkpointing(every=7), batch_size=10,
                 options={"lr": LR, "optimizer": "sgd", "lr_schedule": "cosine"}, progress=False)
    assert result.params["b_0"] == pytest.approx(np.full(6, expected("cosine", 50)), rel=1e-5)
