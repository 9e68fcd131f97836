"""Shared fixtures: small networks whose posteriors can be enumerated exactly."""
import os

# The tests run tiny nets, where XLA's compilation, not the compiled code, takes the time
# (most of the suite's CPU). Skipping LLVM's expensive passes does not change what is
# computed and cuts the suite's time by about a third (measured); the subprocesses the
# tests start (the CLI, the README's blocks, the device counts) inherit it. Users' runs are
# not touched: this is set only here.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if _FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sbn_ppl import SBNParams  # noqa: E402


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

