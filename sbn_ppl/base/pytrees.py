"""Explicit JAX pytree registration of the package's containers.

:class:`~sbn_ppl.SBNParams` is a pytree whose leaves are its arrays and whose static data
is its architecture, so it passes through ``jit``, ``grad`` and NumPyro's SVI like a dict
of arrays. Every module that hands it to JAX calls :func:`register` first (it is
idempotent); ``import sbn_ppl`` itself imports no JAX.
"""
from __future__ import annotations

import numpy as np

from sbn_ppl.base.params import SBNParams

_registered = False


def _flatten_params(params: SBNParams):
    keys = tuple(k for k in params if k != "sizes")
    return [params[k] for k in keys], (keys, params.architecture)


def _unflatten_params(aux, leaves):
    keys, arch = aux
    new = object.__new__(SBNParams)
    new.architecture = arch
    new._arrays = {"sizes": np.asarray(arch.sizes), **dict(zip(keys, leaves))}
    return new


def register() -> None:
    """Register :class:`SBNParams` with JAX (once)."""
    global _registered
    if _registered:
        return
    import jax

    jax.tree_util.register_pytree_node(SBNParams, _flatten_params, _unflatten_params)
    _registered = True
