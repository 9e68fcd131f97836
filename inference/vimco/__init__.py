"""VIMCO (Mnih & Rezende 2016, "Variational inference for Monte Carlo objectives").

The K-sample importance-weighted bound, fitted in the model's parameters theta and the
recognition network's phi together, from one objective. For a data point ``x_n`` of a batch
of B, with ``h_n1 .. h_nK ~ q(. | x_n)`` and ``log w_nk = log p(x_n, h_nk) - log q(h_nk | x_n)``,
per data point and never across the batch:

    L_n        = log (1/K) sum_k w_nk                                     (the bound)
    L_n,-k     = log (1/K) (sum_{j != k} w_nj + w^_n,-k),  log w^_n,-k = mean_{j != k} log w_nj
    theta      sum_k w~_nk grad log p(x_n, h_nk),                  w~_nk = w_nk / sum_j w_nj
    phi        sum_k [(L_n - L_n,-k) - w~_nk] grad log q(h_nk | x_n)
    objective  (1/B) sum_n L_n

``L_n,-k``, the bound with ``w_nk`` replaced by the geometric mean of the other weights,
does not depend on ``h_nk``: a per-sample baseline that keeps the estimator unbiased and
credits each sample only with what it adds to the bound. K >= 2.

Both gradients are those of one surrogate whose value is the bound (``sg``: stop-gradient;
the added term is zero in value), so one optimiser steps theta and phi together:

    S_n = L_n + sum_k sg(L_n - L_n,-k) (log q_nk - sg(log q_nk))

All ``L_n,-k`` at once, exactly in log space: with ``m`` the mean of ``log w_n.``,
``log w^_n,-k = m + (m - log w_nk) / (K - 1)`` (no difference of two large sums); row k of a
``(K, K, B)`` array is ``log w`` with entry k replaced by it, and ``L_n,-k`` its logsumexp
(no ``log(sum - w_k)``). O(K^2 B), small next to the densities' O(K B D H).

One option schema for both backends (NumPy only): ``numpyro.py``, a jitted JAX step on the
NumPyro model's densities; ``pyro.py``, a Pyro ``ELBO`` used like
``pyro.infer.ReweightedWakeSleep`` (``SVI(model, guide, optim, loss=VIMCO(num_particles=K))``).
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING, Option, at_least


K = Option("k", 5, at_least(2, "for VIMCO (each sample's baseline is built from the other samples)"), "particles K per data point (VIMCO: >= 2)")

VIMCO_OPTIONS = TRAINING + (K,)

_VIMCO = "VIMCO (Mnih & Rezende 2016): K-sample bound, leave-one-out baselines, per-data-point weights"
METHODS = (
    Entry("vimco", "numpyro", ".numpyro", "build", VIMCO_OPTIONS, _VIMCO, guide="recognition"),
    Entry("vimco", "pyro", ".pyro", "build", VIMCO_OPTIONS, _VIMCO, guide="recognition"),
)
