"""The ELBO-gradient methods' shared pieces in JAX (the math: this folder's ``__init__``; the
twin: ``pyro.py``): the kernel built from a surrogate, and the antithetic branches of ARM and
DisARM on the shared particle arithmetic.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.lax import stop_gradient

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.base.optimizers import optax_optimizer
from sbn_ppl.base.params import SBNParams, generative_keys, recognition_keys
from sbn_ppl.inference.shared.gradient.numpyro import gradient_kernel
from sbn_ppl.inference.shared.particles.numpyro import (guide_logits, log_weights, sample_guide,
                                                       sample_guide_from_uniforms)
from sbn_ppl.models.numpyro_sbn import log_joint

BOUND_SAMPLES = 10  # the methods' own bound: per data point, the mean of f over 10 draws h ~ q

# surrogate(key, params, x) -> (S (B,), f estimate (B,)): value of S an ELBO estimate, its gradient the method's
Surrogate = Callable[[Any, dict, Any], tuple[Any, Any]]
# logit_gradient(f0, f_anti, u, c, h, h_anti) -> (B, n_l): one layer's estimate of grad_c E[f]
LogitGradient = Callable[..., Any]


class ELBOState(NamedTuple):
    """theta and phi (generative ``b_``/``W_`` and recognition ``q_`` arrays, one dict: one
    objective) and the optimiser's state."""

    params: dict
    opt_state: Any


class ELBOInfo(NamedTuple):
    objective: jax.Array  # mean over the batch of the estimate of the ELBO, log p(x, h) - log q(h | x)


# -- the bound -------------------------------------------------------------------------------------


def elbo_estimate(key, arch: Architecture, params, x, num_samples: int = BOUND_SAMPLES):
    """Per data point, the mean of ``f = log p(x, h) - log q(h | x)`` over ``num_samples`` draws
    ``h ~ q(. | x)``: an unbiased estimate of the ELBO, ``(B,)``."""
    layers, log_q = sample_guide(key, arch, params, x, (num_samples,))
    return log_weights(arch, params, layers, log_q).mean(0)


# -- the antithetic branches (ARM, DisARM) ---------------------------------------------------------


def antithetic_uniforms(u, arch: Architecture):
    """``(L + 1, B, H)`` from the forward pass's uniforms ``u`` ``(B, H)``: branch 0 is ``u``,
    branch ``l`` is ``u`` with layer ``l``'s units replaced by ``1 - u``."""
    cuts = np.cumsum((0,) + tuple(arch.hidden_sizes))
    unit = np.arange(arch.num_hidden)
    flip = np.stack([np.zeros(arch.num_hidden, bool)] +
                    [(unit >= cuts[l - 1]) & (unit < cuts[l]) for l in range(1, arch.num_layers + 1)])
    return jnp.where(flip[:, None, :], 1.0 - u[None], u[None])


def arm_uniform(u, c):
    """The uniform ``u'`` for which the rare-side draw is ``h = [u' < sigma(c)]`` and its
    antithetic ``h~ = [u' > sigma(-c)]``: ``1 - u`` where ``c > 0`` (there the rare side is
    ``h = [u >= sigma(-c)]``), else ``u``."""
    return jnp.where(c > 0, 1.0 - u, u)


