"""VIMCO (Mnih & Rezende 2016, "Variational inference for Monte Carlo objectives").

The K-sample importance-weighted bound, fitted in the model's parameters theta and the
recognition network's phi together, from one objective. For a data point ``x``, with
``h_1 .. h_K ~ q(. | x)`` and ``log w_k = log p(x, h_k) - log q(h_k | x)``:

    L        = log (1/K) sum_k w_k                                   (the bound, per data point)
    grad_theta:  sum_k w~_k grad_theta log p(x, h_k),                 w~_k = w_k / sum_j w_j
    grad_phi:    sum_k (L - L_{-k}) grad_phi log q(h_k | x)  -  sum_k w~_k grad_phi log q(h_k | x)
    L_{-k}   = log (1/K) (sum_{j != k} w_j + w^_{-k}),   w^_{-k} = exp(mean_{j != k} log w_j)

``L_{-k}``, the bound with ``w_k`` replaced by the geometric mean of the other weights,
does not depend on ``h_k``: a per-sample baseline that keeps the estimator unbiased and
credits each sample only with what it adds to the bound. K >= 2.

One option schema for both backends (NumPy only): ``numpyro.py`` is a jitted JAX step on
the NumPyro model's densities; ``pyro.py`` a Pyro ``ELBO`` used like
``pyro.infer.ReweightedWakeSleep`` (``SVI(model, guide, optim, loss=VIMCO(num_particles=K))``).
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING, Option, positive_int


def at_least_two(value, name: str) -> int:
    """An integer >= 2: every sample's baseline is the bound of the others."""
    value = positive_int(value, name)
    if value < 2:
        raise ValueError(f"{name} must be an integer >= 2 for VIMCO (each sample's baseline is built from "
                         f"the other samples), got {value!r}")
    return value


K = Option("k", 5, at_least_two, "particles K per data point (VIMCO: >= 2)")

VIMCO_OPTIONS = TRAINING + (K,)

_VIMCO = "VIMCO (Mnih & Rezende 2016): K-sample bound, leave-one-out baselines, per-data-point weights"
METHODS = (
    Entry("vimco", "numpyro", ".numpyro", "vimco_method", VIMCO_OPTIONS, _VIMCO),
    Entry("vimco", "pyro", ".pyro", "vimco_method", VIMCO_OPTIONS, _VIMCO),
)
