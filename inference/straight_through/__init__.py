"""Straight-through Gumbel: the discrete ELBO with a relaxed backward pass (Jang, Gu & Poole
2017, "Categorical reparameterization with Gumbel-softmax", sec. 2.2; Bengio, Leonard &
Courville 2013, "Estimating or propagating gradients through stochastic neurons").

Forward, the discrete draw: ``b_l = [c_l(b_<l) + L_l > 0]`` (``L_l`` logistic), and the
single-sample ELBO ``log p(x, b) - log q(b | x)`` at it. Backward, each ``b_l`` passes the
gradient of its relaxation ``s_l = sigma((c_l + L_l) / lambda)``: ``h_l = b_l + s_l - sg(s_l)``
(value exactly ``b_l``). The units are scored by the Bernoulli log-mass written multilinearly,
``s a - softplus(a)`` (as torch's ``Bernoulli.log_prob`` is), so the backward pass reads
``d/ds log p = a`` through the model's and the guide's densities. theta and phi climb this one
surrogate. Biased by design (the relaxed derivative at a hard point); the bias against the
exact gradient is measured in tests/inference/test_relaxed_estimators.py.

``get_params``: the ordinary SBN and recognition arrays; ``bound``: the discrete single-sample
ELBO averaged over 16 draws. NumPyro: ``numpyro.py``; Pyro: ``pyro.py``, a loss that swaps the
guide's latent Bernoulli sites for Pyro's ``RelaxedBernoulliStraightThrough`` (its hard sample
and straight-through gradient; the log-probability that of the discrete Bernoulli at the hard
value) and runs ``Trace_ELBO``.
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING
from sbn_ppl.inference.shared.relaxation import TEMPERATURE

STRAIGHT_THROUGH_OPTIONS = TRAINING + (TEMPERATURE._replace(default=1.0),)

_ST = ("straight-through Gumbel (Jang et al. 2017): hard forward pass, relaxed backward pass, biased; "
       "bound: discrete ELBO, mean of 16 draws")
METHODS = (
    Entry("straight-through", "numpyro", ".numpyro", "build", STRAIGHT_THROUGH_OPTIONS, _ST, guide="recognition"),
    Entry("straight-through", "pyro", ".pyro", "build", STRAIGHT_THROUGH_OPTIONS, _ST, guide="recognition"),
)
