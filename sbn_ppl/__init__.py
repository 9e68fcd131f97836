"""sbn_ppl: sigmoid belief networks as Pyro and NumPyro models, fitted and compared.

``import sbn_ppl`` is cheap: it imports NumPy only. The Pyro side
(``sbn_ppl.models.pyro_sbn``) imports torch, the NumPyro side
(``sbn_ppl.models.numpyro_sbn``) imports JAX, each when you import it; ``compare``,
``score`` and ``report`` import what they need when first used.
"""
from .architecture import Architecture
from .data import Dataset, load_dataset, validate_binary
from .evaluation import (
    LogLikelihood,
    exact_kl,
    exact_log_likelihood,
    importance_log_likelihood,
    posterior_marginals,
)
from .params import SBNParams

__version__ = "0.2.0"

_LAZY = {"compare": ".harness", "score": ".yardstick", "fit": ".fitting", "get_method": ".inference",
         "report": ".reporting", "random_subset": ".data", "posthoc_guide": ".yardstick"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'sbn_ppl' has no attribute {name!r}")


__all__ = [
    "Architecture",
    "Dataset",
    "LogLikelihood",
    "SBNParams",
    "compare",
    "exact_kl",
    "exact_log_likelihood",
    "fit",
    "get_method",
    "importance_log_likelihood",
    "load_dataset",
    "posterior_marginals",
    "posthoc_guide",
    "random_subset",
    "report",
    "score",
    "validate_binary",
]
