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

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sbn_ppl import SBNParams  # noqa: E402
from sbn_ppl.base.params import generative_keys, recognition_keys  # noqa: E402


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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one intra-op thread for a test module (a pool on a loaded 2-core machine
    costs ~10x; the runner makes the same choice for its steps). A module asks for it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch  # here, so that test files without Pyro do not import it

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trainable(params: SBNParams) -> dict:
    """The generative and recognition arrays of ``params`` as float32 JAX arrays (theta and phi)."""
    arch = params.architecture
    return {k: jnp.asarray(params[k], jnp.float32) for k in generative_keys(arch) + recognition_keys(arch)}


def flat(grads: dict, keys) -> np.ndarray:
    """One gradient (a dict of arrays) as a float64 vector, ``keys`` in order."""
    return np.concatenate([np.ravel(np.asarray(grads[k], np.float64)) for k in keys])


def z_scores(draws, expected):
    """Per coordinate ``(mean - expected) / standard error`` of ``draws`` ``(M, ...)``, M
    independent estimates of ``expected``; or a dict of such, key by key. A coordinate that
    never varies (a weight from a pixel that is 0 in every row) must be exact: its z is 0 or
    infinite."""
    if isinstance(draws, dict):
        return {k: z_scores(v, expected[k]) for k, v in draws.items()}
    mean, se = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(len(draws))
    exact = np.abs(mean - expected) < 1e-9
    return np.where(se > 0, (mean - expected) / np.where(se > 0, se, 1.0), np.where(exact, 0.0, np.inf))
