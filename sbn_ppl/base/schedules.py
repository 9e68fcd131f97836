"""Learning-rate schedules over the fraction of the training budget spent.

A schedule multiplies the optimiser's rate by ``m(f)``, where ``f`` in [0, 1] is the fraction of
the budget a step is taken at: ``step / steps`` under a steps or epochs budget (exact, the same on
every machine), ``seconds / budget`` under a time budget (from the measured step time between
checkpoints), the larger of the two where both are given. So the same config anneals at the same
point of its budget on a fast machine and on a slow one, where a half-life in steps
(``lr_half_life``) anneals after a fixed number of steps whatever the budget.

* ``"constant"``: ``m(f) = 1`` (the default).
* ``"cosine"``: ``m(f) = (1 + cos(pi f)) / 2`` (Loshchilov & Hutter 2017, without restarts).
* ``"linear"``: ``m(f) = 1 - f``.
* ``"halvings@0.5/0.75"``: the rate halves at each listed fraction, ``m(f) = 2^-#{f_i <= f}``.

The runners set ``f`` before each step (:func:`sbn_ppl.engine.fitting.fit` tells them the
budget); a run outside ``fit`` (a runner driven by hand) stays at ``f = 0``, ``m = 1``.
"""
from __future__ import annotations

import math

NAMES = ("constant", "cosine", "linear", "halvings@F1/F2/...")


def check_schedule(value, name: str = "lr_schedule") -> str:
    """``value`` if it names a schedule (see the module's docstring), else a ``ValueError``."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be one of {', '.join(NAMES)}, got {value!r}")
    if value in ("constant", "cosine", "linear"):
        return value
    if value.startswith("halvings@"):
        fractions = _fractions(value, name)
        return "halvings@" + "/".join(f"{f:g}" for f in fractions)
    raise ValueError(f"{name} must be one of {', '.join(NAMES)} (e.g. halvings@0.5/0.75), got {value!r}")


def _fractions(spec: str, name: str = "lr_schedule") -> tuple[float, ...]:
    text = spec[len("halvings@"):]
    try:
        fractions = tuple(float(t) for t in text.split("/"))
    except ValueError:
        raise ValueError(f"{name} {spec!r}: halvings@ takes fractions of the budget between '/', "
                         "e.g. halvings@0.5/0.75") from None
    if not fractions or any(not (0.0 < f < 1.0) for f in fractions) or list(fractions) != sorted(set(fractions)):
        raise ValueError(f"{name} {spec!r}: the fractions must increase strictly, each in (0, 1)")
    return fractions


def is_constant(spec: str | None) -> bool:
    return spec is None or spec == "constant"


def multiplier(spec: str, fraction, xp=math):
    """``m(f)`` of the schedule ``spec`` at the budget fraction ``fraction`` (clipped to [0, 1]).
    ``xp``: ``math`` for a float, ``jax.numpy`` (or ``numpy``) for an array."""
    if xp is math:
        f = min(max(float(fraction), 0.0), 1.0)
        where = lambda c, a, b: a if c else b  # noqa: E731
    else:
        f = xp.clip(fraction, 0.0, 1.0)
        where = xp.where
    if is_constant(spec):
        return 1.0 if xp is math else xp.ones_like(f)
    if spec == "cosine":
        return 0.5 * (1.0 + xp.cos(math.pi * f))  # (1 + cos(pi f)) / 2
    if spec == "linear":
        return 1.0 - f
    m = 1.0 if xp is math else xp.ones_like(f)
    for point in _fractions(spec):
        m = m * where(f >= point, 0.5, 1.0)  # one halving per fraction passed
    return m
