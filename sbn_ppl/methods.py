"""The one small interface through which the fitting driver and the harness know an algorithm.

A :class:`Method` is a record of pure functions (no subclassing):

* ``init(params, train, seed, **options) -> state``: ``params`` are the initial
  :class:`~sbn_ppl.SBNParams` (generative, plus any guide keys the method uses or adds),
  ``train`` the training matrix ``(N, D)`` of 0./1.; ``options`` are the method's own
  settings, whose names and defaults are ``Method.defaults``.
* ``run(state, num_steps) -> (state, info)``: ``num_steps`` training steps; ``info`` is a
  dict with at least ``"objective"`` (the method's own training objective, a float,
  higher is better, averaged per data point, in nats).
* ``get_params(state) -> SBNParams``: the current parameters (with the ``q_`` keys of
  the method's guide, if it has one).
* ``guide``: ``"recognition"``, ``"mean_field"`` or ``None``: the named guide that
  importance sampling can use to score the method's parameters.
* ``bound(state, x) -> (N,) | None``: optional, the method's own lower bound on
  ``log p(x_n)``; ``None`` where this state has no bound on new data (a guide with
  per-training-point parameters, say).

Algorithms register here by import path, so importing this module imports no backend.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .params import SBNParams

BACKENDS = ("numpyro", "pyro")


@dataclass(frozen=True)
class Method:
    name: str
    backend: str
    init: Callable[..., Any]
    run: Callable[[Any, int], tuple[Any, dict]]
    get_params: Callable[[Any], SBNParams]
    guide: str | None = None
    bound: Callable[[Any, np.ndarray], np.ndarray] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def check_options(self, options: Mapping[str, Any]) -> dict:
        """The method's defaults updated with ``options``; unknown names are an error."""
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"method {self.name!r} ({self.backend}) has no option(s) {', '.join(unknown)}; "
                f"its options are: {', '.join(sorted(self.defaults)) or 'none'}"
            )
        return {**self.defaults, **options}


# (method name, backend) -> "module:factory"; the factory returns a Method.
_REGISTRY: dict[tuple[str, str], str] = {}


def register(name: str, backend: str, target: str) -> None:
    _REGISTRY[(name, backend)] = target


def _available(target: str) -> bool:
    module = target.split(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def method_names() -> list[str]:
    """Names of the methods whose implementation is installed."""
    return sorted({name for (name, _), target in _REGISTRY.items() if _available(target)})


def backends_of(name: str) -> list[str]:
    return sorted(b for (n, b), target in _REGISTRY.items() if n == name and _available(target))


def get_method(name: str, backend: str | None = None) -> Method:
    """The registered method ``name`` for ``backend`` (default: NumPyro where it exists)."""
    if name not in method_names():
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(method_names())}")
    available = backends_of(name)
    if backend is None:
        backend = "numpyro" if "numpyro" in available else available[0]
    if backend not in available:
        raise ValueError(f"method {name!r} has no {backend!r} backend; available: {', '.join(available)}")
    module, factory = _REGISTRY[(name, backend)].split(":")
    return getattr(importlib.import_module(module), factory)()


# Every method, each in the module that implements it (the harness's --methods names).
register("gibbs", "numpyro", "sbn_ppl.inference.neal_jax:method")
register("gibbs", "pyro", "sbn_ppl.inference.neal_torch:method")
register("numpyro-discrete-gibbs", "numpyro", "sbn_ppl.inference.neal_jax:stock_method")
register("wake-sleep", "numpyro", "sbn_ppl.inference.rws_jax:wake_sleep_method")
register("wake-sleep", "pyro", "sbn_ppl.inference.rws_pyro:wake_sleep_method")
register("rws", "numpyro", "sbn_ppl.inference.rws_jax:rws_method")
register("rws", "pyro", "sbn_ppl.inference.rws_pyro:rws_method")
register("pyro-rws", "pyro", "sbn_ppl.inference.rws_pyro:stock_rws_method")
register("mean-field-svi", "numpyro", "sbn_ppl.inference.mean_field_numpyro:method")
register("mean-field-svi", "pyro", "sbn_ppl.inference.mean_field_pyro:method")
register("mean-field-fixed-point", "numpyro", "sbn_ppl.inference.mean_field_fixed_point:method")
