"""Backend-neutral pieces of mean-field SVI (NumPy only): the local guide's parameters."""
from __future__ import annotations

import numpy as np

from sbn_ppl.params import SBNParams


def local_keys(arch) -> list[str]:
    """``q_mf_local_<l>``: free logits of the local mean-field guide, shape ``(N_train, n_l)``."""
    return [f"q_mf_local_{l}" for l in range(1, arch.num_layers + 1)]


def with_local_params(params: SBNParams, num_data: int) -> SBNParams:
    """``params`` plus zero local logits (``mu = 1/2``) for ``num_data`` training cases, if absent."""
    arch = params.architecture
    for k in local_keys(arch):
        if k in params and params[k].shape[0] != num_data:
            raise ValueError(f"{k} holds logits for {params[k].shape[0]} data points, but the data has {num_data}")
    new = {k: np.zeros((num_data, arch.sizes[int(k.rsplit("_", 1)[1])])) for k in local_keys(arch) if k not in params}
    return params.replace(**new) if new else params
