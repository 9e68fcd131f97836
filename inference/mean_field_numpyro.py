"""Mean-field SVI for the SBN with NumPyro's ``SVI``, jit-compiled, and a TraceGraph ELBO with baselines.

The guides are those of the Pyro side (:mod:`sbn_ppl.inference.mean_field_pyro`): amortised
(:func:`sbn_ppl.models.numpyro_sbn.mean_field_guide`, the batch passed as the data) and
local (:func:`local_mean_field_guide`, free logits ``q_mf_local_<l>`` per training case,
subsampling in the ``"data"`` plate).

``numpyro.infer.TraceGraph_ELBO`` (numpyro 0.22) builds the Rao-Blackwellised
score-function surrogate but reads no baselines (its source has no ``infer["baseline"]``).
:class:`TraceGraphBaselineELBO` is the same estimator on the same NumPyro traces
(``get_importance_trace``, provenance-tracked downstream costs ``c_{l,i}`` summed to each
site's plates), with a baseline ``b`` subtracted from each site's learning signal::

    surrogate = sum_{sites, units} log q(h_{l,i} | x) * stop_gradient(c_{l,i} - b_{l,i})

* ``baseline="none"``: the stock estimator, except that (a) the score ``log q`` is not
  multiplied by the subsampling scale ``N / B`` (Pyro's convention: only the cost is
  scaled; the stock NumPyro surrogate scales both, so under a subsampled plate its guide
  gradient is ``N / B`` times too large) and (b) Bernoulli log-probabilities are taken in
  the softplus form, whose gradient is right at logits 0 (see :func:`_log_prob`).
* ``"decaying"``: Pyro's decaying average ``b <- beta b + (1 - beta) c`` (beta = 0.9), kept
  as NumPyro ``mutable`` state (``baseline_avg_<site>``, one entry per batch position and unit).
* ``"nvil"``: the input-dependent baseline ``b_l(x) = V_l tanh(U x + c) + d_l`` of Mnih & Gregor
  (2014, sec. 3.3), its parameters ``nvil_*`` trained with the guide by SVI's optimiser on
  ``sum (c - b)^2`` (added to the loss with zero value, so the loss stays ``-ELBO``).
"""
from __future__ import annotations

import functools
from collections import defaultdict
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.primitives
import numpyro.distributions as dist
import optax
from jax import random
from jax.lax import stop_gradient
from numpyro import handlers
from numpyro.infer import SVI
from numpyro.infer.elbo import ELBO, MultiFrameTensor, get_nonreparam_deps
from numpyro.infer.util import get_importance_trace

from sbn_ppl.inference.mean_field_local import GradientMoments, local_keys, with_local_params
from sbn_ppl.inference.checks import MEAN_FIELD_BASELINES, check_choice, check_mean_field_options
from sbn_ppl.architecture import site_name
from sbn_ppl.methods import Method
from sbn_ppl.models import numpyro_sbn
from sbn_ppl.params import SBNParams, mean_field_keys

BASELINES = MEAN_FIELD_BASELINES
OPTIMIZERS = ("adam", "sgd")
DEFAULTS = {"amortised": True, "lr": 3e-3, "batch_size": 100, "baseline": "nvil", "num_particles": 1,
            "optimizer": "adam"}
NVIL_HIDDEN = 100  # Mnih & Gregor 2014: one hidden layer of 100 tanh units
DECAY = 0.9  # Pyro's default baseline_beta


# -- the local guide -------------------------------------------------------------------------


def local_mean_field_guide(params: SBNParams, x=None, *, num_samples=None, subsample_size=None, observations=None):
    """Per-data-point mean field ``logit mu_{n,l} = q_mf_local_l[n]`` for the ``N`` rows of ``x``.

    :param x: the whole training matrix ``(N, D)``; the ``"data"`` plate draws a batch of
        ``subsample_size`` rows (the model, run against this guide, replays the indices).
    """
    del num_samples, observations
    if x is None:
        raise ValueError("the local mean-field guide needs the training data x")
    arch = params.architecture
    phi = numpyro_sbn._params(params, local_keys(arch))
    layers: list = [None] * (arch.num_layers + 1)
    with numpyro.plate("data", x.shape[-2], subsample_size=subsample_size, dim=-2) as idx:
        for l in range(1, arch.num_layers + 1):
            with numpyro.plate(f"units_{site_name(l)}", arch.sizes[l], dim=-1):
                logits = jnp.take(phi[f"q_mf_local_{l}"], idx, axis=0)  # logit mu_{n,l}, n in the batch
                layers[l] = numpyro.sample(site_name(l), dist.Bernoulli(logits=logits))
    return layers


