"""The score-function (REINFORCE) gradient of an ELBO over discrete latents, with baselines:
the machinery every score-function learner shares (mean-field SVI today; NVIL and VIMCO).

The ELBO ``L = E_q[log p(x, h) - log q(h | x)]`` of a guide ``q_phi`` over binary ``h``
has no reparameterisation; its gradient is the score-function identity

    grad_phi L = E_q[ sum_s grad_phi log q(h_s | .) * c_s ],

one term per guide site ``s`` (a hidden layer ``h_l``), where the *learning signal* ``c_s``
is Rao-Blackwellised (Schulman et al. 2015; Pyro's and NumPyro's ``TraceGraph_ELBO``): only
the terms of ``log p - log q`` that depend on ``h_s`` (its own ``log p(h_s | pa) - log q(h_s
| .)`` and the log-densities of the sites it feeds), summed to the site's plates, so per
data point for a layer site. Any ``b_s`` that does not depend on ``h_s`` may be subtracted,

    grad_phi L = E_q[ sum_s grad_phi log q(h_s | .) * (c_s - b_s) ],

without bias; a ``b_s`` close to ``E[c_s | x]`` removes most of the variance. Baselines:

* ``"none"``: ``b = 0`` (the stock estimator);
* ``"decaying"``: Pyro's decaying average ``b <- beta b + (1 - beta) c`` (``beta = DECAY``),
  one per site and batch position;
* ``"nvil"``: the input-dependent baseline of Mnih & Gregor (2014, sec. 3.3), a net with one
  tanh hidden layer and one head per site, ``b_l(x) = tanh(x U + c) . v_l + d_l`` (one
  number per data point and layer), fitted by least squares ``sum (c - b)^2`` alongside the
  guide. :func:`nvil_init` gives its initial parameters, the same for both backends.

NVIL also centres the signal by its running mean and divides it by its running standard
deviation (sec. 3.2: ``(c - b - m) / max(1, sqrt(v))``, ``m`` and ``v`` decaying averages
of the batch mean and variance of ``c - b``, decay ``SIGNAL_DECAY``): ``normalised_signal``
in each backend. That scaling changes the gradient's length, not its direction in mean.

``numpyro.py``: :class:`TraceGraphBaselineELBO` (NumPyro's ``TraceGraph_ELBO`` reads no
baselines) and the guide wrapper that declares the baselines' state. ``pyro.py``: Pyro's
stock ``TraceGraph_ELBO`` reads ``infer["baseline"]``; its guide wrapper sets that, and
:class:`~sbn_ppl.inference.shared.score_function.pyro.NVILBaseline` is the net as a torch module.
This ``__init__`` is NumPy only.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

BASELINES = ("none", "decaying", "nvil")
DECAY = 0.9  # Pyro's default baseline_beta
NVIL_HIDDEN = 100  # Mnih & Gregor 2014: one hidden layer of 100 tanh units
SIGNAL_DECAY = 0.8  # Mnih & Gregor 2014, alpha of the running mean and variance of the signal


def check_baseline(baseline: str) -> str:
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(map(repr, BASELINES))}, got {baseline!r}")
    return baseline


def nvil_init(arch, hidden: int = NVIL_HIDDEN, seed: int = 0) -> dict[str, np.ndarray]:
    """Initial parameters of the NVIL baseline net ``b_l(x) = tanh(x U + c) . v_l + d_l``.

    ``nvil_U`` ``(D, hidden)`` ~ N(0, 1/D), ``nvil_c`` = 0, and per hidden layer ``l`` a head
    ``nvil_v_<l>`` ``(hidden,)`` and ``nvil_d_<l>`` ``()`` at zero, so ``b = 0`` at the
    start (the plain estimator). float32; both backends start from these arrays.
    """
    rng = np.random.default_rng(seed)
    p = {"nvil_U": rng.standard_normal((arch.visible_size, hidden)) / np.sqrt(arch.visible_size),
         "nvil_c": np.zeros(hidden)}
    for l in range(1, arch.num_layers + 1):
        p[f"nvil_v_{l}"], p[f"nvil_d_{l}"] = np.zeros(hidden), np.zeros(())
    return {k: np.asarray(v, np.float32) for k, v in p.items()}


class GradientMoments(NamedTuple):
    """Mean and variance of a stochastic gradient, element by element (ascent direction)."""

    mean: dict[str, np.ndarray]  # E[g] per parameter
    variance: dict[str, np.ndarray]  # Var[g] per element (ddof 1)

    @property
    def total_variance(self) -> float:
        """``sum_j Var[g_j]`` over all parameter elements."""
        return float(sum(v.sum() for v in self.variance.values()))

    @classmethod
    def from_samples(cls, samples: dict[str, np.ndarray]) -> "GradientMoments":
        """Mean and variance (ddof 1) over the first axis of each parameter's gradient samples."""
        samples = {k: np.asarray(v, np.float64) for k, v in samples.items()}
        return cls({k: v.mean(0) for k, v in samples.items()}, {k: v.var(0, ddof=1) for k, v in samples.items()})
