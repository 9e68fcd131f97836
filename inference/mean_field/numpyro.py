"""Mean-field SVI with NumPyro's ``SVI`` (the math and the options: this folder's ``__init__``;
the twin: ``pyro.py``).

Own tricks: the loss is :class:`~sbn_ppl.inference.shared.score_function.numpyro.TraceGraphBaselineELBO`
(NumPyro's ``TraceGraph_ELBO`` reads no baselines), the batch's log-densities scaled by
``N / B`` with ``handlers.scale``; a step is one pure, jittable ``svi.update`` on the
runner's batch (the local guide also reads ``batch.index``, to pick its logits). The
training set is not in the state: a scan copies its carry every step, and a ``(N, D)``
array there halved the speed (N = 50,000 on 784-200-200).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax import random
from numpyro import handlers
from numpyro.infer import SVI

from sbn_ppl.base.architecture import Architecture, site_name
from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.inference.shared.score_function import nvil_init
from sbn_ppl.inference.shared.score_function.numpyro import TraceGraphBaselineELBO, guide_gradient_moments, with_baselines
from sbn_ppl.base.methods import Batch, Kernel, by_chunks
from sbn_ppl.models import numpyro_sbn
from sbn_ppl.models.local_guides_numpyro import local_mean_field_guide
from sbn_ppl.models.mean_field_local import local_keys, with_local_params
from sbn_ppl.base.optimizers import optax_optimizer
from sbn_ppl.base.params import SBNParams, generative_keys, mean_field_keys


def batch_model(params, x, *, index, num_data: int):
    """The SBN on a batch's rows ``x`` ``(B, D)``, its log-densities scaled by ``N / B``
    (``index``, the rows' places in the training set, is the local guide's)."""
    del index
    with handlers.scale(scale=num_data / x.shape[-2]):
        return numpyro_sbn.model(params, x)


def amortised_batch_guide(params, x, *, index, num_data: int):
    """The amortised mean-field guide on a batch's rows, scaled by ``N / B`` like :func:`batch_model`."""
    del index
    with handlers.scale(scale=num_data / x.shape[-2]):
        return numpyro_sbn.mean_field_guide(params, x)


def local_batch_guide(params, x, *, index, num_data: int):
    """The local mean-field guide on a batch's rows (its logits at ``index``), scaled by ``N / B``."""
    with handlers.scale(scale=num_data / x.shape[-2]):
        return local_mean_field_guide(params, x, index=index)


class Setup(NamedTuple):
    """What the step needs beside its state, fixed by ``init`` (the training set's size N
    sets the ``N / B`` scaling and the local guide's rows)."""

    svi: SVI  # model, guide + baselines, optax optimiser, TraceGraphBaselineELBO
    keys: tuple[str, ...]  # the trained parameters: generative + the guide's
    structure: jax.tree_util.PyTreeDef  # of an SBNParams with exactly ``keys``
    num_data: int


class MethodState(NamedTuple):
    """``svi``: numpyro's ``SVIState`` (optimiser state with every parameter, the decaying
    averages as mutable state); ``bound_key``: the key of the method's own bound."""

    svi: numpyro.infer.svi.SVIState
    bound_key: jax.Array


class SVIInfo(NamedTuple):
    objective: jax.Array  # the batch's ELBO estimate, per data point


@functools.lru_cache(maxsize=32)
def _svi(arch: Architecture, amortised: bool, baseline: str, optimizer, num_particles: int, num_data: int) -> SVI:
    """One ``SVI`` per configuration, so a second run of the same configuration reuses the compiled step."""
    guide = amortised_batch_guide if amortised else local_batch_guide
    return SVI(batch_model, with_baselines(guide, baseline, arch, positions=num_data), optimizer,
               TraceGraphBaselineELBO(baseline, num_particles))


def _view(c: Setup, arrays: dict) -> SBNParams:
    """``arrays`` (possibly traced) as an :class:`SBNParams` pytree, for the model's signature
    (under ``SVI`` the model's ``numpyro.param`` values come from the optimiser state)."""
    return jax.tree.unflatten(c.structure, [arrays[k] for k in c.keys])


