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
:func:`read_params` reads them back.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from sbn_ppl.base.architecture import Architecture, site_name
from sbn_ppl.base.params import SBNParams, generative_keys, mean_field_keys, recognition_keys

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


def _as_index(subsample):
    """``subsample`` as a 1-d long tensor (or ``None``)."""
    if subsample is None:
        return None
    idx = torch.as_tensor(subsample)
    if idx.dim() != 1 or idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
        raise ValueError(f"subsample must be a 1-d integer array of data indices, got {idx.dtype}{tuple(idx.shape)}")
    return idx.long()


def _data_plate(size, subsample_size, subsample, dim):
    """The ``"data"`` plate: all ``size`` points, ``subsample_size`` drawn ones, or the rows ``subsample``.

    Pyro scales every log-density inside it by ``size / B`` (``B`` the batch size)."""
    return pyro.plate("data", size, subsample_size=subsample_size, subsample=subsample, dim=dim)


def _rows(x, idx, subsampled):
    return x.index_select(-2, idx) if subsampled else x


def model(params: SBNParams, x: torch.Tensor | None = None, *, num_samples: int | None = None,
          subsample_size: int | None = None, subsample=None, unit_plates: bool = False):
    """The SBN ``p(hL) ... p(h1 | h2) p(x | h1)`` (``dense``: ``p(h_l | all layers above)``).

    :param params: :class:`~sbn_ppl.SBNParams` (initial values of the ``pyro.param`` sites).
    :param x: observed data ``(N, D)`` of 0./1., or ``None`` to sample ``x`` as well.
    :param num_samples: how many ancestral samples to draw when ``x`` is ``None``.
    :param subsample_size: mini-batch size ``B`` for the ``"data"`` plate (indices drawn at random).
    :param subsample: the mini-batch itself, a 1-d array of ``B`` row indices of ``x``; log
        densities are scaled by ``N / B`` as with ``subsample_size``. If both are given they
        must agree.
    :param unit_plates: the site layout (both give the same ``log p(x, h)`` and site names):

        - ``False`` (default): one site per layer, ``Bernoulli(logits=a).to_event(1)`` of
          shape ``(N, n_l)``, inside the ``"data"`` plate at ``dim=-1``. This is the layout
          of :func:`recognition_guide` and :func:`mean_field_guide`; use it for SVI and
          any other model/guide inference.
        - ``True``: the old layout, an elementwise Bernoulli inside a plate over the layer's
          units (``"units_<site>"``, ``dim=-1``) inside the ``"data"`` plate (``dim=-2``),
          for inference that needs elementwise discrete sites: a ``.to_event(1)`` Bernoulli
          has no ``enumerate_support``, so Pyro's enumeration (``TraceEnum_ELBO``,
          ``infer_discrete``, ``config_enumerate``) cannot use the default layout.

        Pairings with the guides under Pyro: the default model with either guide works with
        every ELBO (``Trace_ELBO``, ``TraceGraph_ELBO``, ``ReweightedWakeSleep``).
        ``unit_plates=True`` with either guide is refused by Pyro's validation (on by
        default): ``check_model_guide_match`` raises "Model and guide event_dims disagree
        at site 'h1': 0 vs 1" (pyro 1.9). A guide of your own that puts each unit of a layer in a
        plate must be paired with ``unit_plates=True`` (and must tell the truth: units of a
        layer independent given everything sampled before them).
    :returns: the list of layers ``[x, h1, ..., hL]``.
    """
    arch = params.architecture
    theta = _params(params, generative_keys(arch))
    subsample = _as_index(subsample)
    subsampled = subsample is not None or subsample_size is not None
    layers: list = [None] * (arch.num_layers + 1)
    plate = _data_plate(_data_size(x, num_samples), subsample_size, subsample, dim=-2 if unit_plates else -1)
    with plate as idx:
        for l in range(arch.num_layers, -1, -1):
            obs = _rows(x, idx, subsampled) if l == 0 and x is not None else None
            a = preactivation(arch, theta, layers, l)
            if unit_plates:
                with pyro.plate(f"units_{site_name(l)}", arch.sizes[l], dim=-1):
                    layers[l] = pyro.sample(site_name(l), dist.Bernoulli(logits=a), obs=obs)
            else:
                layers[l] = pyro.sample(site_name(l), dist.Bernoulli(logits=a).to_event(1), obs=obs)
    return layers


