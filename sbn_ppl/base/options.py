"""Method options, declared once: a small schema of :class:`Option` records.

A method lists its options as a tuple of :class:`Option` (name, default, check, help).
From that one declaration come the defaults, the validation of user values (one
message style for every method), the ``sbn-ppl fit`` flags (``--name`` per option,
with its help and default), and the TOML/``--option`` keys. The checks are plain
functions of the value that return the normalised value or raise ``ValueError``;
the shared ones live here and nowhere else (NumPy only, so neither backend
imports the other).

    >>> LR.default, resolve((LR, BATCH_K), {"k": 10})
    (0.003, {'lr': 0.003, 'k': 10})
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import numpy as np

from sbn_ppl.base.schedules import check_schedule


class Option(NamedTuple):
    """One option of a method.

    :param name: the key in ``options`` (``snake_case``; the flag is ``--name-with-dashes``).
    :param default: the value when none is given.
    :param check: ``check(value, name) -> value``: the normalised value, or ``ValueError``.
    :param help: one line for ``sbn-ppl fit --help``.
    """

    name: str
    default: Any
    check: Callable[[Any, str], Any]
    help: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# -- checks ----------------------------------------------------------------------------------------

def positive_int(value, name: str) -> int:
    """An integer >= 1 (``3.0`` is accepted as 3; ``True``, ``2.5`` and ``0`` are not)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def at_least(minimum: int, why: str) -> Callable[[Any, str], int]:
    """A check that accepts an integer >= ``minimum``; the error says ``why`` the method needs it."""

    def check(value, name: str) -> int:
        value = positive_int(value, name)
        if value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum} {why}, got {value!r}")
        return value

    return check


def optional_positive_int(value, name: str) -> int | None:
    return None if value is None else positive_int(value, name)


def positive_float(value, name: str) -> float:
    """A finite number > 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not value > 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def unit_interval(value, name: str) -> float:
    """A number in ``[0, 1]``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def boolean(value, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}")


def choice(*choices: str) -> Callable[[Any, str], str]:
    """A check that accepts one of ``choices``."""

    def check(value, name: str) -> str:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    check.choices = choices  # for the CLI's help text
    return check


def optimizer_spec(value, name: str):
    """An optimiser's name (``"adam"``, ``"sgd"``, ``"rmsprop"``) or an optimiser object
    (an ``optax.GradientTransformation`` on the NumPyro backend, a callable
    ``params -> torch.optim.Optimizer`` on the Pyro backend), passed in as optax does."""
    if isinstance(value, str):
        return choice(*OPTIMIZER_NAMES)(value, name)
    if callable(value) or hasattr(value, "update"):
        return value
    raise ValueError(f"{name} must be one of {', '.join(map(repr, OPTIMIZER_NAMES))} or an optimizer object, "
                     f"got {value!r}")


OPTIMIZER_NAMES = ("adam", "sgd", "rmsprop")

# -- options that many methods share -------------------------------------------------------------

LR = Option("lr", 0.003, positive_float, "learning rate of the optimiser")
OPTIMIZER = Option("optimizer", "adam", optimizer_spec, f"optimiser: {', '.join(OPTIMIZER_NAMES)}")
BATCH_K = Option("k", 5, positive_int, "particles K per data point")  # used in the doctest above
LR_HALF_LIFE = Option("lr_half_life", None, optional_positive_int,
                      "steps over which the learning rate halves (exponential decay; default: constant)")
LR_SCHEDULE = Option("lr_schedule", "constant", check_schedule,
                     "the rate over the fraction of the training budget spent: constant, cosine, linear (to 0), "
                     "or halvings@0.5/0.75 (halves at each fraction); exact per step under a steps or epochs budget, "
                     "from the measured step time under a time budget")
TRAINING = (LR, OPTIMIZER, LR_HALF_LIFE, LR_SCHEDULE)


PARTICLE_OPTIONS = ("k", "num_particles", "chains", "num_sleep_particles")


def copies(options: Mapping[str, Any]) -> int:
    """How many copies of a batch's layers one step holds at once: the largest of the options
    that multiply them (particles, chains, dreams), 1 for none. The runner sizes torch's thread
    pool by it and ``fit`` its memory check."""
    return max([int(v) for k, v in options.items() if k in PARTICLE_OPTIONS
                and isinstance(v, (int, np.integer)) and not isinstance(v, bool)] + [1])


def resolve(schema: Iterable[Option], given: Mapping[str, Any] | None, owner: str = "this method") -> dict:
    """The defaults of ``schema`` updated with ``given``, each value checked; an unknown
    name is a ``ValueError`` that lists the known ones."""
    schema = tuple(schema)
    names = [o.name for o in schema]
    given = dict(given or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"{owner} has no option(s) {', '.join(unknown)}; its options are: "
                         f"{', '.join(sorted(names)) or 'none'}")
    return {o.name: o.check(given.get(o.name, o.default), o.name) for o in schema}


def defaults(schema: Iterable[Option]) -> dict:
    return {o.name: o.default for o in schema}
