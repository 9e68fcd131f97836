"""The local mean-field guide as a NumPyro program (parameters: :mod:`sbn_ppl.models.mean_field_local`)."""
from __future__ import annotations

import jax.numpy as jnp
import numpyro

from sbn_ppl.architecture import site_name
from sbn_ppl.models.mean_field_local import local_keys
from sbn_ppl.models.numpyro_sbn import Bernoulli, _data_plate, _params


def local_mean_field_guide(params, x=None, *, num_samples=None, subsample_size=None, subsample=None,
                           observations=None):
    """Per-data-point mean field: ``logit mu_{n,l} = q_mf_local_l[n]`` for the ``N`` rows of ``x``.

    Takes the model's arguments: ``x`` is the whole training matrix ``(N, D)`` the logits
    belong to, and ``subsample`` (the batch's indices) or ``subsample_size`` selects the
    mini-batch of the ``"data"`` plate (``dim=-1``), whose log-densities are scaled by
    ``N / B``. One ``Bernoulli(...).to_event(1)`` site ``h<l>`` per layer, the layout of
    :func:`sbn_ppl.models.numpyro_sbn.model`.
    """
    del num_samples, observations  # the logits exist only for the training points
    if x is None:
        raise ValueError("the local mean-field guide needs the training data x its logits belong to")
    arch = params.architecture
    phi = _params(params, local_keys(arch))
    if any(v.shape[0] != x.shape[-2] for v in phi.values()):
        raise ValueError(f"local logits cover {phi[local_keys(arch)[0]].shape[0]} data points, x has {x.shape[-2]}")
    layers: list = [None] * (arch.num_layers + 1)
    with _data_plate(x.shape[-2], subsample_size, subsample, dim=-1) as idx:
        layers[0] = x if subsample is None and subsample_size is None else jnp.take(x, idx, axis=-2)
        for l in range(1, arch.num_layers + 1):
            logits = jnp.take(phi[f"q_mf_local_{l}"], idx, axis=0)  # logit mu_{n,l}, n in the batch
            layers[l] = numpyro.sample(site_name(l), Bernoulli(logits=logits).to_event(1))
    return layers
