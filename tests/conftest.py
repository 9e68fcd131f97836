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


# The longest test files first: pytest-xdist (`--dist loadfile`, see pyproject.toml) hands
# whole files to its workers in collection order, so a long file collected last (the README's
# blocks live at the top of tests/) would run alone at the end while the other worker idles.
SLOW_FIRST = ("test_readme.py", "core/test_harness.py", "core/test_devices.py", "models/test_guide_gradients.py",
              "inference/test_mean_field_svi.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return next((i for i, slow in enumerate(SLOW_FIRST) if path.endswith(slow)), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: the order within each file and among the others is kept
