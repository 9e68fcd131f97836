"""Shared fixtures: small networks whose posteriors can be enumerated exactly."""
import numpy as np
import pytest

from sbn_ppl import SBNParams


def all_binary(n: int) -> np.ndarray:
    """Every binary vector of length n, one per row: (2^n, n)."""
    idx = np.arange(1 << n)
    return ((idx[:, None] >> np.arange(n)) & 1).astype(np.float32)


NETS = [
    ("4-3", "layered"),
    ("4-3-2", "layered"),
    ("4-2-2-2", "layered"),
    ("4-3-2", "dense"),
    ("4-2-2-2", "dense"),
]


@pytest.fixture(params=NETS, ids=[f"{a}-{c}" for a, c in NETS])
def small_params(request) -> SBNParams:
    arch, conn = request.param
    params = SBNParams.init(arch, seed=3, scale=1.5, connectivity=conn)
    rng = np.random.default_rng(4)
    # non-zero biases (generative and guide) so no test passes by symmetry
    return params.replace(**{k: rng.normal(0, 1, v.shape) for k, v in params.items() if "b_" in k})