# -- baselines -------------------------------------------------------------------------------


def nvil_init(arch, hidden: int = NVIL_HIDDEN, seed: int = 0) -> dict[str, np.ndarray]:
    """Initial NVIL baseline parameters: ``U ~ N(0, 1/D)``, zero output heads (so ``b = 0``)."""
    rng = np.random.default_rng(seed)
    p = {"nvil_U": rng.standard_normal((arch.visible_size, hidden)) / np.sqrt(arch.visible_size),
         "nvil_c": np.zeros(hidden)}
    for l, n in enumerate(arch.hidden_sizes, start=1):
        p[f"nvil_V_{l}"], p[f"nvil_d_{l}"] = np.zeros((hidden, n)), np.zeros(n)
    return {k: v.astype(np.float32) for k, v in p.items()}


def nvil_baseline(nvil: dict, x, layer: int):
    """``b_l(x) = tanh(x U + c) V_l + d_l``: ``(B, n_l)`` for a batch ``x`` ``(B, D)``."""
    return jnp.tanh(x @ nvil["nvil_U"] + nvil["nvil_c"]) @ nvil[f"nvil_V_{layer}"] + nvil[f"nvil_d_{layer}"]


def with_baselines(guide, baseline: str, arch, seed: int = 0):
    """``guide`` that also declares the baseline's state: ``nvil_*`` params or ``baseline_avg_<site>``.

    :param guide: a guide with the model's signature ``guide(params, x, ..., subsample_size=None)``.
    """
    check_choice("baseline", baseline, BASELINES)
    if baseline == "none":
        return guide
    init_nvil = nvil_init(arch, seed=seed) if baseline == "nvil" else None

    def guide_with_baselines(params, x=None, **kwargs):
        if baseline == "nvil":
            for k, v in init_nvil.items():
                numpyro.param(k, jnp.asarray(v))
        else:
            batch = kwargs.get("subsample_size") or x.shape[-2]
            for l in range(1, arch.num_layers + 1):
                numpyro.primitives.mutable(f"baseline_avg_{site_name(l)}", jnp.zeros((batch, arch.sizes[l])))
        return guide(params, x, **kwargs)

    return guide_with_baselines


def _log_prob(site, scaled: bool = True):
    """``log p`` of a sample site, Bernoulli sites in the softplus form ``-softplus(-(2 s - 1) a)``.

    NumPyro 0.22's ``BernoulliLogits.log_prob`` (``binary_cross_entropy_with_logits``, built on
    ``clip`` and ``abs``) has the wrong gradient at logits exactly 0 (``s`` instead of ``s - 1/2``),
    where zero-initialised logits start; the softplus form is right everywhere.
    """
    fn = site["fn"]
    base = fn.base_dist if isinstance(fn, dist.ExpandedDistribution) else fn
    if isinstance(base, dist.BernoulliLogits):
        lp = jnp.broadcast_to(numpyro_sbn.bernoulli_log_prob(site["value"], base.logits), jnp.shape(site["log_prob"]))
    else:
        lp = fn.log_prob(site["value"])
    return lp * site["scale"] if scaled and site["scale"] is not None else lp


