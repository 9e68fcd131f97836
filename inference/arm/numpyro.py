"""ARM in pure JAX on the NumPyro model's densities (the math: this folder's ``__init__``; the
twin: ``pyro.py``). Own part: the layer's logit gradient; the antithetic branches and the
kernel are shared (:mod:`sbn_ppl.inference.shared.elbo.numpyro`).
"""
from __future__ import annotations

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Kernel
from sbn_ppl.inference.shared.elbo.numpyro import antithetic_kernel, arm_uniform


def arm_logit_gradient(f, f_anti, u, c, h, h_anti):
    """One draw of ``grad_c E[f]`` for a layer, ``(B, n)``: ``(f(h~) - f(h)) (u' - 1/2)``.

    :param f: ``f`` at the forward pass ``(B,)``; ``f_anti``: at the branch with ``h~`` ``(B,)``.
    :param u: the layer's uniforms ``(B, n)``; ``c``: its logits at the forward pass.
    :param h, h_anti: the pair (unused: ARM reads ``u``).
    """
    return (f_anti - f)[:, None] * (arm_uniform(u, c) - 0.5)


def build(arch: Architecture, options: dict) -> Kernel:
    """The ARM :class:`~sbn_ppl.base.methods.Kernel` for ``arch`` and the checked ``options``
    (``lr``, ``optimizer``, ``lr_half_life``)."""
    return antithetic_kernel(arch, options, arm_logit_gradient, "ARM")
