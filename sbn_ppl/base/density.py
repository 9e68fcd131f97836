"""Reference densities of the SBN and its guides in NumPy (float64).

These are the yardstick's arithmetic: the Pyro and NumPyro models are tested equal to
them, and the evaluators (exact enumeration, importance sampling) are built on them.

A network state is a list ``layers`` of arrays indexed by layer: ``layers[0]`` is the
visible ``x`` and ``layers[l]`` is ``h_l``; each is ``(..., n_l)`` and leading axes
broadcast (data points, particles, enumerated states).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sbn_ppl.base.params import SBNParams

GUIDES = ("recognition", "mean_field")


def softplus(a: np.ndarray) -> np.ndarray:
    """``log(1 + exp(a))`` without overflow."""
    return np.logaddexp(0.0, a)


def bernoulli_log_prob(s: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``log Bernoulli(s | sigma(a)) = s a - softplus(a) = -softplus(-(2 s - 1) a)``, elementwise."""
    return -softplus(-(2.0 * s - 1.0) * a)


def _f64(params: Mapping, key: str) -> np.ndarray:
    return np.asarray(params[key], dtype=np.float64)


def preactivation(params: SBNParams, layers: Sequence[np.ndarray], layer: int) -> np.ndarray:
    """``a_l = b_l + sum_{m in pa(l)} h_m @ W_m_l`` (generative, top-down)."""
    a = _f64(params, f"b_{layer}")
    for m in params.architecture.parents(layer):
        a = a + np.asarray(layers[m], dtype=np.float64) @ _f64(params, f"W_{m}_{layer}")
    return a


def layer_log_probs(params: SBNParams, layers: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``log p(s_l | pa(l))`` summed over the units of each layer, one entry per layer."""
    return [
        bernoulli_log_prob(np.asarray(layers[l], dtype=np.float64), preactivation(params, layers, l)).sum(-1)
        for l in range(params.architecture.num_layers + 1)
    ]


def log_joint(params: SBNParams, layers: Sequence[np.ndarray]) -> np.ndarray:
    """``log p(x, h) = sum_l log p(s_l | pa(l))``."""
    return sum(layer_log_probs(params, layers))


def sample_prior(params: SBNParams, num_samples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Ancestral samples ``(x, h1, ..., hL) ~ p``, each ``(num_samples, n_l)`` of 0.0/1.0."""
    arch = params.architecture
    layers: list = [None] * (arch.num_layers + 1)
    for l in range(arch.num_layers, -1, -1):
        a = np.broadcast_to(preactivation(params, layers, l), (num_samples, arch.sizes[l]))
        layers[l] = (rng.random(a.shape) < _sigmoid(a)).astype(np.float64)
    return layers


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return np.exp(-softplus(-a))


# -- guides ------------------------------------------------------------------------------
def recognition_logits(params: SBNParams, layers: Sequence[np.ndarray], layer: int) -> np.ndarray:
    """``logit q(h_l = 1 | layers below) = q_b_l + sum_m h_m @ q_W_m_l`` (bottom-up)."""
    c = _f64(params, f"q_b_{layer}")
    for m in params.architecture.recognition_parents(layer):
        c = c + np.asarray(layers[m], dtype=np.float64) @ _f64(params, f"q_W_{m}_{layer}")
    return c


def mean_field_logits(params: SBNParams, x: np.ndarray, layer: int) -> np.ndarray:
    """Amortised mean field: ``logit mu_l = q_mf_b_l + x @ q_mf_W_0_l``."""
    return _f64(params, f"q_mf_b_{layer}") + np.asarray(x, dtype=np.float64) @ _f64(params, f"q_mf_W_0_{layer}")


def guide_logits(params: SBNParams, guide: str, layers: Sequence[np.ndarray], layer: int) -> np.ndarray:
    if guide == "recognition":
        return recognition_logits(params, layers, layer)
    if guide == "mean_field":
        return mean_field_logits(params, layers[0], layer)
    raise ValueError(f"unknown guide {guide!r}; expected one of {', '.join(GUIDES)}")


def guide_log_prob(params: SBNParams, guide: str, layers: Sequence[np.ndarray]) -> np.ndarray:
    """``log q(h | x)`` of a named guide (``"recognition"`` or ``"mean_field"``)."""
    check_guide(params, guide)
    return sum(
        bernoulli_log_prob(np.asarray(layers[l], dtype=np.float64), guide_logits(params, guide, layers, l)).sum(-1)
        for l in range(1, params.architecture.num_layers + 1)
    )


def sample_guide(
    params: SBNParams, guide: str, x: np.ndarray, num_particles: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """``h ~ q(. | x)`` bottom-up: layers ``(num_particles, N, n_l)``, ``layers[0]`` is ``x``."""
    check_guide(params, guide)
    x = np.asarray(x, dtype=np.float64)
    layers: list = [np.broadcast_to(x, (num_particles,) + x.shape)]
    for l in range(1, params.architecture.num_layers + 1):
        c = guide_logits(params, guide, layers, l)
        c = np.broadcast_to(c, (num_particles, x.shape[0], params.architecture.sizes[l]))
        layers.append((rng.random(c.shape) < _sigmoid(c)).astype(np.float64))
    return layers


def check_guide(params: SBNParams, guide: str) -> None:
    if guide not in GUIDES:
        raise ValueError(f"unknown guide {guide!r}; expected one of {', '.join(GUIDES)}")
    if not params.has_guide(guide):
        raise ValueError(f"the parameters hold no {guide!r} guide (its q_ keys are missing)")
