"""REINFORCE leave-one-out (Kool, van Hoof & Welling 2019, "Buy 4 REINFORCE samples, get a
baseline for free!"; the ELBO form of Dong, Mnih & Tucker 2020, "REINFORCE LOO").

The single-sample ELBO, fitted in theta and the recognition network's phi together. For a
data point ``x``, K draws ``h_1 .. h_K ~ q(. | x)`` and their learning signals
``f_k = log p(x, h_k) - log q(h_k | x)``; each sample's baseline is the mean of the others':

    ELBO       E_q[f]                                                   (per data point)
    theta      (1/K) sum_k grad_theta log p(x, h_k)
    phi        (1/K) sum_k (f_k - (1/(K-1)) sum_{j != k} f_j) grad_phi log q(h_k | x)
               = (1/(K-1)) sum_k (f_k - f_bar) grad_phi log q(h_k | x)
    objective  (1/B) sum_n (1/K) sum_k f_nk

Unbiased: ``grad_phi E_q[f] = E_q[f grad log q] + E_q[grad_phi f]`` and the second term is
``-E_q[grad log q] = 0``, so only the score term is kept (f's own ``-grad_phi log q`` has mean
zero and is left out); the baseline of sample k is independent of ``h_k``, so it adds nothing in
mean. K >= 2. One surrogate per data point (``sg``: stop-gradient), value the mean of ``f_k``:

    S = (1/K) sum_k [log p_k - sg(log q_k) + sg(f_k - b_k) (log q_k - sg(log q_k))]

One option schema for both backends (NumPy only): ``numpyro.py``, a jitted JAX step on the
NumPyro model's densities; ``pyro.py``, a Pyro loss object used like
``pyro.infer.ReweightedWakeSleep`` (``SVI(model, guide, optim, loss=RLOO(num_particles=K))``).
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING, Option, at_least


K = Option("k", 5, at_least(2, "for REINFORCE leave-one-out (each sample's baseline is the mean of the others')"), "particles K per data point (REINFORCE leave-one-out: >= 2)")

RLOO_OPTIONS = TRAINING + (K,)

_RLOO = ("REINFORCE leave-one-out (Kool et al. 2019): single-sample ELBO, K samples, each baseline the mean "
         "of the others; bound: the ELBO, mean of f over 10 draws")
METHODS = (
    Entry("rloo", "numpyro", ".numpyro", "build", RLOO_OPTIONS, _RLOO, guide="recognition"),
    Entry("rloo", "pyro", ".pyro", "build", RLOO_OPTIONS, _RLOO, guide="recognition"),
)
