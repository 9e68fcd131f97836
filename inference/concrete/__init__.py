"""Concrete: the ELBO on binary Concrete relaxed samples (Maddison, Mnih & Teh 2017, "The
Concrete distribution"; Jang, Gu & Poole 2017, "Categorical reparameterization with
Gumbel-softmax").

Every hidden unit of the recognition network is relaxed (the arithmetic:
:mod:`sbn_ppl.inference.shared.relaxation`): with one logistic draw ``L_l`` a layer,

    y_l = (c_l(s_<l) + L_l) / lambda_q,      s_l = sigma(y_l)            (s_0 = x)

and theta and phi climb, by the reparameterisation gradient, the relaxed single-sample bound of
Maddison et al. (their appendix C), with the binary Concrete densities of ``q`` and of the
relaxed prior ``p(h_l | h_>l)`` in logit space:

    L~ = log p(x | s_1) + sum_l [ log f(y_l | a_l(s_>l), lambda_p) - log f(y_l | c_l(s_<l), lambda_q) ]
    log f(y | c, lambda) = log lambda + c - lambda y - 2 softplus(c - lambda y)

The objective is biased for the discrete ELBO by design. With ``lambda_p = lambda_q`` the
logit-space KL term does not depend on the temperature (``lambda y = c + L`` in both
densities): it is the KL between Logistic(c, 1) and Logistic(a, 1) at the relaxed parents,
which bounds the Bernoulli KL from above, so ``L~`` tends, as the temperature falls, to a
bound below the discrete ELBO, not to it. ``relaxed_density="bernoulli"`` scores the relaxed
values with the discrete log-masses instead (Jang et al.'s form; multilinear in ``s``):
``log p(x, s) - log q(s | x)``, which tends to the discrete ELBO as ``lambda`` falls
(tests/inference/test_relaxed_estimators.py measures both).

Scored as a discrete SBN: ``get_params`` returns the ordinary generative and recognition
arrays; ``bound`` is the discrete single-sample ELBO averaged over 16 draws of the discrete
recognition network.

Temperatures: the defaults 2/3 (``q``) and 1/2 (the relaxed prior) are our reading of Maddison
et al.'s choice for binary latents; the appendix was not readable in our sources, so they are
stated here, not quoted.

NumPyro: ``numpyro.py``. Pyro: ``pyro.py``, a loss that swaps the model's and guide's latent
Bernoulli sites for Pyro's own ``RelaxedBernoulli`` and runs ``Trace_ELBO`` on them (the
``"concrete"`` density only: Pyro's ``RelaxedBernoulli`` scores the relaxed value by its
Concrete density).
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING, Option, choice, positive_float
from sbn_ppl.inference.shared.relaxation import TEMPERATURE

PRIOR_TEMPERATURE = Option("prior_temperature", 0.5, positive_float,
                           "concrete: temperature of the relaxed prior p(h_l | h_>l) in the relaxed bound")
RELAXED_DENSITY = Option("relaxed_density", "concrete", choice("concrete", "bernoulli"),
                         "concrete: score relaxed values by binary Concrete densities (Maddison et al.) or by the "
                         "discrete Bernoulli log-masses (Jang et al.)")

CONCRETE_OPTIONS = TRAINING + (TEMPERATURE._replace(default=2 / 3), PRIOR_TEMPERATURE, RELAXED_DENSITY)
PYRO_CONCRETE_OPTIONS = TRAINING + (TEMPERATURE._replace(default=2 / 3), PRIOR_TEMPERATURE)

_CONCRETE = ("Concrete relaxation (Maddison et al. 2017): reparameterised relaxed ELBO, biased; "
             "bound: discrete ELBO, mean of 16 draws")
METHODS = (
    Entry("concrete", "numpyro", ".numpyro", "build", CONCRETE_OPTIONS, _CONCRETE, guide="recognition"),
    Entry("concrete", "pyro", ".pyro", "build", PYRO_CONCRETE_OPTIONS, _CONCRETE, guide="recognition"),
)
