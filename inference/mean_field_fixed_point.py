"""Mean-field theory for sigmoid belief networks (Saul, Jaakkola & Jordan 1996), in JAX.

For a factorised ``q(h) = prod_i mu_i^{h_i} (1 - mu_i)^{1 - h_i}`` over the hidden units (the
visible units clamped, ``mu = x``), every unit ``i`` (visible or hidden) with pre-activation
``z_i = b_i + sum_j w_ji s_j`` contributes ``E_q[s_i z_i - log(1 + e^{z_i})]`` to
``E_q[log p(x, h)]``. The intractable ``E_q[log(1 + e^{z_i})]`` is bounded (SJJ eq. 11) with a
variational parameter ``xi_i`` by Jensen's inequality::

    E[log(1 + e^z)] <= xi <z> + log <e^{-xi z} + e^{(1 - xi) z}>

and under ``q`` the right side factorises over the parents ``j`` of ``i``::

    log <e^{t z_i}> = t b_i + sum_j log(1 - mu_j + mu_j e^{t w_ji})
                    = t b_i + sum_j [softplus(lambda_j + t w_ji) - softplus(lambda_j)],  mu_j = sigma(lambda_j).

Hence the deterministic lower bound on ``log p(x)`` (SJJ eq. 12), with ``A_i``/``B_i`` the logs
of the two moments (``t = -xi_i`` and ``t = 1 - xi_i``)::

    L(mu, xi) = sum_i [(mu_i - xi_i) <z_i> - logaddexp(A_i, B_i)] + sum_{i hidden} H(mu_i).

Inference is coordinate ascent per data point: ``xi`` by a safeguarded Newton step (``L`` is
concave and separable in ``xi``), then each hidden unit in turn by SJJ's fixed-point equation
``lambda_i <- dL/dmu_i (without the entropy)``, with step halving so no update lowers ``L``.
Learning is gradient ascent on ``L`` in the generative weights at the coordinate-ascent
optimum (an optax optimiser), each training case keeping its ``mu``, ``xi`` between visits.
With one hidden unit each visible ``z_i`` takes two values, some ``xi_i`` makes Jensen's
bound tight, and the optimum is the exact posterior with ``L = log p(x)``.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import random

from sbn_ppl.data import validate_binary
from sbn_ppl.methods import Method
from sbn_ppl.params import SBNParams, generative_keys

DEFAULTS = {"iterations": 3, "lr": 3e-3, "batch_size": 100, "optimizer": "adam", "bound_sweeps": 30}
OPTIMIZERS = ("adam", "sgd")
_STEPS = 2.0 ** -jnp.arange(8)  # step halving for the safeguarded updates: 1, 1/2, ..., 1/128
_XI_NEWTON = 3  # Newton steps on xi per sweep
sp = jax.nn.softplus


# -- the bound -----------------------------------------------------------------------------


def _means(x, lam):
    """``mu`` per layer: ``x`` for the visible layer, ``sigma(lambda_l)`` above."""
    return [x] + [jax.nn.sigmoid(v) for v in lam]


def _log_moment(arch, theta, lam, layer, t):
    """``log <e^{t z_i}>`` for every unit of ``layer`` (``t``: ``(B, n_layer)``), factorised over parents."""
    out = t * theta[f"b_{layer}"]
    for p in arch.parents(layer):
        tw = t[:, None, :] * theta[f"W_{p}_{layer}"][None]  # t_i w_ji: (B, n_p, n_layer)
        out = out + (sp(lam[p - 1][:, :, None] + tw) - sp(lam[p - 1])[:, :, None]).sum(1)
    return out


def _caches(arch, theta, x, lam, xi):
    """``<z>``, ``A`` and ``B`` for every layer (lists indexed by layer)."""
    mu = _means(x, lam)
    m, a, b = [], [], []
    for k in range(arch.num_layers + 1):
        z = theta[f"b_{k}"] + sum(mu[p] @ theta[f"W_{p}_{k}"] for p in arch.parents(k))  # <z_k>
        m.append(jnp.broadcast_to(z, xi[k].shape))
        a.append(_log_moment(arch, theta, lam, k, -xi[k]))  # A_k = log <e^{-xi z}>
        b.append(_log_moment(arch, theta, lam, k, 1.0 - xi[k]))  # B_k = log <e^{(1 - xi) z}>
    return m, a, b


def _entropy(lam):
    """``H(Bernoulli(sigma(lambda))) = softplus(lambda) - sigma(lambda) lambda``."""
    return sp(lam) - jax.nn.sigmoid(lam) * lam


def bound_terms(arch, theta, x, lam, xi):
    """The SJJ lower bound ``L(mu, xi)`` on ``log p(x_n)`` for each row of the batch: ``(B,)``.

    :param theta: generative parameters ``b_<l>``, ``W_<m>_<l>`` (JAX arrays).
    :param x: the batch ``(B, D)``; ``lam``: hidden logits ``lambda_l`` ``(B, n_l)``, ``l = 1..L``;
        ``xi``: variational parameters ``(B, n_k)`` for every layer ``k = 0..L``.
    """
    mu = _means(x, lam)
    m, a, b = _caches(arch, theta, x, lam, xi)
    total = sum(((mu[k] - xi[k]) * m[k] - jnp.logaddexp(a[k], b[k])).sum(-1) for k in range(arch.num_layers + 1))
    return total + sum(_entropy(v).sum(-1) for v in lam)


# -- coordinate ascent ---------------------------------------------------------------------


def _first_improving(candidates, values, current_value, current):
    """Per data point and unit, the first candidate (largest step) that does not lower the bound."""
    ok = values >= current_value[None]
    pick = jnp.argmax(ok, axis=0)
    chosen = jnp.take_along_axis(candidates, pick[None], axis=0)[0]
    return jnp.where(ok.any(0), chosen, current)


def update_xi(arch, theta, x, lam, xi):
    """Safeguarded Newton steps on every ``xi_k`` (``L`` is concave and separable in ``xi``), within [0, 1]."""
    mu = _means(x, lam)
    new = []
    for k in range(arch.num_layers + 1):
        z = theta[f"b_{k}"] + sum(mu[p] @ theta[f"W_{p}_{k}"] for p in arch.parents(k))

        def terms(v, z=z, k=k):  # the xi-dependent part of unit i's term: -xi <z> - logaddexp(A, B)
            return -v * z - jnp.logaddexp(_log_moment(arch, theta, lam, k, -v), _log_moment(arch, theta, lam, k, 1.0 - v))

        def newton(_, v, terms=terms):
            g, h = jax.jvp(jax.grad(lambda u: terms(u).sum()), (v,), (jnp.ones_like(v),))  # diagonal Hessian
            target = jnp.clip(v - g / jnp.minimum(h, -1e-6), 0.0, 1.0)
            cand = v[None] + _STEPS[:, None, None] * (target - v)[None]
            return _first_improving(cand, jax.vmap(terms)(cand), terms(v), v)

        v = jax.lax.fori_loop(0, _XI_NEWTON, newton, xi[k])
        new.append(v)
    return new


def _dlog_moment_dmu(mu, t):
    """``d/dmu log(1 - mu + mu e^t) = (e^t - 1) / (1 - mu + mu e^t)``, without overflow."""
    u = jnp.exp(-jnp.abs(t))
    return jnp.where(t >= 0, (1.0 - u) / ((1.0 - mu) * u + mu), (u - 1.0) / ((1.0 - mu) + mu * u))


def _sweep_layer(arch, theta, x, lam, xi, caches, l):
    """Update the units of hidden layer ``l`` one at a time (they are coupled through their children)."""
    m, a, b = caches
    kids = arch.children(l)
    mu_kids = {k: (x if k == 0 else jax.nn.sigmoid(lam[k - 1])) for k in kids}

    def unit(i, carry):
        lam_l, kid_caches = carry
        li = lam_l[:, i]
        c = m[l][:, i]  # d/dmu_i of mu_i <z_i> ...
        parts = []
        for k, (mk, ak, bk) in zip(kids, kid_caches):
            w = theta[f"W_{l}_{k}"][i]  # w_ik: (n_k,)
            c = c + (mu_kids[k] - xi[k]) @ w  # ... + sum_k (mu_k - xi_k) w_ik
            ta, tb = -xi[k] * w, (1.0 - xi[k]) * w
            share_a = sp(li[:, None] + ta) - sp(li)[:, None]  # unit i's factor in A_k
            share_b = sp(li[:, None] + tb) - sp(li)[:, None]
            parts.append((ta, tb, ak - share_a, bk - share_b, ak, bk, mk, w))
        mi = jax.nn.sigmoid(li)
        # SJJ's fixed point: lambda_i = d/dmu_i [L - H(mu_i)] = c - sum_k [w^A dA_k/dmu_i + w^B dB_k/dmu_i]
        target = c
        for ta, tb, _, _, ak, bk, _, _ in parts:
            wa = jax.nn.sigmoid(ak - bk)  # d logaddexp(A, B) / dA
            target = target - (wa * _dlog_moment_dmu(mi[:, None], ta)
                               + (1.0 - wa) * _dlog_moment_dmu(mi[:, None], tb)).sum(-1)

        def local(v):  # the part of L that depends on mu_i = sigma(v)
            val = jax.nn.sigmoid(v) * c + _entropy(v)
            for ta, tb, a_rest, b_rest, *_ in parts:
                val = val - jnp.logaddexp(a_rest + sp(v[:, None] + ta) - sp(v)[:, None],
                                          b_rest + sp(v[:, None] + tb) - sp(v)[:, None]).sum(-1)
            return val

        cand = li[None] + _STEPS[:, None] * (target - li)[None]
        new = _first_improving(cand, jax.vmap(local)(cand), local(li), li)
        dmu = jax.nn.sigmoid(new) - mi
        kid_caches = tuple(
            (mk + dmu[:, None] * w, a_rest + sp(new[:, None] + ta) - sp(new)[:, None],
             b_rest + sp(new[:, None] + tb) - sp(new)[:, None])
            for ta, tb, a_rest, b_rest, _, _, mk, w in parts)
        return lam_l.at[:, i].set(new), kid_caches

    init = (lam[l - 1], tuple((m[k], a[k], b[k]) for k in kids))
    lam_l, kid_caches = jax.lax.fori_loop(0, arch.sizes[l], unit, init)
    lam = list(lam)
    lam[l - 1] = lam_l
    m, a, b = list(m), list(a), list(b)
    for k, (mk, ak, bk) in zip(kids, kid_caches):
        m[k], a[k], b[k] = mk, ak, bk
    return lam, (m, a, b)


def sweep(arch, theta, x, lam, xi):
    """One coordinate-ascent sweep: ``xi`` (all units), then every hidden unit, top layer first."""
    xi = update_xi(arch, theta, x, lam, xi)
    caches = _caches(arch, theta, x, lam, xi)
    lam = list(lam)
    for l in range(arch.num_layers, 0, -1):
        lam, caches = _sweep_layer(arch, theta, x, lam, xi, caches, l)
    return lam, xi


def coordinate_ascent(arch, theta, x, lam, xi, sweeps: int):
    """``sweeps`` sweeps of :func:`sweep` (a ``lax`` loop)."""
    def body(_, carry):
        lam, xi = sweep(arch, theta, x, list(carry[0]), list(carry[1]))
        return tuple(lam), tuple(xi)

    lam, xi = jax.lax.fori_loop(0, sweeps, body, (tuple(lam), tuple(xi)))  # sweeps may be traced
    return list(lam), list(xi)


def initial_variational(arch, num_data: int):
    """``lambda = 0`` (``mu = 1/2``) and ``xi = 1/2`` for ``num_data`` data points."""
    lam = [jnp.zeros((num_data, n)) for n in arch.hidden_sizes]
    xi = [jnp.full((num_data, n), 0.5) for n in arch.sizes]
    return lam, xi


def _theta(params: SBNParams) -> dict:
    return {k: jnp.asarray(params[k]) for k in generative_keys(params.architecture)}


@functools.partial(jax.jit, static_argnums=0)
def _ascend(arch, theta, x, lam, xi, sweeps):
    lam, xi = coordinate_ascent(arch, theta, x, lam, xi, sweeps)
    return lam, xi, bound_terms(arch, theta, x, lam, xi)


def mean_field_bound(params: SBNParams, x, sweeps: int = DEFAULTS["bound_sweeps"], init=None):
    """The SJJ bound on ``log p(x_n)`` after ``sweeps`` sweeps of coordinate ascent.

    :param params: the SBN (generative keys are used).
    :param x: data ``(N, D)``.
    :param init: starting ``(lam, xi)``: hidden logits ``[(N, n_l)]`` and ``xi`` ``[(N, n_k)]`` for
        layers ``0..L``; default ``mu = xi = 1/2``.
    :returns: ``(bound (N,), [mu_l (N, n_l) for l = 1..L], xi)`` as NumPy arrays.
    """
    if int(sweeps) != sweeps or sweeps < 0:
        raise ValueError(f"sweeps must be a non-negative integer, got {sweeps}")
    arch = params.architecture
    x = jnp.asarray(validate_binary(x, width=arch.visible_size, name="x"))
    lam, xi = initial_variational(arch, x.shape[0]) if init is None else init
    lam, xi = [jnp.asarray(v, jnp.float32) for v in lam], [jnp.asarray(v, jnp.float32) for v in xi]
    lam, xi, value = _ascend(arch, _theta(params), x, lam, xi, jnp.asarray(sweeps))
    return (np.asarray(value, np.float64), [np.asarray(jax.nn.sigmoid(v), np.float64) for v in lam],
            [np.asarray(v, np.float64) for v in xi])


# -- learning ------------------------------------------------------------------------------


class FixedPointState(NamedTuple):
    theta: dict  # generative parameters b_<l>, W_<m>_<l>
    opt_state: Any  # optax state
    lam: tuple  # persistent hidden logits per training case, (N, n_l) per hidden layer
    xi: tuple  # persistent xi per training case, (N, n_k) per layer
    key: jax.Array


class FixedPointInfo(NamedTuple):
    objective: jax.Array  # mean SJJ bound of the batch after coordinate ascent (nats per data point)


def step(key, state: FixedPointState, data, *, arch, optimizer, iterations: int, batch_size: int):
    """One learning step: pick a batch, ``iterations`` sweeps on its ``mu``/``xi``, one gradient step on ``L``.

    :param data: the training matrix ``(N, D)``; the batch's ``mu``, ``xi`` resume from the state.
    """
    idx = random.choice(key, data.shape[0], (batch_size,), replace=False)
    x = data[idx]
    lam = [v[idx] for v in state.lam]
    xi = [v[idx] for v in state.xi]
    lam, xi = coordinate_ascent(arch, state.theta, x, lam, xi, iterations)

    def neg_bound(theta):  # envelope theorem: at the optimum of (mu, xi), dL*/dtheta = dL/dtheta
        return -bound_terms(arch, theta, x, lam, xi).mean()

    loss, grads = jax.value_and_grad(neg_bound)(state.theta)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.theta)
    theta = optax.apply_updates(state.theta, updates)
    new = FixedPointState(theta, opt_state, tuple(v.at[idx].set(n) for v, n in zip(state.lam, lam)),
                          tuple(v.at[idx].set(n) for v, n in zip(state.xi, xi)), state.key)
    return new, FixedPointInfo(-loss)


# -- the Method record ---------------------------------------------------------------------


class _RunState(NamedTuple):
    state: FixedPointState
    params: SBNParams  # the initial parameters (architecture, keys to carry over)
    train: jax.Array
    step: Any  # jitted (key, state, data) -> (state, info)
    options: dict


def _check_options(opts: dict) -> dict:
    unknown = sorted(set(opts) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; the options are {', '.join(sorted(DEFAULTS))}")
    if not (np.isfinite(opts["lr"]) and opts["lr"] > 0):
        raise ValueError(f"the learning rate must be a positive number, got {opts['lr']}")
    for name in ("iterations", "batch_size", "bound_sweeps"):
        if int(opts[name]) != opts[name] or opts[name] < (0 if name == "bound_sweeps" else 1):
            raise ValueError(f"{name} must be a positive integer, got {opts[name]!r}")
    if opts["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {opts['optimizer']!r}")
    return {**opts, **{n: int(opts[n]) for n in ("iterations", "batch_size", "bound_sweeps")}}


def init(params: SBNParams, train, seed: int = 0, **options) -> _RunState:
    """Generative parameters from ``params``; ``mu = xi = 1/2`` for every training case."""
    opts = _check_options({**DEFAULTS, **options})
    arch = params.architecture
    train = jnp.asarray(np.asarray(train), dtype=jnp.float32)
    optimizer, kernel = _kernel(arch, opts["optimizer"], float(opts["lr"]), opts["iterations"],
                                min(opts["batch_size"], train.shape[0]))
    theta = _theta(params)
    lam, xi = initial_variational(arch, train.shape[0])
    state = FixedPointState(theta, optimizer.init(theta), tuple(lam), tuple(xi), random.PRNGKey(seed))
    return _RunState(state, params, train, kernel, opts)


@functools.lru_cache(maxsize=16)
def _kernel(arch, optimizer_name: str, lr: float, iterations: int, batch_size: int):
    """The optax optimiser and the jitted :func:`step` (cached: one compilation per configuration)."""
    optimizer = (optax.adam if optimizer_name == "adam" else optax.sgd)(lr)
    return optimizer, jax.jit(functools.partial(step, arch=arch, optimizer=optimizer, iterations=iterations,
                                                batch_size=batch_size))


def run(rs: _RunState, num_steps: int) -> tuple[_RunState, dict]:
    state, total = rs.state, 0.0
    for _ in range(num_steps):
        key, sub = random.split(state.key)
        state, info = rs.step(sub, state._replace(key=key), rs.train)
        total = total + info.objective
    return rs._replace(state=state), {"objective": float(total) / max(num_steps, 1)}


def get_params(rs: _RunState) -> SBNParams:
    """The learned generative parameters, plus the training cases' ``mu`` logits as ``q_mf_local_<l>``."""
    arrays = {k: np.asarray(v) for k, v in rs.state.theta.items()}
    arrays.update({f"q_mf_local_{l}": np.asarray(v) for l, v in enumerate(rs.state.lam, start=1)})
    generative = rs.params.generative()
    return SBNParams.from_mapping(arrays, like=generative)


def bound(rs: _RunState, x) -> np.ndarray:
    """The SJJ bound on ``log p(x_n)`` after ``bound_sweeps`` sweeps of coordinate ascent on ``x``."""
    params = SBNParams.from_mapping({k: np.asarray(v) for k, v in rs.state.theta.items()}, like=rs.params.generative())
    return mean_field_bound(params, x, rs.options["bound_sweeps"])[0]


def method() -> Method:
    """``mean-field-fixed-point`` (Saul, Jaakkola & Jordan 1996), JAX (registered as the numpyro backend)."""
    return Method(
        name="mean-field-fixed-point",
        backend="numpyro",
        init=init,
        run=run,
        get_params=get_params,
        guide=None,
        bound=bound,
        defaults=dict(DEFAULTS),
        description="SJJ mean-field bound: coordinate ascent on mu and xi, gradient ascent on the weights (JAX)",
    )
