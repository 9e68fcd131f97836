"""Exact answers by enumeration on small nets: ``log p(x)``, posterior marginals, ``KL(q||p)`` and ``KL(p||q)``.

:func:`exact_log_likelihood`, :func:`posterior_marginals`, :func:`exact_kl` sum over all
``2^H`` hidden states (``H <= MAX_EXACT_HIDDEN``), chunked so memory stays bounded.
``log p(x | h)`` for all data points and states at once uses
``sum_d [x_d a_d - softplus(a_d)] = x . a(h) - sum_d softplus(a_d(h))``: a matrix product
plus one softplus per state, never one per (data point, state). NumPy only, float64.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

import sbn_ppl.base.density as density
from sbn_ppl.base.params import SBNParams

MAX_EXACT_HIDDEN = 20
ELEMENTS_PER_CHUNK = 1 << 22  # bound on the largest temporary array, in float64 elements


def check_exact_feasible(params: SBNParams) -> None:
    h = params.architecture.num_hidden
    if h > MAX_EXACT_HIDDEN:
        raise ValueError(
            f"exact enumeration needs at most {MAX_EXACT_HIDDEN} hidden units in total; "
            f"architecture {params.architecture} has {h} (use importance sampling or AIS instead)"
        )


def hidden_states(params: SBNParams, chunk: int) -> Iterator[list[np.ndarray]]:
    """All ``2^H`` hidden configurations, ``chunk`` at a time, as per-layer arrays ``(C, n_l)``."""
    check_exact_feasible(params)
    sizes = params.architecture.hidden_sizes
    total = sum(sizes)
    bit = np.arange(total, dtype=np.int64)
    bounds = np.cumsum((0,) + sizes)
    for start in range(0, 1 << total, chunk):
        idx = np.arange(start, min(start + chunk, 1 << total), dtype=np.int64)
        bits = ((idx[:, None] >> bit) & 1).astype(np.float64)
        yield [bits[:, bounds[i] : bounds[i + 1]] for i in range(len(sizes))]


def _joint_grid(params: SBNParams, x: np.ndarray, hidden: list[np.ndarray]) -> np.ndarray:
    """``log p(x_n, h_c)`` for every data point n and state c: ``(N, C)``."""
    layers = [None] + hidden
    prior = sum(
        density.bernoulli_log_prob(layers[l], density.preactivation(params, layers, l)).sum(-1)
        for l in range(1, len(layers))
    )
    a0 = np.broadcast_to(density.preactivation(params, layers, 0), (hidden[0].shape[0], x.shape[1]))
    return prior[None, :] + x @ a0.T - density.softplus(a0).sum(-1)[None, :]


def _chunk_size(params: SBNParams, n_data: int) -> int:
    width = max(params.architecture.sizes)
    return int(max(1, min(1 << params.architecture.num_hidden, ELEMENTS_PER_CHUNK // max(n_data * width, 1))))


def _as_data(params: SBNParams, x: np.ndarray) -> np.ndarray:
    from sbn_ppl.base.arrays import validate_binary

    return validate_binary(x, width=params.architecture.visible_size, name="x").astype(np.float64)


def _enumerate(params: SBNParams, x: np.ndarray, marginals: bool):
    """One pass over all states: ``log p(x)`` and, if asked, ``E[h | x]`` (running log-sum-exp)."""
    x = _as_data(params, x)
    n = x.shape[0]
    log_max = np.full(n, -np.inf)
    total = np.zeros(n)
    acc = np.zeros((n, params.architecture.num_hidden)) if marginals else None
    for hidden in hidden_states(params, _chunk_size(params, n)):
        lj = _joint_grid(params, x, hidden)
        new_max = np.maximum(log_max, lj.max(1))
        rescale = np.exp(log_max - new_max)
        w = np.exp(lj - new_max[:, None])
        total = total * rescale + w.sum(1)
        if marginals:
            acc = acc * rescale[:, None] + w @ np.concatenate(hidden, axis=1)
        log_max = new_max
    log_px = log_max + np.log(total)
    return log_px, (acc / total[:, None] if marginals else None)


def exact_log_likelihood(params: SBNParams, x: np.ndarray) -> np.ndarray:
    """Exact ``log p(x_n)`` for every row of ``x``, by enumerating the hidden states: ``(N,)``."""
    return _enumerate(params, x, marginals=False)[0]


def posterior_marginals(params: SBNParams, x: np.ndarray) -> list[np.ndarray]:
    """Exact ``p(h_{l,i} = 1 | x_n)``: one ``(N, n_l)`` array per hidden layer ``l = 1..L``."""
    _, m = _enumerate(params, x, marginals=True)
    bounds = np.cumsum((0,) + params.architecture.hidden_sizes)
    return [m[:, bounds[i] : bounds[i + 1]] for i in range(params.architecture.num_layers)]


def posterior_probabilities(params: SBNParams, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The whole posterior table ``p(h | x_n)`` over all ``2^H`` states (small nets only):
    ``(N, 2^H)`` probabilities and the states as per-layer ``(2^H, n_l)`` arrays."""
    x = _as_data(params, x)
    (hidden,) = list(hidden_states(params, 1 << params.architecture.num_hidden))
    lj = _joint_grid(params, x, hidden)
    return np.exp(lj - np.logaddexp.reduce(lj, axis=1, keepdims=True)), hidden


