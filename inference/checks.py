"""Option checks shared by both backends (NumPy only, so neither backend imports the other)."""
from __future__ import annotations

from typing import Any, Mapping

import math

import numpy as np

MEAN_FIELD_BASELINES = ("none", "decaying", "nvil")


def check_choice(name: str, value: Any, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_rws_options(k: int, insomnia: float, num_sleep_particles: int | None = None) -> None:
    """``ValueError`` unless ``K >= 1``, ``0 <= insomnia <= 1`` and ``S >= 1``."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"the number of particles K must be an integer >= 1, got {k!r}")
    if not (0.0 <= float(insomnia) <= 1.0):
        raise ValueError(f"insomnia (weight of wake-phi against sleep-phi) must be in [0, 1], got {insomnia!r}")
    if num_sleep_particles is not None and (int(num_sleep_particles) != num_sleep_particles or num_sleep_particles < 1):
        raise ValueError(f"the number of sleep particles must be an integer >= 1, got {num_sleep_particles!r}")


def check_mean_field_options(opts: dict, defaults: Mapping[str, Any], optimizers) -> dict:
    """The mean-field SVI options of either backend, checked and normalised."""
    unknown = sorted(set(opts) - set(defaults))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; the options are {', '.join(sorted(defaults))}")
    if not isinstance(opts["amortised"], (bool, np.bool_)):
        raise ValueError(f"amortised must be True or False, got {opts['amortised']!r}")
    if not (np.isfinite(opts["lr"]) and opts["lr"] > 0):
        raise ValueError(f"the learning rate must be a positive number, got {opts['lr']}")
    for name in ("batch_size", "num_particles"):
        if int(opts[name]) != opts[name] or opts[name] < 1:
            raise ValueError(f"{name} must be a positive integer, got {opts[name]!r}")
    check_choice("baseline", opts["baseline"], MEAN_FIELD_BASELINES)
    check_choice("optimizer", opts["optimizer"], optimizers)
    return {**opts, "amortised": bool(opts["amortised"]), "batch_size": int(opts["batch_size"]),
            "num_particles": int(opts["num_particles"])}


def check_training_options(lr, batch_size, optimizer, optimizers) -> None:
    """``ValueError`` unless ``lr > 0`` (finite), ``batch_size >= 1`` and ``optimizer`` is known."""
    if not (float(lr) > 0 and math.isfinite(float(lr))):
        raise ValueError(f"the learning rate must be a positive number, got {lr!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if optimizer not in optimizers:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {', '.join(optimizers)}")
