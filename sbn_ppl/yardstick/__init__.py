"""The yardstick: one entry point for every estimator of ``log p(x)``, above the algorithms.

* :func:`score`: ``exact`` (enumeration, :mod:`sbn_ppl.yardstick.exact`), ``is`` (importance
  sampling with a guide, jitted and streaming: :mod:`sbn_ppl.yardstick.importance`)
  or ``ais`` (annealed importance sampling, guide-free:
  :mod:`sbn_ppl.yardstick.ais`). Every result is a
  :class:`~sbn_ppl.yardstick.estimates.LogLikelihood` that names its estimator; an IS result
  carries the per-point effective sample size, the Pareto k-hat of the weights and the
  warnings they call for (:mod:`sbn_ppl.yardstick.diagnostics`).
* :func:`posthoc_guide`: a recognition network fitted to a frozen model (wake-phi and
  sleep-phi, :mod:`sbn_ppl.yardstick.posthoc`), so that a method without a usable
  guide (Gibbs, fixed point, local mean field) is scored by the same importance sampler
  as the others, with the same budget and settings for every method.

The option names are the yardstick's own (``is_particles``, ``ais_temperatures``,
``ais_chains``), apart from any method's ``k`` or ``chains``; the names of 0.1
(``num_particles``, ``num_temperatures``, ``num_chains``, ...) raise a one-line error
naming the new ones. This module imports the algorithms' scorers only when asked, so
importing it (the harness does) costs no JAX.
"""
from __future__ import annotations

import numpy as np

from sbn_ppl.yardstick.exact import exact_log_likelihood
from sbn_ppl.yardstick.estimates import LogLikelihood
from sbn_ppl.yardstick.defaults import (AIS_CHAINS, AIS_TEMPERATURES, IS_PARTICLES, POSTHOC_BATCH_SIZE, POSTHOC_INSOMNIA,
                                POSTHOC_LR, POSTHOC_PARTICLES, POSTHOC_STEPS)
from sbn_ppl.base.params import SBNParams

ESTIMATORS = ("exact", "is", "ais")
GUIDES = ("recognition", "mean_field")

RENAMED = {
    "num_particles": "is_particles", "k": "is_particles", "particles": "is_particles",
    "num_temperatures": "ais_temperatures", "temperatures": "ais_temperatures",
    "num_chains": "ais_chains", "chains": "ais_chains",
}
_APPLIES = {"guide": "is", "is_particles": "is", "ais_temperatures": "ais", "ais_chains": "ais", "ais_betas": "ais"}

__all__ = ["ESTIMATORS", "LogLikelihood", "posthoc_guide", "score", "trained_guide"]


