"""Neal's (1992) learning rule ("Connectionist learning of belief networks", sec. 3):
persistent Gibbs chains, then a gradient step up ``log p(x, h)``.

The gradient of the data log-likelihood is a posterior expectation:

    d log p(x) / d theta = E_{p(h | x)} [ d log p(x, h) / d theta ]

Neal keeps one persistent Gibbs chain per training case (here ``chains`` per case); the
chains sample ``p(h | x)`` one unit at a time from its exact conditional
(:mod:`sbn_ppl.inference.shared.gibbs`). A learning step on a batch of B training cases
advances those cases' chains by ``sweeps`` sweeps under the current weights, then moves
theta up the mean of ``grad log p(x_n, h_nc)`` at the new chain states:

    h_nc  <- sweeps Gibbs sweeps of p(h | x_n, theta) from h_nc     (n in the batch, c <= C)
    theta <- theta + optimizer( (1 / (B C)) sum_{n, c} grad_theta log p(x_n, h_nc) )

The chains of the other training cases wait, frozen, for their next batch.

One option schema for every backend (NumPy only). ``numpyro.py`` advances the chains with
our incremental sweep in JAX, ``pyro.py`` with its torch twin; ``discrete_hmc_gibbs.py`` is
the same rule with NumPyro's stock ``DiscreteHMCGibbs`` as the posterior sampler
(``numpyro-discrete-gibbs``, small nets only).
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING, Option, positive_int

SWEEPS = Option("sweeps", 1, positive_int, "Gibbs sweeps of the batch's chains per learning step")
CHAINS = Option("chains", 1, positive_int, "persistent Gibbs chains per training case")

GIBBS_OPTIONS = TRAINING + (SWEEPS, CHAINS)
STOCK_OPTIONS = TRAINING + (SWEEPS,)  # the stock sampler keeps one chain per case

_NEAL = "Neal (1992): persistent Gibbs chains, then a step up grad log p(x, h)"
METHODS = (
    Entry("gibbs", "numpyro", ".numpyro", "build", GIBBS_OPTIONS, _NEAL + "; our incremental sweep, JAX"),
    Entry("gibbs", "pyro", ".pyro", "build", GIBBS_OPTIONS, _NEAL + "; our incremental sweep, torch"),
    Entry("numpyro-discrete-gibbs", "numpyro", ".discrete_hmc_gibbs", "build", STOCK_OPTIONS,
          _NEAL + " with NumPyro's stock DiscreteHMCGibbs as the sampler (small nets)", jit=False),
)
