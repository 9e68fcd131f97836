"""A gradient method's :class:`~sbn_ppl.base.methods.Kernel` from its pure pieces (JAX).

The method supplies ``start(key, params, train) -> (trained, bound_key)``, its arrays and the
key of its own bound; ``update(key, trained, batch) -> (trained, info)``, one jittable step;
and ``bound(key, params, x) -> (B,)``, its per-point lower bound on ``log p(x_n)`` from the
trained generative and guide arrays ``params``. Each closes over the architecture and the
checked options, so the state holds arrays only.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.base.methods import Batch, Kernel, by_chunks
from sbn_ppl.base.params import SBNParams


class GradientState(NamedTuple):
    """``trained``: the method's arrays (a pytree; its ``params`` the generative and guide
    arrays, unless the kernel is told otherwise); ``bound_key``: the key of the method's own
    bound (``None`` if it has none or needs none)."""

    trained: Any
    bound_key: Any


def gradient_kernel(arch: Architecture, start: Callable, update: Callable, bound: Callable | None = None, *,
                    params_of: Callable = lambda trained: trained.params, data_axes: Callable | None = None,
                    guide_gradient: Callable | None = None, chunk: int = 1000) -> Kernel:
    """The :class:`Kernel` of a gradient method on ``arch``.

    :param start: ``start(key, params, train) -> (trained, bound_key)``: the method's arrays
        from the initial :class:`SBNParams` (and the training matrix, for checks or per-case
        state) and the key of its bound.
    :param update: ``update(key, trained, batch) -> (trained, info)``: one step on a
        :class:`Batch`, jittable.
    :param bound: ``bound(key, params, x) -> (B,)``: the per-point bound on a batch ``x``
        ``(B, D)`` from the arrays ``params_of(trained)``; jitted here and run ``chunk`` rows at
        a time, chunk ``i`` with the key ``fold_in(bound_key, i)``. ``None``: no bound.
    :param params_of: the generative and guide arrays (a dict) of ``trained``.
    :param data_axes: for per-training-case state, ``data_axes(trained)`` (see
        :class:`~sbn_ppl.base.methods.Kernel`).
    :param guide_gradient: ``guide_gradient(key, trained, x) -> {q_ name: array}``: one draw of
        the method's estimator of the guide's gradient (its step direction, ascent) on a batch
        ``x`` ``(B, D)``, jittable; jitted here as the kernel's ``guide_gradient``. ``None``: none.
    """

    def init(key, params: SBNParams, train=None) -> GradientState:
        return GradientState(*start(key, params, train))

    def step(key, state: GradientState, batch: Batch):
        trained, info = update(key, state.trained, batch)
        return state._replace(trained=trained), info

    def get_params(state: GradientState) -> SBNParams:
        return SBNParams.from_arrays(arch, params_of(state.trained))

    jitted = None if bound is None else jax.jit(bound)

    def bound_(state: GradientState, x) -> np.ndarray:
        x = validate_binary(x, width=arch.visible_size, name="data")
        params = params_of(state.trained)
        return by_chunks(lambda i, rows: jitted(jax.random.fold_in(state.bound_key, i), params, jnp.asarray(rows)),
                         x, chunk)

    axes = None if data_axes is None else (lambda state: GradientState(data_axes(state.trained), None))
    drawn = None if guide_gradient is None else jax.jit(guide_gradient)

    def guide_gradient_(key, state: GradientState, x):
        return drawn(key, state.trained, jnp.asarray(x))

    return Kernel(init, step, get_params, None if bound is None else bound_, axes,
                  None if guide_gradient is None else guide_gradient_)
