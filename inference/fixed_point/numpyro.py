"""Mean-field theory for sigmoid belief networks (Saul, Jaakkola & Jordan 1996), in JAX.

**The bound.** For a factorised ``q(h) = prod_i mu_i^{h_i} (1 - mu_i)^{1 - h_i}`` over the
hidden units (``mu_i = sigma(lambda_i)``; the visible units clamped, ``mu = x``), every unit
``i`` (visible or hidden) with pre-activation ``z_i = b_i + sum_j w_ji s_j`` contributes
``E_q[s_i z_i - log(1 + e^{z_i})]`` to ``E_q[log p(x, h)]``. The intractable
``E_q[log(1 + e^{z_i})]`` is bounded (SJJ eq. 11) with a variational ``xi_i`` by Jensen::

    E[log(1 + e^z)] <= xi <z> + log <e^{-xi z} + e^{(1 - xi) z}>,

and under ``q`` the moments factorise over the parents ``j`` of ``i``::

    log <e^{t z_i}> = t b_i + sum_j log d_ji(t),    d_ji(t) = 1 - mu_j + mu_j e^{t w_ji}.

With ``A_i``, ``B_i`` the two log-moments (``t = -xi_i`` and ``t = 1 - xi_i``) this gives the
deterministic lower bound on ``log p(x)`` (SJJ eq. 12)::

    L(mu, xi) = sum_i [(mu_i - xi_i) <z_i> - logaddexp(A_i, B_i)] + sum_{i hidden} H(mu_i).

**Coordinate ascent, every unit at once.** One sweep proposes, for every data point, new
``(lambda, xi)`` for all units of all layers from the current point:

* ``xi``: ``L`` is concave and separable in ``xi``. With ``omega_i = sigma(A_i - B_i)`` and
  ``p_ji(t) = mu_j e^{t w_ji} / d_ji(t)`` (the mean of ``s_j`` tilted by ``e^{t z_i}``), the
  tilted means and variances of ``z_i`` are ``m_i(t) = b_i + sum_j w_ji p_ji(t)`` and
  ``v_i(t) = sum_j w_ji^2 p_ji(t) (1 - p_ji(t))``, and::

      dL/dxi_i   = omega_i m_i(-xi_i) + (1 - omega_i) m_i(1 - xi_i) - <z_i>,
      d2L/dxi_i2 = -[omega_i v_i(-xi_i) + (1 - omega_i) v_i(1 - xi_i)
                     + omega_i (1 - omega_i) (m_i(-xi_i) - m_i(1 - xi_i))^2].

  The proposal is Newton's step, clipped to ``[0, 1]`` (where the maximiser lies), with both
  tilted variances ``v_i`` replaced by their average over ``[-xi_i, 1 - xi_i]``, the secant
  ``m_i(1 - xi_i) - m_i(-xi_i)``: no further sums over the edges, and as fast to converge.
* ``lambda``: SJJ's fixed-point equation, ``lambda_i = dL/dmu_i`` without the entropy
  (whose derivative is ``-lambda_i``)::

      lambda_i <- <z_i> + sum_{k child of i} [(mu_k - xi_k) w_ik
                          - omega_k D_ik(-xi_k) - (1 - omega_k) D_ik(1 - xi_k)],
      D_ik(t) = d log d_ik(t) / d mu_i = (e^{t w_ik} - 1) / d_ik(t).

Both are ascent directions (``dL/dlambda_i = mu_i (1 - mu_i) (target_i - lambda_i)``, and
Newton's clipped step has the sign of ``dL/dxi_i``), so the damped move
``(lambda, xi) + eta (target - (lambda, xi))`` raises ``L`` for a small enough ``eta``. Units of
one layer are coupled through their shared children, so the full step can overshoot:
each data point takes its move only if its bound does not go down, else it keeps its
``(lambda, xi)`` and halves its ``eta``; a move taken doubles ``eta`` (at most 1). Hence
``L`` never decreases, and a sweep costs one pass over the edges (the pass at the
proposal is the next sweep's starting point), where SJJ's own scheme updates one unit at
a time, each with a line search. From ``mu = xi = 1/2`` about 10-30 sweeps reach the
bound of 30 unit-by-unit sweeps (to 1e-4 nats on the tests' nets).

**Learning.** Gradient ascent on ``L`` in the generative weights at the ``(mu, xi)`` the
sweeps reached (an optax optimiser), with each training point keeping its ``lambda``,
``xi`` and ``eta`` between visits (indexed by the runner's ``batch.index``), so one sweep
per visit suffices (the default). The gradient, in closed form from the tilted means::

    dL/dw_ji = (mu_i - xi_i) mu_j + omega_i xi_i p_ji(-xi_i) - (1 - omega_i)(1 - xi_i) p_ji(1 - xi_i),
    dL/db_i  = mu_i - sigma(B_i - A_i).

With one hidden unit each visible ``z_i`` takes two values, some ``xi_i`` makes Jensen's bound
tight, and the optimum is the exact posterior with ``L = log p(x)``.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.inference.shared.gradient.numpyro import gradient_kernel
from sbn_ppl.base.optimizers import optax_optimizer
from sbn_ppl.base.params import SBNParams, generative_keys
from sbn_ppl.base.resources import check_memory

from . import BOUND_SWEEPS, FIXED_POINT_OPTIONS

_MIN_CURVATURE = 1e-6  # floor on -d2L/dxi2 in Newton's step (units without parents have none)
_MIN_ETA = 2.0 ** -12  # a data point's damping never falls below this (a rejected move costs nothing)
CONVERGED = 1e-6  # relative gain of a sweep below which the bound on new data stops early
_BOUND_ELEMENTS = 1 << 24  # rows x edges per chunk of the bound on new data (a few (rows, n_j, n_i) arrays)
sp = jax.nn.softplus


# -- the bound, written plainly (the reference the fast pass is tested against) ---------------


def _log_moment(arch, theta, lam, layer, t):
    """``log <e^{t z_i}>`` for every unit of ``layer`` (``t``: ``(B, n_layer)``), factorised over parents."""
    out = t * theta[f"b_{layer}"]
    for p in arch.parents(layer):
        tw = t[:, None, :] * theta[f"W_{p}_{layer}"][None]  # t_i w_ji: (B, n_p, n_layer)
        out = out + (sp(lam[p - 1][:, :, None] + tw) - sp(lam[p - 1])[:, :, None]).sum(1)  # log d_ji(t)
    return out


def _entropy(lam):
    """``H(Bernoulli(sigma(lambda))) = softplus(lambda) - sigma(lambda) lambda``."""
    return sp(lam) - jax.nn.sigmoid(lam) * lam


def bound_terms(arch, theta, x, lam, xi):
    """The SJJ lower bound ``L(mu, xi)`` on ``log p(x_n)`` for each row of the batch: ``(B,)``.

    :param theta: generative parameters ``b_<l>``, ``W_<m>_<l>`` (JAX arrays).
    :param x: the batch ``(B, D)``; ``lam``: hidden logits ``lambda_l`` ``(B, n_l)``, ``l = 1..L``;
        ``xi``: variational parameters ``(B, n_k)`` for every layer ``k = 0..L``.
    """
    mu = [x] + [jax.nn.sigmoid(v) for v in lam]
    total = sum(_entropy(v).sum(-1) for v in lam)
    for k in range(arch.num_layers + 1):
        z = theta[f"b_{k}"] + sum(mu[p] @ theta[f"W_{p}_{k}"] for p in arch.parents(k))  # <z_k>
        a = _log_moment(arch, theta, lam, k, -xi[k])
        b = _log_moment(arch, theta, lam, k, 1.0 - xi[k])
        total = total + ((mu[k] - xi[k]) * z - jnp.logaddexp(a, b)).sum(-1)
    return total


# -- one pass over the edges: the bound and everything a sweep needs ---------------------------


class Pass(NamedTuple):
    """What one pass over the edges gives at ``(mu, xi)``: the bound per row, ``A_k`` and ``B_k``
    per layer ``k = 0..L`` (``(B, n_k)``), and on request ``xi``'s Newton quantities and
    ``lambda``'s fixed-point target (``targets``) and the tilted means ``p_ji(t)`` of every edge
    (``tilted``, for the weights' gradient); fields not requested are ``None``."""

    value: jax.Array  # L(mu, xi) per row: (B,)
    log_a: tuple  # A_k = log <e^{-xi z}>
    log_b: tuple  # B_k = log <e^{(1 - xi) z}>
    slope: tuple | None = None  # dL/dxi_k
    curvature: tuple | None = None  # -d2L/dxi_k2, estimated (see evaluate)
    target: tuple | None = None  # SJJ's fixed point for lambda_l, l = 1..L
    tilted: tuple | None = None  # (p_ji(-xi_i), p_ji(1 - xi_i)), (B, n_j, n_i) each, per edge in arch.edges()


def _tilts(mu_j, nu_j, w, xi_i):
    """``e^{t w_ji}`` and ``d_ji(t)`` for ``t = -xi_i`` and ``1 - xi_i``: four ``(B, n_j, n_i)`` arrays.

    ``d_ji(t) = nu_j + mu_j e^{t w_ji}`` with ``nu_j = 1 - mu_j`` computed as ``sigma(-lambda_j)``, a
    sum of two non-negative terms: no cancellation when ``mu_j`` saturates.
    """
    e_a = jnp.exp(-xi_i[:, None, :] * w)
    e_b = e_a * jnp.exp(w)  # e^{(1 - xi) w} = e^{-xi w} e^{w}: one exp for both
    m, n = mu_j[:, :, None], nu_j[:, :, None]
    return e_a, e_b, n + m * e_a, n + m * e_b


def evaluate(arch: Architecture, theta, x, lam, xi, *, targets: bool = True, tilted: bool = False) -> Pass:
    """One pass over every edge ``j -> i`` at ``(mu = sigma(lambda), xi)`` (the module docstring's
    formulas): the bound per row, and with ``targets`` ``xi``'s Newton quantities and ``lambda``'s
    fixed-point target, with ``tilted`` the tilted means of every edge.

    Newton's curvature ``Var_r(z_i) = omega v(-xi) + (1 - omega) v(1 - xi) + omega (1 - omega)
    (m(1 - xi) - m(-xi))^2`` takes both tilted variances ``v`` to be their average over
    ``[-xi, 1 - xi]``, the secant ``m(1 - xi) - m(-xi)`` of the log-moment's derivative: no
    further pass over the edges (it only shapes a proposal; the check keeps ``L`` monotone).
    """
    mu = [x] + [jax.nn.sigmoid(v) for v in lam]
    nu = [1.0 - x] + [jax.nn.sigmoid(-v) for v in lam]
    layers = range(arch.num_layers + 1)
    edges, mean, log_a, log_b, omega, slope, curvature = {}, [], [], [], [], [], []
    value = sum(_entropy(v).sum(-1) for v in lam)
    for k in layers:
        bias = theta[f"b_{k}"]
        z = bias + sum(mu[p] @ theta[f"W_{p}_{k}"] for p in arch.parents(k))  # <z_k>
        z = jnp.broadcast_to(z, xi[k].shape)
        a, b = -xi[k] * bias, (1.0 - xi[k]) * bias  # A_k, B_k: the bias's part
        spread = jnp.zeros_like(xi[k])  # m_k(1 - xi) - m_k(-xi): tilted means of z_k, the bias cancels
        m_a = jnp.broadcast_to(bias, xi[k].shape)  # m_k(-xi)
        for p in arch.parents(k):
            w = theta[f"W_{p}_{k}"]
            e_a, e_b, d_a, d_b = _tilts(mu[p], nu[p], w, xi[k])
            a = a + jnp.log(d_a).sum(1)  # + sum_j log d_ji(-xi)
            b = b + jnp.log(d_b).sum(1)
            p_a, p_b = mu[p][:, :, None] * e_a / d_a, mu[p][:, :, None] * e_b / d_b  # p_ji(t)
            edges[p, k] = (e_a, e_b, d_a, d_b, p_a, p_b)
            if targets:
                w_a, w_b = (w * p_a).sum(1), (w * p_b).sum(1)
                m_a, spread = m_a + w_a, spread + w_b - w_a
        o = jax.nn.sigmoid(a - b)  # omega_k: d logaddexp(A, B) / dA
        mean.append(z)
        log_a.append(a)
        log_b.append(b)
        omega.append(o)
        slope.append(m_a + (1.0 - o) * spread - z)  # omega m(-xi) + (1 - omega) m(1 - xi) - <z>
        curvature.append(spread + o * (1.0 - o) * spread ** 2)
        value = value + ((mu[k] - xi[k]) * z - jnp.logaddexp(a, b)).sum(-1)
    out = Pass(value, tuple(log_a), tuple(log_b))
    if targets:
        target = []
        for l in layers[1:]:
            t = mean[l]
            for k in arch.children(l):
                e_a, e_b, d_a, d_b, _, _ = edges[l, k]
                o = omega[k][:, None, :]  # D_ik(t) = (e^{t w} - 1) / d(t), mixed over the two tilts
                t = t + (mu[k] - xi[k]) @ theta[f"W_{l}_{k}"].T - (o * (e_a - 1.0) / d_a
                                                                  + (1.0 - o) * (e_b - 1.0) / d_b).sum(2)
            target.append(t)
        out = out._replace(slope=tuple(slope), curvature=tuple(curvature), target=tuple(target))
    if tilted:
        out = out._replace(tilted=tuple(edges[p, k][4:] for p, k in arch.edges()))
    return out


# -- coordinate ascent ---------------------------------------------------------------------


class Variational(NamedTuple):
    """Per data point: hidden logits ``lambda_l`` ``(B, n_l)``, ``xi_k`` ``(B, n_k)`` for every
    layer ``k = 0..L``, and the damping ``eta`` ``(B,)`` of the next move."""

    lam: tuple
    xi: tuple
    eta: jax.Array


def _proposal(va: Variational, m: Pass) -> tuple[list, list]:
    """The fixed-point targets for ``lambda`` and Newton's step for ``xi``, clipped to ``[0, 1]``."""
    xi = [jnp.clip(v + g / jnp.maximum(c, _MIN_CURVATURE), 0.0, 1.0)
          for v, g, c in zip(va.xi, m.slope, m.curvature)]
    return list(m.target), xi


def sweep(arch: Architecture, theta, x, va: Variational, m: Pass, *, targets: bool = True,
          tilted: bool = False) -> tuple[Variational, Pass, jax.Array]:
    """One damped sweep: every unit moves ``eta`` of the way to its proposal; each row takes the
    move only where its bound does not drop. ``m`` is the pass at ``va`` (with targets); returns
    the new point, its pass (with ``targets`` and ``tilted`` as asked; ``m`` must have ``tilted``
    if asked) and which rows moved."""
    lam_t, xi_t = _proposal(va, m)
    eta = va.eta[:, None]
    lam = [v + eta * (t - v) for v, t in zip(va.lam, lam_t)]
    xi = [v + eta * (t - v) for v, t in zip(va.xi, xi_t)]
    m_new = evaluate(arch, theta, x, lam, xi, targets=targets, tilted=tilted)
    ok = m_new.value >= m.value  # False where the proposal's bound is NaN

    def pick(new, old):
        return jnp.where(ok.reshape(ok.shape + (1,) * (new.ndim - 1)), new, old)

    eta = jnp.where(ok, jnp.minimum(2.0 * va.eta, 1.0), jnp.maximum(0.5 * va.eta, _MIN_ETA))
    va = Variational(tuple(map(pick, lam, va.lam)), tuple(map(pick, xi, va.xi)), eta)
    kept = m if targets else m._replace(slope=None, curvature=None, target=None)
    kept = kept if tilted else kept._replace(tilted=None)
    return va, jax.tree.map(pick, m_new, kept), ok


def coordinate_ascent(arch: Architecture, theta, x, va: Variational, sweeps, *, tilted: bool = False,
                      tol: float | None = None) -> tuple[Variational, Pass, jax.Array]:
    """Up to ``sweeps`` damped sweeps from ``va`` (a ``lax`` loop; ``sweeps`` may be traced): the
    final point, its pass (with ``tilted`` if asked), and the fraction of proposals taken.

    :param tol: stop early once every row took its last move and gained at most
        ``tol * max(1, |L|)`` nats by it (converged); ``None``: always ``sweeps`` sweeps.
    """

    def body(carry):
        i, va, m, taken, _ = carry
        va, m_new, ok = sweep(arch, theta, x, va, m, tilted=tilted)
        done = jnp.zeros((), bool) if tol is None else \
            jnp.all(ok & (m_new.value - m.value <= tol * jnp.maximum(1.0, jnp.abs(m.value))))
        return i + 1, va, m_new, taken + ok.mean(dtype=taken.dtype), done

    start = (jnp.zeros((), jnp.int32), va, evaluate(arch, theta, x, va.lam, va.xi, tilted=tilted),
             jnp.zeros((), va.eta.dtype), jnp.zeros((), bool))
    if isinstance(sweeps, int) and sweeps == 0:  # nothing to loop over (a learning step's one sweep)
        return va, start[2], start[3]
    count, va, m, taken, _ = jax.lax.while_loop(lambda c: (c[0] < sweeps) & ~c[4], body, start)
    return va, m, taken / jnp.maximum(count, 1)


def learning_ascent(arch: Architecture, theta, x, va: Variational, sweeps: int) -> tuple[Variational, Pass, jax.Array]:
    """``sweeps >= 1`` sweeps for a learning step: as :func:`coordinate_ascent`, but the last
    proposal's pass computes only what the weights' gradient needs (the bound and the tilted
    means, no targets), so a step costs ``sweeps + 1`` passes, the last one light."""
    va, m, taken = coordinate_ascent(arch, theta, x, va, sweeps - 1, tilted=True)
    va, m, ok = sweep(arch, theta, x, va, m, targets=False, tilted=True)
    return va, m, (taken * (sweeps - 1) + ok.mean(dtype=taken.dtype)) / sweeps


def theta_gradient(arch: Architecture, theta, x, va: Variational, m: Pass) -> dict:
    """``dL/dtheta`` averaged over the rows, at ``va`` (``m``: the pass there, with ``tilted``),
    from the module docstring's closed forms (the envelope theorem: ``(mu, xi)`` held fixed)."""
    mu = [x] + [jax.nn.sigmoid(v) for v in va.lam]
    n = x.shape[0]
    omega = [jax.nn.sigmoid(a - b) for a, b in zip(m.log_a, m.log_b)]
    grads = {f"b_{k}": (mu[k] - (1.0 - omega[k])).mean(0) for k in range(arch.num_layers + 1)}
    for (p, k), (p_a, p_b) in zip(arch.edges(), m.tilted):
        o, xi = omega[k], va.xi[k]
        tilt = (p_a * (o * xi)[:, None, :] - p_b * ((1.0 - o) * (1.0 - xi))[:, None, :]).sum(0)
        grads[f"W_{p}_{k}"] = (mu[p].T @ (mu[k] - xi) + tilt) / n
    return grads


def initial_variational(arch: Architecture, num_data: int, dtype=jnp.float32) -> Variational:
    """``lambda = 0`` (``mu = 1/2``), ``xi = 1/2`` and ``eta = 1`` for ``num_data`` data points."""
    return Variational(tuple(jnp.zeros((num_data, n), dtype) for n in arch.hidden_sizes),
                       tuple(jnp.full((num_data, n), 0.5, dtype) for n in arch.sizes),
                       jnp.ones((num_data,), dtype))


def pack(va: Variational) -> jax.Array:
    """``va`` as one table, a row per data point: ``[lambda_1 .. lambda_L | xi_0 .. xi_L | eta]``
    (one gather and one scatter per step for the training points' state)."""
    return jnp.concatenate(list(va.lam) + list(va.xi) + [va.eta[:, None]], axis=1)


def unpack(arch: Architecture, table) -> Variational:
    """The inverse of :func:`pack`."""
    cuts = np.cumsum(arch.hidden_sizes + arch.sizes)
    parts = jnp.split(table, cuts, axis=1)
    return Variational(tuple(parts[:arch.num_layers]), tuple(parts[arch.num_layers:-1]), parts[-1][:, 0])


# -- the bound on new data -------------------------------------------------------------------


def _theta(params: SBNParams) -> dict:
    return {k: jnp.asarray(params[k], jnp.float32) for k in generative_keys(params.architecture)}


@functools.partial(jax.jit, static_argnums=(0, 5))
def _ascend(arch, theta, x, va, sweeps, tol):
    va, m, _ = coordinate_ascent(arch, theta, x, va, sweeps, tol=tol)
    return va, m.value


def _chunk_rows(arch: Architecture) -> int:
    return int(max(1, min(1000, _BOUND_ELEMENTS // max(1, arch.num_edges()))))


def mean_field_bound(params: SBNParams, x, sweeps: int = BOUND_SWEEPS.default, init=None,
                     tol: float | None = CONVERGED):
    """The SJJ bound on ``log p(x_n)`` after at most ``sweeps`` damped sweeps of coordinate ascent
    (fewer once a chunk of rows has converged, see :func:`coordinate_ascent`'s ``tol``).

    :param params: the SBN (its generative keys are used).
    :param x: data ``(N, D)`` of 0/1; scored in chunks of rows of one fixed size (memory
        bounded whatever ``N`` is, one compilation).
    :param init: the starting ``(lam, xi)``: hidden logits ``[(N, n_l)]`` and ``xi`` ``[(N, n_k)]``
        for layers ``0..L``; default ``mu = xi = 1/2``. Every row starts with ``eta = 1``.
    :returns: ``(bound (N,), [mu_l (N, n_l) for l = 1..L], [xi_k (N, n_k)])`` as NumPy float64.
    """
    if isinstance(sweeps, bool) or int(sweeps) != sweeps or sweeps < 0:
        raise ValueError(f"sweeps must be a non-negative integer, got {sweeps!r}")
    arch = params.architecture
    x = validate_binary(x, width=arch.visible_size, name="x")
    n = len(x)
    if init is None:
        lam = [np.zeros((n, k), np.float32) for k in arch.hidden_sizes]
        xi = [np.full((n, k), 0.5, np.float32) for k in arch.sizes]
    else:
        lam, xi = ([np.asarray(v, np.float32) for v in part] for part in init)
    theta, size = _theta(params), min(_chunk_rows(arch), n)
    values, mus, xis = [], [], []
    for s in range(0, n, size):
        pad = max(0, s + size - n)

        def take(a):  # rows s .. s + size - 1, padded by repeating the last row
            part = a[s:s + size]
            return jnp.asarray(np.concatenate([part, np.repeat(part[-1:], pad, 0)]) if pad else part)

        va = Variational(tuple(map(take, lam)), tuple(map(take, xi)), jnp.ones((size,), jnp.float32))
        va, value = _ascend(arch, theta, take(x), va, jnp.asarray(int(sweeps), jnp.int32), tol)
        keep = size - pad
        values.append(np.asarray(value, np.float64)[:keep])
        mus.append([np.asarray(jax.nn.sigmoid(v), np.float64)[:keep] for v in va.lam])
        xis.append([np.asarray(v, np.float64)[:keep] for v in va.xi])
    return (np.concatenate(values), [np.concatenate(c) for c in zip(*mus)],
            [np.concatenate(c) for c in zip(*xis)])


# -- learning: the method --------------------------------------------------------------------


class FixedPointState(NamedTuple):
    """``theta``: the generative parameters; ``opt_state``: the optimiser's; ``variational``: every
    training point's ``lambda``, ``xi`` and ``eta``, :func:`pack`-ed (a row per training point)."""

    theta: dict
    opt_state: Any
    variational: jax.Array


class FixedPointInfo(NamedTuple):
    objective: jax.Array  # the batch's mean SJJ bound after the sweeps (nats per data point)
    accepted: jax.Array  # the fraction of proposed moves the batch took


def build(arch: Architecture, options: dict) -> Kernel:
    """``mean-field-fixed-point`` (Saul, Jaakkola & Jordan 1996), jitted JAX, for ``arch`` and
    the checked ``options`` (``lr``, ``optimizer``, ``lr_half_life``, ``iterations``,
    ``bound_sweeps``). ``init``: the generative parameters from ``params``, ``mu = xi = 1/2``
    and ``eta = 1`` for every training point. ``step``: ``iterations`` sweeps on the batch's
    ``(mu, xi)`` (resumed from the state, rows ``batch.index``), then one optimiser step up
    ``L`` in the generative parameters; ``info``: :class:`FixedPointInfo`. ``bound``: the SJJ
    bound on ``log p(x_n)`` after at most ``bound_sweeps`` sweeps from ``mu = xi = 1/2``.
    ``data_axes``: every training point's variational row is split over the devices."""
    optimizer = optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"])
    iterations, bound_sweeps = int(options["iterations"]), int(options["bound_sweeps"])

    def start(key, params: SBNParams, train):
        train = validate_binary(np.asarray(train), width=arch.visible_size, name="training data")
        width = sum(arch.hidden_sizes) + sum(arch.sizes) + 1
        check_memory(3.0 * 4 * len(train) * width, f"the mean-field state of {len(train)} training points ({arch})")
        theta = _theta(params)
        return FixedPointState(theta, optimizer.init(theta), pack(initial_variational(arch, len(train)))), None

    def update(key, state: FixedPointState, batch: Batch):
        idx, x = batch.index, batch.x.astype(state.variational.dtype)
        va = unpack(arch, state.variational[idx])
        va, m, taken = learning_ascent(arch, state.theta, x, va, iterations)
        grads = theta_gradient(arch, state.theta, x, va, m)
        updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grads), state.opt_state, state.theta)
        theta = optax.apply_updates(state.theta, updates)
        variational = state.variational.at[idx].set(pack(va))
        return FixedPointState(theta, opt_state, variational), FixedPointInfo(m.value.mean(), taken)

    kernel = gradient_kernel(arch, start, update, params_of=lambda state: state.theta,
                             data_axes=lambda state: state._replace(theta=None, opt_state=None, variational=0))
    return kernel._replace(bound=lambda state, x: mean_field_bound(kernel.get_params(state), x, bound_sweeps)[0])