def _guide(params, x, num_samples, subsample_size, subsample, observations, logits_fn, keys):
    arch = params.architecture
    # sleep phase (pyro.infer.ReweightedWakeSleep): x is the model's own sample, already batched
    x_obs = observations.get("x") if observations else None
    if x is None and x_obs is None:
        raise ValueError("the guide needs data x (or observations={'x': ...})")
    size = x.shape[-2] if x is not None else (num_samples if num_samples is not None else x_obs.shape[-2])
    phi = _params(params, keys)
    subsample = _as_index(subsample)
    subsampled = subsample is not None or subsample_size is not None
    layers: list = [None] * (arch.num_layers + 1)
    with _data_plate(size, subsample_size, subsample, dim=-1) as idx:
        layers[0] = x_obs if x_obs is not None else _rows(x, idx, subsampled)
        for l in range(1, arch.num_layers + 1):
            # one site per layer: its units are independent given x and the layers sampled
            # before it, but a layer depends on all of them, which no plate may hide from
            # a TraceGraph ELBO (it prunes the learning signal by plates)
            logits = logits_fn(arch, phi, layers, l)
            layers[l] = pyro.sample(site_name(l), dist.Bernoulli(logits=logits).to_event(1))
    return layers


def recognition_guide(params: SBNParams, x=None, *, num_samples=None, subsample_size=None, subsample=None,
                      observations=None):
    """The recognition network ``q(h1 | x) q(h2 | h1) ...`` (Helmholtz machine's ``r``).

    Takes the model's arguments (``subsample_size`` / ``subsample`` select the same
    mini-batch as in :func:`model`; under ``SVI`` the model replays the guide's indices).
    ``observations={"x": ...}`` (the sleep phase of ``pyro.infer.ReweightedWakeSleep``)
    replaces ``x``. Each layer is one ``Bernoulli(...).to_event(1)`` site inside the
    ``"data"`` plate (``dim=-1``): pair it with :func:`model` in its default layout.
    """
    return _guide(params, x, num_samples, subsample_size, subsample, observations, recognition_logits,
                  recognition_keys(params.architecture))


def mean_field_guide(params: SBNParams, x=None, *, num_samples=None, subsample_size=None, subsample=None,
                     observations=None):
    """Amortised mean field: every hidden unit independent given ``x``, ``logit mu = q_mf_b + x @ q_mf_W``.

    Same arguments and site layout as :func:`recognition_guide`.
    """
    return _guide(params, x, num_samples, subsample_size, subsample, observations,
                  lambda arch, phi, layers, l: mean_field_logits(phi, layers[0], l),
                  mean_field_keys(params.architecture))


def read_params(like: SBNParams, values: Mapping[str, torch.Tensor] | None = None) -> SBNParams:
    """``like``'s arrays at their current values, the one way back from Pyro's param store.

    :param like: the parameters whose keys to read (``sizes`` and the connectivity come from
        it; a key ``values`` lacks keeps ``like``'s array: a site not yet created).
    :param values: where the current tensors are: Pyro's param store (default), or any
        mapping of names to tensors (a method that keeps its tensors itself).
    :returns: copies (an optimiser updates its tensors in place, never the returned arrays).
    """
    values = pyro.get_param_store() if values is None else values
    arrays = {k: values[k].detach().cpu().clone() if k in values else like[k] for k in like if k != "sizes"}
    return SBNParams({"sizes": like["sizes"], **arrays}, like.architecture.connectivity)
