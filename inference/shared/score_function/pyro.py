"""The score-function ELBO with baselines in Pyro (the math: this folder's ``__init__``; the
twin: ``numpyro.py``).

Own tricks: none beyond Pyro's; its stock ``TraceGraph_ELBO`` is the estimator and reads each
site's ``infer["baseline"]``, which :func:`with_baselines` sets on the hidden sites with
``pyro.poutine.infer_config`` (the guide itself unchanged):

* ``"decaying"``: Pyro's decaying average of the learning signal (``beta = DECAY``), kept in
  the param store (``__baseline_avg_downstream_cost_<site>``) per batch position;
* ``"nvil"``: ``nn_baseline`` = :class:`NVILBaseline` (``b_l(x)``, one number per data point
  and layer), registered with ``pyro.module`` so SVI's optimiser fits it by least squares.

Each guide site is one hidden layer ``h<l>`` inside the ``"data"`` plate (the layout of
:mod:`sbn_ppl.models.pyro_sbn`'s guides), so the signal and the baseline are ``(B,)``.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import pyro
import torch
from pyro import poutine

from . import DECAY, NVIL_HIDDEN, SIGNAL_DECAY, GradientMoments, check_baseline, nvil_init


class NVILBaseline(torch.nn.Module):
    """The input-dependent baseline ``b_l(x) = tanh(x U + c) . v_l + d_l`` (Mnih & Gregor 2014,
    sec. 3.3), one head per hidden layer; starts from :func:`~sbn_ppl.inference.shared.score_function.nvil_init`
    (the same arrays as the NumPyro net for the same seed), so ``b = 0`` at the start."""

    def __init__(self, arch, hidden: int = NVIL_HIDDEN, seed: int = 0):
        super().__init__()
        init = {k: torch.tensor(v, dtype=torch.get_default_dtype()) for k, v in nvil_init(arch, hidden, seed).items()}
        self.U, self.c = torch.nn.Parameter(init["nvil_U"]), torch.nn.Parameter(init["nvil_c"])
        layers = range(1, arch.num_layers + 1)
        self.v = torch.nn.ParameterList(torch.nn.Parameter(init[f"nvil_v_{l}"]) for l in layers)
        self.d = torch.nn.ParameterList(torch.nn.Parameter(init[f"nvil_d_{l}"]) for l in layers)

    def forward(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """``b_layer(x)``: ``(B,)`` for a batch ``x`` of shape ``(B, D)``."""
        return torch.tanh(x @ self.U + self.c) @ self.v[layer - 1] + self.d[layer - 1]


class SignalStats(NamedTuple):
    """Running mean and variance of a centred learning signal (one per site)."""

    mean: torch.Tensor
    var: torch.Tensor


def signal_stats_init() -> SignalStats:
    return SignalStats(torch.zeros(()), torch.zeros(()))


def normalised_signal(signal: torch.Tensor, stats: SignalStats, decay: float = SIGNAL_DECAY):
    """NVIL's variance normalisation (Mnih & Gregor 2014, sec. 3.2 and Algorithm 1).

    ``m <- a m + (1 - a) mean(l)``, ``v <- a v + (1 - a) var(l)`` over the batch, then
    ``(l - m) / max(1, sqrt(v))``, for ``l`` the signal already less its input-dependent
    baseline. Returns ``(normalised signal, new stats)``; no gradient flows through it.
    """
    signal = signal.detach()
    mean = decay * stats.mean + (1 - decay) * signal.mean()
    var = decay * stats.var + (1 - decay) * signal.var(unbiased=False)
    return (signal - mean) / var.sqrt().clamp(min=1.0), SignalStats(mean, var)


def _as_downstream_cost(net: NVILBaseline, layer: int, x: torch.Tensor) -> torch.Tensor:
    """``b_layer(x)`` ``(B,)`` in the shape of Pyro's learning signal, which must match it:
    ``TraceGraph_ELBO`` sums the signal to the site's plates with ``MultiFrameTensor.sum_to``,
    which squeezes leading dims of size 1, so a batch of one row has a signal of shape ``()``."""
    b = net(x, layer)
    return b.reshape(()) if b.shape == (1,) else b


def with_baselines(guide, baseline: str, net: NVILBaseline | None = None, beta: float = DECAY):
    """``guide`` with its hidden sites' ``infer["baseline"]`` set (``pyro.poutine.infer_config``).

    :param guide: a guide with the model's signature ``guide(params, x, ...)``; the NVIL net
        reads the rows of ``x`` it explains (``x[subsample]`` under ``subsample=``).
    :param baseline: ``"none"``, ``"decaying"`` (Pyro's decaying average) or ``"nvil"`` (``net(x)``).
    :param net: the :class:`NVILBaseline` (``baseline="nvil"``); registered with ``pyro.module``.
    """
    check_baseline(baseline)
    if baseline == "none":
        return guide
    if baseline == "nvil" and net is None:
        raise ValueError("baseline='nvil' needs an NVILBaseline net")

    def guide_with_baselines(params, x=None, **kwargs):
        subsample = kwargs.get("subsample")
        rows = x if subsample is None else x.index_select(-2, torch.as_tensor(subsample, dtype=torch.long))

        def config(msg):
            if msg["is_observed"] or not msg["name"].startswith("h"):
                return {}
            if baseline == "decaying":
                return {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": beta}}
            return {"baseline": {"nn_baseline": functools.partial(_as_downstream_cost, net, int(msg["name"][1:])),
                                 "nn_baseline_input": rows}}

        if net is not None:
            pyro.module("nvil_baseline", net)
        return poutine.infer_config(guide, config)(params, x, **kwargs)

    return guide_with_baselines


def guide_gradient_moments(model, guide, params, x, keys, baseline: str = "none", *, num_samples: int = 200,
                           warmup: int = 200, lr: float = 1e-2, seed: int = 0, warmup_pool=None,
                           **kwargs) -> GradientMoments:
    """Moments of the one-sample ``TraceGraph_ELBO`` gradient w.r.t. guide parameters ``keys``.

    The model's and guide's parameters stay at ``params`` (a fresh param store). First
    ``warmup`` evaluations adapt only the baseline (the decaying average updates itself; the
    NVIL net takes Adam(``lr``) steps on its least-squares loss), then ``num_samples``
    gradients (ascent direction) of the ELBO of ``model(params, x, **kwargs)`` are taken with
    the baseline frozen. ``warmup_pool``: warm up on random batches of ``len(x)`` rows of
    this data (as in training); by default the warm-up uses ``x`` itself.
    """
    check_baseline(baseline)
    x = torch.as_tensor(np.asarray(x), dtype=torch.get_default_dtype())
    pool = None if warmup_pool is None else torch.as_tensor(np.asarray(warmup_pool), dtype=x.dtype)
    elbo = pyro.infer.TraceGraph_ELBO(max_plate_nesting=1)
    samples: dict[str, list] = {k: [] for k in keys}
    with pyro.get_param_store().scope(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = NVILBaseline(params.architecture, seed=seed) if baseline == "nvil" else None
        wrapped = with_baselines(guide, baseline, net)
        opt = torch.optim.Adam(net.parameters(), lr=lr) if net is not None else None
        store, frozen = pyro.get_param_store(), {}
        for i in range(warmup + num_samples):
            if i == warmup:  # the decaying average stays as warmed up while gradients are collected
                frozen = {k: store[k].detach().clone() for k in store.keys() if k.startswith("__baseline_avg")}
            for k, v in frozen.items():
                store[k] = v
            for p in store.values():
                p.grad = None
            data = x if pool is None or i >= warmup else pool[torch.randperm(len(pool))[: len(x)]]
            elbo.loss_and_grads(model, wrapped, params, data, **kwargs)
            if i >= warmup:
                for k in keys:
                    samples[k].append(-store.get_param(k).grad.double().numpy().copy())  # ascent
            elif opt is not None:
                opt.step()
    return GradientMoments.from_samples({k: np.stack(v) for k, v in samples.items()})
