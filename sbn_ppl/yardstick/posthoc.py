"""A recognition network fitted post hoc to a frozen model, so every method has a guide to score with.

Gibbs sampling, the fixed-point mean field and local (per-data-point) mean field leave no
amortised guide behind, and a method's own guide may be poor. To score every method by the
same importance-sampling yardstick (issue 10), fit a recognition network ``q_phi(h | x)``
to the trained model ``p_theta`` with ``theta`` held fixed, by the phi half of reweighted
wake-sleep (Bornschein & Bengio 2015), with the same budget and settings for every method:

    wake-phi    (1/B) sum_n sum_k w~_nk grad_phi log q(h_nk | x_n),   h_nk ~ q(. | x_n), K particles
    sleep-phi   (1/(S B)) sum grad_phi log q(h | x),                  (x, h) ~ p_theta (S = K dreams per point)
    phi step    insomnia * wake-phi + (1 - insomnia) * sleep-phi      (default 1/2 each)

on mini-batches of the training data. Wake-phi descends ``KL(p(h | x) || q(h | x))`` on
the data (self-normalised weights ``w~ = w / sum w``); sleep-phi descends the same
divergence averaged over the model's own dreams, which needs no weights and keeps the
guide broad where the model puts mass the data do not reach. The math is that of
:mod:`sbn_ppl.inference.shared.particles.numpyro` (``sample_guide``, ``wake_losses``,
``sleep_loss``), the arithmetic reweighted wake-sleep trains with;
here it runs as one pure, jitted ``lax.scan`` with ``theta`` a constant.

The guide starts from ``SBNParams.init``'s recognition network (seeded), whatever the
method left behind, so no method's figure depends on its own guide's quality.
"""
from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sbn_ppl.base.pytrees as pytrees
from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.yardstick.defaults import (POSTHOC_BATCH_SIZE, POSTHOC_INSOMNIA, POSTHOC_LR, POSTHOC_PARTICLES,
                                     POSTHOC_STEPS)
from sbn_ppl.inference.shared.particles.numpyro import (effective_sample_size, sample_guide, sample_model, sleep_loss,
                                                       wake_losses)
from sbn_ppl.base.optimizers import optax_optimizer
from sbn_ppl.base.params import SBNParams, generative_keys, recognition_keys
from sbn_ppl.engine.runner import batch_indices

pytrees.register()

_STEPS_PER_CALL = 500  # scan length of one jitted call (progress is reported between calls)


class PosthocState(NamedTuple):
    """``phi``: the recognition network's arrays (``q_b_l``, ``q_W_m_l``); ``opt_state``: the optimiser's."""

    phi: dict
    opt_state: Any


class PosthocInfo(NamedTuple):
    objective: jax.Array  # mean over the batch of log (1/K) sum_k w_nk: the IWAE bound, higher is better
    wake_phi_loss: jax.Array
    sleep_phi_loss: jax.Array
    ess: jax.Array  # mean per-point effective sample size of the K weights (1..K)


def phi_loss(phi, key, theta, x, arch: Architecture, k: int, insomnia: float):
    """The phi surrogate loss on a batch ``x`` ``(B, D)`` (its gradient is the phi step
    direction) and the step's :class:`PosthocInfo`; ``theta`` is not differentiated."""
    key_wake, key_sleep = jax.random.split(key)
    params = {**theta, **phi}
    layers, log_q = sample_guide(key_wake, arch, params, x, (k,))
    bound_loss, wake_phi, log_w = wake_losses(arch, params, layers, log_q)
    dreams = sample_model(key_sleep, arch, theta, (k, x.shape[0]))
    sleep_phi = sleep_loss(arch, phi, dreams)
    ess = effective_sample_size(log_w).mean()
    loss = insomnia * wake_phi + (1.0 - insomnia) * sleep_phi
    return loss, PosthocInfo(-jax.lax.stop_gradient(bound_loss), wake_phi, sleep_phi, ess)


def posthoc_step(key, state: PosthocState, theta, x, *, arch: Architecture, optimizer: optax.GradientTransformation,
                 k: int, insomnia: float):
    """One phi update on the batch ``x`` with ``theta`` frozen: ``(state, PosthocInfo)``."""
    grads, info = jax.grad(phi_loss, has_aux=True)(state.phi, key, theta, x, arch, k, insomnia)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.phi)
    return PosthocState(optax.apply_updates(state.phi, updates), opt_state), info


