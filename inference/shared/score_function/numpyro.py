"""The score-function ELBO with baselines on NumPyro traces (the math: this folder's
``__init__``; the twin: ``pyro.py``).

Own tricks: :class:`TraceGraphBaselineELBO` is ``numpyro.infer.TraceGraph_ELBO`` (numpyro 0.22)
on the same traces (``get_importance_trace``, provenance-tracked costs ``c_s`` summed to each
guide site's plates) plus the baseline it reads none of, ``surrogate = sum_s log q(h_s | .)
sg(c_s - b_s)``; it follows Pyro where the stock NumPyro one differs: the score ``log q`` is
not multiplied by a subsampling scale ``N / B`` (only the cost is; the stock surrogate scales
both, so under a subsampled plate its guide gradient is ``N / B`` times too large).
:func:`with_baselines` declares the baselines' state in the guide:

* ``"decaying"``: NumPyro ``mutable`` state ``baseline_avg_<site>``, one average per
  position of the ``"data"`` plate (as Pyro's); a batch of ``B`` uses the first ``B``
  positions, so the state keeps its shape;
* ``"nvil"``: ``numpyro.param`` sites ``nvil_*`` (:func:`~sbn_ppl.inference.shared.score_function.nvil_init`),
  trained by SVI's optimiser on ``sum (c - b)^2``, added to the loss with zero value (the
  loss stays ``-ELBO``).

Each guide site is one hidden layer ``h<l>`` inside the ``"data"`` plate (the layout of
:mod:`sbn_ppl.models.numpyro_sbn`'s guides), so ``c_s`` and ``b_s`` are ``(B,)`` per layer;
the NVIL net reads the model's observed ``"x"``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.primitives
import optax
from jax import random
from jax.lax import stop_gradient
from numpyro import handlers
from numpyro.infer import SVI
from numpyro.infer.elbo import ELBO, MultiFrameTensor, get_nonreparam_deps
from numpyro.infer.util import get_importance_trace

from . import DECAY, NVIL_HIDDEN, SIGNAL_DECAY, GradientMoments, check_baseline, nvil_init


# -- the NVIL baseline net and the learning-signal scaling ------------------------------------


def nvil_baseline(nvil, x, layer: int):
    """``b_l(x) = tanh(x U + c) . v_l + d_l``: ``(B,)`` for a batch ``x`` ``(B, D)``."""
    return jnp.tanh(x @ nvil["nvil_U"] + nvil["nvil_c"]) @ nvil[f"nvil_v_{layer}"] + nvil[f"nvil_d_{layer}"]


class SignalStats(NamedTuple):
    """Running mean and variance of a centred learning signal (one per site)."""

    mean: jax.Array
    var: jax.Array


def signal_stats_init(dtype=jnp.float32) -> SignalStats:
    return SignalStats(jnp.zeros((), dtype), jnp.zeros((), dtype))


def normalised_signal(signal, stats: SignalStats, decay: float = SIGNAL_DECAY):
    """NVIL's variance normalisation (Mnih & Gregor 2014, sec. 3.2 and Algorithm 1).

    ``m <- a m + (1 - a) mean(l)``, ``v <- a v + (1 - a) var(l)`` over the batch, then
    ``(l - m) / max(1, sqrt(v))``, for ``l`` the signal already less its input-dependent
    baseline. Returns ``(normalised signal, new stats)``; no gradient flows through it.
    """
    signal = stop_gradient(signal)
    mean = decay * stats.mean + (1 - decay) * signal.mean()
    var = decay * stats.var + (1 - decay) * signal.var()
    return (signal - mean) / jnp.maximum(1.0, jnp.sqrt(var)), SignalStats(mean, var)


# -- the guide's baseline state ----------------------------------------------------------------


def with_baselines(guide, baseline: str, arch, seed: int = 0, hidden: int = NVIL_HIDDEN,
                   positions: int | None = None):
    """``guide`` that also declares the baseline's state (``nvil_*`` params or ``baseline_avg_h<l>``).

    :param guide: a guide with the model's signature ``guide(params, x, ...)``, one site
        ``h<l>`` per hidden layer inside the ``"data"`` plate.
    :param baseline: ``"none"``, ``"decaying"`` or ``"nvil"`` (the same as the ELBO's).
    :param seed: seeds the NVIL net's initial values (``SVI.init(..., init_params=...)`` may
        replace them, as for any ``numpyro.param``).
    :param positions: how many ``"data"``-plate positions the decaying averages cover (at
        least the batch size; a batch of ``B`` uses the first ``B``); default: ``x``'s rows.
    """
    check_baseline(baseline)
    if baseline == "none":
        return guide
    init_nvil = {k: jnp.asarray(v) for k, v in nvil_init(arch, hidden, seed).items()} if baseline == "nvil" else {}

    def guide_with_baselines(params, x=None, **kwargs):
        for k, v in init_nvil.items():
            numpyro.param(k, v)
        if baseline == "decaying":
            size = positions or (x.shape[-2] if x is not None else kwargs["num_samples"])
            for l in range(1, arch.num_layers + 1):
                numpyro.primitives.mutable(f"baseline_avg_h{l}", jnp.zeros((size,)))
        return guide(params, x, **kwargs)

    return guide_with_baselines


# -- the ELBO ----------------------------------------------------------------------------------


class TraceGraphBaselineELBO(ELBO):
    """NumPyro's ``TraceGraph_ELBO`` with baselines (the estimator: see the module docstring).

    :param baseline: ``"none"``, ``"decaying"`` or ``"nvil"``; the guide must be wrapped by
        :func:`with_baselines` with the same choice.
    :param num_particles: samples per step (vectorised); they share the baseline.
    :param beta: the decaying average's ``beta``.

    ``loss`` is ``-ELBO`` (summed over the data plate, scaled by ``N / B`` under
    subsampling, averaged over particles); its gradient is the score-function estimate.
    """

    can_infer_discrete = True

    def __init__(self, baseline: str = "none", num_particles: int = 1, beta: float = DECAY):
        super().__init__(num_particles=num_particles)
        self.baseline, self.beta = check_baseline(baseline), beta

    def _single_particle(self, rng_key, param_map, model, guide, args, kwargs):
        model_key, guide_key = random.split(rng_key)
        model_tr, guide_tr = get_importance_trace(handlers.seed(model, model_key), handlers.seed(guide, guide_key),
                                                  args, kwargs, param_map)
        latents = {n: s["value"] for n, s in guide_tr.items() if s["type"] == "sample" and not s["is_observed"]}
        model_deps, guide_deps = get_nonreparam_deps(model, guide, args, kwargs, param_map, latents=latents)
        elbo = jnp.array(0.0)
        costs: dict[str, MultiFrameTensor] = defaultdict(MultiFrameTensor)
        for name, site in model_tr.items():
            if site["type"] == "sample":
                elbo = elbo + jnp.sum(site["log_prob"])  # log p(x, h), scaled by N / B under subsampling
                for key in model_deps[name]:
                    costs[key].add((site["cond_indep_stack"], site["log_prob"]))
        for name, site in guide_tr.items():
            if site["type"] == "sample":
                elbo = elbo - stop_gradient(jnp.sum(site["log_prob"]))  # - log q: its gradient is 0 in mean
                for key in guide_deps[name]:
                    costs[key].add((site["cond_indep_stack"], -site["log_prob"]))
        baseline_loss, signals = jnp.array(0.0), {}
        for node, cost in costs.items():
            site = guide_tr[node]
            c = cost.sum_to(site["cond_indep_stack"])  # the learning signal c_s: (B,) for a layer site
            b = self._baseline(node, param_map, model_tr, c)
            score = site["fn"].log_prob(site["value"])  # log q(h_s | .), unscaled (Pyro's score_function)
            surrogate = jnp.sum(score * stop_gradient(c - b))  # REINFORCE with a baseline
            elbo = elbo + surrogate - stop_gradient(surrogate)
            if self.baseline == "nvil":
                baseline_loss = baseline_loss + jnp.sum((stop_gradient(c) - b) ** 2)  # fit b to the signal
            signals[node] = c
        return elbo, baseline_loss, signals

    def _baseline(self, node, param_map, model_tr, c):
        if self.baseline == "decaying":
            return param_map[f"baseline_avg_{node}"][: c.shape[-1]]  # the batch's positions
        if self.baseline == "nvil":
            return nvil_baseline(param_map, model_tr["x"]["value"], int(node[1:]))
        return 0.0

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        def particle(key):
            return self._single_particle(key, param_map, model, guide, args, kwargs)

        if self.num_particles == 1:  # no vmap: XLA's CPU matmuls are slower with a unit batch axis
            elbo, baseline_loss, signals = jax.tree.map(lambda v: v[None], particle(rng_key))
        else:
            elbo, baseline_loss, signals = jax.vmap(particle)(random.split(rng_key, self.num_particles))
        elbo, baseline_loss = elbo.mean(), baseline_loss.mean()
        loss = -elbo + baseline_loss - stop_gradient(baseline_loss)  # value -ELBO; the gradient also fits b
        mutable = None
        if self.baseline == "decaying":
            mutable = {}
            for n, c in signals.items():
                avg = param_map[f"baseline_avg_{n}"]
                batch = c.shape[-1]
                new = self.beta * avg[:batch] + (1 - self.beta) * stop_gradient(c.mean(0))
                mutable[f"baseline_avg_{n}"] = avg.at[:batch].set(new)
        return {"loss": loss, "mutable_state": mutable}


# -- gradient variance (tests and benchmarks) --------------------------------------------------


def guide_gradient_moments(model, guide, params, x, keys, baseline: str = "none", *, num_samples: int = 200,
                           warmup: int = 200, lr: float = 1e-2, seed: int = 0, warmup_pool=None,
                           **kwargs) -> GradientMoments:
    """Moments of the one-sample gradient of :class:`TraceGraphBaselineELBO` w.r.t. guide parameters.

    The model's and guide's parameters stay at ``params``. First ``warmup`` steps adapt only
    the baseline (the decaying average updates itself; the NVIL net takes Adam(``lr``) steps
    on its least-squares loss), then ``num_samples`` gradients (ascent direction) of the
    ELBO of ``model(params, x, **kwargs)`` are taken with the baseline frozen.

    :param keys: the guide parameters whose gradients are collected.
    :param warmup_pool: warm up on random batches of ``len(x)`` rows of this data (as in
        training), then measure on ``x``; by default the warm-up uses ``x`` itself.
    """
    x = jnp.asarray(np.asarray(x), dtype=jnp.float32)
    pool = x if warmup_pool is None else jnp.asarray(np.asarray(warmup_pool), dtype=jnp.float32)
    params = jax.tree.map(jnp.asarray, params)
    guide = with_baselines(guide, baseline, params.architecture, seed)
    elbo = TraceGraphBaselineELBO(baseline)
    svi = SVI(model, guide, optax.sgd(0.0), elbo)
    init = svi.init(random.PRNGKey(seed), params, x, **kwargs)
    pm, mutable = svi.get_params(init), init.mutable_state or {}
    nvil_opt = optax.adam(lr)

    def one(carry, key, data):
        pm, mutable, opt_state = carry

        def loss(p):
            out = elbo.loss_with_mutable_state(key, {**p, **mutable}, model, guide, params, data, **kwargs)
            return out["loss"], out["mutable_state"]

        grads, new_mutable = jax.grad(loss, has_aux=True)(pm)
        nvil = {k: v for k, v in pm.items() if k.startswith("nvil_")}
        updates, opt_state = nvil_opt.update({k: grads[k] for k in nvil}, opt_state)
        pm = {**pm, **optax.apply_updates(nvil, updates)}  # only the baseline moves
        return (pm, new_mutable or {}, opt_state), {k: -grads[k] for k in keys}

    @jax.jit
    def moments(carry, warm_keys, sample_keys):
        def warm(c, key):
            if warmup_pool is None:
                return one(c, key, x)
            rows = random.choice(random.fold_in(key, 1), pool.shape[0], (x.shape[0],), replace=False)
            return one(c, key, jnp.take(pool, rows, 0))

        carry, _ = jax.lax.scan(warm, carry, warm_keys)
        frozen = lambda c, key: (c, one(c, key, x)[1])  # noqa: E731 - the baseline stays as warmed up
        return jax.lax.scan(frozen, carry, sample_keys)[1]

    opt_state = nvil_opt.init({k: v for k, v in pm.items() if k.startswith("nvil_")})
    keys_all = random.split(random.PRNGKey(seed + 1), warmup + num_samples)
    samples = moments((pm, mutable, opt_state), keys_all[:warmup], keys_all[warmup:])
    return GradientMoments.from_samples({k: np.asarray(v) for k, v in samples.items()})
