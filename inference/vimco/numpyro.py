"""VIMCO in pure JAX, on the NumPyro model's densities (Mnih & Rezende 2016).

The algorithm is one pure, jittable kernel ``vimco_step(key, state, x, ...) -> (state, info)``
(BlackJAX style); :func:`vimco_method` is the :class:`~sbn_ppl.base.methods.Method` record around
it (the runner owns the loop and the batches).

Math, for a batch of B data points, with K particles ``h_nk ~ q(. | x_n)`` from the
recognition network and ``log w_nk = log p(x_n, h_nk) - log q(h_nk | x_n)`` (the densities
of :mod:`sbn_ppl.models.numpyro_sbn`), per data point and never across the batch:

    L_n       = log (1/K) sum_k w_nk                                       (the K-sample bound)
    L_n,-k    = log (1/K) (sum_{j != k} w_nj + w^_n,-k),  log w^_n,-k = mean_{j != k} log w_nj
    theta     (1/B) sum_n sum_k w~_nk grad log p(x_n, h_nk)                 (= grad_theta L_n)
    phi       (1/B) sum_n sum_k [(L_n - L_n,-k) - w~_nk] grad log q(h_nk | x_n)
    objective (1/B) sum_n L_n

Both gradients are the gradient of one surrogate (:func:`vimco_surrogate`) whose value is
``L_n``: the bound itself plus ``sum_k sg(L_n - L_n,-k) (log q_nk - sg(log q_nk))`` (``sg``:
stop-gradient; the added term is zero in value). ``L_n,-k`` does not depend on ``h_nk``, so
the learning signal is an unbiased estimate of ``grad E[L_n]`` with a per-sample baseline.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.inference.vimco import VIMCO_OPTIONS
from sbn_ppl.base.methods import Batch, Method, Static, by_chunks
from sbn_ppl.models.numpyro_sbn import bernoulli_log_prob, log_joint, recognition_logits
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


def sample_guide(key, arch: Architecture, phi, x, k: int):
    """``h ~ q(. | x)`` bottom-up: ``[x, h1 (K, B, n1), ..., hL]`` and the ``(K, B)`` ``log q``.

    ``x`` (B, D) stays unbroadcast: its products with the weights are computed once, not K times.
    The uniforms of every layer are drawn at once (one random-bits kernel to compile, not L).
    """
    layers, log_q = [x], 0.0
    u = jax.random.uniform(key, (k, x.shape[0], sum(arch.sizes[1:])))
    cuts = np.cumsum((0,) + tuple(arch.sizes[1:]))
    for l in range(1, arch.num_layers + 1):
        logits = recognition_logits(arch, phi, layers, l)
        h = (u[..., cuts[l - 1]:cuts[l]] < jax.nn.sigmoid(logits)).astype(x.dtype)
        log_q = log_q + bernoulli_log_prob(h, logits).sum(-1)  # log q(h_l | below), summed over units
        layers.append(h)
    return layers, log_q


def guide_log_prob(arch: Architecture, phi, layers):
    """``log q(h | x) = sum_l sum_i log Bernoulli(h_li | sigma(q_b_l + below @ q_W))``."""
    return sum(bernoulli_log_prob(layers[l], recognition_logits(arch, phi, layers, l)).sum(-1)
               for l in range(1, arch.num_layers + 1))


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
    bound = jax.nn.logsumexp(log_w, axis=0) - math.log(log_w.shape[0])  # (B,): per data point
    signal = jax.lax.stop_gradient(bound[None] - leave_one_out_bounds(log_w))  # (K, B)
    score = (signal * (log_q - jax.lax.stop_gradient(log_q))).sum(0)  # zero in value
    return bound + score, log_w


def particle_surrogate(arch: Architecture, params, layers, log_q=None):
    """:func:`vimco_surrogate` at given particles ``layers = [x (B, D), h1 (K, B, n1), ...]``.

    :param log_q: ``log q(h_nk | x_n)`` if already computed with ``params`` (else recomputed).
    """
    log_q = guide_log_prob(arch, params, layers) if log_q is None else log_q
    return vimco_surrogate(log_joint(arch, params, layers), log_q)


def effective_sample_size(log_w):
    """``(sum_k w_k)^2 / sum_k w_k^2`` per data point, in log space: ``(B,)`` from ``(K, B)``."""
    return jnp.exp(2 * jax.nn.logsumexp(log_w, 0) - jax.nn.logsumexp(2 * log_w, 0))


def surrogate_loss(params, key, x, arch: Architecture, k: int):
    """``-(1/B) sum_n S_n`` for one batch ``x`` (B, D) with K fresh particles per point
    (its gradient: minus the VIMCO step direction), and the step's :class:`VIMCOInfo`."""
    layers, log_q = sample_guide(key, arch, params, x, k)
    s, log_w = particle_surrogate(arch, params, layers, log_q)
    objective = jax.lax.stop_gradient(s).mean()
    return -s.mean(), VIMCOInfo(objective, effective_sample_size(jax.lax.stop_gradient(log_w)).mean())


