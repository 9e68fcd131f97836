"""Concrete in JAX (the math: this folder's ``__init__``; the twin: ``pyro.py``).

Own tricks: the relaxed bound in logit space (:func:`~..shared.relaxation.numpyro.concrete_objective`),
one flat uniform draw a step, one optax optimiser over theta and phi.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.base.optimizers import optax_optimizer
from sbn_ppl.base.params import SBNParams, generative_keys, recognition_keys
from sbn_ppl.inference.shared.elbo.numpyro import elbo_estimate
from sbn_ppl.inference.shared.gradient.numpyro import gradient_kernel
from sbn_ppl.inference.shared.relaxation.numpyro import concrete_objective, draw_uniforms, logistic, per_layer

BOUND_SAMPLES = 16  # single-sample ELBOs averaged by the method's bound


class RelaxedState(NamedTuple):
    """The trained generative and recognition arrays (one dict) and the optimiser's state."""

    params: dict
    opt_state: Any


class RelaxedInfo(NamedTuple):
    objective: jax.Array  # mean over the batch of the relaxed single-sample bound


def relaxed_loss(params, key, x, arch: Architecture, temperature, prior_temperature, density):
    """``-(1/B) sum_n L~_n`` on the batch ``x`` with fresh logistic noise from ``key``."""
    noise = per_layer(logistic(draw_uniforms(key, arch, x.shape[0], 1)[0]), arch)
    value = concrete_objective(arch, params, x, noise, temperature, prior_temperature, density).mean()
    return -value, RelaxedInfo(jax.lax.stop_gradient(value))


def build(arch: Architecture, options: dict) -> Kernel:
    """The Concrete :class:`~sbn_ppl.base.methods.Kernel` (options ``lr``, ``optimizer``,
    ``lr_half_life``, ``temperature``, ``prior_temperature``, ``relaxed_density``)."""
    optimizer = optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"],
                                options["lr_schedule"])
    settings = dict(arch=arch, temperature=float(options["temperature"]),
                    prior_temperature=float(options["prior_temperature"]), density=options["relaxed_density"])

    def start(key, params: SBNParams, train=None):
        params = params.with_guide("recognition", int(jax.random.randint(key, (), 0, 2**31 - 1)))
        trained = {k: jnp.asarray(params[k]) for k in generative_keys(arch) + recognition_keys(arch)}
        return RelaxedState(trained, optimizer.init(trained)), jax.random.fold_in(key, 1)

    def update(key, state: RelaxedState, batch: Batch):
        grads, info = jax.grad(relaxed_loss, has_aux=True)(state.params, key, batch.x, **settings)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return RelaxedState(optax.apply_updates(state.params, updates), opt_state), info

    def guide_gradient(key, state, x):
        """One draw of the pathwise gradient of the relaxed bound (ascent) in the recognition arrays."""
        grads = jax.grad(relaxed_loss, has_aux=True)(state.trained.params, key, jnp.asarray(x), **settings)[0]
        return {k: -grads[k] for k in recognition_keys(arch)}

    kernel = gradient_kernel(arch, start, update, lambda key, p, x: elbo_estimate(key, arch, p, x, BOUND_SAMPLES))
    return kernel._replace(guide_gradient=guide_gradient)
