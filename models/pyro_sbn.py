"""The SBN as a Pyro model, its two guides, and the same densities as plain torch functions.

Usage::

    import pyro, torch
    from sbn_ppl import SBNParams
    from sbn_ppl.models import pyro_sbn

    params = SBNParams.init("64-32-16", seed=0)
    pyro.clear_param_store()
    trace = pyro.poutine.trace(pyro_sbn.model).get_trace(params, x)
    trace.log_prob_sum()                       # log p(x, h) at the sampled h

As with every ``pyro.param``, ``params`` gives the *initial* values of the generative
parameters (``b_<l>``, ``W_<m>_<l>``) and guide parameters (``q_...``); once they are in
Pyro's param store the store's values are used (``pyro.clear_param_store()`` resets).
``SBNParams.from_mapping(pyro.get_param_store(), like=params)`` reads them back.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from sbn_ppl.architecture import Architecture, site_name
from sbn_ppl.params import SBNParams, generative_keys, mean_field_keys, recognition_keys

# -- pure densities ------------------------------------------------------------------------


def bernoulli_log_prob(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``log Bernoulli(s | sigma(a)) = -softplus(-(2 s - 1) a)``, elementwise."""
    return -F.softplus(-(2.0 * s - 1.0) * a)


def preactivation(arch: Architecture, theta: Mapping[str, torch.Tensor], layers: Sequence, layer: int):
    """``a_l = b_l + sum_{m in pa(l)} h_m @ W_m_l``."""
    a = theta[f"b_{layer}"]
    for m in arch.parents(layer):
        a = a + layers[m] @ theta[f"W_{m}_{layer}"]
    return a


def log_joint(arch: Architecture, theta: Mapping[str, torch.Tensor], layers: Sequence[torch.Tensor]):
    """``log p(x, h)`` summed over units; ``layers[l]`` is ``(..., n_l)``."""
    return sum(
        bernoulli_log_prob(layers[l], preactivation(arch, theta, layers, l)).sum(-1)
        for l in range(arch.num_layers + 1)
    )


def recognition_logits(arch: Architecture, phi: Mapping[str, torch.Tensor], layers: Sequence, layer: int):
    """``logit q(h_l = 1 | below) = q_b_l + sum_m h_m @ q_W_m_l``."""
    c = phi[f"q_b_{layer}"]
    for m in arch.recognition_parents(layer):
        c = c + layers[m] @ phi[f"q_W_{m}_{layer}"]
    return c


def mean_field_logits(phi: Mapping[str, torch.Tensor], x: torch.Tensor, layer: int):
    """``logit mu_l = q_mf_b_l + x @ q_mf_W_0_l``."""
    return phi[f"q_mf_b_{layer}"] + x @ phi[f"q_mf_W_0_{layer}"]


# -- the Pyro program ----------------------------------------------------------------------


def _params(params: Mapping, keys: list[str]) -> dict[str, torch.Tensor]:
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"parameters lack {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    # a copy: Pyro's optimisers update params in place, never the caller's SBNParams arrays
    return {k: pyro.param(k, lambda k=k: torch.tensor(params[k], dtype=torch.get_default_dtype())) for k in keys}


def _data_size(x, num_samples):
    if x is not None:
        return x.shape[-2]
    if num_samples is None:
        raise ValueError("pass data x, or num_samples to sample from the model")
    return num_samples


def model(params: SBNParams, x: torch.Tensor | None = None, *, num_samples: int | None = None, subsample_size=None):
    """The SBN ``p(hL) ... p(h1 | h2) p(x | h1)`` (``dense``: ``p(h_l | all layers above)``).

    :param params: :class:`~sbn_ppl.SBNParams` (initial values of the ``pyro.param`` sites).
    :param x: observed data ``(N, D)`` of 0./1., or ``None`` to sample ``x`` as well.
    :param num_samples: how many ancestral samples to draw when ``x`` is ``None``.
    :param subsample_size: mini-batch size for the ``"data"`` plate.
    :returns: the list of layers ``[x, h1, ..., hL]``.
    """
    arch = params.architecture
    theta = _params(params, generative_keys(arch))
    layers: list = [None] * (arch.num_layers + 1)
    with pyro.plate("data", _data_size(x, num_samples), subsample_size=subsample_size, dim=-2) as idx:
        for l in range(arch.num_layers, -1, -1):
            obs = None
            if l == 0 and x is not None:
                obs = x if subsample_size is None else x.index_select(-2, idx)
            with pyro.plate(f"units_{site_name(l)}", arch.sizes[l], dim=-1):
                a = preactivation(arch, theta, layers, l)
                layers[l] = pyro.sample(site_name(l), dist.Bernoulli(logits=a), obs=obs)
    return layers


def _guide(params, x, num_samples, subsample_size, observations, logits_fn, keys):
    arch = params.architecture
    # sleep phase (pyro.infer.ReweightedWakeSleep): x is the model's own sample, already batched
    x_obs = observations.get("x") if observations else None
    if x is None and x_obs is None:
        raise ValueError("the guide needs data x (or observations={'x': ...})")
    size = x.shape[-2] if x is not None else (num_samples if num_samples is not None else x_obs.shape[-2])
    phi = _params(params, keys)
    layers: list = [None] * (arch.num_layers + 1)
    with pyro.plate("data", size, subsample_size=subsample_size, dim=-2) as idx:
        if x_obs is not None:
            layers[0] = x_obs
        else:
            layers[0] = x if subsample_size is None else x.index_select(-2, idx)
        for l in range(1, arch.num_layers + 1):
            with pyro.plate(f"units_{site_name(l)}", arch.sizes[l], dim=-1):
                layers[l] = pyro.sample(site_name(l), dist.Bernoulli(logits=logits_fn(arch, phi, layers, l)))
    return layers


def recognition_guide(params: SBNParams, x=None, *, num_samples=None, subsample_size=None, observations=None):
    """The recognition network ``q(h1 | x) q(h2 | h1) ...`` (Helmholtz machine's ``r``).

    Takes the model's arguments. ``observations={"x": ...}`` (the sleep phase of
    ``pyro.infer.ReweightedWakeSleep``) replaces ``x``.
    """
    return _guide(params, x, num_samples, subsample_size, observations, recognition_logits,
                  recognition_keys(params.architecture))


def mean_field_guide(params: SBNParams, x=None, *, num_samples=None, subsample_size=None, observations=None):
    """Amortised mean field: every hidden unit independent given ``x``, ``logit mu = q_mf_b + x @ q_mf_W``."""
    return _guide(params, x, num_samples, subsample_size, observations,
                  lambda arch, phi, layers, l: mean_field_logits(phi, layers[0], l),
                  mean_field_keys(params.architecture))


def read_params(like: SBNParams) -> SBNParams:
    """The current values of Pyro's param store as :class:`~sbn_ppl.SBNParams`."""
    store = pyro.get_param_store()
    return SBNParams.from_mapping({k: store[k] for k in store.keys()}, like=like)
