"""DisARM (Dong, Mnih & Tucker 2020, "DisARM: An Antithetic Gradient Estimator for Binary
Latent Variables", NeurIPS 2020).

ARM with the augmenting noise integrated out: given the antithetic pair ``(h, h~)`` of a layer
(``h = [u < sigma(c)]``, ``h~ = [1 - u < sigma(c)]``), ARM's ``u`` is still random, and its
conditional expectation gives, unit by unit,

    grad_c E[F] = E_{(h, h~)}[ 1/2 (F(h) - F(h~)) (-1)^{h~_i} [h_i != h~_i] sigma(|c_i|) ]

at the same cost and never more variance than ARM (Rao-Blackwellisation); the gradient of a unit
whose pair agrees is zero. Here ``F = f = log p(x, h) - log q(h | x)``; for the recognition
network's ``L`` layers the per-layer form (the pair at layer ``l`` given the layers below, the
layers above drawn from each member), with the same uniforms and branches as ARM
(:mod:`sbn_ppl.inference.shared.elbo`), so that ARM and DisARM on one key see the same samples.
Per layer, DisARM's estimate is the conditional expectation of ARM's given everything but
``u_l``'s position inside its pair, so each phi coordinate's variance is at most ARM's.

One option schema for both backends (NumPy only): ``numpyro.py``, a jitted JAX step;
``pyro.py``, a Pyro loss object on the user's model and guide.
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING

DISARM_OPTIONS = TRAINING

_DISARM = ("DisARM (Dong et al. 2020): ARM with the pair's noise integrated out, one pair per layer and data "
           "point (per-layer form, L + 1 evaluations); bound: the ELBO, mean of f over 10 draws")
METHODS = (
    Entry("disarm", "numpyro", ".numpyro", "build", DISARM_OPTIONS, _DISARM, guide="recognition"),
    Entry("disarm", "pyro", ".pyro", "build", DISARM_OPTIONS, _DISARM, guide="recognition"),
)
