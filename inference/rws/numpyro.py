"""Reweighted wake-sleep and classic wake-sleep in pure JAX, on the NumPyro model's densities.

The algorithm is one pure, jittable kernel ``rws_step(key, state, x, ...) -> (state, info)``
(BlackJAX style); :func:`rws_method` and :func:`wake_sleep_method` are the
:class:`~sbn_ppl.base.methods.Method` records around it (the runner owns the loop and the batches).

Math (Bornschein & Bengio 2015; Le et al. 2019), for a batch of B data points, with K
particles ``h_nk ~ q(. | x_n)`` from the recognition network and ``log w_nk = log p(x_n,
h_nk) - log q(h_nk | x_n)`` (the densities of :mod:`sbn_ppl.models.numpyro_sbn`):

    objective    (1/B) sum_n log (1/K) sum_k w_nk          (IWAE bound; K = 1: the ELBO estimate)
    wake-theta   gradient of the objective in theta  =  (1/B) sum_n sum_k w~_nk grad log p(x_n, h_nk)
    wake-phi     (1/B) sum_n sum_k w~_nk grad log q(h_nk | x_n)
    sleep-phi    (1/(S B)) sum grad log q(h | x),  (x, h) ~ p  (S dreams per data point)
    phi step     insomnia * wake-phi + (1 - insomnia) * sleep-phi

Classic wake-sleep (Hinton et al. 1995) is K = 1, insomnia = 0, S = 1.
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
from sbn_ppl.inference.rws import RWS_OPTIONS, WAKE_SLEEP_OPTIONS
from sbn_ppl.base.methods import Batch, Method, Static, by_chunks
from sbn_ppl.base.optimizers import optax_optimizer
from sbn_ppl.models.numpyro_sbn import bernoulli_log_prob, log_joint, preactivation, recognition_logits
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


# -- densities and samplers ----------------------------------------------------------------


def sample_guide(key, arch: Architecture, phi, x, k: int):
    """``h ~ q(. | x)`` bottom-up: ``[x, h1 (K, B, n1), ..., hL]`` and the ``(K, B)`` ``log q``.

    ``x`` (B, D) stays unbroadcast: its products with the weights are computed once, not K times.
    """
    layers, log_q = [x], 0.0
    for l, key_l in zip(range(1, arch.num_layers + 1), jax.random.split(key, arch.num_layers)):
        logits = recognition_logits(arch, phi, layers, l)
        shape = (k, x.shape[0], arch.sizes[l])
        h = (jax.random.uniform(key_l, shape) < jax.nn.sigmoid(logits)).astype(x.dtype)
        log_q = log_q + bernoulli_log_prob(h, logits).sum(-1)  # log q(h_l | below), summed over units
        layers.append(h)
    return layers, log_q


def guide_log_prob(arch: Architecture, phi, layers):
    """``log q(h | x) = sum_l sum_i log Bernoulli(h_li | sigma(q_b_l + below @ q_W))``."""
    return sum(bernoulli_log_prob(layers[l], recognition_logits(arch, phi, layers, l)).sum(-1)
               for l in range(1, arch.num_layers + 1))


def sample_model(key, arch: Architecture, theta, shape: tuple[int, ...]):
    """Ancestral ``(x, h) ~ p`` (the sleep phase's dreams): layers of shape ``shape + (n_l,)``."""
    layers: list = [None] * (arch.num_layers + 1)
    for l, key_l in zip(range(arch.num_layers, -1, -1), jax.random.split(key, arch.num_layers + 1)):
        a = preactivation(arch, theta, layers, l)
        layers[l] = (jax.random.uniform(key_l, shape + (arch.sizes[l],)) < jax.nn.sigmoid(a)).astype(jnp.float32)
    return layers


def wake_losses(arch: Architecture, params, layers, log_q=None):
    """Wake-theta and wake-phi surrogate losses (per data point) for given particles.

    :param params: generative and recognition arrays.
    :param layers: ``[x (B, D), h1 (K, B, n1), ...]``, the particles ``h_nk``.
    :param log_q: ``log q(h_nk | x_n)`` if already computed with ``params`` (else recomputed).
    :returns: ``(wake_theta_loss, wake_phi_loss, log_w)``, ``log_w`` of shape ``(K, B)``.
    """
    k = layers[1].shape[0]
    log_q = guide_log_prob(arch, params, layers) if log_q is None else log_q
    log_w = log_joint(arch, params, layers) - jax.lax.stop_gradient(log_q)  # theta-gradient via log p only
    log_sum_w = jax.nn.logsumexp(log_w, axis=0)  # (B,): per data point, never over the batch
    bound = log_sum_w - math.log(k)  # log (1/K) sum_k w_nk
    w_norm = jax.lax.stop_gradient(jnp.exp(log_w - log_sum_w))  # w~_nk
    return -bound.mean(), -(w_norm * log_q).sum(0).mean(), log_w


def sleep_loss(arch: Architecture, phi, dreams):
    """Sleep-phi surrogate: ``-mean log q(h | x)`` over dreams ``(x, h) ~ p``."""
    return -guide_log_prob(arch, phi, [jax.lax.stop_gradient(d) for d in dreams]).mean()


def surrogate_loss(params, key, x, arch: Architecture, k: int, insomnia: float, num_sleep: int):
    """``wake_theta_loss + phi_loss`` for one batch, whose gradient is the RWS step direction
    (theta: wake-theta; phi: the insomnia mix), and the step's :class:`RWSInfo`.

    :param params: generative and recognition arrays; ``key``: PRNG key; ``x``: the batch (B, D);
        ``k``: particles per data point; ``num_sleep``: dreams per data point.
    """
    key_wake, key_sleep = jax.random.split(key)
    layers, log_q = sample_guide(key_wake, arch, params, x, k)
    theta_loss, wake_phi, log_w = wake_losses(arch, params, layers, log_q)
    phi_loss = insomnia * wake_phi if insomnia > 0 else 0.0
    if insomnia < 1:
        dreams = sample_model(key_sleep, arch, jax.lax.stop_gradient(params), (num_sleep, x.shape[0]))
        phi_loss = phi_loss + (1.0 - insomnia) * sleep_loss(arch, params, dreams)
    # effective sample size per data point, (sum w)^2 / sum w^2, in log space
    ess = jnp.exp(2 * jax.nn.logsumexp(log_w, 0) - jax.nn.logsumexp(2 * log_w, 0)).mean()
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


def iwae_bound(key, arch: Architecture, params, x, k: int):
    """Per-data-point ``log (1/K) sum_k w_nk`` with ``h_nk ~ q(. | x_n)``: ``(B,)``."""
    layers, log_q = sample_guide(key, arch, params, x, k)
    log_w = log_joint(arch, params, layers) - log_q
    return jax.nn.logsumexp(log_w, axis=0) - math.log(k)


# -- the methods ----------------------------------------------------------------------------


class Config(NamedTuple):
    """What a jitted step needs to know (static: hashable, carried in the state)."""

    arch: Architecture
    optimizer: optax.GradientTransformation
    k: int
    insomnia: float
    num_sleep_particles: int | None


class MethodState(NamedTuple):
    """``rws``: the trained arrays and the optimiser's state; ``bound_key``: the key of the
    method's own bound; ``config``: :class:`Config` (static)."""

    rws: RWSState
    bound_key: jax.Array
    config: Static


def init_state(key, params: SBNParams, options: dict, train=None, *, k: int, insomnia: float,
               num_sleep_particles: int | None) -> MethodState:
    """The method's state from ``params`` (a recognition network at its default
    initialisation if ``params`` has none) and the checked ``options`` (``lr``, ``optimizer``).
    ``train``, when given, is checked as the Pyro twin checks it (binary, no NaN, the model's width)."""
    arch = params.architecture
    if train is not None:
        validate_binary(np.asarray(train), width=arch.visible_size, name="training data")
    params = params.with_guide("recognition", int(jax.random.randint(key, (), 0, 2**31 - 1)))
    optimizer = optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"])
    config = Config(arch, optimizer, int(k), float(insomnia), num_sleep_particles)
    return MethodState(init(params, optimizer), jax.random.fold_in(key, 1), Static(config))


def step(key, state: MethodState, batch: Batch):
    """One RWS step on ``batch.x`` with the configuration carried in ``state``."""
    c = state.config.value
    rws, info = rws_step(key, state.rws, batch.x, arch=c.arch, optimizer=c.optimizer, k=c.k, insomnia=c.insomnia,
                         num_sleep_particles=c.num_sleep_particles)
    return state._replace(rws=rws), info


def get_params(state: MethodState) -> SBNParams:
    arch = state.config.value.arch
    return SBNParams.from_arrays(arch, state.rws.params)


_jitted_bound = jax.jit(iwae_bound, static_argnames=("arch", "k"))


def bound(state: MethodState, x, chunk: int = 1000) -> np.ndarray:
    """Per-data-point IWAE bound ``log (1/K) sum_k w_nk`` with the method's K (seeded)."""
    c = state.config.value
    x = validate_binary(x, width=c.arch.visible_size, name="data")
    return by_chunks(lambda i, rows: _jitted_bound(jax.random.fold_in(state.bound_key, i), c.arch, state.rws.params,
                                                   jnp.asarray(rows), c.k), x, chunk)


def rws_method() -> Method:
    """Reweighted wake-sleep, per-data-point weights, jitted JAX on the NumPyro model's densities.

    ``info``: :class:`RWSInfo` (``objective``: the batch's mean per-data-point bound
    ``log (1/K) sum_k w_nk``; ``ess``: the mean per-point effective sample size).
    """

    def init_(key, params, options, train=None):
        return init_state(key, params, options, train, k=options["k"], insomnia=options["insomnia"],
                          num_sleep_particles=options["num_sleep_particles"])

    return Method("rws", "numpyro", init_, step, get_params, guide="recognition", bound=bound, options=RWS_OPTIONS,
                  description="reweighted wake-sleep (Bornschein & Bengio 2015), per-data-point weights, JAX")


def wake_sleep_method() -> Method:
    """Classic wake-sleep (Hinton et al. 1995): K = 1, sleep-phi only, one dream per data point; jitted JAX."""

    def init_(key, params, options, train=None):
        return init_state(key, params, options, train, k=1, insomnia=0.0, num_sleep_particles=1)

    return Method("wake-sleep", "numpyro", init_, step, get_params, guide="recognition", bound=bound,
                  options=WAKE_SLEEP_OPTIONS, description="wake-sleep (Hinton et al. 1995), JAX")
