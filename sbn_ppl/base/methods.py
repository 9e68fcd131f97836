"""The method contract: the one small interface through which the runner, ``fit`` and the
harness know an algorithm (BlackJAX's ``SamplingAlgorithm(init, step)``; optax's factories
that close over their settings and return pure functions whose state is arrays only).

A method is declared once, in its folder's ``__init__`` (NumPy only), as an :class:`Entry`:
its name, backend, option schema, description, the guide it trains, whether its step is
jittable, and where its factory is. The factory, imported only when the method is asked
for, is ``build(arch, options) -> Kernel``: it closes over the architecture and the checked
options (:mod:`sbn_ppl.base.options`) and returns a :class:`Kernel` of pure functions:

* ``init(key, params, train) -> state``: ``key`` is a JAX PRNG key on the NumPyro backend
  and an integer seed on the Pyro backend; ``params`` the initial
  :class:`~sbn_ppl.SBNParams`; ``train`` the whole training matrix ``(N, D)`` of 0./1.
  (float32), for methods that keep per-data-point state (Neal's persistent chains, local
  mean-field parameters) or initialise from the data. The state holds arrays (on the Pyro
  backend also the optimiser objects), never the configuration.
* ``step(key, state, batch) -> (state, info)``: one training step on ``batch``, a
  :class:`Batch` of training indices and their rows. ``info`` is a NamedTuple (or dict) of
  scalars with at least ``objective``: the method's own training objective, higher is
  better, averaged per data point, in nats. On the NumPyro backend ``step`` must be
  jittable (``Entry.jit``) so the runner can ``lax.scan`` it; a stock path that is not sets
  ``jit=False`` and is looped in Python, still by the same runner.
* ``get_params(state) -> SBNParams``: the current parameters, with the ``q_`` keys of the
  method's trained guide and no other guide's.
* ``bound(state, x) -> (N,)``: optional, the method's own lower bound on ``log p(x_n)``.
* ``guide_gradient(key, state, x) -> pytree``: optional, for a method with a recognition
  network: one draw of its estimator of the guide's gradient on the batch ``x`` (the
  gradient-variance diagnostic repeats it over keys on a fixed batch).
* ``data_axes(state)``: optional (NumPyro backend), for state kept per training case: a
  pytree over ``state`` with, at each node, the axis of length ``N_train`` to split over
  the devices, or ``None`` (replicated). See :mod:`sbn_ppl.engine.sharding`.

The caller owns the loop: :mod:`sbn_ppl.engine.runner` draws the batches (the same sequence
for every method, given the seed and the data), the keys, the checkpoints and the budgets.
Methods register in :mod:`sbn_ppl.inference` (one line a folder); this module names none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.options import Option, defaults, resolve
from sbn_ppl.base.params import SBNParams

BACKENDS = ("numpyro", "pyro")
GUIDES = ("recognition", "mean_field")


class Batch(NamedTuple):
    """One mini-batch: ``index`` (B,) int positions in the training set, ``x`` (B, D) their rows."""

    index: Any
    x: Any


class Entry(NamedTuple):
    """A method, declared once (a folder's ``METHODS``): ``factory`` in ``module`` (relative to
    the folder, imported only when the method is asked for) is ``build(arch, options) ->
    Kernel``; ``options`` its option schema, so the command line knows every method's flags
    without importing a backend; ``guide`` the guide it trains (``"recognition"``,
    ``"mean_field"`` or ``None``: the one importance sampling scores it with); ``jit``
    whether its step can be ``lax.scan``-ned."""

    name: str
    backend: str
    module: str
    factory: str
    options: tuple = ()
    description: str = ""
    guide: str | None = None
    jit: bool = True


class Kernel(NamedTuple):
    """A method built for one architecture and one set of checked options (see the module)."""

    init: Callable[[Any, SBNParams, Any], Any]
    step: Callable[[Any, Any, Batch], tuple[Any, Any]]
    get_params: Callable[[Any], SBNParams]
    bound: Callable[[Any, np.ndarray], np.ndarray] | None = None
    data_axes: Callable[[Any], Any] | None = None
    guide_gradient: Callable[[Any, Any, Any], Any] | None = None


@dataclass(frozen=True)
class Method:
    """An :class:`Entry` with its factory: ``method.build(arch, options)`` is its :class:`Kernel`."""

    entry: Entry
    factory: Callable[[Architecture, dict], Kernel]

    def __post_init__(self):
        if self.entry.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.entry.backend!r}")
        if self.entry.guide not in GUIDES + (None,):
            raise ValueError(f"guide must be one of {', '.join(GUIDES)} or None, got {self.entry.guide!r}")

    name = property(lambda self: self.entry.name)
    backend = property(lambda self: self.entry.backend)
    options = property(lambda self: self.entry.options)
    description = property(lambda self: self.entry.description)
    guide = property(lambda self: self.entry.guide)
    jit = property(lambda self: self.entry.jit)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.backend}"

    @property
    def defaults(self) -> dict:
        return defaults(self.options)

    def check_options(self, options: dict | None) -> dict:
        """The method's defaults updated with ``options``, each checked; unknown names are an error."""
        return resolve(self.options, options, owner=f"method {self.name!r} ({self.backend})")

    def build(self, arch: Architecture, options: dict | None = None) -> Kernel:
        """The :class:`Kernel` for ``arch`` with ``options`` (checked here; defaults filled in)."""
        return self.factory(Architecture.parse(arch), self.check_options(options))


def by_chunks(fn: Callable[[int, np.ndarray], Any], x: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """``fn(i, rows)`` on the ``i``-th run of ``chunk`` rows of ``x``, the results joined as
    float64: a method's bound on a data set of any size in bounded memory."""
    return np.concatenate([np.asarray(fn(i, x[s:s + chunk]))
                           for i, s in enumerate(range(0, len(x), chunk))]).astype(np.float64)
