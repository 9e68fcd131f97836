"""Reweighted wake-sleep and classic wake-sleep in pure JAX on the NumPyro model's densities
(the math: this folder's ``__init__``; the twin: ``pyro.py``).

Own tricks: wake-theta and the phi mix are the gradients of one surrogate (their theta and phi
parts do not mix), so one jitted step and one optax optimiser take both; the particles,
weights, dreams and losses come from :mod:`sbn_ppl.inference.shared.particles.numpyro`.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.base.optimizers import optax_optimizer
from sbn_ppl.inference.shared.gradient.numpyro import gradient_kernel
from sbn_ppl.inference.shared.particles.numpyro import (effective_sample_size, iwae_bound, sample_guide, sample_model,
                                                       sleep_loss, wake_losses)
from sbn_ppl.base.params import SBNParams, generative_keys, recognition_keys


class RWSState(NamedTuple):
    """The trained parameters (generative ``b_``/``W_`` and recognition ``q_`` arrays) and
    the optimiser's state."""

    params: dict
    opt_state: Any


class RWSInfo(NamedTuple):
    objective: jax.Array  # mean over the batch of log (1/K) sum_k w_nk
    wake_theta_loss: jax.Array
    phi_loss: jax.Array
    ess: jax.Array  # mean over the batch of the per-point effective sample size (1..K)


# -- the loss ------------------------------------------------------------------------------


def surrogate_loss(params, key, x, arch: Architecture, k: int, insomnia: float, num_sleep: int):
    """``wake_theta_loss + phi_loss`` for one batch, whose gradient is the RWS step direction
    (theta: wake-theta; phi: the insomnia mix), and the step's :class:`RWSInfo`.

    :param params: generative and recognition arrays; ``key``: PRNG key; ``x``: the batch (B, D);
        ``k``: particles per data point; ``num_sleep``: dreams per data point.
    """
    key_wake, key_sleep = jax.random.split(key)
    layers, log_q = sample_guide(key_wake, arch, params, x, (k,))
    theta_loss, wake_phi, log_w = wake_losses(arch, params, layers, log_q)
    phi_loss = insomnia * wake_phi if insomnia > 0 else 0.0
    if insomnia < 1:
        dreams = sample_model(key_sleep, arch, jax.lax.stop_gradient(params), (num_sleep, x.shape[0]))
        phi_loss = phi_loss + (1.0 - insomnia) * sleep_loss(arch, params, dreams)
    ess = effective_sample_size(log_w).mean()  # per data point (sum w)^2 / sum w^2, averaged
    return theta_loss + phi_loss, RWSInfo(-theta_loss, theta_loss, phi_loss, ess)


# -- the kernel ----------------------------------------------------------------------------


def init(params: SBNParams, optimizer: optax.GradientTransformation) -> RWSState:
    """The trainable arrays (generative + recognition) of ``params`` and the optimiser state."""
    arch = params.architecture
    missing = [k for k in recognition_keys(arch) if k not in params]
    if missing:
        raise ValueError(f"RWS needs the recognition network's parameters; missing {missing[:3]}")
    trainable = {k: jnp.asarray(params[k]) for k in generative_keys(arch) + recognition_keys(arch)}
    return RWSState(trainable, optimizer.init(trainable))


def rws_step(key, state: RWSState, x, *, arch: Architecture, optimizer: optax.GradientTransformation,
             k: int, insomnia: float, num_sleep_particles: int | None = None):
    """One reweighted wake-sleep step on a batch ``x`` (B, D).

    :param key: PRNG key for the particles and the dreams.
    :param state: :class:`RWSState`.
    :param x: the batch of binary data points.
    :param arch: the network's :class:`~sbn_ppl.base.architecture.Architecture` (static).
    :param optimizer: an optax transformation; theta descends the wake-theta loss and phi the phi loss.
    :param k: particles per data point K; ``insomnia``: weight of wake-phi against sleep-phi;
        ``num_sleep_particles``: dreams per data point S (default K).
    :returns: ``(state, RWSInfo)``.
    """
    num_sleep = k if num_sleep_particles is None else num_sleep_particles
    grads, info = jax.grad(surrogate_loss, has_aux=True)(state.params, key, x, arch, k, insomnia, num_sleep)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return RWSState(optax.apply_updates(state.params, updates), opt_state), info


# -- the methods ----------------------------------------------------------------------------


def build(arch: Architecture, options: dict, *, k: int, insomnia: float, num_sleep_particles: int | None) -> Kernel:
    """The RWS :class:`~sbn_ppl.base.methods.Kernel` for ``arch``, the checked ``options``
    (``lr``, ``optimizer``, ``lr_half_life``) and the estimator's ``k``, ``insomnia`` and
    ``num_sleep_particles``. ``init`` adds a recognition network at its default initialisation
    (seeded from the key) if ``params`` has none and checks ``train``, when given, as the Pyro
    twin does (binary, no NaN, the model's width); ``bound`` is the per-point IWAE bound with
    the method's K (seeded); ``guide_gradient`` one draw of the phi step (ascent); ``info`` is
    :class:`RWSInfo`."""
    optimizer = optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"],
                                options["lr_schedule"])
    k, insomnia = int(k), float(insomnia)

    def start(key, params: SBNParams, train=None):
        if train is not None:
            validate_binary(np.asarray(train), width=arch.visible_size, name="training data")
        params = params.with_guide("recognition", int(jax.random.randint(key, (), 0, 2**31 - 1)))
        return init(params, optimizer), jax.random.fold_in(key, 1)

    def update(key, state: RWSState, batch: Batch):
        return rws_step(key, state, batch.x, arch=arch, optimizer=optimizer, k=k, insomnia=insomnia,
                        num_sleep_particles=num_sleep_particles)

    def guide_gradient(key, state: RWSState, x):
        """One draw of the phi step (wake-phi / sleep-phi mix; ascent) on the batch ``x``."""
        num_sleep = k if num_sleep_particles is None else num_sleep_particles
        grads, _ = jax.grad(surrogate_loss, has_aux=True)(state.params, key, x, arch, k, insomnia, num_sleep)
        return {name: -grads[name] for name in recognition_keys(arch)}

    return gradient_kernel(arch, start, update, lambda key, params, x: iwae_bound(key, arch, params, x, k),
                           guide_gradient=guide_gradient)


def build_rws(arch: Architecture, options: dict) -> Kernel:
    """Reweighted wake-sleep with the options' ``k``, ``insomnia`` and ``num_sleep_particles``."""
    return build(arch, options, k=options["k"], insomnia=options["insomnia"],
                 num_sleep_particles=options["num_sleep_particles"])


def build_wake_sleep(arch: Architecture, options: dict) -> Kernel:
    """Classic wake-sleep (Hinton et al. 1995): K = 1, sleep-phi only, one dream per data point."""
    return build(arch, options, k=1, insomnia=0.0, num_sleep_particles=1)
