"""REBAR (Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein 2017, "REBAR: low-variance, unbiased
gradient estimates for discrete latent variable models").

The single-sample ELBO ``f(b) = log p(x, b) - log q(b | x)``, ``b ~ q(. | x)`` the recognition
network's discrete draw; theta climbs ``grad log p(x, b)``; phi climbs REINFORCE with a
Concrete control variate, made unbiased by the conditional reparameterisation. Each hidden
layer in turn (the per-layer form for a chain of stochastic layers; the arithmetic:
:mod:`sbn_ppl.inference.shared.relaxation`): with ``z_l = c_l(b_<l) + L_l`` the logistic
behind ``b_l = H(z_l)``, ``z~_l ~ p(z_l | b_l)`` from a second uniform, and the control variate

    c_l(z) = eta_l f(b_<l, sigma(z / lambda_l), s_>l(z))        (s_>l: the relaxed layers above,
                                                                from the same logistic noise)
    g_phi  = sum_l [ (f(b) - c_l(z~_l)) grad log q(b_l | b_<l) + grad c_l(z_l) - grad c_l(z~_l) ]

``E[c_l(z~) grad log q_l + grad c_l(z~)] = grad E[c_l(z)]`` (``z~`` given ``b`` has the law of
``z``), so ``g_phi`` is unbiased for ``grad_phi E_q[f]`` at any ``eta``, ``lambda``, the
zero-mean ``-grad_phi log q(b | x)`` of ``f``'s own phi left out. ``c_l`` reads the model
and guide at their current values without their gradient, only ``z``'s. The scale ``eta_l``
and the temperature ``lambda_l = exp(log lambda_l)`` (one pair a layer, started at 1 and
``temperature``) descend the gradient of ``|g_phi|^2``, the estimator's variance up to a
term free of them (sec. 3.3), by the same optimiser, one step with theta and phi.

``bound``: the discrete single-sample ELBO averaged over 16 draws. NumPyro only: Pyro has
no conditional reparameterisation of a Bernoulli site, and REBAR's variance gradient is a
second derivative through the whole estimator, which Pyro's ELBO objects do not expose.
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING
from sbn_ppl.inference.shared.relaxation import TEMPERATURE

REBAR_OPTIONS = TRAINING + (TEMPERATURE._replace(default=0.5),)

_REBAR = ("REBAR (Tucker et al. 2017): REINFORCE with a Concrete control variate, learned scale and "
          "temperature, unbiased; bound: discrete ELBO, mean of 16 draws")
METHODS = (
    Entry("rebar", "numpyro", ".numpyro", "build", REBAR_OPTIONS, _REBAR, guide="recognition"),
)