def antithetic_surrogate(key, arch: Architecture, params, x, logit_gradient: LogitGradient):
    """The per-point surrogate ``S_n`` of the antithetic estimators (the folder's ``__init__``)
    and the ELBO estimate (mean of ``f`` over the ``L + 1`` branches), ``(B,)`` each.

    :param logit_gradient: ``g_l = logit_gradient(f_0, f_l, u_l, c_l, h_l, h~_l)`` ``(B, n_l)``,
        one draw of ``grad_{c_l} E[f]`` from the forward pass's ``f_0`` and branch ``l``'s ``f_l``
        (``(B,)``), the layer's uniforms ``u_l``, logits ``c_l`` and pair ``h_l, h~_l``.
    """
    u = jax.random.uniform(key, (x.shape[0] * arch.num_hidden,)).reshape(x.shape[0], arch.num_hidden)
    layers, log_q = sample_guide_from_uniforms(antithetic_uniforms(u, arch), arch, params, x)  # (L+1, B, n_l)
    log_p = log_joint(arch, params, layers)  # (L+1, B): theta's gradient, the samples carry none
    f = stop_gradient(log_p - log_q)
    forward = [x] + [h[0] for h in layers[1:]]  # branch 0, the forward pass
    cuts = np.cumsum((0,) + tuple(arch.hidden_sizes))
    score = 0.0
    for l in range(1, arch.num_layers + 1):
        c = guide_logits(arch, params, forward, l)  # c_l at the forward pass's layers below, carries phi
        g = logit_gradient(f[0], f[l], u[:, cuts[l - 1]:cuts[l]], stop_gradient(c), layers[l][0], layers[l][l])
        score = score + (stop_gradient(g) * (c - stop_gradient(c))).sum(-1)  # zero in value
    return (log_p - stop_gradient(log_q)).mean(0) + score, f.mean(0)


# -- the kernel ------------------------------------------------------------------------------------


def surrogate_loss(params, key, x, surrogate: Surrogate):
    """``-(1/B) sum_n S_n`` (its gradient: minus the step direction) and the :class:`ELBOInfo`."""
    s, f = surrogate(key, params, x)
    return -s.mean(), ELBOInfo(f.mean())


def surrogate_kernel(arch: Architecture, options: dict, surrogate: Surrogate, name: str) -> Kernel:
    """The :class:`~sbn_ppl.base.methods.Kernel` of a method whose step descends
    ``-(1/B) sum_n S_n`` in theta and phi with one optax optimiser (``options``: ``lr``,
    ``optimizer``, ``lr_half_life``). ``init`` adds a recognition network at its default
    initialisation (seeded from the key) if ``params`` has none; ``bound`` is the per-point
    ELBO estimated by ``BOUND_SAMPLES`` draws (seeded); ``guide_gradient(key, state, x)`` is one
    draw of the estimator of the gradient of the batch-mean ELBO in phi (ascent, the ``q_``
    arrays)."""
    optimizer = optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"],
                                options["lr_schedule"])
    grad = jax.grad(surrogate_loss, has_aux=True)

    def start(key, params: SBNParams, train=None):
        params = params.with_guide("recognition", int(jax.random.randint(key, (), 0, 2**31 - 1)))
        missing = [k for k in recognition_keys(arch) if k not in params]
        if missing:
            raise ValueError(f"{name} needs the recognition network's parameters; missing {missing[:3]}")
        trained = {k: jnp.asarray(params[k]) for k in generative_keys(arch) + recognition_keys(arch)}
        return ELBOState(trained, optimizer.init(trained)), jax.random.fold_in(key, 1)

    def update(key, state: ELBOState, batch: Batch):
        grads, info = grad(state.params, key, batch.x, surrogate)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return ELBOState(optax.apply_updates(state.params, updates), opt_state), info

    @jax.jit
    def guide_gradient(key, state, x):
        grads, _ = grad(state.trained.params, key, jnp.asarray(x), surrogate)
        return {k: -grads[k] for k in recognition_keys(arch)}

    kernel = gradient_kernel(arch, start, update, lambda key, params, x: elbo_estimate(key, arch, params, x))
    return kernel._replace(guide_gradient=guide_gradient)


def antithetic_kernel(arch: Architecture, options: dict, logit_gradient: LogitGradient, name: str) -> Kernel:
    """:func:`surrogate_kernel` of :func:`antithetic_surrogate` with ``logit_gradient``."""
    return surrogate_kernel(arch, options,
                            lambda key, params, x: antithetic_surrogate(key, arch, params, x, logit_gradient), name)