def start(key, arch: Architecture, params: SBNParams, options: dict, train) -> tuple[MethodState, Setup]:
    """The state for ``params`` (a default mean-field network if ``params`` has none; zero
    local logits for the local guide) and the checked ``options``, and the step's :class:`Setup`."""
    num_data = len(validate_binary(np.asarray(train), width=arch.visible_size, name="training data"))
    key_svi, key_nvil, key_guide, key_bound = random.split(key, 4)
    amortised = options["amortised"]
    if amortised:
        if not params.has_guide("mean_field"):
            fresh = SBNParams.init(arch, int(random.randint(key_guide, (), 0, 2**31 - 1)), guide=("mean_field",))
            params = params.replace(**{k: fresh[k] for k in mean_field_keys(arch)})
        guide_keys = mean_field_keys(arch)
    else:
        params = with_local_params(params, num_data)
        guide_keys = local_keys(arch)
    # only the generative and this guide's parameters: no other guide's keys (issue 14)
    like = SBNParams({"sizes": np.asarray(arch.sizes), **{k: params[k] for k in generative_keys(arch) + guide_keys}},
                     arch.connectivity)
    keys = tuple(k for k in like if k != "sizes")  # in the pytree's leaf order
    svi = _svi(arch, amortised, options["baseline"],
               optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"],
                               options["lr_schedule"]),
               options["num_particles"], num_data)
    begin = {k: jnp.asarray(params[k]) for k in keys}
    if options["baseline"] == "nvil":
        begin.update({k: jnp.asarray(v) for k, v in
                      nvil_init(arch, seed=int(random.randint(key_nvil, (), 0, 2**31 - 1))).items()})
    setup = Setup(svi, keys, jax.tree.structure(like), num_data)
    svi_state = svi.init(key_svi, _view(setup, begin), jnp.asarray(train[:1]), index=jnp.arange(1),
                         num_data=num_data, init_params=begin)
    return MethodState(svi_state, key_bound), setup


def build(arch: Architecture, options: dict) -> Kernel:
    """``mean-field-svi`` on the NumPyro backend for ``arch`` and the checked ``options``.

    ``init`` fixes the step's :class:`Setup` (the ``SVI`` object and the training set's size,
    which the ``N / B`` scaling needs), held by the kernel; the state holds arrays only.
    ``step``: one SVI update on the batch's rows, scaled by ``N / B``; ``info``:
    :class:`SVIInfo`. ``bound``: the amortised guide's Monte Carlo ELBO per data point (seeded;
    none for the local guide, which has logits only for its training points). ``data_axes``:
    the local guide's per-training-case logits, and their optimiser moments, are split over
    the devices along their rows (the runner splits a leaf of the SVI state only where its
    axis 0 has one row per training case); the weights, the amortised guide and the
    baselines are replicated. ``guide_gradient`` (amortised guide only): one draw of the SVI
    gradient in the guide's arrays, per data point of the batch (ascent).
    """
    if not options["jit"]:
        raise ValueError("jit=False: the NumPyro step is always compiled (the runner scans it); "
                         "to run it op by op for debugging, call fit inside `with jax.disable_jit():`")
    amortised = options["amortised"]
    held: dict = {}  # the Setup, once init has seen the training set

    def setup() -> Setup:
        if "setup" not in held:
            raise RuntimeError("mean-field-svi: call the kernel's init before its step")
        return held["setup"]

    def init(key, params: SBNParams, train) -> MethodState:
        state, held["setup"] = start(key, arch, params, options, train)
        return state

    def step(key, state: MethodState, batch: Batch):
        c = setup()
        current = c.svi.get_params(state.svi)
        svi_state, loss = c.svi.update(state.svi._replace(rng_key=key), _view(c, current), batch.x,
                                       index=batch.index, num_data=c.num_data)
        return state._replace(svi=svi_state), SVIInfo(-loss / c.num_data)  # loss = -(N / B) sum_batch ELBO_n

    def get_params(state: MethodState) -> SBNParams:
        c = setup()
        current = c.svi.get_params(state.svi)
        return SBNParams({"sizes": np.asarray(arch.sizes), **{k: np.asarray(current[k]) for k in c.keys}},
                         arch.connectivity)

    def bound(state: MethodState, x, num_particles: int = 100, chunk: int = 500):
        params = get_params(state)
        return by_chunks(lambda i, rows: mc_elbo(params, rows, num_particles,
                                                 key=random.fold_in(state.bound_key, i))[0], x, chunk)

    def data_axes(state: MethodState):
        return state._replace(svi=None if amortised else 0, bound_key=None)

    @jax.jit
    def guide_gradient(key, state: MethodState, x):
        """One draw of the amortised guide's SVI gradient (ascent) of the batch-mean ELBO on
        ``x``: the step's loss, ``-(N / B) sum_batch ELBO_n``, differentiated with the state's
        baselines (the decaying averages held fixed), divided by ``-N``."""
        c = setup()
        x = jnp.asarray(x)
        current, mutable = c.svi.get_params(state.svi), state.svi.mutable_state or {}

        def loss(p):
            return c.svi.loss.loss_with_mutable_state(key, {**p, **jax.lax.stop_gradient(mutable)}, c.svi.model,
                                                      c.svi.guide, _view(c, current), x,
                                                      index=jnp.arange(x.shape[0]), num_data=c.num_data)["loss"]

        grads = jax.grad(loss)(current)
        return {k: -grads[k] / c.num_data for k in mean_field_keys(arch)}

    return Kernel(init, step, get_params, bound if amortised else None, data_axes,
                  guide_gradient if amortised else None)


