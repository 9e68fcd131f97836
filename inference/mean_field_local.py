"""Backend-neutral pieces of mean-field SVI (NumPy only): the local guide's parameters and
the gradient moments that both backends report."""
from __future__ import annotations

from typing import NamedTuple

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


class GradientMoments(NamedTuple):
    mean: dict[str, np.ndarray]  # E[g] per guide parameter (gradient of the ELBO, ascent direction)
    variance: dict[str, np.ndarray]  # Var[g] per element (ddof 1)

    @property
    def total_variance(self) -> float:
        """``sum_j Var[g_j]`` over all guide parameter elements."""
        return float(sum(v.sum() for v in self.variance.values()))

    @classmethod
    def from_samples(cls, samples: dict[str, np.ndarray]) -> "GradientMoments":
        """Mean and variance (ddof 1) over the first axis of each parameter's gradient samples."""
        return cls({k: v.mean(0) for k, v in samples.items()}, {k: v.var(0, ddof=1) for k, v in samples.items()})
