"""The Concrete (binary Gumbel-softmax) relaxation of the guide's Bernoulli units, which the
relaxation-based estimators share (``concrete``, ``straight-through``, ``rebar``, ``relax``).

A unit with logit ``c`` is drawn from one uniform ``u`` through the logistic variable

    z = c + log u - log(1 - u)            (Logistic(c, 1))
    b = H(z) = [z > 0]                     (b ~ Bernoulli(sigma(c)): the discrete draw)
    s = sigma(z / lambda)                  (its binary Concrete relaxation at temperature lambda)

(Maddison, Mnih & Teh 2017; Jang, Gu & Poole 2017). The density of ``y = z / lambda`` is the
logistic one, written in logit space for stability (Maddison et al., appendix C):

    log f(y | c, lambda) = log lambda + c - lambda y - 2 softplus(c - lambda y)

REBAR's conditional reparameterisation (Tucker et al. 2017, appendix) draws ``z~ ~ p(z | b)``
from a second uniform ``v``, in the softplus form (``-log(1 - sigma(c)) = softplus(c)``):

    z~ = softplus(logit v + softplus(c))        if b = 1
    z~ = -softplus(-logit v + softplus(-c))     if b = 0

and a relaxed value ``s`` in ``[0, 1]`` is scored by the multilinear extension of the Bernoulli
log-mass, ``s log sigma(a) + (1 - s) log sigma(-a) = -(s softplus(-a) + (1 - s) softplus(a))``,
which equals the discrete log-mass at ``s`` in ``{0, 1}``.

``numpyro.py`` holds the JAX arithmetic; the Pyro losses use Pyro's own ``RelaxedBernoulli``
and ``RelaxedBernoulliStraightThrough``. The shared option is :data:`TEMPERATURE` (each method
sets its own default with ``TEMPERATURE._replace(default=...)``).
"""
from sbn_ppl.base.options import Option, positive_float

TEMPERATURE = Option("temperature", 0.5, positive_float,
                     "temperature lambda of the Concrete relaxation of the guide's units (rebar, relax: its "
                     "starting value, then learned)")
