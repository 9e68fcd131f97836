"""Single-unit Gibbs sweeps of an SBN's posterior in JAX (the math: this folder's ``__init__``;
the twin: ``pyro.py``).

Own tricks: a layer's units in a ``lax.fori_loop`` over the cached pre-activations (a sweep
compiles once whatever the width), each flip drawn as ``log-odds of a flip > logistic noise``
drawn up front; the children's terms on their probabilities, ``log(q + p e^delta)`` with logs of
products of four (:func:`_sweep_layer_ratios`; the twin keeps the softplus form, which this file
falls back to where some ``|w| > 20``); :class:`SBNGibbs` is a NumPyro :class:`~numpyro.infer.mcmc.MCMCKernel`, so
``numpyro.infer.MCMC(SBNGibbs(numpyro_sbn.model), ...)`` samples the model's ``h1 .. hL``.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax, random
import numpy as np
from numpyro import handlers
from numpyro.infer.mcmc import MCMCKernel
from numpyro.util import is_prng_key

from sbn_ppl.base.architecture import site_name
from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.models import numpyro_sbn  # registers SBNParams as a pytree
from sbn_ppl.base.params import SBNParams, generative_keys


class GibbsState(NamedTuple):
    """``hidden[l - 1]`` is ``h_l``, shape ``(*batch, n_l)`` of 0./1. (batch: chains, data points)."""

    hidden: tuple


class GibbsInfo(NamedTuple):
    """After the sweep: ``log p(x, h)`` and ``log p(x | h)`` per batch element (nats), and
    the fraction of hidden units that changed value."""

    log_joint: jax.Array
    log_likelihood: jax.Array
    flip_rate: jax.Array


def _as_jax(params: SBNParams) -> SBNParams:
    return jax.tree_util.tree_map(jnp.asarray, params)


def _layers(x, hidden):
    batch = hidden[0].shape[:-1]
    return [jnp.broadcast_to(x, batch + x.shape[-1:]).astype(hidden[0].dtype)] + list(hidden)


def _preactivations(params: SBNParams, layers):
    arch = params.architecture
    shape = layers[0].shape[:-1]
    return [jnp.broadcast_to(numpyro_sbn.preactivation(arch, params, layers, l), shape + (arch.sizes[l],))
            for l in range(arch.num_layers + 1)]


def _flip_log_odds(sign, a_own, children):
    """``log p(h_k = 1 - s | rest) - log p(h_k = s | rest)``, with ``sign = 1 - 2 s``.

    ``children`` holds ``(c, a_c, sp_c, w_kc, coef)``: the child layer's values, its
    pre-activation and softplus with ``h_k = s``, the weights out of ``k`` and the factor
    (``beta`` for the visible layer, 1 otherwise). Also returns each child's flipped
    pre-activation and its softplus, for the caller to keep on a flip.
    """
    d = sign * a_own  # own term: log p(1 - s | a_k) - log p(s | a_k) = (1 - 2 s) a_k
    flipped = []
    for c, a_c, sp_c, w, coef in children:
        delta = sign[..., None] * w
        a_alt = a_c + delta  # a_c with h_k flipped
        sp_alt = jax.nn.softplus(a_alt)
        # sum_j [c_j a_j - softplus(a_j)] at the flipped state minus at the current one
        d = d + coef * jnp.sum(c * delta - sp_alt + sp_c, axis=-1)
        flipped.append((a_alt, sp_alt))
    return d, flipped


def _sweep_layer(params, l, layers, a, sp, noise, beta):
    """Resample the units of layer ``l`` in turn (``lax.fori_loop``); batch axis flattened."""
    arch = params.architecture
    kids = arch.children(l)
    weights = [params[f"W_{l}_{c}"] for c in kids]
    coefs = [beta if c == 0 else 1.0 for c in kids]
    a_own = a[l].T  # (n_l, B): the layer's own pre-activation, fixed while it is swept

    def body(k, carry):
        h_t, a_kids, sp_kids = carry
        s = h_t[k]
        sign = 1.0 - 2.0 * s
        children = [(layers[c], a_kids[i], sp_kids[i], weights[i][k], coefs[i]) for i, c in enumerate(kids)]
        d, flipped = _flip_log_odds(sign, a_own[k], children)
        flip = d > noise[k]  # logistic noise: P(flip) = sigmoid(d), the exact conditional
        h_t = h_t.at[k].set(jnp.where(flip, 1.0 - s, s))
        a_kids = tuple(jnp.where(flip[:, None], alt, old) for (alt, _), old in zip(flipped, a_kids))
        sp_kids = tuple(jnp.where(flip[:, None], spa, old) for (_, spa), old in zip(flipped, sp_kids))
        return h_t, a_kids, sp_kids

    carry = (layers[l].T, tuple(a[c] for c in kids), tuple(sp[c] for c in kids))
    h_t, a_kids, sp_kids = lax.fori_loop(0, arch.sizes[l], body, carry)
    for i, c in enumerate(kids):
        a[c], sp[c] = a_kids[i], sp_kids[i]
    return h_t.T


_GROUP = 4  # the children's log-ratios summed as logs of products of four (see _sum_log)
_RATIOS_MAX_W = 20.0  # the ratio sweep needs every |w| <= 20 (products of four factors in float32's range)
_REFRESH_NATS = 70.0  # p, q are recomputed from a after any run of units that can move a child's a by this much


def _sum_log(f):
    """``sum_j log f_j`` over the last axis, as logs of products of four: with every ``f`` in
    ``[e^-20, e^20]`` a product of four stays inside float32's normal range, for a quarter of the logs."""
    n = f.shape[-1]
    head = n - n % _GROUP
    out = jnp.log(f[..., :head].reshape(f.shape[:-1] + (head // _GROUP, _GROUP)).prod(-1)).sum(-1)
    return out + jnp.log(f[..., head:]).sum(-1) if head < n else out


def _sweep_layer_ratios(params, l, layers, a, pq, noise, beta, refresh):
    """:func:`_sweep_layer` on the children's probabilities instead of their softplus terms.

    With ``p_j = sigmoid(a_j)``, ``q_j = 1 - p_j`` and ``delta_j = (1 - 2 s) w_kj`` (unit ``k``
    flipping from ``s``), a child's term in the flip's log-odds is
    ``c_j delta_j - [softplus(a_j + delta_j) - softplus(a_j)] = c_j delta_j - log(q_j + p_j e^{delta_j})``,
    and after a flip ``p_j <- p_j e^{delta_j} / f_j``, ``q_j <- q_j / f_j`` (``f_j = q_j + p_j e^{delta_j}``).
    ``e^{+-w}`` is made once per sweep, ``sum_j c_j delta_j`` for every unit by one matrix product,
    and the logs are taken of products of four (every ``|w| <= 20``: the caller checks): a quarter
    of a log per child and unit where the softplus form takes an exp and a log.

    The one approximation is float32's range: a ``p`` or ``q`` below ``e^-87`` is 0, and the
    product updates cannot bring it back. So ``a`` is kept exactly (one add on a flip) and ``p, q``
    are recomputed from it after every ``refresh`` units, a run that can move no ``a`` by more than
    70 nats (``refresh * max|w| <= 70``): a ``p`` or ``q`` that underflowed at ``a <= -87`` is back
    before ``a`` reaches ``-17``, where it would first change ``f`` by float32's rounding (``e^-17``).
    ``a`` and ``pq`` are updated in place for the children."""
    arch = params.architecture
    kids = arch.children(l)
    weights = [params[f"W_{l}_{c}"] for c in kids]  # (n_l, n_c)
    ups, downs = [jnp.exp(w) for w in weights], [jnp.exp(-w) for w in weights]
    cw = [layers[c] @ w.T for c, w in zip(kids, weights)]  # (B, n_l): sum_j c_j w_kj for every unit k
    coefs = [beta if c == 0 else 1.0 for c in kids]
    a_own = a[l].T  # (n_l, B): the layer's own pre-activation, fixed while it is swept

    def body(k, carry):
        h_t, a_kids, ps, qs = carry
        s = h_t[k]
        sign = 1.0 - 2.0 * s
        d = sign * a_own[k]  # own term
        up = (sign > 0)[:, None]
        factors = []
        for i in range(len(kids)):
            e = jnp.where(up, ups[i][k], downs[i][k])  # e^{delta_j}
            f = qs[i] + ps[i] * e  # (1 + e^{a_j + delta_j}) / (1 + e^{a_j})
            d = d + coefs[i] * (sign * cw[i][:, k] - _sum_log(f))
            factors.append((e, f))
        flip = d > noise[k]  # logistic noise: P(flip) = sigmoid(d), the exact conditional
        h_t = h_t.at[k].set(jnp.where(flip, 1.0 - s, s))
        on = flip[:, None]
        a_new, p_new, q_new = [], [], []
        for i, (e, f) in enumerate(factors):
            r = 1.0 / f
            a_new.append(jnp.where(on, a_kids[i] + sign[:, None] * weights[i][k], a_kids[i]))
            p_new.append(jnp.where(on, ps[i] * e * r, ps[i]))
            q_new.append(jnp.where(on, qs[i] * r, qs[i]))
        fresh = lambda a_, p_, q_: (tuple(jax.nn.sigmoid(v) for v in a_), tuple(jax.nn.sigmoid(-v) for v in a_))  # noqa: E731
        kept = lambda a_, p_, q_: (tuple(p_), tuple(q_))  # noqa: E731
        p_new, q_new = lax.cond((k + 1) % refresh == 0, fresh, kept, a_new, p_new, q_new)
        return h_t, tuple(a_new), p_new, q_new

    carry = (layers[l].T, tuple(a[c] for c in kids), tuple(pq[c][0] for c in kids), tuple(pq[c][1] for c in kids))
    h_t, a_kids, ps, qs = lax.fori_loop(0, arch.sizes[l], body, carry)
    for i, c in enumerate(kids):
        a[c], pq[c] = a_kids[i], (ps[i], qs[i])
    return h_t.T


def _sweep_softplus(params, layers, a, noises, beta):
    """Every hidden layer swept on the softplus form (:func:`_sweep_layer`): the layers and the
    pre-activations after the sweep."""
    a = list(a)
    sp = [jax.nn.softplus(v) for v in a]
    layers = list(layers)
    for l in range(1, params.architecture.num_layers + 1):
        layers[l] = _sweep_layer(params, l, layers, a, sp, noises[l - 1], beta)
    return layers, a


def _sweep_ratios(params, layers, a, noises, beta):
    """Every hidden layer swept on the probability form (:func:`_sweep_layer_ratios`)."""
    arch = params.architecture
    a = list(a)
    pq = {c: (jax.nn.sigmoid(v), jax.nn.sigmoid(-v)) for c, v in enumerate(a)}
    max_w = jnp.max(jnp.stack([jnp.abs(params[f"W_{p}_{c}"]).max() for p, c in arch.edges()]))
    refresh = jnp.clip(jnp.floor(_REFRESH_NATS / jnp.maximum(max_w, 1e-6)), 1, 1 << 20).astype(jnp.int32)
    layers = list(layers)
    for l in range(1, arch.num_layers + 1):
        layers[l] = _sweep_layer_ratios(params, l, layers, a, pq, noises[l - 1], beta, refresh)
    return layers, a


def _ratios_apply(params):
    """Whether :func:`_sweep_layer_ratios` applies: every ``|w| <= 20``."""
    arch = params.architecture
    return jnp.all(jnp.stack([jnp.abs(params[f"W_{p}_{c}"]).max() <= _RATIOS_MAX_W for p, c in arch.edges()]))


def step(rng_key, state: GibbsState, params: SBNParams, x, beta=1.0):
    """One Gibbs sweep over all hidden units of ``p(h | x)`` (tempered: ``p(h) p(x|h)^beta``).

    :param rng_key: JAX PRNG key.
    :param state: current hidden layers, each ``(*batch, n_l)`` (batch: chains x data points).
    :param params: the SBN's :class:`~sbn_ppl.SBNParams` (a pytree; traced under jit).
    :param x: observed data ``(..., D)`` of 0./1., broadcastable to ``(*batch, D)``.
    :param beta: inverse temperature on the likelihood ``log p(x | h)`` (1: the posterior).
    :returns: ``(new state, GibbsInfo)``.

    The sweep runs on the children's probabilities (:func:`_sweep_layer_ratios`: a fraction of
    the transcendental functions, the same conditionals to float32 rounding) while every
    ``|w| <= 20``, else on their softplus terms (:func:`_sweep_layer`); the same noise decides the
    flips on both.
    """
    params = _as_jax(params)
    arch = params.architecture
    batch = state.hidden[0].shape[:-1]
    layers = [v.reshape((-1, v.shape[-1])) for v in _layers(jnp.asarray(x), state.hidden)]
    keys = random.split(rng_key, arch.num_layers)
    noises = [random.logistic(keys[l - 1], (arch.sizes[l], layers[0].shape[0]), dtype=layers[l].dtype)
              for l in range(1, arch.num_layers + 1)]
    old = list(layers)
    a = _preactivations(params, layers)
    layers, a = lax.cond(_ratios_apply(params), _sweep_ratios, _sweep_softplus, params, layers, a, noises, beta)
    # log p(x, h) = sum_l sum_j [s_j a_j - softplus(a_j)]
    per_layer = [jnp.sum(layers[l] * a[l] - jax.nn.softplus(a[l]), -1) for l in range(arch.num_layers + 1)]
    flips = sum(jnp.sum(layers[l] != old[l], -1) for l in range(1, arch.num_layers + 1)) / arch.num_hidden
    hidden = tuple(layers[l].reshape(batch + (arch.sizes[l],)) for l in range(1, arch.num_layers + 1))
    info = GibbsInfo(sum(per_layer).reshape(batch), per_layer[0].reshape(batch), flips.reshape(batch))
    return GibbsState(hidden), info


def sample_prior(rng_key, params: SBNParams, batch_shape) -> GibbsState:
    """Hidden layers drawn ancestrally from the prior ``p(h)``, each ``(*batch_shape, n_l)``."""
    params = _as_jax(params)
    arch = params.architecture
    batch_shape = tuple(batch_shape)
    layers: list = [None] * (arch.num_layers + 1)
    keys = random.split(rng_key, arch.num_layers)
    for l in range(arch.num_layers, 0, -1):
        a = numpyro_sbn.preactivation(arch, params, layers, l)
        a = jnp.broadcast_to(a, batch_shape + (arch.sizes[l],))
        layers[l] = random.bernoulli(keys[l - 1], jax.nn.sigmoid(a)).astype(jnp.float32)
    return GibbsState(tuple(layers[1:]))


def init(rng_key, params: SBNParams, x, num_chains: int | None = None) -> GibbsState:
    """A starting state for data ``x`` ``(N, D)``: hidden layers from the prior, each
    ``(N, n_l)``, or ``(num_chains, N, n_l)`` when ``num_chains`` is given."""
    x = _checked_data(params, x)
    batch = x.shape[:-1] if num_chains is None else (int(num_chains),) + x.shape[:-1]
    if num_chains is not None and num_chains < 1:
        raise ValueError(f"the number of chains must be at least 1, got {num_chains}")
    return sample_prior(rng_key, params, batch)


def conditional_logits(params: SBNParams, x, hidden, beta=1.0) -> list:
    """``logit p(h_{l,k} = 1 | all other units, x)`` for every hidden unit at the state
    ``hidden`` (tempered by ``beta``), one ``(*batch, n_l)`` array per hidden layer. The
    same arithmetic as :func:`step`, for all units at once (no unit is changed)."""
    params = _as_jax(params)
    arch = params.architecture
    layers = _layers(jnp.asarray(x), tuple(hidden))
    a = _preactivations(params, layers)
    sp = [jax.nn.softplus(v) for v in a]
    out = []
    for l in range(1, arch.num_layers + 1):
        sign = 1.0 - 2.0 * layers[l]
        children = [(layers[c][..., None, :], a[c][..., None, :], sp[c][..., None, :], params[f"W_{l}_{c}"],
                     beta if c == 0 else 1.0) for c in arch.children(l)]
        d, _ = _flip_log_odds(sign, a[l], children)
        out.append(sign * d)  # log p(1)/p(0) = d when s = 0, -d when s = 1
    return out


# -- NumPyro adapter --------------------------------------------------------------------------


class SBNGibbsState(NamedTuple):
    """``z``: ``{"h1": (N, n_1), ...}``; ``log_joint``: ``log p(x, h)`` summed over data points."""

    z: dict
    log_joint: jax.Array
    rng_key: jax.Array


def model_problem(model, model_args, model_kwargs):
    """``(params, x)`` that the NumPyro SBN ``model`` conditions on: the values of its
    ``numpyro.param`` sites (so ``handlers.substitute`` is respected) and its observed ``x``."""
    model_kwargs = dict(model_kwargs or {})
    like = next((v for v in list(model_args) + list(model_kwargs.values()) if isinstance(v, SBNParams)), None)
    if like is None:
        raise ValueError("the model's arguments hold no SBNParams (expected model(params, x))")
    if model_kwargs.get("subsample_size") is not None or model_kwargs.get("subsample") is not None:
        raise ValueError("the SBN Gibbs kernel samples every data point; do not pass subsample_size or subsample")
    trace = handlers.trace(handlers.seed(model, rng_seed=0)).get_trace(*model_args, **model_kwargs)
    if "x" not in trace or not trace["x"]["is_observed"]:
        raise ValueError("the SBN Gibbs kernel samples p(h | x): call the model with observed data x")
    values = {k: trace[k]["value"] for k in generative_keys(like.architecture) if k in trace}
    leaves, treedef = jax.tree_util.tree_flatten(like)
    keys = [k for k in like if k != "sizes"]  # the pytree's leaf order
    params = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(values.get(k, v)) for k, v in zip(keys, leaves)])
    return params, _checked_data(like, trace["x"]["value"])


def _checked_data(params: SBNParams, x):
    """``x`` as a JAX array, checked (binary, no NaN, the model's width) whenever it is concrete."""
    if isinstance(x, jax.core.Tracer):
        return x
    return jnp.asarray(validate_binary(np.asarray(x).reshape(-1, np.shape(x)[-1]),
                                      width=params.architecture.visible_size, name="x").reshape(np.shape(x)))


class SBNGibbs(MCMCKernel):
    """Our single-unit Gibbs sweep as a NumPyro MCMC kernel for :func:`numpyro_sbn.model`.

    Usage::

        mcmc = numpyro.infer.MCMC(SBNGibbs(numpyro_sbn.model), num_warmup=100, num_samples=1000,
                                  num_chains=4, chain_method="vectorized")
        mcmc.run(jax.random.PRNGKey(0), params, x)
        mcmc.get_samples()["h1"]          # (4000, N, n_1)

    One MCMC sample is ``sweeps`` full sweeps (every hidden unit of every data point
    resampled ``sweeps`` times). ``beta`` tempers the likelihood (AIS); 1 is the posterior.
    """

    sample_field = "z"

    def __init__(self, model=numpyro_sbn.model, *, sweeps: int = 1, beta: float = 1.0):
        if sweeps < 1:
            raise ValueError(f"sweeps must be at least 1, got {sweeps}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        self._model, self._sweeps, self._beta = model, int(sweeps), float(beta)

    @property
    def model(self):
        return self._model

    def _init_one(self, rng_key, init_params, model_args, model_kwargs):
        params, x = model_problem(self._model, model_args, model_kwargs)
        rng_key, key_init = random.split(rng_key)
        arch = params.architecture
        if init_params:
            hidden = tuple(jnp.asarray(init_params[site_name(l)], jnp.float32) for l in range(1, arch.num_layers + 1))
        else:
            hidden = init(key_init, params, x).hidden
        log_joint = numpyro_sbn.log_joint(arch, params, [x] + list(hidden)).sum()
        z = {site_name(l): hidden[l - 1] for l in range(1, arch.num_layers + 1)}
        return SBNGibbsState(z, log_joint, rng_key)

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        if is_prng_key(rng_key):
            return self._init_one(rng_key, init_params, model_args, model_kwargs)
        return jax.vmap(lambda k, p: self._init_one(k, p, model_args, model_kwargs))(rng_key, init_params)

    def _sample_one(self, state, model_args, model_kwargs):
        params, x = model_problem(self._model, model_args, model_kwargs)
        names = [site_name(l) for l in range(1, params.architecture.num_layers + 1)]
        gibbs = GibbsState(tuple(state.z[n] for n in names))
        rng_key, key = random.split(state.rng_key)
        for sub in random.split(key, self._sweeps):
            gibbs, info = step(sub, gibbs, params, x, self._beta)
        return SBNGibbsState(dict(zip(names, gibbs.hidden)), info.log_joint.sum(), rng_key)

    def sample(self, state, model_args, model_kwargs):
        if is_prng_key(state.rng_key):
            return self._sample_one(state, model_args, model_kwargs)
        return jax.vmap(lambda s: self._sample_one(s, model_args, model_kwargs))(state)
