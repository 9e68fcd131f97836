"""Mean-field SVI for the SBN with Pyro's own machinery: ``SVI`` + ``TraceGraph_ELBO``.

The guide ``q(h | x) = prod_{l,i} Bernoulli(h_{l,i} | mu_{l,i})`` comes in two variants:

* amortised: ``logit mu_l = q_mf_b_l + x @ q_mf_W_0_l``
  (:func:`sbn_ppl.models.pyro_sbn.mean_field_guide`), trained on mini-batches passed as
  the data (the ``"data"`` plate is the batch);
* local: one free logit per training case and unit, ``logit mu_{n,l} = q_mf_local_l[n]``
  (:func:`local_mean_field_guide`), with subsampling in the ``"data"`` plate (Pyro scales
  the batch's terms by ``N / B`` and replays the guide's indices into the model).

All hidden sites are discrete, so ``TraceGraph_ELBO`` uses the score-function
(REINFORCE) estimator, Rao-Blackwellised per unit by the plates: the learning signal of
``h_{l,i}`` is ``log p(h_{l,i} | pa) - log q(h_{l,i})`` plus the log-probabilities of the
layers it feeds (Schulman et al. 2015). Variance reduction goes through each guide site's
``infer["baseline"]``, set by :func:`with_baselines` with ``pyro.poutine.infer_config``
(the guide itself is unchanged):

* ``"decaying"``: Pyro's decaying average of the learning signal (``beta = 0.9``);
* ``"nvil"``: an input-dependent baseline ``b_l(x)``, a net with one tanh hidden layer
  (Mnih & Gregor 2014, section 3.3), fitted by Pyro to the learning signal by least squares.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, NamedTuple

import numpy as np
import pyro
import pyro.optim
import torch
from pyro import poutine

from sbn_ppl.inference.mean_field_local import GradientMoments, local_keys, with_local_params
from sbn_ppl.inference.checks import MEAN_FIELD_BASELINES, check_choice, check_mean_field_options
from sbn_ppl.architecture import site_name
from sbn_ppl.methods import Method
from sbn_ppl.models import pyro_sbn
from sbn_ppl.params import SBNParams, mean_field_keys

BASELINES = MEAN_FIELD_BASELINES
OPTIMIZERS = ("adam", "sgd")
DEFAULTS = {"amortised": True, "lr": 3e-3, "batch_size": 100, "baseline": "nvil", "num_particles": 1,
            "optimizer": "adam", "jit": False}
NVIL_HIDDEN = 100  # Mnih & Gregor 2014: one hidden layer of 100 tanh units
DECAY = 0.9  # Pyro's default baseline_beta


# -- the local guide -------------------------------------------------------------------------


def local_mean_field_guide(params: SBNParams, x=None, *, num_samples=None, subsample_size=None, subsample=None,
                           observations=None):
    """Per-data-point mean field: ``logit mu_{n,l} = q_mf_local_l[n]``, for the ``N`` rows of ``x``.

    :param params: :class:`~sbn_ppl.SBNParams` with ``q_mf_local_<l>`` of shape ``(N, n_l)``
        (initial values; see :func:`with_local_params`).
    :param x: the whole training matrix ``(N, D)``; the ``"data"`` plate subsamples it.
    :param subsample_size: mini-batch size ``B`` of the ``"data"`` plate.
    :param subsample: the batch's indices (``(B,)`` long tensor), or ``None`` to let the plate draw them.
    """
    del num_samples, observations  # the model's other arguments: local logits exist only for x
    if x is None:
        raise ValueError("the local mean-field guide needs the training data x")
    arch = params.architecture
    phi = pyro_sbn._params(params, local_keys(arch))
    if any(v.shape[0] != x.shape[-2] for v in phi.values()):
        raise ValueError(f"local logits cover {phi[local_keys(arch)[0]].shape[0]} data points, x has {x.shape[-2]}")
    layers: list = [None] * (arch.num_layers + 1)
    with pyro.plate("data", x.shape[-2], subsample_size=subsample_size, subsample=subsample, dim=-2) as idx:
        for l in range(1, arch.num_layers + 1):
            with pyro.plate(f"units_{site_name(l)}", arch.sizes[l], dim=-1):
                logits = phi[f"q_mf_local_{l}"].index_select(0, idx)  # logit mu_{n,l}, n in the batch
                layers[l] = pyro.sample(site_name(l), pyro.distributions.Bernoulli(logits=logits))
    return layers


def _model(params, x=None, *, num_samples=None, subsample_size=None, subsample=None):
    """The SBN with the guides' signature (``subsample`` comes back by replay of the guide's plate)."""
    return pyro_sbn.model(params, x, num_samples=num_samples, subsample_size=subsample_size)


# -- baselines -------------------------------------------------------------------------------


class NVILBaseline(torch.nn.Module):
    """Input-dependent baseline ``b_l(x)``, one output per hidden unit (Mnih & Gregor 2014, sec. 3.3).

    ``b_l(x) = V_l tanh(U x + c) + d_l``; the output heads start at zero, so training starts
    from the plain score-function estimator.
    """

    def __init__(self, arch, hidden: int = NVIL_HIDDEN, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.hidden = torch.nn.Linear(arch.visible_size, hidden)
        self.heads = torch.nn.ModuleList(torch.nn.Linear(hidden, n) for n in arch.hidden_sizes)
        with torch.no_grad():
            self.hidden.weight.normal_(0.0, arch.visible_size**-0.5, generator=g)
            self.hidden.bias.zero_()
            for head in self.heads:
                head.weight.zero_()
                head.bias.zero_()

    def forward(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """``b_layer(x)``: ``(B, n_layer)`` for a batch ``x`` of shape ``(B, D)``."""
        return self.heads[layer - 1](torch.tanh(self.hidden(x)))


def with_baselines(guide, baseline: str, net: NVILBaseline | None = None, beta: float = DECAY):
    """``guide`` with its hidden sites' ``infer["baseline"]`` set (``pyro.poutine.infer_config``).

    :param guide: a guide with the model's signature ``guide(params, x, ..., subsample=None)``.
    :param baseline: ``"none"``, ``"decaying"`` (Pyro's decaying average) or ``"nvil"`` (``net(x)``).
    :param net: the :class:`NVILBaseline` (``baseline="nvil"``); registered with ``pyro.module``.
    """
    check_choice("baseline", baseline, BASELINES)
    if baseline == "none":
        return guide
    if baseline == "nvil" and net is None:
        raise ValueError("baseline='nvil' needs an NVILBaseline net")

    def guide_with_baselines(params, x=None, **kwargs):
        batch = x if kwargs.get("subsample") is None else x.index_select(-2, kwargs["subsample"])

        def config(msg):
            if msg["is_observed"] or not msg["name"].startswith("h"):
                return {}
            if baseline == "decaying":
                return {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": beta}}
            return {"baseline": {"nn_baseline": functools.partial(net, layer=int(msg["name"][1:])),
                                 "nn_baseline_input": batch}}

        if net is not None:
            pyro.module("nvil_baseline", net)
        return poutine.infer_config(guide, config)(params, x, **kwargs)

    return guide_with_baselines


# -- the training loop (a thin adapter around pyro.infer.SVI) --------------------------------


class MeanFieldSVIState:
    """Everything one Pyro mean-field run holds: its own param store, RNG state and ``SVI``."""

    def __init__(self, params, train, svi, store, rng, options):
        self.params, self.train, self.svi, self.store, self.rng, self.options = params, train, svi, store, rng, options


@contextlib.contextmanager
def _own_rng(state: MeanFieldSVIState):
    """Run with the state's RNG and param store, leaving the caller's global ones as they were."""
    outer = pyro.util.get_rng_state()
    pyro.util.set_rng_state(state.rng)
    try:
        with pyro.get_param_store().scope(state.store):
            yield
    finally:
        state.rng = pyro.util.get_rng_state()
        pyro.util.set_rng_state(outer)


def init(params: SBNParams, train, seed: int = 0, **options) -> MeanFieldSVIState:
    """Set up ``SVI(model, guide, optimizer, TraceGraph_ELBO(num_particles))`` for ``train`` ``(N, D)``."""
    opts = _check_options({**DEFAULTS, **options})
    # pyro.param wraps the initial arrays without copying and Adam updates in place: give it copies
    params = SBNParams({k: np.array(v) for k, v in params.items()}, params.architecture.connectivity)
    x = torch.as_tensor(np.asarray(train), dtype=torch.get_default_dtype())
    if opts["amortised"]:
        if not params.has_guide("mean_field"):
            raise ValueError("amortised mean field needs the q_mf_ keys (SBNParams.init(..., guide=('mean_field',)))")
        guide = pyro_sbn.mean_field_guide
    else:
        params = with_local_params(params, x.shape[0])
        guide = local_mean_field_guide
    outer = pyro.util.get_rng_state()
    pyro.set_rng_seed(seed)
    net = NVILBaseline(params.architecture, seed=seed) if opts["baseline"] == "nvil" else None
    optim = (pyro.optim.Adam if opts["optimizer"] == "adam" else pyro.optim.SGD)({"lr": opts["lr"]})
    guide = with_baselines(guide, opts["baseline"], net)
    if opts["jit"]:  # same estimator, compiled by torch.jit.trace: tensors only as arguments
        batch = min(opts["batch_size"], x.shape[0])
        kw = (lambda idx: {}) if opts["amortised"] else (lambda idx: {"subsample_size": batch, "subsample": idx})
        model_fn = lambda x, idx=None: _model(params, x, **kw(idx))  # noqa: E731
        guide_fn = lambda x, idx=None: guide(params, x, **kw(idx))  # noqa: E731
        elbo = pyro.infer.JitTraceGraph_ELBO(num_particles=opts["num_particles"], max_plate_nesting=2,
                                             ignore_jit_warnings=True)
        svi = pyro.infer.SVI(model_fn, guide_fn, optim, elbo)
    else:
        elbo = pyro.infer.TraceGraph_ELBO(num_particles=opts["num_particles"], max_plate_nesting=2)
        svi = pyro.infer.SVI(_model, guide, optim, elbo)
    store = {"params": {}, "constraints": {}}  # this run's own param store (pyro ParamStoreDict.scope)
    state = MeanFieldSVIState(params, x, svi, store, pyro.util.get_rng_state(), opts)
    pyro.util.set_rng_state(outer)
    return state


def run(state: MeanFieldSVIState, num_steps: int) -> tuple[MeanFieldSVIState, dict]:
    """``num_steps`` SVI steps on random mini-batches; ``objective`` is the mean per-point ELBO estimate."""
    n, batch = state.train.shape[0], min(state.options["batch_size"], state.train.shape[0])
    total = 0.0
    with _own_rng(state):
        for _ in range(num_steps):
            idx = torch.randperm(n)[:batch]
            jit = state.options["jit"]
            if state.options["amortised"]:  # the batch is the data: -loss = sum of the batch's ELBOs
                xb = state.train.index_select(0, idx)
                total += (state.svi.step(xb) if jit else state.svi.step(state.params, xb)) / batch
            elif jit:  # subsampled plate: -loss = (N / B) * sum of the batch's ELBOs
                total += state.svi.step(state.train, idx) / n
            else:
                total += state.svi.step(state.params, state.train, subsample_size=batch, subsample=idx) / n
    return state, {"objective": -total / max(num_steps, 1)}


def get_params(state: MeanFieldSVIState) -> SBNParams:
    """The trained parameters (the local variant drops the untrained amortised ``q_mf_`` keys)."""
    with _own_rng(state):
        current = pyro_sbn.read_params(state.params)
    if not state.options["amortised"]:
        current = SBNParams({k: v for k, v in current.items() if k not in mean_field_keys(current.architecture)},
                            current.architecture.connectivity)
    return current


def mc_elbo(params: SBNParams, x, num_particles: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo ELBO of the amortised guide, per data point, from Pyro traces.

    ``(1/K) sum_k [log p(x_n, h_k) - log q(h_k | x_n)]``, ``h_k ~ q(. | x_n)``, vectorised with a
    ``particles`` plate; returns the estimates ``(N,)`` and their standard errors ``(N,)``.
    """
    if num_particles < 2:
        raise ValueError(f"num_particles must be at least 2 (for a standard error), got {num_particles}")
    x = torch.as_tensor(np.asarray(x), dtype=torch.get_default_dtype())
    outer = pyro.util.get_rng_state()
    pyro.set_rng_seed(seed)
    try:  # in a fresh param store, so the values are those of `params`
        with pyro.get_param_store().scope(), torch.no_grad(), pyro.plate("particles", num_particles, dim=-3):
            guide_tr = poutine.trace(pyro_sbn.mean_field_guide).get_trace(params, x)
            model_tr = poutine.trace(poutine.replay(pyro_sbn.model, trace=guide_tr)).get_trace(params, x)
    finally:
        pyro.util.set_rng_state(outer)
    arch = params.architecture
    log_w = sum(model_tr.nodes[site_name(l)]["fn"].log_prob(model_tr.nodes[site_name(l)]["value"]).sum(-1)
                for l in range(arch.num_layers + 1))  # log p(x_n, h_k): (K, N)
    log_w = log_w - sum(guide_tr.nodes[site_name(l)]["fn"].log_prob(guide_tr.nodes[site_name(l)]["value"]).sum(-1)
                        for l in range(1, arch.num_layers + 1))  # - log q(h_k | x_n)
    log_w = log_w.detach().double().numpy()
    return log_w.mean(0), log_w.std(0, ddof=1) / np.sqrt(num_particles)


def bound(state: MeanFieldSVIState, x, num_particles: int = 100, seed: int = 0) -> np.ndarray:
    """The amortised guide's Monte Carlo ELBO on ``x`` (a lower bound on ``log p(x_n)`` in expectation)."""
    if not state.options["amortised"]:
        return None  # local guide: parameters only for its training points (score it with exact or AIS)
    return mc_elbo(get_params(state), x, num_particles, seed)[0]


# -- gradient variance (tests and benchmark) -------------------------------------------------


def guide_gradient_moments(params: SBNParams, x, baseline: str = "none", *, num_samples: int = 200,
                           warmup: int = 200, lr: float = 1e-2, seed: int = 0, warmup_pool=None) -> GradientMoments:
    """Moments of the single-sample ``TraceGraph_ELBO`` gradient w.r.t. the amortised guide's parameters.

    All parameters stay at ``params``. First ``warmup`` evaluations adapt only the baseline
    (the decaying average updates itself; the NVIL net takes Adam steps on its own least-squares
    loss); then ``num_samples`` gradients of the ELBO of the batch ``x`` are collected.
    ``warmup_pool``: warm up on random batches of ``len(x)`` rows of this data (as in training).
    """
    check_choice("baseline", baseline, BASELINES)
    x = torch.as_tensor(np.asarray(x), dtype=torch.get_default_dtype())
    pool = None if warmup_pool is None else torch.as_tensor(np.asarray(warmup_pool), dtype=x.dtype)
    outer = pyro.util.get_rng_state()
    pyro.set_rng_seed(seed)
    net = NVILBaseline(params.architecture, seed=seed) if baseline == "nvil" else None
    guide = with_baselines(pyro_sbn.mean_field_guide, baseline, net)
    elbo = pyro.infer.TraceGraph_ELBO(max_plate_nesting=2)
    keys = mean_field_keys(params.architecture)
    samples: dict[str, list] = {k: [] for k in keys}
    try:
        with pyro.get_param_store().scope():
            opt = torch.optim.Adam(net.parameters(), lr=lr) if net is not None else None
            frozen = {}
            for i in range(warmup + num_samples):
                store = pyro.get_param_store()
                if i == warmup:  # the decaying average stays as warmed up while gradients are collected
                    frozen = {k: store[k].detach().clone() for k in store.keys() if k.startswith("__baseline_avg")}
                for k, v in frozen.items():
                    store[k] = v
                for p in store.values():
                    p.grad = None
                data = x if pool is None or i >= warmup else pool[torch.randperm(len(pool))[: len(x)]]
                elbo.loss_and_grads(_model, guide, params, data)
                if i >= warmup:
                    for k in keys:
                        samples[k].append(-store.get_param(k).grad.double().numpy().copy())  # ascent
                elif opt is not None:
                    opt.step()
    finally:
        pyro.util.set_rng_state(outer)
    stacked = {k: np.stack(v) for k, v in samples.items()}
    return GradientMoments.from_samples(stacked)


# -- checks and the Method record ------------------------------------------------------------


def _check_options(opts: dict) -> dict:
    opts = check_mean_field_options(opts, DEFAULTS, OPTIMIZERS)
    if not isinstance(opts["jit"], (bool, np.bool_)):
        raise ValueError(f"jit must be True or False, got {opts['jit']!r}")
    if opts["jit"] and opts["baseline"] == "decaying":
        raise ValueError("jit=True cannot use baseline='decaying': Pyro's decaying average writes the param store "
                         "inside the traced step, which torch.jit.trace does not replay; use 'nvil' or 'none'")
    return {**opts, "jit": bool(opts["jit"])}


def method() -> Method:
    """``mean-field-svi`` on the Pyro backend (``--amortised`` default, ``--local``)."""
    return Method(
        name="mean-field-svi",
        backend="pyro",
        init=init,
        run=run,
        get_params=get_params,
        guide="mean_field",
        bound=bound,
        defaults=dict(DEFAULTS),
        description="mean-field guide by Pyro SVI + TraceGraph_ELBO (score function with baselines)",
    )
