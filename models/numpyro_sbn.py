"""The SBN as a NumPyro model, its two guides, and the same densities as plain JAX functions.

Usage::

    import jax, numpyro
    from sbn_ppl import SBNParams
    from sbn_ppl.models import numpyro_sbn

    params = SBNParams.init("64-32-16", seed=0)
    numpyro.infer.Predictive(numpyro_sbn.model, num_samples=1)(jax.random.PRNGKey(0), params, num_samples=16)

``params`` gives the values of the ``numpyro.param`` sites (``b_<l>``, ``W_<m>_<l>``,
guide ``q_...``); under ``SVI`` (or ``handlers.substitute``) the trained values are used.
Sites and plates are those of ``sbn_ppl.models.pyro_sbn``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers

import sbn_ppl.base.pytrees as pytrees
from sbn_ppl.base.architecture import Architecture, site_name
from sbn_ppl.base.params import SBNParams, generative_keys, mean_field_keys, recognition_keys

# SBNParams is a pytree (leaves: its arrays; static: its architecture), registered explicitly.
pytrees.register()


# -- pure densities ------------------------------------------------------------------------


def bernoulli_log_prob(s, a):
    """``log Bernoulli(s | sigma(a)) = -softplus(-(2 s - 1) a)``, elementwise."""
    return -jax.nn.softplus(-(2.0 * s - 1.0) * a)


def preactivation(arch: Architecture, theta: Mapping, layers: Sequence, layer: int):
    """``a_l = b_l + sum_{m in pa(l)} h_m @ W_m_l``."""
    a = theta[f"b_{layer}"]
    for m in arch.parents(layer):
        a = a + layers[m] @ theta[f"W_{m}_{layer}"]
    return a


def log_joint(arch: Architecture, theta: Mapping, layers: Sequence):
    """``log p(x, h)`` summed over units; ``layers[l]`` is ``(..., n_l)``."""
    return sum(
        bernoulli_log_prob(layers[l], preactivation(arch, theta, layers, l)).sum(-1)
        for l in range(arch.num_layers + 1)
    )


def recognition_logits(arch: Architecture, phi: Mapping, layers: Sequence, layer: int):
    """``logit q(h_l = 1 | below) = q_b_l + sum_m h_m @ q_W_m_l``."""
    c = phi[f"q_b_{layer}"]
    for m in arch.recognition_parents(layer):
        c = c + layers[m] @ phi[f"q_W_{m}_{layer}"]
    return c


def mean_field_logits(phi: Mapping, x, layer: int):
    """``logit mu_l = q_mf_b_l + x @ q_mf_W_0_l``."""
    return phi[f"q_mf_b_{layer}"] + x @ phi[f"q_mf_W_0_{layer}"]


class Bernoulli(dist.BernoulliLogits):
    """NumPyro's ``Bernoulli(logits=a)`` with its log-probability in the softplus form.

    numpyro 0.22's ``BernoulliLogits.log_prob`` differentiates ``max(a, 0)`` and ``|a|``
    separately and so gives the gradient ``s`` instead of ``s - 1/2`` at ``a = 0`` exactly
    (zero-initialised biases); ``-softplus(-(2 s - 1) a)`` is smooth everywhere.
    """

    def log_prob(self, value):
        return bernoulli_log_prob(value, self.logits)


# -- the NumPyro program -------------------------------------------------------------------


def _params(params: Mapping, keys: list[str]) -> dict:
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"parameters lack {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    return {k: numpyro.param(k, jnp.asarray(params[k])) for k in keys}


def _data_size(x, num_samples):
    if x is not None:
        return x.shape[-2]
    if num_samples is None:
        raise ValueError("pass data x, or num_samples to sample from the model")
    return num_samples


def _data_plate(size, subsample_size, subsample, dim):
    """The ``"data"`` plate: all ``size`` points, ``subsample_size`` drawn ones, or the rows ``subsample``.

    ``numpyro.plate`` takes no indices, so an explicit ``subsample`` (``B`` indices) is a
    plate of ``subsample_size=B`` whose ``"plate"`` message gets its value from
    ``handlers.substitute`` while the plate is built: the plate yields ``subsample`` and
    scales every log-density inside it by ``size / B``, exactly as for drawn indices (an
    outer ``replay`` of a guide's trace still replaces them, as for drawn indices)."""
    if subsample is None:
        return numpyro.plate("data", size, subsample_size=subsample_size, dim=dim)
    idx = jnp.asarray(subsample)
    if idx.ndim != 1 or not jnp.issubdtype(idx.dtype, jnp.integer):
        raise ValueError(f"subsample must be a 1-d integer array of data indices, got {idx.dtype}{idx.shape}")
    if subsample_size is not None and subsample_size != idx.shape[0]:
        raise ValueError(f"subsample_size does not match len(subsample), {subsample_size} vs {idx.shape[0]}")
    with handlers.substitute(data={"data": idx}):
        return numpyro.plate("data", size, subsample_size=idx.shape[0], dim=dim)


def _rows(x, idx, subsampled):
    return jnp.take(x, idx, axis=-2) if subsampled else x


def model(params: SBNParams, x=None, *, num_samples: int | None = None, subsample_size: int | None = None,
          subsample=None, unit_plates: bool = False):
    """The SBN ``p(hL) ... p(h1 | h2) p(x | h1)`` (``dense``: ``p(h_l | all layers above)``).

    :param params: :class:`~sbn_ppl.SBNParams` (values of the ``numpyro.param`` sites).
    :param x: observed data ``(N, D)`` of 0./1., or ``None`` to sample ``x`` as well.
    :param num_samples: how many ancestral samples to draw when ``x`` is ``None``.
    :param subsample_size: mini-batch size ``B`` for the ``"data"`` plate (indices drawn at random).
    :param subsample: the mini-batch itself, a 1-d integer array of ``B`` row indices of
        ``x``; log densities are scaled by ``N / B`` as with ``subsample_size``. If both are
        given they must agree.
    :param unit_plates: the site layout (both give the same ``log p(x, h)`` and site names):

        - ``False`` (default): one site per layer, ``Bernoulli(logits=a).to_event(1)`` of
          shape ``(N, n_l)``, inside the ``"data"`` plate at ``dim=-1``. This is the layout
          of :func:`recognition_guide` and :func:`mean_field_guide`; use it for SVI and
          any other model/guide inference, and with our own ``SBNGibbs`` kernel.
        - ``True``: the old layout, an elementwise Bernoulli inside a plate over the layer's
          units (``"units_<site>"``, ``dim=-1``) inside the ``"data"`` plate (``dim=-2``).
          NumPyro's stock ``DiscreteHMCGibbs`` needs it: it enumerates the support of each
          discrete site, which a ``.to_event(1)`` Bernoulli does not have
          (``DiscreteHMCGibbs(NUTS(partial(model, unit_plates=True)))``).

        Pairings with the guides under NumPyro: the default model with either guide works
        with every ELBO (``TraceGraph_ELBO`` is the one that handles discrete sites;
        ``Trace_ELBO`` runs but warns that it does not). ``unit_plates=True`` with either
        guide is refused by every NumPyro ELBO (``TraceGraph_ELBO``, ``Trace_ELBO``,
        ``RenyiELBO``, ``TraceMeanField_ELBO``, numpyro 0.22): ``check_model_guide_match``,
        which NumPyro runs unconditionally, raises "Model and guide event_dims disagree at
        site ...: 0 vs 1". A guide of your own that puts each unit of a layer in a plate must
        be paired with ``unit_plates=True`` (and must tell the truth: units of a layer
        independent given everything sampled before them).
    :returns: the list of layers ``[x, h1, ..., hL]``.
    """
    arch = params.architecture
    theta = _params(params, generative_keys(arch))
    subsampled = subsample is not None or subsample_size is not None
    layers: list = [None] * (arch.num_layers + 1)
    plate = _data_plate(_data_size(x, num_samples), subsample_size, subsample, dim=-2 if unit_plates else -1)
    with plate as idx:
        for l in range(arch.num_layers, -1, -1):
            obs = _rows(x, idx, subsampled) if l == 0 and x is not None else None
            a = preactivation(arch, theta, layers, l)
            if unit_plates:
                with numpyro.plate(f"units_{site_name(l)}", arch.sizes[l], dim=-1):
                    layers[l] = numpyro.sample(site_name(l), Bernoulli(logits=a), obs=obs)
            else:
                layers[l] = numpyro.sample(site_name(l), Bernoulli(logits=a).to_event(1), obs=obs)
    return layers


def _guide(params, x, num_samples, subsample_size, subsample, observations, logits_fn, keys):
    arch = params.architecture
    x_obs = observations.get("x") if observations else None
    if x is None and x_obs is None:
        raise ValueError("the guide needs data x (or observations={'x': ...})")
    size = x.shape[-2] if x is not None else (num_samples if num_samples is not None else x_obs.shape[-2])
    phi = _params(params, keys)
    subsampled = subsample is not None or subsample_size is not None
    layers: list = [None] * (arch.num_layers + 1)
    with _data_plate(size, subsample_size, subsample, dim=-1) as idx:
        layers[0] = x_obs if x_obs is not None else _rows(x, idx, subsampled)
        for l in range(1, arch.num_layers + 1):
            # one site per layer: its units are independent given x and the layers sampled
            # before it, but a layer depends on all of them, which no plate may hide from
            # a TraceGraph ELBO (it prunes the learning signal by plates)
            logits = logits_fn(arch, phi, layers, l)
            layers[l] = numpyro.sample(site_name(l), Bernoulli(logits=logits).to_event(1))
    return layers


def recognition_guide(params: SBNParams, x=None, *, num_samples=None, subsample_size=None, subsample=None,
                      observations=None):
    """The recognition network ``q(h1 | x) q(h2 | h1) ...`` (Helmholtz machine's ``r``).

    Takes the model's arguments (``subsample_size`` / ``subsample`` select the same
    mini-batch as in :func:`model`; under ``SVI`` the model replays the guide's indices).
    ``observations={"x": ...}`` (a sleep phase: ``x`` drawn from the model) replaces ``x``.
    Each layer is one ``Bernoulli(...).to_event(1)`` site inside the ``"data"`` plate
    (``dim=-1``): pair it with :func:`model` in its default layout.
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
