"""Straight-through Gumbel in JAX (the math: this folder's ``__init__``; the twin: ``pyro.py``).

Own tricks: ``b + s - sg(s)`` keeps the forward value exactly binary; one flat uniform draw a
step, one optax optimiser over theta and phi.
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
from sbn_ppl.inference.shared.relaxation.numpyro import (draw_uniforms, logistic, per_layer,
                                                         straight_through_objective)

BOUND_SAMPLES = 16  # single-sample ELBOs averaged by the method's bound


class StraightThroughState(NamedTuple):
    """The trained generative and recognition arrays (one dict) and the optimiser's state."""

    params: dict
    opt_state: Any


class StraightThroughInfo(NamedTuple):
    objective: jax.Array  # mean over the batch of the discrete single-sample ELBO at the hard draws


def straight_through_loss(params, key, x, arch: Architecture, temperature):
    """``-(1/B) sum_n [log p(x_n, b_n) - log q(b_n | x_n)]`` at hard draws with fresh noise from
    ``key``; its gradient is the straight-through one."""
    noise = per_layer(logistic(draw_uniforms(key, arch, x.shape[0], 1)[0]), arch)
    value = straight_through_objective(arch, params, x, noise, temperature).mean()
    return -value, StraightThroughInfo(jax.lax.stop_gradient(value))


def build(arch: Architecture, options: dict) -> Kernel:
    """The straight-through :class:`~sbn_ppl.base.methods.Kernel` (options ``lr``, ``optimizer``,
    ``lr_half_life``, ``temperature``)."""
    optimizer = optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"],
                                options["lr_schedule"])
    temperature = float(options["temperature"])

    def start(key, params: SBNParams, train=None):
        params = params.with_guide("recognition", int(jax.random.randint(key, (), 0, 2**31 - 1)))
        trained = {k: jnp.asarray(params[k]) for k in generative_keys(arch) + recognition_keys(arch)}
        return StraightThroughState(trained, optimizer.init(trained)), jax.random.fold_in(key, 1)

    def update(key, state: StraightThroughState, batch: Batch):
        grads, info = jax.grad(straight_through_loss, has_aux=True)(state.params, key, batch.x, arch, temperature)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return StraightThroughState(optax.apply_updates(state.params, updates), opt_state), info

    def guide_gradient(key, state, x):
        """One draw of the straight-through gradient (ascent) in the recognition arrays."""
        grads = jax.grad(straight_through_loss, has_aux=True)(state.trained.params, key, jnp.asarray(x), arch,
                                                              temperature)[0]
        return {k: -grads[k] for k in recognition_keys(arch)}

    kernel = gradient_kernel(arch, start, update, lambda key, p, x: elbo_estimate(key, arch, p, x, BOUND_SAMPLES))
    return kernel._replace(guide_gradient=guide_gradient)