# -- the amortised guide's ELBO, and gradient variance (tests and benchmarks) -----------------------


def mc_elbo(params: SBNParams, x, num_particles: int = 1000, seed: int = 0, key=None):
    """Monte Carlo ELBO of the amortised mean-field guide per data point, from NumPyro traces.

    ``(1/K) sum_k [log p(x_n, h_k) - log q(h_k | x_n)]``, ``h_k ~ q(. | x_n)`` (a ``particles``
    plate); returns the estimates ``(N,)`` and their standard errors ``(N,)`` (float64).
    """
    if num_particles < 2:
        raise ValueError(f"num_particles must be at least 2 (for a standard error), got {num_particles}")
    x = jnp.asarray(validate_binary(x, width=params.architecture.visible_size, name="data"))
    key = random.PRNGKey(seed) if key is None else key
    params = params.only("mean_field")
    log_w = np.asarray(_mc_log_weights(params, x, key, num_particles), np.float64)
    return log_w.mean(0), log_w.std(0, ddof=1) / np.sqrt(num_particles)


@functools.partial(jax.jit, static_argnums=3)
def _mc_log_weights(params, x, key, num_particles):
    """``log p(x_n, h_k) - log q(h_k | x_n)``, ``h_k ~ q``: ``(K, N)``."""
    arch = params.architecture
    with numpyro.plate("particles", num_particles, dim=-2):
        guide_tr = handlers.trace(handlers.seed(numpyro_sbn.mean_field_guide, key)).get_trace(params, x)
        model_tr = handlers.trace(handlers.replay(numpyro_sbn.model, guide_tr)).get_trace(params, x)

    def log_prob(tr, l):
        return tr[site_name(l)]["fn"].log_prob(tr[site_name(l)]["value"])  # (K, N): one site per layer

    log_w = sum(log_prob(model_tr, l) for l in range(arch.num_layers + 1))  # log p(x_n, h_k)
    return log_w - sum(log_prob(guide_tr, l) for l in range(1, arch.num_layers + 1))  # - log q(h_k | x_n)


def mean_field_gradient_moments(params: SBNParams, x, baseline: str = "none", *, amortised: bool = True,
                                index=None, subsample_size: int | None = None, **kwargs):
    """Moments of the one-sample gradient w.r.t. the mean-field guide's parameters
    (:func:`~sbn_ppl.inference.shared.score_function.numpyro.guide_gradient_moments` on this
    method's model and guide).

    ``x``: the batch (amortised, no ``index``); or the training set, of which ``index``
    picks the batch the way a training step does (its rows, scaled by ``N / B``); or, local
    without ``index``, the training set subsampled ``subsample_size`` at a time by the plate.
    """
    arch = params.architecture
    keys = mean_field_keys(arch) if amortised else local_keys(arch)
    if not amortised:
        params = with_local_params(params, len(x))
    if index is not None:
        guide = amortised_batch_guide if amortised else local_batch_guide
        rows = np.asarray(x)[np.asarray(index)]
        return guide_gradient_moments(batch_model, guide, params, rows, keys, baseline, index=jnp.asarray(index),
                                      num_data=len(x), **kwargs)
    if amortised:
        return guide_gradient_moments(numpyro_sbn.model, numpyro_sbn.mean_field_guide, params, x, keys, baseline,
                                      **kwargs)
    return guide_gradient_moments(numpyro_sbn.model, local_mean_field_guide, params, x, keys, baseline,
                                  subsample_size=subsample_size, **kwargs)
