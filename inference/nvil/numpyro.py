"""NVIL in pure JAX on the NumPyro model's densities (the math: this folder's ``__init__``;
the twin: ``pyro.py``).

Own tricks: the signals are sums of per-layer log-densities picked by the index sets ``P_s,
D_s`` of :func:`~sbn_ppl.inference.nvil.signal_terms`, all of them one ``(S, B)`` array, and
one jitted step descends the one loss in theta, phi and the baselines' ``psi`` with one optax
optimiser (the samples carry no gradient, so theta's is ``-grad log p``).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.lax import stop_gradient

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.inference.nvil import BOUND_SAMPLES, SignalTerms, baseline_init, signal_terms
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.inference.shared.gradient.numpyro import gradient_kernel
from sbn_ppl.inference.shared.particles.numpyro import sample_guide
from sbn_ppl.models.numpyro_sbn import bernoulli_log_prob, preactivation, recognition_logits
from sbn_ppl.base.optimizers import optax_optimizer
from sbn_ppl.base.params import SBNParams, generative_keys, recognition_keys


class SignalStats(NamedTuple):
    """The running mean ``C`` and variance ``v`` of each signal less its baseline: ``(S,)`` each."""

    mean: jax.Array
    var: jax.Array


class NVILState(NamedTuple):
    """``params``: theta and phi (generative ``b_``/``W_`` and recognition ``q_`` arrays);
    ``baseline``: psi, the baseline nets' ``nvil_*`` arrays; ``stats``: :class:`SignalStats`;
    ``opt_state``: the optimiser's state for ``(params, baseline)``."""

    params: dict
    baseline: dict
    stats: SignalStats
    opt_state: Any


class NVILInfo(NamedTuple):
    objective: jax.Array  # mean over the batch of the one-sample ELBO estimate log p(x, h) - log q(h | x)
    baseline_mse: jax.Array  # mean over the batch of sum_s (c_s - C_s - b_s)^2


# -- densities, signals, baselines -----------------------------------------------------------


def layer_log_probs(arch: Architecture, params, layers):
    """``log p(h_j | pa)`` for ``j = 0 .. L`` and ``log q(h_l | pa_q)`` for ``l = 1 .. L``,
    each summed over the layer's units: two lists of ``(B,)`` arrays (``log_q[0]`` is ``None``)."""
    log_p = [bernoulli_log_prob(layers[j], preactivation(arch, params, layers, j)).sum(-1)
             for j in range(arch.num_layers + 1)]
    log_q = [None] + [bernoulli_log_prob(layers[l], recognition_logits(arch, params, layers, l)).sum(-1)
                      for l in range(1, arch.num_layers + 1)]
    return log_p, log_q


def learning_signals(log_p, log_q, terms: SignalTerms):
    """``c_s = sum_{j in P_s} log p_j - sum_{j in D_s} log q_j``: ``(S, B)``, no gradient.

    The terms are summed one by one, not by a 0/1 matrix product, which a GPU may round to
    TF32.
    """
    return stop_gradient(jnp.stack([sum(log_p[j] for j in p) - sum(log_q[j] for j in q)
                                    for p, q in zip(terms.model, terms.guide)]))


def baselines(psi, layers, terms: SignalTerms):
    """``b_s(u_s) = tanh(sum_{m in inputs_s} h_m U_m_s + e_s) . w_s + d_s``: ``(S, B)``."""
    out = []
    for s, inputs in enumerate(terms.inputs, start=1):
        hidden = jnp.tanh(sum(layers[m] @ psi[f"nvil_U_{m}_{s}"] for m in inputs) + psi[f"nvil_e_{s}"])
        out.append(hidden @ psi[f"nvil_w_{s}"] + psi[f"nvil_d_{s}"])
    return jnp.stack(out)


def centred_signals(residual, stats: SignalStats, decay: float, variance_normalisation: bool = True):
    """NVIL's centring and normalisation (sec. 3.2, Algorithm 1) of ``r = c - b`` ``(S, B)``.

    ``C <- a C + (1 - a) mean_n r``, ``v <- a v + (1 - a) var_n r``, then
    ``A = (r - C) / max(1, sqrt(v))`` with the updated ``C, v`` (``A = r - C`` without
    normalisation). Returns ``(A, new stats)``, with no gradient.
    """
    residual = stop_gradient(residual)
    mean = decay * stats.mean + (1 - decay) * residual.mean(-1)
    var = decay * stats.var + (1 - decay) * residual.var(-1)
    centred = residual - mean[:, None]
    if variance_normalisation:
        centred = centred / jnp.maximum(1.0, jnp.sqrt(var))[:, None]
    return centred, SignalStats(mean, var)


def nvil_loss(trainable, stats: SignalStats, layers, arch: Architecture, terms: SignalTerms, decay: float,
              variance_normalisation: bool = True):
    """The loss whose gradient is NVIL's step direction (module docstring), at given samples.

    :param trainable: ``(params, psi)``: theta and phi, and the baseline nets.
    :param stats: the running :class:`SignalStats` before this batch.
    :param layers: ``[x (B, D), h1 (B, n1), ...]``, ``h ~ q(. | x)`` (no gradient flows into them).
    :param terms: the signals' terms (:func:`~sbn_ppl.inference.nvil.signal_terms`).
    :returns: ``(loss, (NVILInfo, new stats))``.
    """
    params, psi = trainable
    layers = [stop_gradient(h) for h in layers]
    log_p, log_q = layer_log_probs(arch, params, layers)
    c = learning_signals(log_p, log_q, terms)
    b = baselines(psi, layers, terms)
    a, new_stats = centred_signals(c - stop_gradient(b), stats, decay, variance_normalisation)
    score = jnp.stack([sum(log_q[l] for l in ls) for ls in terms.score])  # log q of each signal's layers, (S, B)
    surrogate = sum(log_p) + (a * score).sum(0)  # (B,): grad_theta log p + A grad_phi log q
    baseline_mse = ((c - new_stats.mean[:, None] - b) ** 2).sum(0).mean()
    elbo = stop_gradient(sum(log_p) - sum(log_q[1:]))
    return -surrogate.mean() + baseline_mse, (NVILInfo(elbo.mean(), stop_gradient(baseline_mse)), new_stats)