class TraceGraphBaselineELBO(ELBO):
    """``TraceGraph_ELBO`` with baselines (see the module docstring for the exact estimator).

    :param baseline: ``"none"``, ``"decaying"`` or ``"nvil"``; the guide must be wrapped by
        :func:`with_baselines` with the same choice.
    :param num_particles: samples per step (vectorised); they share the baseline.
    """

    can_infer_discrete = True

    def __init__(self, baseline: str = "none", num_particles: int = 1, beta: float = DECAY):
        check_choice("baseline", baseline, BASELINES)
        super().__init__(num_particles=num_particles)
        self.baseline, self.beta = baseline, beta

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
                elbo = elbo + jnp.sum(_log_prob(site))  # log p(x, h), scaled by N / B under subsampling
                for key in model_deps[name]:
                    costs[key].add((site["cond_indep_stack"], site["log_prob"]))
        for name, site in guide_tr.items():
            if site["type"] == "sample":
                elbo = elbo - stop_gradient(jnp.sum(site["log_prob"]))  # - log q(h | x); its gradient is 0 in mean
                for key in guide_deps[name]:
                    costs[key].add((site["cond_indep_stack"], -site["log_prob"]))
        baseline_loss, signals = jnp.array(0.0), {}
        for node, cost in costs.items():
            site = guide_tr[node]
            c = cost.sum_to(site["cond_indep_stack"])  # learning signal c_{l,i}: (B, n_l)
            b = self._baseline(node, param_map, model_tr)
            score = _log_prob(site, scaled=False)  # log q(h_{l,i} | x), unscaled (Pyro's score_function)
            surrogate = jnp.sum(score * stop_gradient(c - b))  # REINFORCE with baseline
            elbo = elbo + surrogate - stop_gradient(surrogate)
            if self.baseline == "nvil":
                baseline_loss = baseline_loss + jnp.sum((stop_gradient(c) - b) ** 2)  # fit b to the signal
            signals[node] = c
        return elbo, baseline_loss, signals

    def _baseline(self, node, param_map, model_tr):
        if self.baseline == "decaying":
            return param_map[f"baseline_avg_{node}"]
        if self.baseline == "nvil":
            return nvil_baseline(param_map, model_tr["x"]["value"], int(node[1:]))
        return 0.0

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        def particle(k):
            return self._single_particle(k, param_map, model, guide, args, kwargs)

        if self.num_particles == 1:  # no vmap: XLA's CPU matmuls are slower with a unit batch axis
            elbo, baseline_loss, signals = jax.tree.map(lambda v: v[None], particle(rng_key))
        else:
            elbo, baseline_loss, signals = jax.vmap(particle)(random.split(rng_key, self.num_particles))
        elbo, baseline_loss = elbo.mean(), baseline_loss.mean()
        loss = -elbo + baseline_loss - stop_gradient(baseline_loss)  # value -ELBO, gradient also fits b
        mutable = None
        if self.baseline == "decaying":
            mutable = {f"baseline_avg_{n}": self.beta * param_map[f"baseline_avg_{n}"]
                       + (1 - self.beta) * stop_gradient(c.mean(0)) for n, c in signals.items()}
        return {"loss": loss, "mutable_state": mutable}


# -- the training loop (pure functions around numpyro.infer.SVI) -----------------------------


class MeanFieldSVIState(NamedTuple):
    svi_state: Any  # numpyro.infer.svi.SVIState (optimiser state, mutable baseline state, key)
    key: jax.Array  # draws the mini-batches
    params: SBNParams  # initial values and architecture (the numpyro.param sites' init)
    train: jax.Array  # (N, D)


class MeanFieldSVI(NamedTuple):
    """The static half of a run: the ``SVI`` object and its jit-compiled step."""

    svi: SVI
    step: Any  # (state) -> (state, loss per data point)
    options: dict


def build(params: SBNParams, num_data: int, seed: int = 0, **options) -> MeanFieldSVI:
    """``SVI(model, guide + baselines, optax optimiser, TraceGraphBaselineELBO)`` and its jitted step."""
    opts = _check_options({**DEFAULTS, **options})
    arch = params.architecture
    guide = numpyro_sbn.mean_field_guide if opts["amortised"] else local_mean_field_guide
    optim = (optax.adam if opts["optimizer"] == "adam" else optax.sgd)(opts["lr"])
    svi = SVI(numpyro_sbn.model, with_baselines(guide, opts["baseline"], arch, seed), optim,
              TraceGraphBaselineELBO(opts["baseline"], opts["num_particles"]))
    batch = min(opts["batch_size"], num_data)

    def step(state: MeanFieldSVIState):
        key, sub = random.split(state.key)
        if opts["amortised"]:  # the batch is the data: loss = -(sum of the batch's ELBOs)
            x = jnp.take(state.train, random.choice(sub, num_data, (batch,), replace=False), axis=0)
            svi_state, loss = svi.update(state.svi_state, state.params, x)
            per_point = loss / batch
        else:  # subsampled plate: loss = -(N / B) * (sum of the batch's ELBOs)
            svi_state, loss = svi.update(state.svi_state, state.params, state.train, subsample_size=batch)
            per_point = loss / num_data
        return state._replace(svi_state=svi_state, key=key), per_point

    return MeanFieldSVI(svi, jax.jit(step), opts)


