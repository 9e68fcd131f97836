"""The optimiser resolvers: names become each backend's optimiser, and ``lr_half_life`` makes
the rate ``lr * 0.5 ** (t / half_life)`` at optimiser step ``t`` on both backends.

Plain SGD on a linear loss ``g . w`` moves ``w`` by exactly ``-rate_t * g`` at step ``t``, so
the rates can be read back from the parameter's path; float32 arithmetic on values of order 1
gives a tolerance of 1e-6.
"""
import numpy as np
import pytest

from sbn_ppl.inference import get_method
from sbn_ppl.base.optimizers import optax_optimizer, pyro_optimizer, torch_optimizer

LR, HALF_LIFE, STEPS = 0.1, 3, 7
EXPECTED = LR * 0.5 ** (np.arange(STEPS) / HALF_LIFE)  # the rate of steps 0 .. 6


def moves(path):
    return -np.diff(np.asarray(path, dtype=np.float64))


@pytest.mark.parametrize("half_life, rates", [(None, np.full(STEPS, LR)), (HALF_LIFE, EXPECTED)])
def test_optax_rates(half_life, rates):
    import jax.numpy as jnp

    opt = optax_optimizer("sgd", LR, half_life)
    w, state, path = jnp.zeros(()), opt.init(jnp.zeros(())), [0.0]
    for _ in range(STEPS):
        update, state = opt.update(jnp.ones(()), state, w)  # gradient 1
        w = w + update
        path.append(float(w))
    np.testing.assert_allclose(moves(path), rates, rtol=1e-6)
    assert optax_optimizer("sgd", LR, half_life) is opt  # cached: a jitted step compiled for it is reused


@pytest.mark.parametrize("half_life, rates", [(None, np.full(STEPS, LR)), (HALF_LIFE, EXPECTED)])
def test_torch_rates(half_life, rates):
    import torch

    w = torch.zeros((), requires_grad=True)
    opt, path = torch_optimizer("sgd", LR, half_life)([w]), [0.0]
    for _ in range(STEPS):
        opt.zero_grad()
        w.backward()  # gradient 1
        opt.step()
        path.append(float(w.detach()))
    np.testing.assert_allclose(moves(path), rates, rtol=1e-5)


def test_pyro_optim_rates_follow_the_same_schedule():
    import pyro
    import torch

    with pyro.get_param_store().scope():
        w = pyro.param("w", torch.zeros(()))
        optim, path = pyro_optimizer("sgd", LR, HALF_LIFE), [0.0]
        for _ in range(STEPS):
            loss = pyro.param("w") * 1.0
            loss.backward()
            optim([pyro.param("w").unconstrained()])
            pyro.param("w").unconstrained().grad = None
            path.append(float(pyro.param("w").detach()))
        del w
    np.testing.assert_allclose(moves(path), EXPECTED, rtol=1e-5)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "ten"])
def test_a_bad_half_life_is_refused(bad):
    with pytest.raises(ValueError, match="lr_half_life must be an integer >= 1"):
        get_method("rws", "numpyro").check_options({"lr_half_life": bad})


@pytest.mark.parametrize("name", ["rws", "vimco", "nvil", "wake-sleep", "gibbs", "mean-field-svi",
                                  "mean-field-fixed-point"])
def test_every_trained_method_takes_a_half_life(name):
    for backend in ("numpyro", "pyro"):
        try:
            m = get_method(name, backend)
        except (KeyError, ValueError):
            continue  # not on this backend
        assert m.check_options({"lr_half_life": 500})["lr_half_life"] == 500
