"""Reweighted wake-sleep and classic wake-sleep for Pyro, weighting particles per data point.

:class:`ReweightedWakeSleep` is used exactly like ``pyro.infer.ReweightedWakeSleep``
(with ``pyro.infer.SVI`` or your own loop and two optimisers): ``loss_and_grads(model,
guide, *args, **kwargs)`` runs the user's Pyro model and guide through traces, with the K
particles vectorised by a plate at ``dim = -(max_plate_nesting + 1)``, and returns
``(wake_theta_loss, phi_loss)``. The one difference is the weighting (Bornschein & Bengio
2015, eq. 6; Le et al. 2019): each data point ``n`` of the ``data_plate`` gets its own
normalised weights

    log w_nk = log p(x_n, h_nk) - log q(h_nk | x_n),   h_nk ~ q(. | x_n)
    wake-theta loss = -s sum_n log (1/K) sum_k w_nk                  (IWAE bound)
    wake-phi loss   = -s sum_n sum_k w~_nk log q(h_nk | x_n),  w~_nk = w_nk / sum_j w_nj
    sleep-phi loss  = -s sum_n (1/S) sum_s log q(h_ns | x_ns),  (x, h)_ns ~ p
    phi loss        = insomnia * wake-phi + (1 - insomnia) * sleep-phi

where ``s`` is the data plate's scale (full size / subsample size), so mini-batches are
unbiased for the full-data objective. The stock class sums every site over the whole
batch before weighting, i.e. weights the K particles for the batch as *one* observation
(its docstring: "Mini-batch training is not supported yet").

:class:`WakeSleep` is Hinton et al. (1995): K = 1 and sleep-phi only.
The factories at the bottom wrap both, and the stock class, as :class:`sbn_ppl.base.methods.Method`
records (``rws``, ``wake-sleep``, ``pyro-rws``; options: this folder's ``__init__``): the runner
owns the loop, the batches, the param store scope and the RNG; a step runs one
``loss_and_grads`` on the runner's batch and steps one optimiser for theta and one for phi.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.elbo import ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import site_is_subsample
from pyro.util import check_model_guide_match, warn_if_nan

from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.inference.rws import RWS_OPTIONS, STOCK_OPTIONS, WAKE_SLEEP_OPTIONS
from sbn_ppl.base.methods import Batch, Method
from sbn_ppl.models import pyro_sbn
from sbn_ppl.base.optimizers import torch_optimizer
from sbn_ppl.base.options import optional_positive_int, positive_int, unit_interval
from sbn_ppl.base.params import SBNParams, generative_keys, recognition_keys

_PARTICLES, _SLEEP_PARTICLES = "num_particles_vectorized", "num_sleep_particles_vectorized"


class ReweightedWakeSleep(ELBO):
    """Reweighted wake-sleep with per-data-point importance weights.

    :param int num_particles: K, importance samples per data point (>= 1).
    :param float insomnia: weight of wake-phi against sleep-phi, in [0, 1] (1: wake-phi only).
    :param int num_sleep_particles: S, dreams ``(x, h) ~ p`` per data point for sleep-phi
        (default K).
    :param max_plate_nesting: the model's own plate nesting (1 for our SBN, 2 with
        ``unit_plates=True``); guessed by
        one run of the guide and model when left infinite. The particle plate sits at
        ``dim = -(max_plate_nesting + 1)``.
    :param str data_plate: name of the plate whose members are the data points; every
        sample site must sit inside it. ``None`` weights the whole batch jointly (the stock
        behaviour).
    :param bool model_has_params: as in Pyro; with ``False`` and ``insomnia == 0`` the wake
        phase is skipped.
    """

    def __init__(self, num_particles: int = 2, insomnia: float = 1.0, num_sleep_particles: int | None = None,
                 max_plate_nesting: float = float("inf"), data_plate: str | None = "data",
                 model_has_params: bool = True):
        num_particles = positive_int(num_particles, "num_particles")
        insomnia = unit_interval(insomnia, "insomnia")
        num_sleep_particles = optional_positive_int(num_sleep_particles, "num_sleep_particles")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True)
        self.insomnia = float(insomnia)
        self.num_sleep_particles = int(num_particles if num_sleep_particles is None else num_sleep_particles)
        self.data_plate = data_plate
        self.model_has_params = model_has_params
        self.model_plate_nesting = max_plate_nesting  # without the particle plate (ELBO adds one)

    # -- traces --------------------------------------------------------------------------
    def _nesting(self, model, guide, args, kwargs) -> int:
        if self.model_plate_nesting == float("inf"):
            with poutine.block():
                guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
                model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
            dims = [f.dim for t in (model_trace, guide_trace) for s in t.nodes.values()
                    if s["type"] == "sample" for f in s["cond_indep_stack"] if f.vectorized]
            self.model_plate_nesting = -min(dims) if dims else 0
        return int(self.model_plate_nesting)

    def _in_particles(self, fn, name: str, size: int, nesting: int):
        def wrapped(*args, **kwargs):
            with pyro.plate(name, size, dim=-(nesting + 1)):
                return fn(*args, **kwargs)
        return wrapped

    def _per_point(self, trace, nesting: int):
        """``sum`` of a trace's log-probabilities over everything but the particle and data
        dims: ``(K, B)`` (``(K, 1)`` with ``data_plate=None``), and the data plate's scale."""
        total, scale = 0.0, None
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
            if site["mask"] is not None:
                log_p = scale_and_mask(log_p, 1.0, site["mask"])
            pad = nesting + 1 - log_p.dim()
            if pad < 0:
                raise ValueError(f"site {name!r} has more batch dims ({log_p.dim()}) than the plates allow "
                                 f"(max_plate_nesting {nesting} + particles); enumeration is not supported")
            data_dim = None  # counted from the right, like a plate's dim
            if self.data_plate is not None:
                frame = next((f for f in site["cond_indep_stack"] if f.name == self.data_plate), None)
                if frame is None:
                    raise ValueError(f"site {name!r} is outside the data plate {self.data_plate!r}: per-data-point "
                                     "weights need every sample site inside it (or data_plate=None)")
                data_dim = frame.dim
            if pad:
                log_p = log_p.reshape((1,) * pad + log_p.shape)
            # keep the particle dim (leftmost, -(nesting + 1)) and the data dim; sum the rest
            others = tuple(d for d in range(-nesting, 0) if d != data_dim)
            if others:
                log_p = log_p.sum(others)
            total = total + (log_p if data_dim is not None else log_p.reshape(-1, 1))
            site_scale = float(site["scale"])
            if scale is not None and not math.isclose(site_scale, scale, rel_tol=1e-6):
                raise ValueError(f"site {name!r} has scale {site_scale}, others {scale}: per-data-point weights "
                                 "need one scale for the whole data plate")
            scale = site_scale
        return total, (1.0 if scale is None else scale)

    def _get_trace(self, model, guide, args, kwargs):
        """The vectorised guide trace (K particles, detached) and the model replayed on it."""
        nesting = self._nesting(model, guide, args, kwargs)
        k = self.num_particles
        guide_trace = poutine.trace(self._in_particles(guide, _PARTICLES, k, nesting)).get_trace(*args, **kwargs)
        guide_trace.detach_()
        model_trace = poutine.trace(
            poutine.replay(self._in_particles(model, _PARTICLES, k, nesting), trace=guide_trace)
        ).get_trace(*args, **kwargs)
        if is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace, nesting + 1)
        return model_trace, guide_trace

    def _wake(self, model, guide, args, kwargs):
        """``h ~ q`` (K particles per data point), the model replayed on it:
        ``log p(x_n, h_nk)`` and ``log q(h_nk | x_n)`` as ``(K, B)``, and the data scale."""
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        nesting, k = int(self.model_plate_nesting), self.num_particles
        log_p, scale = self._per_point(model_trace, nesting)
        log_q, _ = self._per_point(guide_trace, nesting)
        return log_p.expand(k, -1), log_q.expand(k, -1), scale

    def _sleep(self, model, guide, args, kwargs):
        """Sleep-phi: ``(x, h) ~ p`` (S dreams per data point), ``-(1/S) sum log q(h | x)``."""
        nesting = self._nesting(model, guide, args, kwargs)
        dream = poutine.uncondition(model)
        if self.num_sleep_particles > 1:
            dream = self._in_particles(dream, _SLEEP_PARTICLES, self.num_sleep_particles, nesting)
            guide = self._in_particles(guide, _SLEEP_PARTICLES, self.num_sleep_particles, nesting)
        model_trace = poutine.trace(dream).get_trace(*args, **kwargs)
        model_trace.detach_()
        observations = {}
        for name in model_trace.stochastic_nodes + model_trace.observation_nodes:
            if "was_observed" in model_trace.nodes[name]["infer"]:
                model_trace.nodes[name]["is_observed"] = True
                observations[name] = model_trace.nodes[name]["value"]
        guide_trace = poutine.trace(poutine.replay(guide, trace=model_trace)).get_trace(
            *args, **{**kwargs, "observations": observations})
        if is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace)
        log_q = sum(site["log_prob_sum"] for site in _log_prob_sites(guide_trace))
        return -log_q / self.num_sleep_particles

    # -- the objective -------------------------------------------------------------------
    def log_weights(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """``log w_nk = log p(x_n, h_nk) - log q(h_nk | x_n)``, ``h_nk ~ q``: ``(K, B)``, no gradient."""
        with torch.no_grad():
            log_p, log_q, _ = self._wake(model, guide, args, kwargs)
        return log_p - log_q

    def _loss(self, model, guide, args, kwargs):
        wake_theta_loss = phi_loss = torch.zeros(())
        if self.model_has_params or self.insomnia > 0:
            log_p, log_q, scale = self._wake(model, guide, args, kwargs)
            log_w = log_p - log_q.detach()  # gradients reach theta only through log p
            log_sum_w = torch.logsumexp(log_w, dim=0)  # (B,): log sum_k w_nk, per data point
            # IWAE bound per data point: log (1/K) sum_k w_nk
            wake_theta_loss = -scale * (log_sum_w - math.log(self.num_particles)).sum()
            warn_if_nan(wake_theta_loss, "wake theta loss")
        if self.insomnia > 0:
            w_norm = (log_w - log_sum_w).exp().detach()  # w~_nk, normalised over k for each n
            phi_loss = -self.insomnia * scale * (w_norm * log_q).sum()
        if self.insomnia < 1:
            phi_loss = phi_loss + (1.0 - self.insomnia) * self._sleep(model, guide, args, kwargs)
        warn_if_nan(phi_loss, "phi loss")
        return wake_theta_loss, phi_loss

    def loss(self, model, guide, *args, **kwargs):
        """``(wake_theta_loss, phi_loss)`` as tensors, without gradients."""
        with torch.no_grad():
            return self._loss(model, guide, args, kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """``(wake_theta_loss, phi_loss)`` as floats; ``.grad`` of theta holds the wake-theta
        gradient and ``.grad`` of phi the phi gradient (each loss touches only its own)."""
        wake_theta_loss, phi_loss = self._loss(model, guide, args, kwargs)
        total = wake_theta_loss + phi_loss
        if total.requires_grad:
            total.backward()
        return wake_theta_loss.detach().item(), phi_loss.detach().item()


class WakeSleep(ReweightedWakeSleep):
    """Classic wake-sleep (Hinton, Dayan, Frey & Neal 1995): wake, ``h ~ q(.|x)`` and a step
    up ``grad_theta log p(x, h)``; sleep, ``(x, h) ~ p`` and a step up ``grad_phi log q(h|x)``.

    Exactly :class:`ReweightedWakeSleep` with K = 1 and ``insomnia = 0``; its wake-theta loss
    is minus the one-sample ELBO estimate ``log p(x, h) - log q(h|x)``.
    """

    def __init__(self, num_sleep_particles: int = 1, max_plate_nesting: float = float("inf"),
                 data_plate: str | None = "data"):
        super().__init__(num_particles=1, insomnia=0.0, num_sleep_particles=num_sleep_particles,
                         max_plate_nesting=max_plate_nesting, data_plate=data_plate)


def _log_prob_sites(trace):
    trace.compute_log_prob(lambda name, site: not site_is_subsample(site))
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def effective_sample_size(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``(sum_k w_k)^2 / sum_k w_k^2`` along ``dim``, computed in log space."""
    return torch.exp(2 * torch.logsumexp(log_w, dim) - torch.logsumexp(2 * log_w, dim))


# -- the methods -------------------------------------------------------------------------------


class MethodState(NamedTuple):
    """A Pyro RWS run between steps (its parameters live in the runner's param store scope).

    ``objective``: the ELBO-like object (ours, or ``pyro.infer.ReweightedWakeSleep``);
    ``model``, ``guide``: what it runs (ours: scaled by ``1/N``); ``like``: the initial
    values, generative and recognition arrays only (the architecture, and what ``pyro.param``
    starts from); ``train``: the ``(N, D)`` training set the batches index; ``optimizers``:
    ``(theta, phi)``, theta stepped on the wake-theta gradient, phi on the phi gradient;
    ``k``: the bound's particles; ``seed``: seeds the bound.
    """

    objective: Any
    model: Any
    guide: Any
    like: SBNParams
    train: torch.Tensor
    optimizers: tuple
    k: int
    seed: int


def init_state(objective, seed: int, params: SBNParams, options: dict, train, *, per_point: bool = True,
               k: int) -> MethodState:
    """The state for ``params`` (a recognition network at its default initialisation if
    ``params`` has none) and the checked ``options`` (``lr``, ``optimizer``): the generative
    and recognition ``pyro.param`` sites in the current param store, and one optimiser each
    for theta and phi. ``per_point``: scale the model and guide by ``1/N`` (ours: the batch
    is the data plate's ``subsample``, Pyro scales it by ``N/B``, so the losses are means
    per data point); else the stock path, which gets the batch as its data."""
    arch = params.architecture
    x = torch.as_tensor(validate_binary(train, width=arch.visible_size, name="training data"),
                        dtype=torch.get_default_dtype())
    params = params.with_guide("recognition", int(seed))
    theta_keys, phi_keys = generative_keys(arch), recognition_keys(arch)
    # the generative and the trained guide's arrays only: no other guide's keys (issue 14)
    like = params.only("recognition")

    def unconstrained(names):
        # copies (torch.tensor): the optimisers update the store in place, never the caller's arrays
        return [pyro.param(name, torch.tensor(like[name], dtype=torch.get_default_dtype())).unconstrained()
                for name in names]

    make = torch_optimizer(options["optimizer"], options["lr"], options["lr_half_life"])
    optimizers = (make(unconstrained(theta_keys)), make(unconstrained(phi_keys)))
    model, guide = pyro_sbn.model, pyro_sbn.recognition_guide
    if per_point:  # the batch's terms carry N / B (the data plate): 1 / N makes them a mean per point
        model, guide = poutine.scale(model, 1.0 / len(x)), poutine.scale(guide, 1.0 / len(x))
    return MethodState(objective, model, guide, like, x, optimizers, int(k), int(seed))


def _descend(optimizers, scale: float = 1.0) -> None:
    for opt in optimizers:
        if scale != 1.0:
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(scale)
        opt.step()
        opt.zero_grad(set_to_none=True)


def step(seed: int, state: MethodState, batch: Batch):
    """One RWS step on the runner's ``batch``: the model and guide get the whole training set
    and ``subsample=batch.index``; ``info`` per data point (``objective``: the batch's mean
    ``log (1/K) sum_k w_nk``; ``wake_theta_loss`` = -objective; ``phi_loss``)."""
    theta_loss, phi_loss = state.objective.loss_and_grads(state.model, state.guide, state.like, state.train,
                                                          subsample=batch.index)
    _descend(state.optimizers)
    return state, {"objective": -theta_loss, "wake_theta_loss": theta_loss, "phi_loss": phi_loss}


def stock_step(seed: int, state: MethodState, batch: Batch):
    """One step of ``pyro.infer.ReweightedWakeSleep``: the batch rows are its data set (it has
    no mini-batches). Its losses sum over the batch; the gradients are divided by ``B`` (not
    the sites scaled, which would temper its weights) so ``lr`` means what it means for the
    per-point methods, and ``info`` is per data point (``objective``: its batch-joint bound
    ``log (1/K) sum_k prod_n w_nk``, over ``B``)."""
    x = torch.as_tensor(batch.x, dtype=state.train.dtype)
    theta_loss, phi_loss = state.objective.loss_and_grads(state.model, state.guide, state.like, x)
    b = len(x)
    _descend(state.optimizers, 1.0 / b)
    return state, {"objective": -theta_loss / b, "wake_theta_loss": theta_loss / b, "phi_loss": phi_loss / b}


def get_params(state: MethodState) -> SBNParams:
    """The generative and recognition parameters from the current param store (no other guide's)."""
    current = pyro_sbn.read_params(state.like)
    return SBNParams({name: current[name] for name in state.like}, state.like.architecture.connectivity)


def bound(state: MethodState, x, chunk: int = 1000) -> np.ndarray:
    """Per-data-point IWAE bound ``log (1/K) sum_k w_nk`` with the method's K, seeded (its own
    torch RNG stream: the caller's is left as it was)."""
    x = torch.as_tensor(validate_binary(x, width=state.like.architecture.visible_size, name="data"),
                        dtype=torch.get_default_dtype())
    estimator = ReweightedWakeSleep(num_particles=state.k, max_plate_nesting=1)
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(state.seed + 1)
        for start in range(0, len(x), chunk):
            rows = x[start:start + chunk]
            log_w = estimator.log_weights(pyro_sbn.model, pyro_sbn.recognition_guide, state.like, rows)
            out.append(torch.logsumexp(log_w, 0) - math.log(state.k))
    return torch.cat(out).double().numpy()


def rws_method() -> Method:
    """Our per-data-point RWS (:class:`ReweightedWakeSleep`) on the Pyro model and recognition
    guide; the runner's batch is the data plate's ``subsample``. ``info`` (per data point):
    ``objective``, the batch's mean ``log (1/K) sum_k w_nk``; ``wake_theta_loss``; ``phi_loss``."""

    def init(seed, params, options, train):
        objective = ReweightedWakeSleep(num_particles=options["k"], insomnia=options["insomnia"],
                                        num_sleep_particles=options["num_sleep_particles"], max_plate_nesting=1)
        return init_state(objective, seed, params, options, train, k=options["k"])

    return Method("rws", "pyro", init, step, get_params, guide="recognition", bound=bound, options=RWS_OPTIONS,
                  description="reweighted wake-sleep (Bornschein & Bengio 2015), per-data-point weights, Pyro")


def wake_sleep_method() -> Method:
    """Classic wake-sleep (:class:`WakeSleep`) on the Pyro model and recognition guide;
    ``info["objective"]`` is the batch's mean one-sample ELBO estimate ``log p(x, h) - log q(h|x)``."""

    def init(seed, params, options, train):
        return init_state(WakeSleep(max_plate_nesting=1), seed, params, options, train, k=1)

    return Method("wake-sleep", "pyro", init, step, get_params, guide="recognition", bound=bound,
                  options=WAKE_SLEEP_OPTIONS, description="wake-sleep (Hinton et al. 1995), Pyro")


def stock_rws_method() -> Method:
    """Pyro's own ``pyro.infer.ReweightedWakeSleep`` on our model and guide (two optimisers,
    vectorised particles, the guide's ``observations`` keyword for sleep-phi), the batch rows
    passed as the data set. It weights the particles for each batch jointly."""

    def init(seed, params, options, train):
        if options["k"] < 2:
            raise ValueError(f"pyro.infer.ReweightedWakeSleep needs K >= 2 particles, got {options['k']}")
        objective = pyro.infer.ReweightedWakeSleep(num_particles=options["k"], insomnia=options["insomnia"],
                                                   vectorize_particles=True, max_plate_nesting=1)
        return init_state(objective, seed, params, options, train, per_point=False, k=options["k"])

    return Method("pyro-rws", "pyro", init, stock_step, get_params, guide="recognition", bound=bound,
                  options=STOCK_OPTIONS, description="pyro.infer.ReweightedWakeSleep (stock; batch-joint weights)")
