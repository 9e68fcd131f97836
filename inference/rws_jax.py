"""Reweighted wake-sleep and classic wake-sleep in pure JAX, on the NumPyro model's densities.

The algorithm is one pure, jittable kernel ``rws_step(key, state, x, ...) -> (state, info)``
(BlackJAX style); :func:`rws_method` and :func:`wake_sleep_method` wrap it for the harness,
running many steps inside one jitted ``jax.lax.fori_loop`` (the data shuffled once per epoch).

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
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sbn_ppl.architecture import Architecture
from sbn_ppl.inference.checks import check_rws_options, check_training_options
from sbn_ppl.methods import Method
from sbn_ppl.models.numpyro_sbn import bernoulli_log_prob, log_joint, preactivation, recognition_logits
from sbn_ppl.params import SBNParams, generative_keys, recognition_keys


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


check_options = check_rws_options  # K >= 1, 0 <= insomnia <= 1, S >= 1


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
    :param arch: the network's :class:`~sbn_ppl.architecture.Architecture` (static).
    :param optimizer: an optax transformation; theta descends the wake-theta loss and phi the phi loss.
    :param k: particles per data point K; ``insomnia``: weight of wake-phi against sleep-phi;
        ``num_sleep_particles``: dreams per data point S (default K).
    :returns: ``(state, RWSInfo)``.
    """
    num_sleep = k if num_sleep_particles is None else num_sleep_particles
    grads, info = jax.grad(surrogate_loss, has_aux=True)(state.params, key, x, arch, k, insomnia, num_sleep)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return RWSState(optax.apply_updates(state.params, updates), opt_state), info


def wake_sleep_step(key, state: RWSState, x, *, arch: Architecture, optimizer: optax.GradientTransformation):
    """One classic wake-sleep step (Hinton et al. 1995): K = 1, sleep-phi only, one dream per data point."""
    return rws_step(key, state, x, arch=arch, optimizer=optimizer, k=1, insomnia=0.0, num_sleep_particles=1)


def iwae_bound(key, arch: Architecture, params, x, k: int):
    """Per-data-point ``log (1/K) sum_k w_nk`` with ``h_nk ~ q(. | x_n)``: ``(B,)``."""
    layers, log_q = sample_guide(key, arch, params, x, k)
    log_w = log_joint(arch, params, layers) - log_q
    return jax.nn.logsumexp(log_w, axis=0) - math.log(k)


# -- harness methods -----------------------------------------------------------------------

_OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd, "rmsprop": optax.rmsprop}


@dataclass(frozen=True)
class JaxRWSMethodState:
    like: SBNParams
    rws: RWSState
    key: jax.Array
    train: jax.Array
    order: jax.Array  # this epoch's permutation of the data
    cursor: jax.Array  # next position in ``order``
    run_fn: Any
    bound_fn: Any
    k: int
    seed: int


def _check_training_options(lr, batch_size, optimizer):
    check_training_options(lr, batch_size, optimizer, _OPTIMIZERS)


def _make_run(step, batch_size: int):
    """``num_steps`` steps in one jitted ``lax.fori_loop`` (the count is traced, so any number
    of steps reuses one compilation); batches walk an epoch's permutation of the data."""

    def one(_, carry):
        rws, key, order, cursor, train, info_sum = carry
        key, key_step, key_perm = jax.random.split(key, 3)
        n = train.shape[0]
        new_epoch = cursor + batch_size > n
        order = jax.lax.cond(new_epoch, lambda: jax.random.permutation(key_perm, n), lambda: order)
        cursor = jnp.where(new_epoch, 0, cursor)
        x = train[jax.lax.dynamic_slice_in_dim(order, cursor, batch_size)]
        rws, info = step(key_step, rws, x)
        info_sum = jax.tree_util.tree_map(jnp.add, info_sum, info)
        return rws, key, order, cursor + batch_size, train, info_sum

    @jax.jit
    def run(rws, key, order, cursor, train, num_steps):
        zero = RWSInfo(*(jnp.zeros(()) for _ in RWSInfo._fields))
        rws, key, order, cursor, _, info_sum = jax.lax.fori_loop(
            0, num_steps, one, (rws, key, order, cursor, train, zero))
        return rws, key, order, cursor, jax.tree_util.tree_map(lambda v: v / num_steps, info_sum)

    return run


