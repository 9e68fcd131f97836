"""The local (per-data-point) mean-field guide's parameters, backend-neutral (NumPy only).

``q(h | x_n) = prod_{l,i} Bernoulli(h_{l,i} | sigma(q_mf_local_l[n, i]))``: one free logit per
training point and hidden unit, no network. The guide itself, per backend:
:func:`sbn_ppl.models.local_guides_numpyro.local_mean_field_guide` and
:func:`sbn_ppl.models.local_guides_pyro.local_mean_field_guide`.

The logits exist only for the training points they were fitted to: a local guide gives no
``q(h | x)`` for new data, so it cannot score a test set by importance sampling (such a
fit is scored by exact enumeration or AIS). A parameter file of a local fit holds these
``q_mf_local_*`` keys and no amortised ``q_mf_b``/``q_mf_W`` ones.
"""
from __future__ import annotations

import numpy as np

from sbn_ppl.base.params import SBNParams


def local_keys(arch) -> list[str]:
    """``q_mf_local_<l>``: free logits of the local mean-field guide, shape ``(N_train, n_l)``."""
    return [f"q_mf_local_{l}" for l in range(1, arch.num_layers + 1)]


def with_local_params(params: SBNParams, num_data: int) -> SBNParams:
    """``params`` plus zero local logits (``mu = 1/2``) for ``num_data`` training points, if absent."""
    arch = params.architecture
    for k in local_keys(arch):
        if k in params and np.shape(params[k]) != (num_data, arch.sizes[int(k.rsplit("_", 1)[1])]):
            raise ValueError(f"{k} has shape {np.shape(params[k])}: logits for another training set "
                             f"(this one has {num_data} points)")
    new = {k: np.zeros((num_data, arch.sizes[int(k.rsplit("_", 1)[1])]), np.float32)
           for k in local_keys(arch) if k not in params}
    return params.replace(**new) if new else params
