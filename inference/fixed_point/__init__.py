"""Mean-field theory for sigmoid belief networks (Saul, Jaakkola & Jordan 1996): a
deterministic lower bound on ``log p(x)``, maximised by damped layer-parallel fixed-point
sweeps on each data point's ``(mu, xi)`` and by gradient ascent on the weights.

One option schema (NumPy only); ``numpyro.py`` is the jitted JAX method.
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING, Option, positive_int

ITERATIONS = Option("iterations", 1, positive_int,
                    "damped sweeps of the batch's (mu, xi) (all units at once) before each weight step")
BOUND_SWEEPS = Option("bound_sweeps", 100, positive_int,
                      "most sweeps from mu = xi = 1/2 for the bound on new data (it stops once converged)")

FIXED_POINT_OPTIONS = TRAINING + (ITERATIONS, BOUND_SWEEPS)

METHODS = (
    Entry("mean-field-fixed-point", "numpyro", ".numpyro", "method", FIXED_POINT_OPTIONS,
          "SJJ mean-field bound: layer-parallel fixed-point sweeps on (mu, xi), gradient steps on the weights"),
)
