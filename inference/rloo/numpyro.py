"""REINFORCE leave-one-out in pure JAX on the NumPyro model's densities (the math: this
folder's ``__init__``; the twin: ``pyro.py``).

Own tricks: the K particles of a batch are one ``(K, B)`` array from the shared particle
arithmetic, and the kernel (one optax optimiser, the bound, the guide-gradient draw) is the
shared :func:`~sbn_ppl.inference.shared.elbo.numpyro.surrogate_kernel`.
"""
from __future__ import annotations

from jax.lax import stop_gradient

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Kernel
from sbn_ppl.inference.shared.elbo.numpyro import surrogate_kernel
from sbn_ppl.inference.shared.particles.numpyro import sample_guide
from sbn_ppl.models.numpyro_sbn import log_joint


def leave_one_out_signals(f):
    """``f_k - (1/(K-1)) sum_{j != k} f_j`` for every k: ``(K, B)`` from the signals ``f`` ``(K, B)``."""
    k = f.shape[0]
    if k < 2:
        raise ValueError(f"REINFORCE leave-one-out needs K >= 2 samples per data point, got {k}")
    return f - (f.sum(0) - f) / (k - 1)


def rloo_surrogate(log_p, log_q):
    """The per-point surrogate ``S_n`` and the ELBO estimate ``(1/K) sum_k f_nk`` (``(B,)``
    each) from ``(K, B)`` densities: ``S``'s value is the estimate, its gradient the estimator."""
    f = stop_gradient(log_p - log_q)
    score = stop_gradient(leave_one_out_signals(f)) * (log_q - stop_gradient(log_q))  # zero in value
    return (log_p - stop_gradient(log_q) + score).mean(0), f.mean(0)


def particle_surrogate(key, arch: Architecture, params, x, k: int):
    """:func:`rloo_surrogate` at K fresh draws ``h_nk ~ q(. | x_n)`` for a batch ``x`` (B, D)."""
    layers, log_q = sample_guide(key, arch, params, x, (k,))
    return rloo_surrogate(log_joint(arch, params, layers), log_q)


def build(arch: Architecture, options: dict) -> Kernel:
    """The REINFORCE leave-one-out :class:`~sbn_ppl.base.methods.Kernel` for ``arch`` and the
    checked ``options`` (``lr``, ``optimizer``, ``lr_half_life``, ``k``)."""
    k = int(options["k"])
    return surrogate_kernel(arch, options, lambda key, params, x: particle_surrogate(key, arch, params, x, k),
                            "REINFORCE leave-one-out")
