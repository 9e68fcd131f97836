"""The algorithms, one folder each, and their registry.

Each folder's ``__init__`` is NumPy-only: it declares the folder's option schema and its
``METHODS``, entries ``(name, backend, module, factory)`` whose ``module`` (relative to
the folder) is imported only when the method is asked for, so ``import sbn_ppl.inference``
imports neither JAX nor torch. Registering a folder is one line below.
"""
from __future__ import annotations

import importlib
from sbn_ppl.base.methods import BACKENDS, Entry, Method

from . import fixed_point, mean_field, neal, nvil, rws, vimco
from . import concrete, rebar, relax, straight_through
from . import arm, disarm, rloo


_REGISTRY: dict[tuple[str, str], tuple[str, Entry]] = {}


def register(folder) -> None:
    """Register every method a folder declares in its ``METHODS``."""
    for entry in folder.METHODS:
        if entry.backend not in BACKENDS:
            raise ValueError(f"{folder.__name__}: unknown backend {entry.backend!r}")
        _REGISTRY[(entry.name, entry.backend)] = (folder.__name__, entry)


register(neal)
register(rws)
register(mean_field)
register(fixed_point)
register(vimco)
register(nvil)
register(concrete)
register(straight_through)
register(rebar)
register(relax)
register(rloo)
register(arm)
register(disarm)


def method_names() -> list[str]:
    return sorted({name for name, _ in _REGISTRY})


def backends_of(name: str) -> list[str]:
    return sorted(b for n, b in _REGISTRY if n == name)


def get_method(name: str, backend: str | None = None) -> Method:
    """The registered method ``name`` for ``backend`` (default: NumPyro where it exists)."""
    if name not in method_names():
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(method_names())}")
    available = backends_of(name)
    if backend is None:
        backend = "numpyro" if "numpyro" in available else available[0]
    if backend not in available:
        raise ValueError(f"method {name!r} has no {backend!r} backend; available: {', '.join(available)}")
    package, entry = _REGISTRY[(name, backend)]
    return Method(entry, getattr(importlib.import_module(entry.module, package), entry.factory))


def entries() -> list[Entry]:
    return [entry for _, entry in _REGISTRY.values()]


def option_schema() -> dict:
    """Every registered method's options by name (for the command line's flags), without
    importing a backend; two methods that share a name share its meaning."""
    schema = {}
    for entry in entries():
        for option in entry.options:
            schema.setdefault(option.name, option)
    return schema


def add(entry: Entry, package: str | None = None) -> None:
    """Register one method outside the folders (``entry.module`` absolute, or relative to ``package``)."""
    _REGISTRY[(entry.name, entry.backend)] = (package, entry)