def init_state(runner: MeanFieldSVI, params: SBNParams, train, seed: int = 0) -> MeanFieldSVIState:
    """The first state: ``SVI.init`` on a batch, with everything seeded by ``seed``."""
    train = jnp.asarray(np.asarray(train), dtype=jnp.float32)
    if runner.options["amortised"]:
        if not params.has_guide("mean_field"):
            raise ValueError("amortised mean field needs the q_mf_ keys (SBNParams.init(..., guide=('mean_field',)))")
    else:
        params = with_local_params(params, train.shape[0])
    params = jax.tree.map(jnp.asarray, params)
    batch = min(runner.options["batch_size"], train.shape[0])
    svi_key, data_key = random.split(random.PRNGKey(seed))
    if runner.options["amortised"]:
        svi_state = runner.svi.init(svi_key, params, train[:batch])
    else:
        svi_state = runner.svi.init(svi_key, params, train, subsample_size=batch)
    return MeanFieldSVIState(svi_state, data_key, params, train)


def current_params(runner: MeanFieldSVI, state: MeanFieldSVIState) -> SBNParams:
    """The trained parameters as :class:`~sbn_ppl.SBNParams` (the local variant drops the amortised keys)."""
    learned = runner.svi.get_params(state.svi_state)
    like = SBNParams({k: np.asarray(v) for k, v in state.params.items()}, state.params.architecture.connectivity)
    out = SBNParams.from_mapping({k: np.asarray(v) for k, v in learned.items()}, like=like)
    if not runner.options["amortised"]:
        out = SBNParams({k: v for k, v in out.items() if k not in mean_field_keys(out.architecture)},
                        out.architecture.connectivity)
    return out


