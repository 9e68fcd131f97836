"""sbn_ppl: sigmoid belief networks as Pyro and NumPyro models, fitted and compared.

``import sbn_ppl`` is cheap: it imports NumPy only. The Pyro side
(``sbn_ppl.models.pyro_sbn``) imports torch, the NumPyro side
(``sbn_ppl.models.numpyro_sbn``) imports JAX, each when you import it.
"""
from .architecture import Architecture
from .data import Dataset, load_dataset, validate_binary
from .evaluation import (
    LogLikelihood,
    exact_kl,
    exact_log_likelihood,
    importance_log_likelihood,
    posterior_marginals,
    score,
)
from .harness import compare  # NumPy only at import time: methods import their backend when run
from .params import SBNParams

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "Dataset",
    "LogLikelihood",
    "SBNParams",
    "compare",
    "exact_kl",
    "exact_log_likelihood",
    "importance_log_likelihood",
    "load_dataset",
    "posterior_marginals",
    "score",
    "validate_binary",
]