@lru_cache(maxsize=32)
def _compiled(arch: Architecture, optimizer: str, lr: float, step_options: tuple, batch_size: int, k: int):
    """The optimiser, the jitted runner and the jitted bound for one configuration; cached,
    so runs with the same configuration (other seeds, restarts) share compiled code."""
    opt = _OPTIMIZERS[optimizer](lr)
    step = partial(rws_step, arch=arch, optimizer=opt, **dict(step_options))
    return opt, _make_run(step, batch_size), jax.jit(partial(iwae_bound, arch=arch, k=k))


def _init(step_kwargs, params: SBNParams, train, seed, k, lr, batch_size, optimizer) -> JaxRWSMethodState:
    _check_training_options(lr, batch_size, optimizer)
    if not params.has_guide("recognition"):  # a recognition network at its default initialisation
        fresh = SBNParams.init(params.architecture, seed, guide=("recognition",))
        params = params.replace(**{key: fresh[key] for key in recognition_keys(params.architecture)})
    train = jnp.asarray(np.asarray(train, dtype=np.float32))
    batch_size = int(min(batch_size, train.shape[0]))
    opt, run_fn, bound_fn = _compiled(params.architecture, optimizer, float(lr), tuple(sorted(step_kwargs.items())),
                                      batch_size, int(k))
    key, key_perm = jax.random.split(jax.random.PRNGKey(int(seed)))
    return JaxRWSMethodState(params, init(params, opt), key, train, jax.random.permutation(key_perm, train.shape[0]),
                             jnp.asarray(0), run_fn, bound_fn, int(k), int(seed))


def _run(state: JaxRWSMethodState, num_steps: int):
    if int(num_steps) < 1:
        raise ValueError(f"the number of steps must be at least 1, got {num_steps}")
    rws, key, order, cursor, info = state.run_fn(state.rws, state.key, state.order, state.cursor, state.train,
                                                 jnp.asarray(int(num_steps)))
    return (replace(state, rws=rws, key=key, order=order, cursor=cursor),
            {name: float(v) for name, v in info._asdict().items()})


def _get_params(state: JaxRWSMethodState) -> SBNParams:
    return state.like.replace(**{k: np.asarray(v) for k, v in state.rws.params.items()})


def _bound(state: JaxRWSMethodState, x, chunk: int = 1000) -> np.ndarray:
    """Per-data-point IWAE bound with the method's K (seeded by the method's seed)."""
    x = np.asarray(x, dtype=np.float32)
    key = jax.random.PRNGKey(state.seed + 1)
    out = []
    for i, start in enumerate(range(0, len(x), chunk)):
        out.append(np.asarray(state.bound_fn(jax.random.fold_in(key, i), params=state.rws.params,
                                             x=jnp.asarray(x[start:start + chunk]))))
    return np.concatenate(out).astype(np.float64)


def rws_method() -> Method:
    """Reweighted wake-sleep, per-data-point weights, jitted JAX on the NumPyro model's densities.

    ``run``'s ``info``: the means over the run's steps of :class:`RWSInfo`'s fields (``objective``:
    the batch's mean per-data-point bound ``log (1/K) sum_k w_nk``; ``ess``: per-point ESS).
    """

    def init_(params, train, seed=0, k=5, insomnia=1.0, lr=3e-3, batch_size=100, optimizer="adam"):
        check_options(k, insomnia)
        return _init({"k": int(k), "insomnia": float(insomnia)}, params, train, seed, k, lr, batch_size, optimizer)

    return Method("rws", "numpyro", init_, _run, _get_params, guide="recognition", bound=_bound,
                  defaults={"k": 5, "insomnia": 1.0, "lr": 3e-3, "batch_size": 100, "optimizer": "adam"},
                  description="reweighted wake-sleep (Bornschein & Bengio 2015), per-data-point weights, JAX")


def wake_sleep_method() -> Method:
    """Classic wake-sleep (Hinton et al. 1995), jitted JAX."""

    def init_(params, train, seed=0, lr=3e-3, batch_size=100, optimizer="adam"):
        return _init({"k": 1, "insomnia": 0.0, "num_sleep_particles": 1}, params, train, seed, 1, lr, batch_size,
                     optimizer)

    return Method("wake-sleep", "numpyro", init_, _run, _get_params, guide="recognition", bound=_bound,
                  defaults={"lr": 3e-3, "batch_size": 100, "optimizer": "adam"},
                  description="wake-sleep (Hinton et al. 1995), JAX")