def bound_per_point(key, arch: Architecture, params, x, k: int):
    """``L_n = log (1/K) sum_k w_nk`` with ``h_nk ~ q(. | x_n)``: ``(B,)``."""
    layers, log_q = sample_guide(key, arch, params, x, k)
    log_w = log_joint(arch, params, layers) - log_q
    return jax.nn.logsumexp(log_w, axis=0) - math.log(k)


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


class Config(NamedTuple):
    """What a jitted step needs to know (static: hashable, carried in the state)."""

    arch: Architecture
    optimizer: optax.GradientTransformation
    k: int


class MethodState(NamedTuple):
    """``vimco``: the trained arrays and the optimiser's state; ``bound_key``: the key of the
    method's own bound; ``config``: :class:`Config` (static)."""

    vimco: VIMCOState
    bound_key: jax.Array
    config: Static


def init_state(key, params: SBNParams, options: dict, train=None) -> MethodState:
    """The method's state from ``params`` (a recognition network at its default
    initialisation if ``params`` has none) and the checked ``options`` (``lr``,
    ``optimizer``, ``k``)."""
    arch = params.architecture
    params = params.with_guide("recognition", int(jax.random.randint(key, (), 0, 2**31 - 1)))
    optimizer = optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"])
    config = Config(arch, optimizer, int(options["k"]))
    return MethodState(init(params, optimizer), jax.random.fold_in(key, 1), Static(config))


def step(key, state: MethodState, batch: Batch):
    """One VIMCO step on ``batch.x`` with the configuration carried in ``state``."""
    c = state.config.value
    vimco, info = vimco_step(key, state.vimco, batch.x, arch=c.arch, optimizer=c.optimizer, k=c.k)
    return state._replace(vimco=vimco), info


def get_params(state: MethodState) -> SBNParams:
    """The generative and recognition arrays (no other guide's)."""
    arch = state.config.value.arch
    return SBNParams.from_arrays(arch, state.vimco.params)


_jitted_bound = jax.jit(bound_per_point, static_argnames=("arch", "k"))


def bound(state: MethodState, x, chunk: int = 1000) -> np.ndarray:
    """Per-data-point K-sample bound ``L_n`` with the method's K (seeded by the state)."""
    c = state.config.value
    x = validate_binary(x, width=c.arch.visible_size, name="data")
    return by_chunks(lambda i, rows: _jitted_bound(jax.random.fold_in(state.bound_key, i), c.arch,
                                                   state.vimco.params, jnp.asarray(rows), c.k), x, chunk)


def vimco_method() -> Method:
    """VIMCO, per-data-point weights, jitted JAX on the NumPyro model's densities.

    ``info``: :class:`VIMCOInfo` (``objective``: the batch's mean K-sample bound ``L_n``;
    ``ess``: the mean per-point effective sample size).
    """
    return Method("vimco", "numpyro", init_state, step, get_params, guide="recognition", bound=bound,
                  options=VIMCO_OPTIONS,
                  description="VIMCO (Mnih & Rezende 2016): K-sample bound with leave-one-out baselines, JAX")
