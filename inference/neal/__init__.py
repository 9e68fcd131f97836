"""Neal's (1992) learning rule: persistent Gibbs chains, then a gradient step up ``log p(x, h)``.

One option schema for every backend (NumPy only). ``numpyro.py`` advances the chains with
our incremental sweep in JAX (:mod:`sbn_ppl.inference.shared.gibbs.numpyro`), ``pyro.py`` with its
torch twin; ``discrete_hmc_gibbs.py`` is the same rule with NumPyro's stock
``DiscreteHMCGibbs`` as the posterior sampler (``numpyro-discrete-gibbs``, small nets only).
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING, Option, positive_int

SWEEPS = Option("sweeps", 1, positive_int, "Gibbs sweeps of the batch's chains per learning step")
CHAINS = Option("chains", 1, positive_int, "persistent Gibbs chains per training case")

GIBBS_OPTIONS = TRAINING + (SWEEPS, CHAINS)
STOCK_OPTIONS = TRAINING + (SWEEPS,)  # the stock sampler keeps one chain per case

_NEAL = "Neal (1992): persistent Gibbs chains, then a step up grad log p(x, h)"
METHODS = (
    Entry("gibbs", "numpyro", ".numpyro", "method", GIBBS_OPTIONS, _NEAL + "; our incremental sweep, JAX"),
    Entry("gibbs", "pyro", ".pyro", "method", GIBBS_OPTIONS, _NEAL + "; our incremental sweep, torch"),
    Entry("numpyro-discrete-gibbs", "numpyro", ".discrete_hmc_gibbs", "method", STOCK_OPTIONS,
          _NEAL + " with NumPyro's stock DiscreteHMCGibbs as the sampler (small nets)"),
)
