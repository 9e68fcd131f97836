"""DisARM in pure JAX on the NumPyro model's densities (the math: this folder's ``__init__``;
the twin: ``pyro.py``). Own part: the layer's logit gradient; the antithetic branches and the
kernel are shared (:mod:`sbn_ppl.inference.shared.elbo.numpyro`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Kernel
from sbn_ppl.inference.shared.elbo.numpyro import antithetic_kernel


def disarm_logit_gradient(f, f_anti, u, c, h, h_anti):
    """One draw of ``grad_c E[f]`` for a layer, ``(B, n)``:
    ``1/2 (f(h) - f(h~)) (-1)^{h~} [h != h~] sigma(|c|)``.

    :param f: ``f`` at the forward pass ``(B,)``; ``f_anti``: at the branch with ``h~`` ``(B,)``.
    :param u: the layer's uniforms (unused: DisARM integrates them out); ``c``: its logits.
    :param h, h_anti: the pair ``(B, n)``, 0./1.
    """
    sign = 1.0 - 2.0 * h_anti  # (-1)^{h~}
    return 0.5 * (f - f_anti)[:, None] * sign * (h != h_anti) * jax.nn.sigmoid(jnp.abs(c))


def build(arch: Architecture, options: dict) -> Kernel:
    """The DisARM :class:`~sbn_ppl.base.methods.Kernel` for ``arch`` and the checked ``options``
    (``lr``, ``optimizer``, ``lr_half_life``)."""
    return antithetic_kernel(arch, options, disarm_logit_gradient, "DisARM")