@partial(jax.jit, static_argnames=("arch", "optimizer", "k", "insomnia"))
def _run(state, theta, train, idx, keys, *, arch, optimizer, k, insomnia):
    """``posthoc_step`` over the batches ``train[idx[s]]`` with keys ``keys[s]`` (a ``lax.scan``)."""

    def body(state, xs):
        key, rows = xs
        return posthoc_step(key, state, theta, jnp.take(train, rows, axis=0), arch=arch, optimizer=optimizer, k=k,
                            insomnia=insomnia)

    return jax.lax.scan(body, state, (keys, idx))


def fit_posthoc_guide(params: SBNParams, train, *, steps: int = POSTHOC_STEPS, k: int = POSTHOC_PARTICLES,
                      lr: float = POSTHOC_LR, seed: int = 0, batch_size: int = POSTHOC_BATCH_SIZE,
                      insomnia: float = POSTHOC_INSOMNIA, optimizer="adam",
                      progress: bool = False) -> tuple[SBNParams, dict]:
    """Fit a recognition network to the frozen model ``params`` on ``train``.

    :param params: the trained SBN (its generative ``b_``/``W_`` arrays; any guide is ignored).
    :param train: the training data ``(N, D)`` of 0./1.
    :param steps: phi updates; ``k``: wake particles K (and sleep dreams per point);
        ``lr``, ``optimizer``: the optimiser (a name or an optax transformation);
        ``batch_size``: B; ``insomnia``: weight of wake-phi against sleep-phi.
    :param seed: the initial guide, the batch order (the runner's :func:`batch_indices`)
        and the particles. The defaults (the same for every method) are those of
        :mod:`sbn_ppl.yardstick.defaults`: 10,000 steps, K = 5, Adam at 3e-3, B = 100, insomnia 1/2.
    :returns: ``(SBNParams with the generative arrays and the fitted recognition network
        only, metrics)``; ``metrics`` holds the last 100 steps' mean ``objective`` (the IWAE
        bound with K particles), ``ess``, ``wake_phi_loss``, ``sleep_phi_loss``, and ``steps``.
    """
    for name, value in (("steps", steps), ("k", k), ("batch_size", batch_size)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0.0 <= float(insomnia) <= 1.0:
        raise ValueError(f"insomnia must be in [0, 1], got {insomnia!r}")
    arch = params.architecture
    train = jnp.asarray(validate_binary(train, width=arch.visible_size, name="train"), dtype=jnp.float32)
    theta = {name: jnp.asarray(params[name], dtype=jnp.float32) for name in generative_keys(arch)}
    fresh = SBNParams.init(arch, seed=seed, guide=("recognition",))
    phi = {name: jnp.asarray(fresh[name], dtype=jnp.float32) for name in recognition_keys(arch)}
    opt = optax_optimizer(optimizer, lr)
    state = PosthocState(phi, opt.init(phi))
    root = jax.random.fold_in(jax.random.PRNGKey(seed), 0x9057)  # apart from the initial guide's stream
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(steps), unit="step", desc="post-hoc guide", leave=False)
    tail = []
    try:
        for start in range(0, int(steps), _STEPS_PER_CALL):
            count = min(_STEPS_PER_CALL, int(steps) - start)
            idx = jnp.asarray(batch_indices(seed, train.shape[0], int(batch_size), start, count))
            keys = jax.vmap(lambda s: jax.random.fold_in(root, s))(jnp.arange(start, start + count))
            state, info = _run(state, theta, train, idx, keys, arch=arch, optimizer=opt, k=int(k),
                               insomnia=float(insomnia))
            tail = (tail + [jax.tree_util.tree_map(np.asarray, info)])[-2:]
            if bar is not None:
                bar.update(count)
    finally:
        if bar is not None:
            bar.close()
    last = {name: np.concatenate([getattr(t, name) for t in tail])[-100:] for name in PosthocInfo._fields}
    metrics = {name: float(np.mean(v)) for name, v in last.items()}
    metrics["steps"] = int(steps)
    fitted = {name: np.asarray(v) for name, v in state.phi.items()}
    return params.only().replace(**fitted), metrics
