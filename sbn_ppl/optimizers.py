"""One optimiser resolver per backend: a name (``"adam"``, ``"sgd"``, ``"rmsprop"``) and a
learning rate become the backend's optimiser; an optimiser object is passed through
unchanged (optax's habit: pass the transformation in, not its name).

* NumPyro backend: :func:`optax_optimizer` -> ``optax.GradientTransformation`` (the same
  object for the same name and rate, so a jitted step compiled for it is reused).
* Pyro backend: :func:`torch_optimizer` -> ``params -> torch.optim.Optimizer``;
  :func:`pyro_optimizer` -> a ``pyro.optim`` wrapper for ``pyro.infer.SVI``.
"""
from __future__ import annotations

import functools

from .options import OPTIMIZER_NAMES

_TORCH = {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}


def optax_optimizer(spec, lr: float):
    if not isinstance(spec, str):
        return spec
    return _optax_named(spec, float(lr))


@functools.lru_cache(maxsize=64)
def _optax_named(name: str, lr: float):
    import optax

    _known(name)
    return {"adam": optax.adam, "sgd": optax.sgd, "rmsprop": optax.rmsprop}[name](lr)


def torch_optimizer(spec, lr: float):
    """``params -> torch.optim.Optimizer`` (``spec``: a name, or such a callable itself)."""
    if not isinstance(spec, str):
        return spec
    import torch

    _known(spec)
    cls = getattr(torch.optim, _TORCH[spec])
    return lambda params: cls(params, lr=float(lr))


def pyro_optimizer(spec, lr: float):
    """A ``pyro.optim`` optimiser for ``pyro.infer.SVI`` (``spec``: a name or a ``pyro.optim`` object)."""
    if not isinstance(spec, str):
        return spec
    import pyro.optim

    _known(spec)
    return getattr(pyro.optim, _TORCH[spec])({"lr": float(lr)})


def _known(name: str) -> None:
    if name not in OPTIMIZER_NAMES:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZER_NAMES)}")
