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

**One pass, streamed.** A pass maps over the data points a few at a time (``lax.scan``; at
784-200-200 one data point's per-edge terms are two ``(200, 784)`` blocks), so the
``(B, n_j, n_i)`` tensors never exist: the memory of a pass does not grow with the batch.
Per edge and tilt it makes ``e^{t w}`` (one ``exp``: ``e^{(1 - xi) w} = e^{-xi w} e^{w}``),
``log d`` and, when the targets or the gradient are asked for, ``1 / d``; the tilted mean is
used as ``1 - p_ji(t) = nu_j / d_ji(t)``, never formed. A pass without targets (the bound
only, to accept or refuse a move) needs no ``1 / d``: the light pass.

**Learning.** Gradient ascent on ``L`` in the generative weights (an optax optimiser), with
each training point keeping its ``lambda``, ``xi`` and ``eta`` between visits (indexed by the
runner's ``batch.index``). A step makes one full pass at the rows' saved point (their warm
start), which gives both the proposal and the weights' gradient there, then ``iterations``
damped sweeps (the default: one), the last with a light pass; the rows' new point is saved
for their next visit. So one step costs a full pass with the gradient and a light pass. The
gradient, in closed form from the tilted means::

    dL/dw_ji = (mu_i - xi_i) mu_j + omega_i xi_i p_ji(-xi_i) - (1 - omega_i)(1 - xi_i) p_ji(1 - xi_i),
    dL/db_i  = mu_i - sigma(B_i - A_i).

The saved rows are one ``uint8`` table (:func:`pack`): ``lambda`` as float16, ``xi`` on the grid
``q / 254`` (1 byte; the top layer's ``xi``, which the bound does not depend on, is not kept),
``log2 eta`` (1 byte): 1,785 bytes a row at 784-200-200 (89 MB for 50,000 rows). A step
rounds its proposals to that grid before it evaluates them, so the saved point is exactly
the one whose bound was computed (``L`` is a bound at any ``(mu, xi)``).

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

from . import BOUND_SWEEPS

_MIN_CURVATURE = 1e-6  # floor on -d2L/dxi2 in Newton's step (units without parents have none)
_MIN_ETA = 2.0 ** -12  # a data point's damping never falls below this (a rejected move costs nothing)
CONVERGED = 1e-6  # relative gain of a sweep below which the bound on new data stops early
XI_LEVELS = 254  # the table keeps xi on the grid q / 254 (1/2 on it): 1 byte a unit
_LAM_MAX = 6.0e4  # |lambda| the table keeps (float16's range)
_GROUP, _GROUPED_MAX_W = 4, 20.0  # logs of products of four d's while every |w| <= 20 (see _sum_log)
_ROW_CHUNK = 1  # most rows per iteration of a streamed pass (see evaluate)
_VALIDATE_ROWS = 4096  # rows per slice when init_state checks the training data
_BOUND_ELEMENTS = 1 << 24  # rows x edges per chunk of the bound on new data (at 784-200-200: 85 rows a chunk)
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
    ``lambda``'s fixed-point target (``targets``) and the weights' tilted-mean terms
    ``sum_n [omega_i xi_i p_ji(-xi_i) - (1 - omega_i) (1 - xi_i) p_ji(1 - xi_i)]`` summed over the
    rows (``tilted``: ``(n_j, n_i)`` per edge in ``arch.edges()``, for :func:`theta_gradient`);
    fields not requested are ``None``."""

    value: jax.Array  # L(mu, xi) per row: (B,)
    log_a: tuple  # A_k = log <e^{-xi z}>
    log_b: tuple  # B_k = log <e^{(1 - xi) z}>
    slope: tuple | None = None  # dL/dxi_k
    curvature: tuple | None = None  # -d2L/dxi_k2, estimated (see evaluate)
    target: tuple | None = None  # SJJ's fixed point for lambda_l, l = 1..L
    tilted: tuple | None = None  # the weights' tilted-mean terms, summed over the rows, per edge


def _row_chunk(n: int) -> int:
    """Rows per iteration of the streamed pass: the largest divisor of ``n`` up to ``_ROW_CHUNK``
    (every iteration the same shape; no padding)."""
    return max(k for k in range(1, min(n, _ROW_CHUNK) + 1) if n % k == 0)


def _sum_log(d, grouped):
    """``sum_j log d_j`` over axis 0. Where ``grouped`` (every ``|w| <= _GROUPED_MAX_W``, so that a
    product of four ``d`` in ``[e^{-|w|}, e^{|w|}]`` stays inside float32's normal range) as the
    log of products of four: a quarter of the logs, the costliest part of a light pass."""
    n = d.shape[0]
    head = n - n % _GROUP
    if head == 0:
        return jnp.log(d).sum(0)

    def by_group(d):
        out = jnp.log(d[:head].reshape((head // _GROUP, _GROUP) + d.shape[1:]).prod(1)).sum(0)
        return out + jnp.log(d[head:]).sum(0) if head < n else out

    return jax.lax.cond(grouped, by_group, lambda d: jnp.log(d).sum(0), d)


def _pass_row(arch: Architecture, theta, mu, nu, xi, *, full: bool, gradient: bool):
    """The per-edge part of a pass, for ONE data point (``mu``, ``nu = 1 - mu``, ``xi``: per layer,
    ``(n_k,)``), every block of edges ``j -> i`` (``w``: ``(n_j, n_i)``) one ``(n_j, n_i)`` term at a
    time. Returns, per layer ``k`` with parents, the edge sums ``sum_j log d_ji(t)`` for the two
    tilts (``t = -xi``, ``1 - xi``); with ``full`` also ``sum_j w_ji nu_j / d_ji(t)`` (the tilted means'
    part: ``sum_j w_ji p_ji(t) = sum_j w_ji - sum_j w_ji nu_j / d_ji(t)``, as ``1 - p = nu / d``) and
    each hidden layer's part of ``lambda``'s target, ``-sum_k [omega_k D_ik(-xi_k) + (1 - omega_k)
    D_ik(1 - xi_k)]``; with ``gradient`` the weights' terms ``nu_j [omega_i xi_i / d_ji(-xi_i) -
    (1 - omega_i)(1 - xi_i) / d_ji(1 - xi_i)]`` of every edge ``(n_j, n_i)``.

    ``d_ji(t) = nu_j + mu_j e^{t w_ji}`` with ``nu_j = sigma(-lambda_j)``: a sum of two non-negative
    terms, no cancellation when ``mu_j`` saturates. ``e^{t w}`` and ``1 / d`` are made once per edge
    and tilt and kept (``optimization_barrier``) for the sums that use them (XLA's CPU fusions
    otherwise recompute them per sum, or emit slow loops for some fused reductions); the
    tilted mean ``p = mu e / d`` itself is never formed."""
    logs, weighted, back, grads = {}, {}, {}, {}
    for k in range(arch.num_layers + 1):
        if not arch.parents(k):
            continue
        la, lb, wa, wb, kept = 0.0, 0.0, 0.0, 0.0, {}
        for p in arch.parents(k):
            w = theta[f"W_{p}_{k}"]
            m, n = mu[p][:, None], nu[p][:, None]
            e_a = jnp.exp(-xi[k] * w)
            e_b = e_a * theta[f"expW_{p}_{k}"]  # e^{(1 - xi) w} = e^{-xi w} e^{w}: one exp for both tilts
            d_a, d_b = n + m * e_a, n + m * e_b
            la, lb = la + _sum_log(d_a, theta["grouped"]), lb + _sum_log(d_b, theta["grouped"])
            if full or gradient:
                e_a, e_b, r_a, r_b = jax.lax.optimization_barrier((e_a, e_b, 1.0 / d_a, 1.0 / d_b))
                kept[p] = (e_a, e_b, r_a, r_b)
                if full:
                    wa, wb = wa + (w * n * r_a).sum(0), wb + (w * n * r_b).sum(0)
        logs[k] = jnp.stack([la, lb])
        if full:
            weighted[k] = jnp.stack([wa, wb])
        if not kept:
            continue
        o = jax.nn.sigmoid((la - lb) - theta[f"b_{k}"])  # omega_k = sigma(A_k - B_k)
        for p, (e_a, e_b, r_a, r_b) in kept.items():
            if full:  # D_ik(t) = (e^{t w} - 1) / d(t), mixed over the tilts by omega_k
                back[p] = back.get(p, 0.0) - ((e_a - 1.0) * r_a * o + (e_b - 1.0) * r_b * (1.0 - o)).sum(1)
            if gradient:
                grads[p, k] = nu[p][:, None] * (r_a * (o * xi[k]) - r_b * ((1.0 - o) * (1.0 - xi[k])))
    return logs, weighted, back, grads


def evaluate(arch: Architecture, theta, x, lam, xi, *, targets: bool = True, tilted: bool = False) -> Pass:
    """One pass over every edge ``j -> i`` at ``(mu = sigma(lambda), xi)`` (the module docstring's
    formulas): the bound per row, and with ``targets`` ``xi``'s Newton quantities and ``lambda``'s
    fixed-point target, with ``tilted`` the weights' tilted-mean terms.

    The per-edge terms are streamed: a ``lax.scan`` over the rows, a few rows at a time
    (:func:`_pass_rows`), so a pass holds ``O(rows per iteration x edges)`` memory, not
    ``O(B x edges)``, and makes each ``e^{t w}``, ``log d`` and ``1 / d`` once. The terms that are
    matrix products (``<z>``, the children's ``(mu - xi) w`` in the target) are done on the
    whole batch.

    Newton's curvature ``Var_r(z_i) = omega v(-xi) + (1 - omega) v(1 - xi) + omega (1 - omega)
    (m(1 - xi) - m(-xi))^2`` takes both tilted variances ``v`` to be their average over
    ``[-xi, 1 - xi]``, the secant ``m(1 - xi) - m(-xi)`` of the log-moment's derivative: no
    further pass over the edges (it only shapes a proposal; the check keeps ``L`` monotone).
    """
    lam, xi = tuple(lam), tuple(xi)
    mu = [x] + [jax.nn.sigmoid(v) for v in lam]
    nu = [1.0 - x] + [jax.nn.sigmoid(-v) for v in lam]
    n = x.shape[0]
    layers = range(arch.num_layers + 1)
    size = _row_chunk(n)

    def rows(a):
        return a.reshape((n // size, size) + a.shape[1:])

    zero = {(p, k): jnp.zeros(theta[f"W_{p}_{k}"].shape, x.dtype) for p, k in arch.edges()} if tilted else {}

    theta = dict(theta, **{f"expW_{p}_{k}": jnp.exp(theta[f"W_{p}_{k}"]) for p, k in arch.edges()},
                 grouped=jnp.all(jnp.stack([jnp.abs(theta[f"W_{p}_{k}"]).max() for p, k in arch.edges()])
                                 <= _GROUPED_MAX_W))

    def body(acc, chunk):  # `size` rows, one after the other (independent: XLA may run them at once)
        outs = []
        for i in range(size):
            logs, weighted, back, grads = _pass_row(arch, theta, *(tuple(a[i] for a in part) for part in chunk),
                                                    full=targets, gradient=tilted)
            acc = {e: acc[e] + grads[e] for e in acc}
            outs.append((logs, weighted, back))
        return acc, jax.tree.map(lambda *a: jnp.stack(a), *outs)

    sums, (logs, means, back) = jax.lax.scan(body, zero, (tuple(map(rows, mu)), tuple(map(rows, nu)),
                                                        tuple(map(rows, xi))))
    logs, means, back = jax.tree.map(lambda a: a.reshape((n,) + a.shape[2:]), (logs, means, back))
    value = sum(_entropy(v).sum(-1) for v in lam)
    z, log_a, log_b, slope, curvature = [], [], [], [], []
    for k in layers:
        bias = theta[f"b_{k}"]
        zk = jnp.broadcast_to(bias + sum(mu[p] @ theta[f"W_{p}_{k}"] for p in arch.parents(k)), xi[k].shape)
        a, b = -xi[k] * bias, (1.0 - xi[k]) * bias
        if k in logs:
            a, b = a + logs[k][:, 0], b + logs[k][:, 1]
        z.append(zk)
        log_a.append(a)
        log_b.append(b)
        value = value + ((mu[k] - xi[k]) * zk - jnp.logaddexp(a, b)).sum(-1)
        if targets:
            o = jax.nn.sigmoid(a - b)
            m_a = jnp.broadcast_to(bias, xi[k].shape)  # m_k(-xi) = b + sum_j w p(-xi); the bias cancels in
            spread = jnp.zeros_like(xi[k])  # m_k(1 - xi) - m_k(-xi)
            if k in means:  # sum_j w p(t) = sum_j w - sum_j w nu / d(t)
                m_a = m_a + sum(theta[f"W_{p}_{k}"].sum(0) for p in arch.parents(k)) - means[k][:, 0]
                spread = means[k][:, 0] - means[k][:, 1]
            slope.append(m_a + (1.0 - o) * spread - z[k])  # omega m(-xi) + (1 - omega) m(1 - xi) - <z>
            curvature.append(spread + o * (1.0 - o) * spread ** 2)
    out = Pass(value, tuple(log_a), tuple(log_b))
    if targets:
        target = []
        for l in layers[1:]:
            t = z[l] + back.get(l, 0.0)
            for k in arch.children(l):
                t = t + (mu[k] - xi[k]) @ theta[f"W_{l}_{k}"].T
            target.append(t)
        out = out._replace(slope=tuple(slope), curvature=tuple(curvature), target=tuple(target))
    if tilted:  # sum_n [omega xi p(-xi) - (1 - omega)(1 - xi) p(1 - xi)], with p = 1 - nu / d
        coef = [(jax.nn.sigmoid(a - b) * v - jax.nn.sigmoid(b - a) * (1.0 - v)).sum(0)
                for a, b, v in zip(log_a, log_b, xi)]
        out = out._replace(tilted=tuple(coef[k][None, :] - sums[p, k] for p, k in arch.edges()))
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


def sweep(arch: Architecture, theta, x, va: Variational, m: Pass, *, targets: bool = True, stored: bool = False
          ) -> tuple[Variational, Pass, jax.Array]:
    """One damped sweep: every unit moves ``eta`` of the way to its proposal; each row takes the
    move only where its bound does not drop. ``m`` is the pass at ``va`` (with targets); returns
    the new point, its pass (with ``targets`` as asked: without, a light pass that computes the
    bound only) and which rows moved. ``stored``: round the proposal to the training table's grid
    before it is evaluated (:func:`_on_grid`)."""
    lam_t, xi_t = _proposal(va, m)
    eta = va.eta[:, None]
    lam = [v + eta * (t - v) for v, t in zip(va.lam, lam_t)]
    xi = [v + eta * (t - v) for v, t in zip(va.xi, xi_t)]
    if stored:
        lam, xi = _on_grid(lam, xi)
    m_new = evaluate(arch, theta, x, lam, xi, targets=targets)
    ok = m_new.value >= m.value  # False where the proposal's bound is NaN

    def pick(new, old):
        return jnp.where(ok.reshape(ok.shape + (1,) * (new.ndim - 1)), new, old)

    eta = jnp.where(ok, jnp.minimum(2.0 * va.eta, 1.0), jnp.maximum(0.5 * va.eta, _MIN_ETA))
    va = Variational(tuple(map(pick, lam, va.lam)), tuple(map(pick, xi, va.xi)), eta)
    kept = m._replace(tilted=None) if targets else m._replace(slope=None, curvature=None, target=None, tilted=None)
    return va, jax.tree.map(pick, m_new, kept), ok


def coordinate_ascent(arch: Architecture, theta, x, va: Variational, sweeps, *, tol: float | None = None,
                      start: Pass | None = None, stored: bool = False) -> tuple[Variational, Pass, jax.Array]:
    """Up to ``sweeps`` damped sweeps from ``va`` (a ``lax`` loop; ``sweeps`` may be traced): the
    final point, its pass, and the fraction of proposals taken.

    :param tol: stop early once every row took its last move and gained at most
        ``tol * max(1, |L|)`` nats by it (converged); ``None``: always ``sweeps`` sweeps.
    :param start: the pass at ``va`` (with targets) if already made.
    :param stored: as :func:`sweep`'s.
    """

    def body(carry):
        i, va, m, taken, _ = carry
        va, m_new, ok = sweep(arch, theta, x, va, m, stored=stored)
        done = jnp.zeros((), bool) if tol is None else \
            jnp.all(ok & (m_new.value - m.value <= tol * jnp.maximum(1.0, jnp.abs(m.value))))
        return i + 1, va, m_new, taken + ok.mean(dtype=taken.dtype), done

    m = evaluate(arch, theta, x, va.lam, va.xi) if start is None else start._replace(tilted=None)
    init = (jnp.zeros((), jnp.int32), va, m, jnp.zeros((), va.eta.dtype), jnp.zeros((), bool))
    if isinstance(sweeps, int) and sweeps == 0:  # nothing to loop over (a learning step's one sweep)
        return va, m, init[3]
    count, va, m, taken, _ = jax.lax.while_loop(lambda c: (c[0] < sweeps) & ~c[4], body, init)
    return va, m, taken / jnp.maximum(count, 1)


def learning_ascent(arch: Architecture, theta, x, va: Variational, sweeps: int, stored: bool = False
                    ) -> tuple[Variational, Pass, jax.Array, dict]:
    """A learning step's work on the batch's ``(mu, xi)``: the pass at the rows' saved point
    ``va`` (their warm start) with the weights' gradient there (:func:`theta_gradient`), then
    ``sweeps >= 1`` damped sweeps, the last one with a light pass (the bound only: no targets).
    A step costs one full pass with the gradient, ``sweeps - 1`` full passes and one light one.
    Returns the new point, its pass, the fraction of proposals taken and the gradient.
    ``stored``: as :func:`sweep`'s."""
    start = evaluate(arch, theta, x, va.lam, va.xi, tilted=True)
    grads = theta_gradient(arch, theta, x, va, start)
    va, m, taken = coordinate_ascent(arch, theta, x, va, sweeps - 1, start=start, stored=stored)
    va, m, ok = sweep(arch, theta, x, va, m, targets=False, stored=stored)
    return va, m, (taken * (sweeps - 1) + ok.mean(dtype=taken.dtype)) / sweeps, grads


def theta_gradient(arch: Architecture, theta, x, va: Variational, m: Pass) -> dict:
    """``dL/dtheta`` averaged over the rows, at ``va`` (``m``: the pass there, with ``tilted``),
    from the module docstring's closed forms (the envelope theorem: ``(mu, xi)`` held fixed)."""
    mu = [x] + [jax.nn.sigmoid(v) for v in va.lam]
    n = x.shape[0]
    omega = [jax.nn.sigmoid(a - b) for a, b in zip(m.log_a, m.log_b)]
    grads = {f"b_{k}": (mu[k] - (1.0 - omega[k])).mean(0) for k in range(arch.num_layers + 1)}
    for (p, k), tilt in zip(arch.edges(), m.tilted):
        grads[f"W_{p}_{k}"] = (mu[p].T @ (mu[k] - va.xi[k]) + tilt) / n
    return grads


def initial_variational(arch: Architecture, num_data: int, dtype=jnp.float32) -> Variational:
    """``lambda = 0`` (``mu = 1/2``), ``xi = 1/2`` and ``eta = 1`` for ``num_data`` data points."""
    return Variational(tuple(jnp.zeros((num_data, n), dtype) for n in arch.hidden_sizes),
                       tuple(jnp.full((num_data, n), 0.5, dtype) for n in arch.sizes),
                       jnp.ones((num_data,), dtype))


def _stored_layers(arch: Architecture) -> tuple[int, ...]:
    """The layers whose ``xi`` the table keeps: those with parents (all but the top). A layer
    without parents has ``A = -xi b``, ``B = (1 - xi) b`` and a term ``mu b - log(1 + e^b)``
    whatever its ``xi``; that ``xi`` stays at 1/2 (Newton's slope there is 0)."""
    return tuple(k for k in range(arch.num_layers + 1) if arch.parents(k))


def table_width(arch: Architecture) -> int:
    """Bytes per row of the :func:`pack`-ed table: ``lambda`` as float16 (2 bytes a unit), the
    stored layers' ``xi`` on a grid of ``XI_LEVELS + 1`` values (1 byte), ``log2 eta`` (1 byte)."""
    return 2 * sum(arch.hidden_sizes) + sum(arch.sizes[k] for k in _stored_layers(arch)) + 1


def _on_grid(lam, xi):
    """``(lambda, xi)`` rounded to what the table holds: ``lambda`` to float16 (kept inside its
    finite range), ``xi`` to ``q / XI_LEVELS``. A learning step rounds its proposals so before
    it evaluates them (:func:`sweep`'s ``stored``): the table holds exactly the point whose
    bound was computed, and the bound is a bound at any ``(mu, xi)``."""
    lam = [jnp.clip(v, -_LAM_MAX, _LAM_MAX).astype(jnp.float16).astype(v.dtype) for v in lam]
    xi = [jnp.round(jnp.clip(v, 0.0, 1.0) * XI_LEVELS) / XI_LEVELS for v in xi]
    return lam, xi


def pack(arch: Architecture, va: Variational) -> jax.Array:
    """``va`` as one ``uint8`` table, a row per data point (one gather and one scatter per step
    for the training points' state): ``[lambda_1 .. lambda_L as float16 bytes | xi_k * XI_LEVELS
    for the layers with parents | -log2 eta]``, :func:`table_width` bytes. ``xi`` is rounded to
    its grid; ``eta`` is a power of two (:func:`sweep`)."""
    n = va.eta.shape[0]
    lam = [jax.lax.bitcast_convert_type(v.astype(jnp.float16), jnp.uint8).reshape(n, -1) for v in va.lam]
    xi = [jnp.round(jnp.clip(va.xi[k], 0.0, 1.0) * XI_LEVELS).astype(jnp.uint8) for k in _stored_layers(arch)]
    eta = jnp.round(-jnp.log2(va.eta)).astype(jnp.uint8)[:, None]
    return jnp.concatenate(lam + xi + [eta], axis=1)


def unpack(arch: Architecture, table) -> Variational:
    """The inverse of :func:`pack`, in float32 (a parentless layer's ``xi``: 1/2)."""
    n, at, lam, kept = table.shape[0], 0, [], {}
    for size in arch.hidden_sizes:
        raw = table[:, at:at + 2 * size].reshape(n, size, 2)
        lam.append(jax.lax.bitcast_convert_type(raw, jnp.float16).astype(jnp.float32))
        at += 2 * size
    for k in _stored_layers(arch):
        kept[k] = table[:, at:at + arch.sizes[k]].astype(jnp.float32) / XI_LEVELS
        at += arch.sizes[k]
    xi = tuple(kept[k] if k in kept else jnp.full((n, arch.sizes[k]), 0.5, jnp.float32)
               for k in range(arch.num_layers + 1))
    return Variational(tuple(lam), xi, jnp.exp2(-table[:, at].astype(jnp.float32)))


def initial_table(arch: Architecture, num_data: int) -> jax.Array:
    """:func:`pack` of :func:`initial_variational` for ``num_data`` points, made as one buffer."""
    row = np.asarray(pack(arch, initial_variational(arch, 1)))
    return jnp.asarray(np.broadcast_to(row, (num_data, row.shape[1])))


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
    and ``eta = 1`` for every training point (one packed row each). ``step``: ``iterations``
    sweeps on the batch's ``(mu, xi)`` (resumed from the state, rows ``batch.index``), then one
    optimiser step up ``L`` in the generative parameters; ``info``: :class:`FixedPointInfo`.
    ``bound``: the SJJ bound on ``log p(x_n)`` after at most ``bound_sweeps`` sweeps from
    ``mu = xi = 1/2``. ``data_axes``: every training point's variational row is split over the devices."""
    optimizer = optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"],
                                options["lr_schedule"])
    iterations, bound_sweeps = int(options["iterations"]), int(options["bound_sweeps"])

    def start(key, params: SBNParams, train):
        rows = np.asarray(train)  # a view of a JAX CPU array, not a copy
        for r in range(0, len(rows), _VALIDATE_ROWS):  # in slices: no float copy of the whole training set
            validate_binary(rows[r:r + _VALIDATE_ROWS], width=arch.visible_size, name="training data")
        # the table, and its copy while a jitted scan of steps updates it (the runner does not donate)
        check_memory(2.0 * len(train) * table_width(arch),
                     f"the mean-field state of {len(train)} training points ({arch})")
        theta = _theta(params)
        return FixedPointState(theta, optimizer.init(theta), initial_table(arch, len(train))), None

    def update(key, state: FixedPointState, batch: Batch):
        idx, x = batch.index, batch.x.astype(jnp.float32)
        va = unpack(arch, state.variational[idx])
        va, m, taken, grads = learning_ascent(arch, state.theta, x, va, iterations, stored=True)
        updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grads), state.opt_state, state.theta)
        theta = optax.apply_updates(state.theta, updates)
        variational = state.variational.at[idx].set(pack(arch, va))
        return FixedPointState(theta, opt_state, variational), FixedPointInfo(m.value.mean(), taken)

    kernel = gradient_kernel(arch, start, update, params_of=lambda state: state.theta,
                             data_axes=lambda state: state._replace(theta=None, opt_state=None, variational=0))
    return kernel._replace(bound=lambda state, x: mean_field_bound(kernel.get_params(state), x, bound_sweeps)[0])
