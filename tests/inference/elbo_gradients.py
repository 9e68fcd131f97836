"""What the tests of the ELBO-gradient estimators share (REINFORCE leave-one-out, ARM, DisARM):
a 10-4-3 net (7 hidden units, 128 states), the exact gradient of its ELBO by enumeration,
many draws of an estimator on either backend, and a short fit through the runner.

The yardstick: ``ELBO = (1/N) sum_n sum_h q(h | x_n) [log p(x_n, h) - log q(h | x_n)]``, summed
over all 2^7 hidden states and differentiated by ``jax.grad`` in theta and phi.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pyro
import torch
from pyro import poutine

from sbn_ppl import SBNParams
from sbn_ppl.base.data import synthetic
from sbn_ppl.base.params import generative_keys, recognition_keys
from sbn_ppl.engine.runner import runner_for
from sbn_ppl.inference import get_method
from sbn_ppl.inference.shared.particles import numpyro as particles_jax
from sbn_ppl.models import numpyro_sbn, pyro_sbn
from tests.conftest import all_binary, trainable, z_scores

NET, ROWS = "10-4-3", 4
CONNECTIVITIES = ("layered", "dense")
JAX_DRAWS = 2000  # each draw: the estimator on the 4 data points
PYRO_DRAWS, PYRO_REPLICAS = 200, 50  # each draw: the estimator on the 4 points replicated 50 times (200 rows)
Z_TOLERANCE = 4.5
# Why 4.5: with no bias each z is about N(0, 1) (means of 2000 draws, or of 200 draws each a
# mean of 50); P(|z| > 4.5) = 6.8e-6 per coordinate, so over the at most 186 theta and phi
# coordinates of a net a false alarm has probability about 1e-3. The seeds are fixed.


def net(connectivity: str) -> SBNParams:
    """The 10-4-3 net: strong generative weights and biases (an explaining-away posterior), a
    mild recognition network (q covers every state, far from p(h | x))."""
    params = SBNParams.init(NET, seed=3, scale=1.5, guide=("recognition",), connectivity=connectivity)
    rng = np.random.default_rng(4)
    params = params.replace(**{k: rng.normal(0, 1, v.shape) for k, v in params.items() if "b_" in k})
    return params.replace(**{k: rng.normal(0, 0.7, v.shape) for k, v in params.items() if k.startswith("q_")})


def data(connectivity: str) -> np.ndarray:
    return synthetic(NET, 0, connectivity=connectivity).train[:ROWS]


def keys_of(params: SBNParams) -> list[str]:
    return generative_keys(params.architecture) + recognition_keys(params.architecture)


def phi_mask(params: SBNParams) -> np.ndarray:
    """Which flat coordinates (``keys_of`` order) are phi's."""
    return np.array([k.startswith("q_") for k in keys_of(params) for _ in range(np.size(params[k]))])


def flat_draws(grads: dict, keys) -> np.ndarray:
    """M stacked gradients (a leading axis on every array) as ``(M, P)``."""
    return np.concatenate([np.asarray(grads[k], np.float64).reshape(len(grads[k]), -1) for k in keys], 1)


def exact_elbo_gradient(params: SBNParams, x: np.ndarray) -> np.ndarray:
    """The exact gradient of the batch-mean ELBO in theta and phi (ascent, flat), by enumeration."""
    arch = params.architecture
    bits = jnp.asarray(all_binary(arch.num_hidden))
    cuts = np.cumsum((0,) + tuple(arch.hidden_sizes))

    def elbo(p):
        layers = [jnp.asarray(x)[:, None, :]] + [bits[None, :, a:b] for a, b in zip(cuts, cuts[1:])]
        log_q = particles_jax.guide_log_prob(arch, p, layers)  # (N, 128)
        log_p = numpyro_sbn.log_joint(arch, p, layers)
        return (jnp.exp(log_q) * (log_p - log_q)).sum(-1).mean()

    grads = jax.grad(elbo)(trainable(params))
    return np.concatenate([np.ravel(np.asarray(grads[k], np.float64)) for k in keys_of(params)])