def mc_elbo(params: SBNParams, x, num_particles: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo ELBO of the amortised guide per data point, from NumPyro traces.

    ``(1/K) sum_k [log p(x_n, h_k) - log q(h_k | x_n)]``, ``h_k ~ q(. | x_n)`` (a ``particles``
    plate); returns the estimates ``(N,)`` and their standard errors ``(N,)``.
    """
    if num_particles < 2:
        raise ValueError(f"num_particles must be at least 2 (for a standard error), got {num_particles}")
    x = jnp.asarray(np.asarray(x), dtype=jnp.float32)
    log_w = np.asarray(_mc_log_weights(jax.tree.map(jnp.asarray, params), x, random.PRNGKey(seed), num_particles),
                       np.float64)
    return log_w.mean(0), log_w.std(0, ddof=1) / np.sqrt(num_particles)


@functools.partial(jax.jit, static_argnums=3)
def _mc_log_weights(params, x, key, num_particles):
    """``log p(x_n, h_k) - log q(h_k | x_n)``, ``h_k ~ q``: ``(K, N)``."""
    arch = params.architecture
    with numpyro.plate("particles", num_particles, dim=-3):
        guide_tr = handlers.trace(handlers.seed(numpyro_sbn.mean_field_guide, key)).get_trace(params, x)
        model_tr = handlers.trace(handlers.replay(numpyro_sbn.model, guide_tr)).get_trace(params, x)

    def log_prob(tr, l):
        return tr[site_name(l)]["fn"].log_prob(tr[site_name(l)]["value"]).sum(-1)  # (K, N)

    log_w = sum(log_prob(model_tr, l) for l in range(arch.num_layers + 1))  # log p(x_n, h_k)
    return log_w - sum(log_prob(guide_tr, l) for l in range(1, arch.num_layers + 1))  # - log q(h_k | x_n)


# -- gradient variance (tests and benchmark) -------------------------------------------------


def guide_gradient_moments(params: SBNParams, x, baseline: str = "none", *, num_samples: int = 200,
                           warmup: int = 200, lr: float = 1e-2, seed: int = 0,
                           amortised: bool = True, subsample_size: int | None = None,
                           warmup_pool=None) -> GradientMoments:
    """Moments of the single-sample gradient of :class:`TraceGraphBaselineELBO` w.r.t. the guide.

    The model and guide parameters stay at ``params``; ``warmup`` steps first adapt only the
    baseline (decaying average, or Adam on the NVIL net's least-squares loss). ``x`` is the
    batch (amortised) or the whole data set subsampled by ``subsample_size`` (local).
    ``warmup_pool`` (amortised): warm up on random batches of ``len(x)`` rows of this data, as
    in training, then measure on ``x``; by default the warm-up uses ``x`` itself.
    """
    x = jnp.asarray(np.asarray(x), dtype=jnp.float32)
    pool = x if warmup_pool is None else jnp.asarray(np.asarray(warmup_pool), dtype=jnp.float32)
    guide = numpyro_sbn.mean_field_guide if amortised else local_mean_field_guide
    if not amortised:
        params = with_local_params(params, x.shape[0])
    params = jax.tree.map(jnp.asarray, params)
    kwargs = {} if amortised else {"subsample_size": subsample_size}
    guide = with_baselines(guide, baseline, params.architecture, seed)
    elbo = TraceGraphBaselineELBO(baseline)
    svi = SVI(numpyro_sbn.model, guide, optax.sgd(0.0), elbo)
    init = svi.init(random.PRNGKey(seed), params, x, **kwargs)
    pm, mutable = svi.get_params(init), init.mutable_state or {}
    keys = [k for k in pm if k.startswith("q_")]
    nvil_opt = optax.adam(lr)

    def one(carry, key, data=x):
        pm, mutable, opt_state = carry

        def loss(p):
            out = elbo.loss_with_mutable_state(key, {**p, **mutable}, numpyro_sbn.model, guide, params, data, **kwargs)
            return out["loss"], out["mutable_state"]

        grads, new_mutable = jax.grad(loss, has_aux=True)(pm)
        nvil = {k: v for k, v in pm.items() if k.startswith("nvil_")}
        updates, opt_state = nvil_opt.update({k: grads[k] for k in nvil}, opt_state)
        pm = {**pm, **optax.apply_updates(nvil, updates)}  # only the baseline moves
        return (pm, new_mutable or {}, opt_state), {k: -grads[k] for k in keys}  # ascent direction

    @jax.jit
    def moments(carry, warm_keys, sample_keys):
        def warm(c, key):
            if warmup_pool is None:
                return one(c, key)
            batch = jnp.take(pool, random.choice(random.fold_in(key, 1), pool.shape[0], (x.shape[0],), replace=False), 0)
            return one(c, key, batch)

        carry, _ = jax.lax.scan(warm, carry, warm_keys)
        frozen = lambda c, key: (c, one(c, key)[1])  # noqa: E731 - the baseline stays as warmed up
        return jax.lax.scan(frozen, carry, sample_keys)[1]

    opt_state = nvil_opt.init({k: v for k, v in pm.items() if k.startswith("nvil_")})
    keys_all = random.split(random.PRNGKey(seed + 1), warmup + num_samples)
    samples = moments((pm, mutable, opt_state), keys_all[:warmup], keys_all[warmup:])
    stacked = {k: np.asarray(v, np.float64) for k, v in samples.items()}
    return GradientMoments.from_samples(stacked)


# -- checks and the Method record ------------------------------------------------------------


def _check_options(opts: dict) -> dict:
    return check_mean_field_options(opts, DEFAULTS, OPTIMIZERS)


class _RunState(NamedTuple):
    runner: MeanFieldSVI
    state: MeanFieldSVIState


def _init(params: SBNParams, train, seed: int = 0, **options) -> _RunState:
    runner = build(params, np.asarray(train).shape[0], seed, **options)
    return _RunState(runner, init_state(runner, params, train, seed))


def _run(rs: _RunState, num_steps: int) -> tuple[_RunState, dict]:
    state, total = rs.state, 0.0
    for _ in range(num_steps):
        state, loss = rs.runner.step(state)
        total = total + loss
    return rs._replace(state=state), {"objective": -float(total) / max(num_steps, 1)}


def _bound(rs: _RunState, x, num_particles: int = 100, seed: int = 0) -> np.ndarray:
    if not rs.runner.options["amortised"]:
        return None  # local guide: parameters only for its training points (score it with exact or AIS)
    return mc_elbo(current_params(rs.runner, rs.state), x, num_particles, seed)[0]


def method() -> Method:
    """``mean-field-svi`` on the NumPyro backend (``--amortised`` default, ``--local``)."""
    return Method(
        name="mean-field-svi",
        backend="numpyro",
        init=_init,
        run=_run,
        get_params=lambda rs: current_params(rs.runner, rs.state),
        guide="mean_field",
        bound=_bound,
        defaults=dict(DEFAULTS),
        description="mean-field guide by NumPyro SVI (jit) + TraceGraph ELBO with baselines (score function)",
    )
