"""The gradient-variance diagnostic: how noisy a method's estimate of its guide's gradient is.

At a checkpoint, the method's ``Kernel.guide_gradient(key, state, x)`` (one draw of its
estimator of the recognition network's gradient on the batch ``x``) is drawn ``M`` times on
one fixed batch, at the runner's current state (so NVIL's baselines and REBAR's control
variate are the trained ones), and summarised by the total variance

    V = sum_j Var_m[g_mj]  (the sample variance over the M draws, ddof = 1, of each coordinate
                            j of the guide's arrays, summed)

the trace of the estimator's covariance: the figure the estimator papers compare (Tucker et
al. 2017; Grathwohl et al. 2018; Dong et al. 2020). Every method sees the same batch and
the same keys at the same step.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

GRADIENT_SUBSET_SEED = 1  # the fixed batch: one seeded subset of the training set, the same for every method


def total_variance(draws: Sequence[dict]) -> float:
    """``sum_j Var_m[g_mj]``: the per-coordinate sample variance (ddof 1) over the ``M >= 2``
    draws ``draws`` (each a dict of the guide's arrays), summed over every coordinate, in float64."""
    if len(draws) < 2:
        raise ValueError(f"a variance needs at least 2 draws, got {len(draws)}")
    names = sorted(draws[0])
    flat = np.stack([np.concatenate([np.ravel(np.asarray(d[k], np.float64)) for k in names]) for d in draws])
    return float(flat.var(axis=0, ddof=1).sum())


def draw_guide_gradients(runner: Any, x: np.ndarray, draws: int, seed: int, step: int) -> list[dict] | None:
    """``draws`` draws of the runner's kernel's ``guide_gradient`` on the batch ``x`` at its
    current state (``None`` if the method has none), the keys (NumPyro) or torch seeds (Pyro)
    a function of ``seed`` and ``step`` only.

    :param runner: a :mod:`sbn_ppl.engine.runner` runner (``kernel``, ``state``; ``scope()``
        on the Pyro backend).
    """
    kernel = runner.kernel
    if kernel.guide_gradient is None:
        return None
    if runner.method.backend == "numpyro":
        import jax

        keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), step), draws)
        return [jax.device_get(kernel.guide_gradient(key, runner.state, x)) for key in keys]
    seeds = np.random.SeedSequence([seed, step]).generate_state(draws)
    with runner.scope():
        return [kernel.guide_gradient(int(s), runner.state, x) for s in seeds]


def guide_gradient_variance(runner: Any, x: np.ndarray, draws: int, seed: int, step: int) -> dict:
    """``{"guide_gradient_variance": V}`` (:func:`total_variance` of :func:`draw_guide_gradients`),
    or ``{}`` for a method without a guide gradient."""
    drawn = draw_guide_gradients(runner, x, draws, seed, step)
    return {} if drawn is None else {"guide_gradient_variance": total_variance(drawn)}