def jax_draws(surrogate, params: SBNParams, x: np.ndarray, draws: int = JAX_DRAWS, seed: int = 0) -> np.ndarray:
    """``draws`` draws ``(M, P)`` of the ascent gradient of ``mean_n S_n`` for a JAX surrogate
    ``surrogate(key, params, x) -> (S (B,), f (B,))``, one key each (vmapped)."""
    def one(p, key):
        return jax.grad(lambda p: surrogate(key, p, jnp.asarray(x))[0].mean())(p)

    keys = jax.random.split(jax.random.PRNGKey(seed), draws)
    grads = jax.jit(jax.vmap(one, in_axes=(None, 0)))(trainable(params), keys)
    return flat_draws(grads, keys_of(params))


def pyro_draws(objective, params: SBNParams, x: np.ndarray, draws: int = PYRO_DRAWS,
               replicas: int = PYRO_REPLICAS, seed: int = 0) -> np.ndarray:
    """``draws`` draws ``(M, P)`` of a Pyro loss object's ascent gradient of the batch-mean
    ELBO, each on the rows of ``x`` replicated ``replicas`` times, in a fresh param store."""
    rows = torch.as_tensor(np.tile(x, (replicas, 1)))
    scale = 1.0 / len(rows)
    model, guide = poutine.scale(pyro_sbn.model, scale), poutine.scale(pyro_sbn.recognition_guide, scale)
    keys, out = keys_of(params), []
    pyro.set_rng_seed(seed)
    with pyro.get_param_store().scope():
        for _ in range(draws):
            objective.loss_and_grads(model, guide, params, rows)
            store = pyro.get_param_store()
            out.append(np.concatenate([-store[k].unconstrained().grad.double().numpy().ravel() for k in keys]))
            for k in keys:
                store[k].unconstrained().grad = None
    return np.array(out)


def assert_unbiased(draws: np.ndarray, exact: np.ndarray, label: str) -> float:
    """Every coordinate's mean within ``Z_TOLERANCE`` standard errors of the exact gradient;
    returns the largest |z|."""
    z = z_scores(draws, exact)
    worst = float(np.max(np.abs(z)))
    assert worst < Z_TOLERANCE, f"{label}: max |z| {worst:.2f} (>= {Z_TOLERANCE}); z = {np.round(z, 1)}"
    return worst


def fit_gain(name: str, backend: str, steps: int, lr: float = 0.03) -> tuple[float, float]:
    """The method's own bound (the per-point ELBO) on held-out teacher data before and after
    ``steps`` steps through the runner (synthetic 10-4-3 teacher, 1,000 points, batch 100)."""
    d = synthetic(NET, 0)
    runner = runner_for(get_method(name, backend), SBNParams.init(NET, seed=1), {"lr": lr}, d.train, seed=0,
                        batch_size=100)
    before = float(runner.bound(d.test).mean())
    info = runner.run(0, steps)
    assert np.isfinite(info["objective"])
    return before, float(runner.bound(d.test).mean())


def guide_gradient_draw(name: str, backend: str, x: np.ndarray) -> dict:
    """One draw of the kernel's ``guide_gradient`` on ``x`` after building and starting it."""
    params = net("layered")
    runner = runner_for(get_method(name, backend), params, {}, x, seed=0, batch_size=len(x))
    key = jax.random.PRNGKey(0) if backend == "numpyro" else 0
    state = runner.state
    if backend == "pyro":
        with runner.scope():
            return runner.kernel.guide_gradient(key, state, x)
    return runner.kernel.guide_gradient(key, state, x)


def assert_a_short_fit_raises_the_elbo(name: str, backend: str, steps: int) -> None:
    """:func:`fit_gain`: the held-out ELBO rises by more than 1 nat in ``steps`` steps."""
    before, after = fit_gain(name, backend, steps)
    assert after > before + 1.0, (before, after)


def assert_the_kernel_draws_the_guide_gradient(name: str, backend: str) -> None:
    """:func:`guide_gradient_draw` on the layered net's data: one finite array per ``q_`` array
    of the net, of its shape."""
    grads = guide_gradient_draw(name, backend, data("layered"))
    params = net("layered")
    assert set(grads) == {k for k in params if k.startswith("q_")}
    assert all(np.shape(grads[k]) == params[k].shape and np.all(np.isfinite(grads[k])) for k in grads)
