"""RELAX (Grathwohl, Choi, Wu, Roeder & Duvenaud 2018, "Backpropagation through the void").

REBAR's estimator (``sbn_ppl.inference.rebar``; the arithmetic:
:mod:`sbn_ppl.inference.shared.relaxation`) with a learned neural control variate: for each
hidden layer ``l``

    c_l(z) = eta_l f(b_<l, sigma(z / lambda_l), s_>l(z)) + r_l([x, b_1 .. b_{l-1}, sigma(z / lambda_l)])
    g_phi  = sum_l [ (f(b) - c_l(z~_l)) grad log q(b_l | b_<l) + grad c_l(z_l) - grad c_l(z~_l) ]

``r_l`` a small MLP (one layer of ``hidden`` tanh units, a linear output, the output weights
started at 0 so the method starts as REBAR), the form Grathwohl et al. use for their
discrete-VAE experiments (REBAR's relaxed ``f`` plus a net). Unbiased at any ``c_l`` (the
conditional reparameterisation, as in REBAR). ``eta``, ``log lambda`` and the nets' weights
descend the gradient of ``|g_phi|^2`` (the estimator's variance up to a term free of them),
with theta and phi by the same optimiser. theta climbs ``grad log p(x, b)``.

``bound``: the discrete single-sample ELBO averaged over 16 draws. NumPyro only (as REBAR:
the variance gradient is a second derivative through the estimator, which Pyro's ELBO
objects do not expose).
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING, Option, positive_int
from sbn_ppl.inference.shared.relaxation import TEMPERATURE

HIDDEN = Option("hidden", 32, positive_int, "relax: tanh units of each layer's control-variate net r_l")

RELAX_OPTIONS = TRAINING + (TEMPERATURE._replace(default=0.5), HIDDEN)

_RELAX = ("RELAX (Grathwohl et al. 2018): REBAR's estimator plus a learned neural control variate, "
          "unbiased; bound: discrete ELBO, mean of 16 draws")
METHODS = (
    Entry("relax", "numpyro", ".numpyro", "build", RELAX_OPTIONS, _RELAX, guide="recognition"),
)
