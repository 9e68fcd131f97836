"""sbn_ppl: sigmoid belief networks as Pyro and NumPyro models, fitted and compared.

``import sbn_ppl`` is cheap: it imports NumPy only. The Pyro side
(``sbn_ppl.models.pyro_sbn``) imports torch, the NumPyro side
(``sbn_ppl.models.numpyro_sbn``) imports JAX, each when you import it; ``compare``,
``score`` and ``report`` import what they need when first used.
"""
from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.data import load_dataset
from sbn_ppl.base.arrays import Dataset, validate_binary
from sbn_ppl.yardstick.exact import exact_kl, exact_log_likelihood, posterior_marginals
from sbn_ppl.yardstick.estimates import LogLikelihood, importance_log_likelihood
from sbn_ppl.base.params import SBNParams

from sbn_ppl.base.version import __version__  # noqa: F401  (the package's version)

_LAZY = {"compare": ".comparison.harness", "score": ".yardstick", "fit": ".engine.fitting", "get_method": ".inference",
         "Budget": ".engine.fitting", "Checkpointing": ".engine.fitting",
         "report": ".comparison.reporting", "random_subset": ".base.arrays", "posthoc_guide": ".yardstick"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'sbn_ppl' has no attribute {name!r}")


__all__ = [
    "Architecture",
    "Budget",
    "Checkpointing",
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