def score(params: SBNParams, x, estimator: str = "exact", *, guide: str | None = None,
          is_particles: int | None = None, ais_temperatures: int | None = None, ais_chains: int | None = None,
          ais_betas=None, seed: int = 0, progress: bool = False, devices: int | None = None,
          **renamed) -> LogLikelihood:
    """Estimate ``log p(x_n)`` for every row of ``x`` with the named estimator.

    :param params: the SBN (:class:`~sbn_ppl.SBNParams`); for ``is``, with its guide's ``q_`` keys.
    :param x: data ``(N, D)`` of 0./1.
    :param estimator: ``"exact"`` (at most 20 hidden units), ``"is"`` or ``"ais"``.
    :param guide: ``is`` only: ``"recognition"`` or ``"mean_field"``; default the one
        guide ``params`` holds (a fitted file holds only its trained guide). A file with
        both must say which; one with none needs :func:`posthoc_guide` first.
    :param is_particles: ``is`` only: K, importance samples per point (default
        :data:`~sbn_ppl.yardstick.defaults.IS_PARTICLES`, 1,000).
    :param ais_temperatures: ``ais`` only: T, annealing steps (default ``AIS_TEMPERATURES``, 500).
    :param ais_chains: ``ais`` only: C, independent annealing runs per point (default ``AIS_CHAINS``, 20).
    :param ais_betas: ``ais`` only: an explicit schedule from 0 to 1 (overrides T).
    :param seed: the estimator's randomness (same seed, same numbers).
    :param progress: show a progress bar with an ETA (``is`` and ``ais``).
    :param devices: ``is`` and ``ais``: the test points are split over this many JAX devices
        (``None``: every device; see ``docs/multi_device.md``). ``exact`` runs in float64
        NumPy on the host and uses no device.
    :returns: :class:`~sbn_ppl.yardstick.estimates.LogLikelihood`; for ``is`` also ``ess``,
        ``khat`` and ``warnings`` (read the class's note on what the standard error means).
    """
    if renamed:
        name = sorted(renamed)[0]
        if name in RENAMED:
            raise ValueError(f"score() option {name!r} was renamed: use {RENAMED[name]!r}")
        raise ValueError(f"score() got an unknown option {name!r}; expected guide, is_particles, ais_temperatures, "
                         f"ais_chains, ais_betas, seed, progress, devices")
    from sbn_ppl.engine.sharding import check_devices

    check_devices(devices)
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}")
    given = {"guide": guide, "is_particles": is_particles, "ais_temperatures": ais_temperatures,
             "ais_chains": ais_chains, "ais_betas": ais_betas}
    stray = [name for name, value in given.items() if value is not None and _APPLIES[name] != estimator]
    if stray:
        raise ValueError(f"option{'s' if len(stray) > 1 else ''} {', '.join(stray)} "
                         f"{'do' if len(stray) > 1 else 'does'} not apply to estimator {estimator!r}")
    if estimator == "exact":
        ll = exact_log_likelihood(params, x)
        return LogLikelihood(ll, np.zeros_like(ll), "exact")
    if estimator == "is":
        from sbn_ppl.yardstick.importance import is_log_likelihood

        return is_log_likelihood(params, x, guide or trained_guide(params),
                                 IS_PARTICLES if is_particles is None else is_particles, seed, progress=progress,
                                 devices=devices)
    from sbn_ppl.yardstick.ais import ais_log_likelihood

    return ais_log_likelihood(params, x, seed, AIS_TEMPERATURES if ais_temperatures is None else ais_temperatures,
                              AIS_CHAINS if ais_chains is None else ais_chains, ais_betas, progress=progress,
                              devices=devices)


def trained_guide(params: SBNParams) -> str:
    """The one guide ``params`` holds (a fitted file holds only the guide it trained)."""
    present = [g for g in GUIDES if params.has_guide(g)]
    if len(present) == 1:
        return present[0]
    if not present:
        raise ValueError("the parameters hold no guide to importance-sample with: fit one post hoc "
                         "(sbn_ppl.yardstick.posthoc_guide) or use the 'exact' or 'ais' estimator")
    raise ValueError("the parameters hold both guides (an untrained one may be among them): say which to use, "
                     "guide='recognition' or 'mean_field'")


def posthoc_guide(params: SBNParams, train, *, steps: int = POSTHOC_STEPS, k: int = POSTHOC_PARTICLES,
                  lr: float = POSTHOC_LR, seed: int = 0, batch_size: int = POSTHOC_BATCH_SIZE,
                  insomnia: float = POSTHOC_INSOMNIA, progress: bool = False) -> SBNParams:
    """A recognition network fitted to the frozen model ``params`` on ``train``.

    RWS's phi update with theta fixed (:mod:`sbn_ppl.yardstick.posthoc`): wake-phi
    with ``k`` particles and sleep-phi with ``k`` dreams per point, mixed ``insomnia : 1 -
    insomnia``; Adam at ``lr``; ``steps`` seeded mini-batches of ``batch_size`` training
    points (the runner's batch order). Give every method the same settings, so that no
    method's figure depends on its own guide.

    :returns: an :class:`~sbn_ppl.SBNParams` with ``params``' generative arrays and the
        fitted recognition network's ``q_`` keys only (any other guide left out): score it
        with ``score(fitted, x, "is")``.
    """
    from sbn_ppl.yardstick.posthoc import fit_posthoc_guide

    fitted, _ = fit_posthoc_guide(params, train, steps=steps, k=k, lr=lr, seed=seed, batch_size=batch_size,
                                  insomnia=insomnia, progress=progress)
    return fitted
