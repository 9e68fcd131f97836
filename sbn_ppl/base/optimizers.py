"""One optimiser resolver per backend: a name (``"adam"``, ``"sgd"``, ``"rmsprop"``) and a
learning rate become the backend's optimiser; an optimiser object is passed through
unchanged (optax's habit: pass the transformation in, not its name).

* NumPyro backend: :func:`optax_optimizer` -> ``optax.GradientTransformation`` (the same
  object for the same name and rate, so a jitted step compiled for it is reused).

With ``half_life`` (steps) the rate decays exponentially, ``lr * 0.5 ** (t / half_life)`` at
optimiser step ``t``: an ``optax.exponential_decay`` schedule on the NumPyro backend (its step
count is part of the optimiser state, so a resumed run continues the schedule), a
``torch.optim.lr_scheduler.LambdaLR`` stepped after every optimiser step on the Pyro backend.
* Pyro backend: :func:`torch_optimizer` -> ``params -> torch.optim.Optimizer``;
  :func:`pyro_optimizer` -> a ``pyro.optim`` wrapper for ``pyro.infer.SVI``.
"""
from __future__ import annotations

import functools

from sbn_ppl.base.options import OPTIMIZER_NAMES

_TORCH = {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}


def optax_optimizer(spec, lr: float, half_life: float | None = None):
    if not isinstance(spec, str):
        return spec
    return _optax_named(spec, float(lr), None if half_life is None else float(half_life))


@functools.lru_cache(maxsize=64)
def _optax_named(name: str, lr: float, half_life: float | None):
    import optax

    _known(name)
    rate = lr if half_life is None else optax.exponential_decay(lr, transition_steps=half_life, decay_rate=0.5)
    return {"adam": optax.adam, "sgd": optax.sgd, "rmsprop": optax.rmsprop}[name](rate)


def torch_optimizer(spec, lr: float, half_life: float | None = None):
    """``params -> torch.optim.Optimizer`` (``spec``: a name, or such a callable itself)."""
    if not isinstance(spec, str):
        return spec
    _known(spec)
    return functools.partial(_torch_named, spec, lr=float(lr), half_life=half_life)


def pyro_optimizer(spec, lr: float, half_life: float | None = None):
    """A ``pyro.optim`` optimiser for ``pyro.infer.SVI`` (``spec``: a name or a ``pyro.optim`` object)."""
    if not isinstance(spec, str):
        return spec
    import pyro.optim

    _known(spec)
    return pyro.optim.PyroOptim(functools.partial(_torch_named, spec, half_life=half_life), {"lr": float(lr)})


def _torch_named(name: str, params, lr: float, half_life: float | None = None):
    import torch

    optimizer = getattr(torch.optim, _TORCH[name])(params, lr=lr)
    if half_life is not None:
        h = float(half_life)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 ** (t / h))
        optimizer.register_step_post_hook(lambda *_: schedule.step())
    return optimizer


def _known(name: str) -> None:
    if name not in OPTIMIZER_NAMES:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZER_NAMES)}")