class KL(NamedTuple):
    """Exact divergences between a guide and the true posterior, per data point (nats)."""

    q_p: np.ndarray  # KL(q(h|x) || p(h|x))
    p_q: np.ndarray  # KL(p(h|x) || q(h|x))
    elbo: np.ndarray  # E_q[log p(x, h) - log q(h|x)] = log p(x) - KL(q||p)
    log_likelihood: np.ndarray


def _guide_grid(params: SBNParams, guide: str, x: np.ndarray, hidden: list[np.ndarray]) -> np.ndarray:
    """``log q(h_c | x_n)`` for every data point n and state c: ``(N, C)``.

    A layer whose logits ``c`` depend on ``x`` alone (mean field; the recognition net's
    first layer) costs one matrix product, ``sum_i [h_i c_i - softplus(c_i)] = h . c(x) -
    sum_i softplus(c_i(x))``; one whose logits depend on the states alone costs one pass
    over the states; only a layer fed by both (dense recognition nets) needs the
    ``(N, C, n_l)`` grid.
    """
    arch = params.architecture
    total = np.zeros((x.shape[0], hidden[0].shape[0]))
    for l in range(1, arch.num_layers + 1):
        h = hidden[l - 1]
        inputs = (0,) if guide == "mean_field" else arch.recognition_parents(l)
        if inputs == (0,):
            c = density.guide_logits(params, guide, [x], l)  # (N, n_l)
            total += c @ h.T - density.softplus(c).sum(-1)[:, None]
        elif 0 not in inputs:
            c = density.recognition_logits(params, [None] + hidden, l)  # (C, n_l)
            total += density.bernoulli_log_prob(h, c).sum(-1)[None, :]
        else:
            c = density.recognition_logits(params, [x[:, None, :]] + [g[None] for g in hidden], l)  # (N, C, n_l)
            total += density.bernoulli_log_prob(h[None], c).sum(-1)
    return total


def exact_kl(params: SBNParams, guide: str, x: np.ndarray) -> KL:
    """``KL(q||p)``, ``KL(p||q)`` and the exact ELBO of a named guide, by enumeration."""
    density.check_guide(params, guide)
    x = _as_data(params, x)
    log_px = exact_log_likelihood(params, x)
    n = x.shape[0]
    kl_qp, kl_pq = np.zeros(n), np.zeros(n)
    for hidden in hidden_states(params, _chunk_size(params, n)):
        log_post = _joint_grid(params, x, hidden) - log_px[:, None]
        log_q = _guide_grid(params, guide, x, hidden)
        q, p = np.exp(log_q), np.exp(log_post)
        kl_qp += np.sum(np.where(q > 0, q * (log_q - log_post), 0.0), axis=1)
        kl_pq += np.sum(np.where(p > 0, p * (log_post - log_q), 0.0), axis=1)
    return KL(kl_qp, kl_pq, log_px - kl_qp, log_px)


