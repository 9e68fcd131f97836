"""VIMCO in pure JAX on the NumPyro model's densities (the math: this folder's ``__init__``;
the twin: ``pyro.py``).

Own tricks: a batch's particles are one ``(K, B)`` array from the shared particle arithmetic
(:mod:`sbn_ppl.inference.shared.particles.numpyro`), and one jitted step descends
``-(1/B) sum_n S_n`` in theta and phi with one optax optimiser.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.inference.shared.gradient.numpyro import gradient_kernel
from sbn_ppl.inference.shared.particles.numpyro import (effective_sample_size, guide_log_prob, iwae_bound, log_mean_exp,
                                                       sample_guide)
from sbn_ppl.models.numpyro_sbn import log_joint
from sbn_ppl.base.optimizers import optax_optimizer
from sbn_ppl.base.params import SBNParams, generative_keys, recognition_keys


class VIMCOState(NamedTuple):
    """The trained parameters (generative ``b_``/``W_`` and recognition ``q_`` arrays, one
    dict: one objective) and the optimiser's state."""

    params: dict
    opt_state: Any


class VIMCOInfo(NamedTuple):
    objective: jax.Array  # mean over the batch of the K-sample bound L_n
    ess: jax.Array  # mean over the batch of the per-point effective sample size (1..K)


# -- the estimator -------------------------------------------------------------------------


def leave_one_out_bounds(log_w):
    """``L_{-k} = log (1/K) (sum_{j != k} w_j + w^_{-k})`` for every k: ``(K, B)`` from ``(K, B)``.

    ``log w^_{-k} = mean_{j != k} log w_j = m + (m - log w_k) / (K - 1)`` (``m``: the mean
    over all K), which never subtracts two large sums. Row k of a ``(K, K, B)`` array is
    ``log w`` with entry k replaced by ``log w^_{-k}``, and ``L_{-k}`` its logsumexp: exact
    in log space however unequal the weights (no ``log(sum - w_k)``). O(K^2 B), small next
    to the densities' O(K B D H).
    """
    k = log_w.shape[0]
    if k < 2:
        raise ValueError(f"VIMCO needs K >= 2 particles per data point (the baselines are the others'), got {k}")
    mean = log_w.mean(0)
    log_w_hat = mean + (mean - log_w) / (k - 1)
    rows = jnp.where(jnp.eye(k, dtype=bool)[:, :, None], log_w_hat[:, None, :], log_w[None, :, :])
    return jax.nn.logsumexp(rows, axis=1) - math.log(k)


def vimco_surrogate(log_p, log_q):
    """The per-point surrogate ``S_n`` (``(B,)``) and ``log w`` (``(K, B)``), from ``(K, B)`` densities.

    ``S_n = L_n + sum_k sg(L_n - L_n,-k) (log q_nk - sg(log q_nk))``: its value is the bound
    ``L_n = log (1/K) sum_k w_nk`` and its gradient the VIMCO estimator (module docstring):
    through ``L_n``, ``sum_k w~_nk grad (log p_nk - log q_nk)``; through the second term,
    the learning signals ``L_n - L_n,-k`` on ``grad log q_nk``.
    """
    log_w = log_p - log_q
    bound = log_mean_exp(log_w)  # (B,): per data point
    signal = jax.lax.stop_gradient(bound[None] - leave_one_out_bounds(log_w))  # (K, B)
    score = (signal * (log_q - jax.lax.stop_gradient(log_q))).sum(0)  # zero in value
    return bound + score, log_w


def particle_surrogate(arch: Architecture, params, layers, log_q=None):
    """:func:`vimco_surrogate` at given particles ``layers = [x (B, D), h1 (K, B, n1), ...]``.

    :param log_q: ``log q(h_nk | x_n)`` if already computed with ``params`` (else recomputed).
    """
    log_q = guide_log_prob(arch, params, layers) if log_q is None else log_q
    return vimco_surrogate(log_joint(arch, params, layers), log_q)


def surrogate_loss(params, key, x, arch: Architecture, k: int):
    """``-(1/B) sum_n S_n`` for one batch ``x`` (B, D) with K fresh particles per point
    (its gradient: minus the VIMCO step direction), and the step's :class:`VIMCOInfo`."""
    layers, log_q = sample_guide(key, arch, params, x, (k,))
    s, log_w = particle_surrogate(arch, params, layers, log_q)
    objective = jax.lax.stop_gradient(s).mean()
    return -s.mean(), VIMCOInfo(objective, effective_sample_size(jax.lax.stop_gradient(log_w)).mean())


# -- the kernel ----------------------------------------------------------------------------


def init(params: SBNParams, optimizer: optax.GradientTransformation) -> VIMCOState:
    """The trainable arrays (generative + recognition) of ``params`` and the optimiser state."""
    arch = params.architecture
    missing = [name for name in recognition_keys(arch) if name not in params]
    if missing:
        raise ValueError(f"VIMCO needs the recognition network's parameters; missing {missing[:3]}")
    trainable = {name: jnp.asarray(params[name]) for name in generative_keys(arch) + recognition_keys(arch)}
    return VIMCOState(trainable, optimizer.init(trainable))


def vimco_step(key, state: VIMCOState, x, *, arch: Architecture, optimizer: optax.GradientTransformation, k: int):
    """One VIMCO step on a batch ``x`` (B, D): theta and phi up the one surrogate's gradient.

    :param key: PRNG key for the particles.
    :param state: :class:`VIMCOState`.
    :param x: the batch of binary data points.
    :param arch: the network's :class:`~sbn_ppl.base.architecture.Architecture` (static).
    :param optimizer: an optax transformation (it descends ``-(1/B) sum_n S_n``).
    :param k: particles per data point K >= 2 (static).
    :returns: ``(state, VIMCOInfo)``.
    """
    grads, info = jax.grad(surrogate_loss, has_aux=True)(state.params, key, x, arch, k)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return VIMCOState(optax.apply_updates(state.params, updates), opt_state), info


# -- the method ----------------------------------------------------------------------------


def build(arch: Architecture, options: dict) -> Kernel:
    """The VIMCO :class:`~sbn_ppl.base.methods.Kernel` for ``arch`` and the checked ``options``
    (``lr``, ``optimizer``, ``lr_half_life``, ``k``). ``init`` adds a recognition network at its
    default initialisation (seeded from the key) if ``params`` has none; ``bound`` is the
    per-point K-sample bound ``L_n`` with the method's K (seeded); ``guide_gradient`` one draw of
    the estimator in phi (ascent); ``info`` is :class:`VIMCOInfo`."""
    optimizer = optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"],
                                options["lr_schedule"])
    k = int(options["k"])

    def start(key, params: SBNParams, train=None):
        params = params.with_guide("recognition", int(jax.random.randint(key, (), 0, 2**31 - 1)))
        return init(params, optimizer), jax.random.fold_in(key, 1)

    def update(key, state: VIMCOState, batch: Batch):
        return vimco_step(key, state, batch.x, arch=arch, optimizer=optimizer, k=k)

    def guide_gradient(key, state: VIMCOState, x):
        """One draw of the VIMCO estimator in phi (ascent) on the batch ``x``."""
        grads, _ = jax.grad(surrogate_loss, has_aux=True)(state.params, key, x, arch, k)
        return {name: -grads[name] for name in recognition_keys(arch)}

    return gradient_kernel(arch, start, update, lambda key, params, x: iwae_bound(key, arch, params, x, k),
                           guide_gradient=guide_gradient)
