"""The local mean-field guide as a NumPyro program (parameters: :mod:`sbn_ppl.models.mean_field_local`)."""
from __future__ import annotations

import jax.numpy as jnp
import numpyro

from sbn_ppl.base.architecture import site_name
from sbn_ppl.models.mean_field_local import local_keys
from sbn_ppl.models.numpyro_sbn import Bernoulli, _data_plate, _params


def local_mean_field_guide(params, x=None, *, num_samples=None, subsample_size=None, subsample=None, index=None,
                           observations=None):
    """Per-data-point mean field: ``logit mu_{n,l} = q_mf_local_l[n]``, one site ``h<l>`` per layer.

    Two ways to name the data points (``N`` is the number of training points the logits belong to):

    * the model's arguments: ``x`` the whole training matrix ``(N, D)``, and ``subsample``
      (the batch's indices) or ``subsample_size`` selects the mini-batch of the ``"data"``
      plate, whose log-densities are scaled by ``N / B``;
    * ``index``: ``x`` holds only the rows ``(B, D)`` of the training points ``index``; the
      ``"data"`` plate is over those ``B`` rows, unscaled (scale model and guide alike, e.g.
      ``handlers.scale(scale=N / B)``, for an estimate of the whole set's ELBO).

    Each layer is one ``Bernoulli(...).to_event(1)`` site inside the ``"data"`` plate
    (``dim=-1``), the layout of :func:`sbn_ppl.models.numpyro_sbn.model`.
    """
    del num_samples, observations  # the logits exist only for the training points
    if x is None:
        raise ValueError("the local mean-field guide needs data x (the training set, or a batch's rows with index=)")
    arch = params.architecture
    phi = _params(params, local_keys(arch))
    if index is not None:
        if subsample is not None or subsample_size is not None:
            raise ValueError("pass index= (x holds the batch's rows) or subsample/subsample_size, not both")
        if jnp.shape(index) != (x.shape[-2],):
            raise ValueError(f"index names {jnp.shape(index)} points, x has {x.shape[-2]} rows")
        plate, rows = numpyro.plate("data", x.shape[-2], dim=-1), jnp.asarray(index)
    else:
        if any(v.shape[0] != x.shape[-2] for v in phi.values()):
            raise ValueError(f"local logits cover {phi[local_keys(arch)[0]].shape[0]} data points, "
                             f"x has {x.shape[-2]}")
        plate, rows = _data_plate(x.shape[-2], subsample_size, subsample, dim=-1), None
    layers: list = [None] * (arch.num_layers + 1)
    with plate as idx:
        subsampled = subsample is not None or subsample_size is not None
        layers[0] = jnp.take(x, idx, axis=-2) if subsampled else x
        rows = idx if rows is None else rows  # the training points of the plate's positions
        for l in range(1, arch.num_layers + 1):
            logits = jnp.take(phi[f"q_mf_local_{l}"], rows, axis=0)  # logit mu_{n,l}, n in the batch
            layers[l] = numpyro.sample(site_name(l), Bernoulli(logits=logits).to_event(1))
    return layers