# -- the kernel ----------------------------------------------------------------------------


def init(params: SBNParams, psi: dict, optimizer: optax.GradientTransformation, num_signals: int) -> NVILState:
    """Theta and phi from ``params``, the baseline nets ``psi``, zero statistics, the optimiser's state."""
    arch = params.architecture
    missing = [k for k in recognition_keys(arch) if k not in params]
    if missing:
        raise ValueError(f"NVIL needs the recognition network's parameters; missing {missing[:3]}")
    trained = {k: jnp.asarray(params[k]) for k in generative_keys(arch) + recognition_keys(arch)}
    psi = {k: jnp.asarray(v) for k, v in psi.items()}
    stats = SignalStats(jnp.zeros(num_signals, jnp.float32), jnp.zeros(num_signals, jnp.float32))
    return NVILState(trained, psi, stats, optimizer.init((trained, psi)))


def nvil_step(key, state: NVILState, x, *, arch: Architecture, optimizer: optax.GradientTransformation,
              terms: SignalTerms, decay: float, variance_normalisation: bool = True):
    """One NVIL step on a batch ``x`` (B, D).

    :param key: PRNG key for the samples ``h ~ q(. | x)``.
    :param state: :class:`NVILState`.
    :param arch: the network's :class:`~sbn_ppl.base.architecture.Architecture` (static).
    :param optimizer: an optax transformation over ``(params, baseline)``.
    :param terms: the signals' terms; ``decay``: alpha of ``C, v``; ``variance_normalisation``.
    :returns: ``(state, NVILInfo)``.
    """
    layers, _ = sample_guide(key, arch, state.params, x)
    trainable = (state.params, state.baseline)
    grads, (info, stats) = jax.grad(nvil_loss, has_aux=True)(trainable, state.stats, layers, arch, terms, decay,
                                                             variance_normalisation)
    updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
    params, psi = optax.apply_updates(trainable, updates)
    return NVILState(params, psi, stats, opt_state), info


def elbo_estimate(key, arch: Architecture, params, x, num_samples: int = BOUND_SAMPLES):
    """Per data point, the mean over ``num_samples`` draws ``h ~ q(. | x)`` of ``log p(x, h) -
    log q(h | x)``: an unbiased estimate of the ELBO, ``(B,)``."""
    log_p, log_q = layer_log_probs(arch, params, sample_guide(key, arch, params, x, (num_samples,))[0])
    return (sum(log_p) - sum(log_q[1:])).mean(0)


# -- the method ----------------------------------------------------------------------------


def build(arch: Architecture, options: dict) -> Kernel:
    """The NVIL :class:`~sbn_ppl.base.methods.Kernel` for ``arch`` and the checked ``options``.

    ``init`` adds a recognition network at its default initialisation if ``params`` has none
    and checks ``train``, when given, as the Pyro twin checks it (binary, no NaN, the model's
    width). ``bound`` is, per data point, the Monte Carlo ELBO: the mean of ``log p(x, h) -
    log q(h | x)`` over ``BOUND_SAMPLES`` (10) draws ``h ~ q``, seeded by the state; unbiased for
    the ELBO that NVIL maximises, not an IWAE bound. ``guide_gradient`` is one draw of the
    phi step (ascent). ``info`` is :class:`NVILInfo`.
    """
    local = options["local_signals"]
    terms = signal_terms(arch, local)
    optimizer = optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"],
                                options["lr_schedule"])
    decay, normalise = float(options["signal_decay"]), bool(options["variance_normalisation"])

    def start(key, params: SBNParams, train=None):
        if train is not None:
            validate_binary(np.asarray(train), width=arch.visible_size, name="training data")
        key_guide, key_psi, key_bound = jax.random.split(key, 3)
        params = params.with_guide("recognition", int(jax.random.randint(key_guide, (), 0, 2**31 - 1)))
        psi = baseline_init(arch, options["baseline_hidden"], int(jax.random.randint(key_psi, (), 0, 2**31 - 1)),
                            local)
        return init(params, psi, optimizer, len(terms.model)), key_bound

    def update(key, state: NVILState, batch: Batch):
        return nvil_step(key, state, batch.x, arch=arch, optimizer=optimizer, terms=terms, decay=decay,
                         variance_normalisation=normalise)

    def guide_gradient(key, state: NVILState, x):
        """One draw of NVIL's phi step (ascent) on the batch ``x``, with the state's baselines and
        running statistics (as the step would use them)."""
        layers, _ = sample_guide(key, arch, state.params, x)
        grads, _ = jax.grad(nvil_loss, has_aux=True)((state.params, state.baseline), state.stats, layers, arch, terms,
                                                     decay, normalise)
        return {name: -grads[0][name] for name in recognition_keys(arch)}

    return gradient_kernel(arch, start, update, lambda key, params, x: elbo_estimate(key, arch, params, x),
                           guide_gradient=guide_gradient)
