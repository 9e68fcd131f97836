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

With ``schedule`` (:mod:`sbn_ppl.base.schedules`: ``"cosine"``, ``"linear"``,
``"halvings@0.5/0.75"``) the rate is also multiplied by ``m(f)``, ``f`` the fraction of the
training budget spent. On the NumPyro backend :func:`scale_by_budget` is chained after the
optimiser; its state holds ``f`` (:class:`BudgetFraction`), which the runner sets before each
step (:func:`at_budget_fraction`). On the Pyro backend a step pre-hook sets each group's rate
from the fraction the runner last gave :func:`set_torch_budget_fraction`.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

from sbn_ppl.base import schedules
from sbn_ppl.base.options import OPTIMIZER_NAMES

_TORCH = {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}


def optax_optimizer(spec, lr: float, half_life: float | None = None, schedule: str | None = None):
    if not isinstance(spec, str):
        return spec if schedules.is_constant(schedule) else _with_budget(spec, schedule)
    return _optax_named(spec, float(lr), None if half_life is None else float(half_life),
                        None if schedules.is_constant(schedule) else schedule)


@functools.lru_cache(maxsize=64)
def _optax_named(name: str, lr: float, half_life: float | None, schedule: str | None = None):
    import optax

    _known(name)
    rate = lr if half_life is None else optax.exponential_decay(lr, transition_steps=half_life, decay_rate=0.5)
    optimizer = {"adam": optax.adam, "sgd": optax.sgd, "rmsprop": optax.rmsprop}[name](rate)
    return optimizer if schedule is None else _with_budget(optimizer, schedule)


class BudgetFraction(NamedTuple):
    """The state of :func:`scale_by_budget`: the fraction of the training budget spent at the
    step about to be taken (a float32 scalar), set by the runner."""

    fraction: Any


def scale_by_budget(schedule: str):
    """An optax transformation multiplying the updates by the schedule's ``m(f)`` (``f``: the
    :class:`BudgetFraction` in its state)."""
    import jax
    import jax.numpy as jnp
    import optax

    def init(params):
        return BudgetFraction(jnp.zeros([], jnp.float32))

    def update(updates, state, params=None):
        m = schedules.multiplier(schedule, state.fraction, jnp)
        return jax.tree_util.tree_map(lambda u: u * m.astype(u.dtype), updates), state

    return optax.GradientTransformation(init, update)


def _with_budget(optimizer, schedule: str):
    import optax

    return optax.chain(optimizer, scale_by_budget(schedule))


def at_budget_fraction(state, fraction):
    """``state`` (any pytree) with every :class:`BudgetFraction` in it set to ``fraction``;
    unchanged where it holds none (a constant schedule)."""
    import jax
    import jax.numpy as jnp

    is_budget = lambda node: isinstance(node, BudgetFraction)  # noqa: E731
    return jax.tree_util.tree_map(
        lambda node: BudgetFraction(jnp.asarray(fraction, jnp.float32)) if is_budget(node) else node,
        state, is_leaf=is_budget)


def holds_budget_fraction(state) -> bool:
    """Whether ``state`` (any pytree) holds a :class:`BudgetFraction` (a scheduled optimiser)."""
    import jax

    is_budget = lambda node: isinstance(node, BudgetFraction)  # noqa: E731
    return any(is_budget(node) for node in jax.tree_util.tree_leaves(state, is_leaf=is_budget))


_TORCH_FRACTION = [0.0]  # the budget fraction of the Pyro step being taken (the torch runner sets it)


def set_torch_budget_fraction(fraction: float) -> None:
    """The fraction of the budget spent at the next Pyro step (read by scheduled torch optimisers)."""
    _TORCH_FRACTION[0] = float(fraction)


def torch_optimizer(spec, lr: float, half_life: float | None = None, schedule: str | None = None):
    """``params -> torch.optim.Optimizer`` (``spec``: a name, or such a callable itself)."""
    if not isinstance(spec, str):
        return spec if schedules.is_constant(schedule) else (lambda params: _torch_scheduled(spec(params), schedule))
    _known(spec)
    return functools.partial(_torch_named, spec, lr=float(lr), half_life=half_life, schedule=schedule)


def pyro_optimizer(spec, lr: float, half_life: float | None = None, schedule: str | None = None):
    """A ``pyro.optim`` optimiser for ``pyro.infer.SVI`` (``spec``: a name or a ``pyro.optim`` object)."""
    if not isinstance(spec, str):
        return spec
    import pyro.optim

    _known(spec)
    return pyro.optim.PyroOptim(functools.partial(_torch_named, spec, half_life=half_life, schedule=schedule),
                                {"lr": float(lr)})


def _torch_named(name: str, params, lr: float, half_life: float | None = None, schedule: str | None = None):
    import torch

    optimizer = getattr(torch.optim, _TORCH[name])(params, lr=lr)
    if not schedules.is_constant(schedule):
        return _torch_scheduled(optimizer, schedule, half_life)
    if half_life is not None:
        h = float(half_life)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 ** (t / h))
        optimizer.register_step_post_hook(lambda *_: schedule.step())
    return optimizer


def _torch_scheduled(optimizer, schedule: str, half_life: float | None = None):
    """``optimizer`` with a pre-hook that sets each group's rate, before every step ``t``, to
    ``lr0 * 0.5^(t / half_life) * m(f)`` (``f``: :func:`set_torch_budget_fraction`'s)."""
    base = [group["lr"] for group in optimizer.param_groups]
    taken = [0]

    def before_step(opt, args, kwargs):
        decay = 1.0 if half_life is None else 0.5 ** (taken[0] / float(half_life))
        m = schedules.multiplier(schedule, _TORCH_FRACTION[0])
        for group, lr0 in zip(opt.param_groups, base):
            group["lr"] = lr0 * decay * m
        taken[0] += 1

    optimizer.register_step_pre_hook(before_step)
    return optimizer


def _known(name: str) -> None:
    if name not in OPTIMIZER_NAMES:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZER_NAMES)}")
