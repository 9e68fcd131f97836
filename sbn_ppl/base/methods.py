"""The method contract: the one small interface through which the runner, ``fit`` and the
harness know an algorithm (BlackJAX's ``SamplingAlgorithm(init, step)``, with options).

A :class:`Method` is a record of pure functions, no subclassing:

* ``init(key, params, options, train) -> state``: ``key`` is a JAX PRNG key on the
  NumPyro backend and an integer seed on the Pyro backend; ``params`` the initial
  :class:`~sbn_ppl.SBNParams`; ``options`` the method's options, already checked against
  its schema (:mod:`sbn_ppl.base.options`); ``train`` the whole training matrix ``(N, D)`` of
  0./1. (float32), for methods that keep per-data-point state (Neal's persistent chains,
  local mean-field parameters) or initialise from the data.
* ``step(key, state, batch) -> (state, info)``: one training step on ``batch``, a
  :class:`Batch` of training indices and their rows. ``info`` is a NamedTuple (or dict) of
  scalars with at least ``objective``: the method's own training objective, higher is
  better, averaged per data point, in nats. On the NumPyro backend ``step`` must be
  jittable (``jit=True``) so the runner can ``lax.scan`` it; a stock path that is not sets
  ``jit=False`` and is looped in Python, still by the same runner.
* ``get_params(state) -> SBNParams``: the current parameters, with the ``q_`` keys of the
  method's trained guide and no other guide's.
* ``guide``: ``"recognition"``, ``"mean_field"`` or ``None``: the guide this method trains
  (the one importance sampling scores its parameters with).
* ``bound(state, x) -> (N,) | None``: optional, the method's own lower bound on
  ``log p(x_n)``; ``None`` where the state has no bound on new data.
* ``options``: the schema, a tuple of :class:`~sbn_ppl.base.options.Option`.
* ``data_axes(state)``: optional (NumPyro backend), for state kept per training case
  (Neal's persistent chains, local mean-field parameters): a pytree over ``state`` with,
  at each node, the axis of length ``N_train`` to split over the devices, or ``None``
  (replicated). Without it every state leaf is replicated (always correct; only memory
  and speed differ). See :mod:`sbn_ppl.engine.sharding`.

The caller owns the loop: :mod:`sbn_ppl.engine.runner` draws the batches (the same sequence for
every method, given the seed and the data), the keys, the checkpoints and the budgets.
Methods register in :mod:`sbn_ppl.inference` (one line each); this core module names none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from sbn_ppl.base.options import Option, defaults, resolve
from sbn_ppl.base.params import SBNParams

BACKENDS = ("numpyro", "pyro")


class Batch(NamedTuple):
    """One mini-batch: ``index`` (B,) int positions in the training set, ``x`` (B, D) their rows."""

    index: Any
    x: Any


class Entry(NamedTuple):
    """A method as an algorithm folder declares it (its ``METHODS``): ``factory()`` in
    ``module`` (relative to the folder, imported only when the method is asked for) returns
    the :class:`Method`; ``options`` is its option schema (the same tuple the ``Method``
    carries), so the command line knows every method's flags without importing a backend."""

    name: str
    backend: str
    module: str
    factory: str
    options: tuple = ()
    description: str = ""


@dataclass(frozen=True)
class Method:
    name: str
    backend: str
    init: Callable[[Any, SBNParams, dict, Any], Any]
    step: Callable[[Any, Any, Batch], tuple[Any, Any]]
    get_params: Callable[[Any], SBNParams]
    guide: str | None = None
    bound: Callable[[Any, np.ndarray], np.ndarray | None] | None = None
    options: tuple[Option, ...] = ()
    jit: bool = True
    description: str = ""
    data_axes: Callable[[Any], Any] | None = None

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")

    @property
    def label(self) -> str:
        return f"{self.name}:{self.backend}"

    @property
    def defaults(self) -> dict:
        return defaults(self.options)

    def check_options(self, options: dict | None) -> dict:
        """The method's defaults updated with ``options``, each checked; unknown names are an error."""
        return resolve(self.options, options, owner=f"method {self.name!r} ({self.backend})")


def by_chunks(fn: Callable[[int, np.ndarray], Any], x: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """``fn(i, rows)`` on the ``i``-th run of ``chunk`` rows of ``x``, the results joined as
    float64: a method's bound on a data set of any size in bounded memory."""
    return np.concatenate([np.asarray(fn(i, x[s:s + chunk]))
                           for i, s in enumerate(range(0, len(x), chunk))]).astype(np.float64)


class Static:
    """A value carried inside a JAX state as static (hashable) data, not as a leaf.

    A jitted ``step`` reads its configuration (architecture, optimiser, K, ...) from the
    state, so a state is ``(arrays..., Static(config))``. Registered as a pytree with no
    children by :func:`sbn_ppl.base.pytrees.register`.
    """

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Static) and self.value == other.value

    def __hash__(self):
        return hash(self.value)

    def __repr__(self):
        return f"Static({self.value!r})"
