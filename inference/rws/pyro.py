"""Reweighted wake-sleep and classic wake-sleep as Pyro ``ELBO`` objects (the math: this
folder's ``__init__``; the twin: ``numpyro.py``), and the stock class as ``pyro-rws``.

Own tricks: :class:`ReweightedWakeSleep` is used exactly like ``pyro.infer.ReweightedWakeSleep``
(``loss_and_grads(model, guide, ...) -> (wake_theta_loss, phi_loss)``, two optimisers), with
the K particles a plate at ``dim = -(max_plate_nesting + 1)`` and every site reduced to one
number per particle and data point of the ``data_plate``, each loss times the plate's scale
``s`` (full size / subsample size). :class:`WakeSleep` is K = 1 and sleep-phi only. The
stock class has no mini-batches: its step takes the batch's rows as its data set and
divides the gradients by B (not the sites' scales, which would temper its weights).
"""
from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.elbo import ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import site_is_subsample
from pyro.util import check_model_guide_match, warn_if_nan

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.base.options import optional_positive_int, positive_int, unit_interval
from sbn_ppl.inference.shared.gradient.pyro import (GradientState, gradient_kernel, loss_guide_gradient,
                                                    per_point_programs, store_start)
from sbn_ppl.inference.shared.particles.pyro import (in_particles, log_mean_exp, log_weights, particle_traces,
                                                      per_point_log_prob)
from sbn_ppl.models import pyro_sbn

_SLEEP_PARTICLES = "num_sleep_particles_vectorized"


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

    def _get_trace(self, model, guide, args, kwargs):
        """The vectorised guide trace (K particles, detached) and the model replayed on it."""
        nesting = self._nesting(model, guide, args, kwargs)
        return particle_traces(model, guide, self.num_particles, nesting, args, kwargs)

    def _wake(self, model, guide, args, kwargs):
        """``h ~ q`` (K particles per data point), the model replayed on it:
        ``log p(x_n, h_nk)`` and ``log q(h_nk | x_n)`` as ``(K, B)``, and the data scale."""
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        nesting, k = int(self.model_plate_nesting), self.num_particles
        log_p, scale = per_point_log_prob(model_trace, nesting, self.data_plate)
        log_q, _ = per_point_log_prob(guide_trace, nesting, self.data_plate)
        return log_p.expand(k, -1), log_q.expand(k, -1), scale

    def _sleep(self, model, guide, args, kwargs):
        """Sleep-phi: ``(x, h) ~ p`` (S dreams per data point), ``-(1/S) sum log q(h | x)``."""
        nesting = self._nesting(model, guide, args, kwargs)
        dream = poutine.uncondition(model)
        if self.num_sleep_particles > 1:
            dream = in_particles(dream, self.num_sleep_particles, nesting, _SLEEP_PARTICLES)
            guide = in_particles(guide, self.num_sleep_particles, nesting, _SLEEP_PARTICLES)
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


# -- the methods -------------------------------------------------------------------------------


def _per_point_update(objective):
    """``update(seed, state, batch) -> info`` of our (reweighted) wake-sleep: the model and
    guide get the whole training set, ``subsample=batch.index`` and a scale of ``1/N`` (the
    data plate scales the batch's terms by ``N / B``: the losses are means per data point)."""

    def update(seed: int, state: GradientState, batch: Batch):
        model, guide = per_point_programs(len(state.train))
        theta_loss, phi_loss = objective.loss_and_grads(model, guide, state.like, state.train, subsample=batch.index)
        return {"objective": -theta_loss, "wake_theta_loss": theta_loss, "phi_loss": phi_loss}

    return update


def _stock_update(objective):
    """``update`` of ``pyro.infer.ReweightedWakeSleep``: the batch rows are its data set (it has
    no mini-batches). Its losses sum over the batch; the gradients are divided by ``B`` (not
    the sites scaled, which would temper its weights) so ``lr`` means what it means for the
    per-point methods, and ``info`` is per data point (``objective``: its batch-joint bound
    ``log (1/K) sum_k prod_n w_nk``, over ``B``)."""

    def update(seed: int, state: GradientState, batch: Batch):
        x = torch.as_tensor(batch.x, dtype=state.train.dtype)
        theta_loss, phi_loss = objective.loss_and_grads(pyro_sbn.model, pyro_sbn.recognition_guide, state.like, x)
        b = len(x)
        for optimizer in state.optimizers:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(1.0 / b)
        return {"objective": -theta_loss / b, "wake_theta_loss": theta_loss / b, "phi_loss": phi_loss / b}

    return update


def _iwae_bound(k: int):
    """``bound(state, x)``: the per-data-point IWAE bound ``log (1/K) sum_k w_nk`` with the
    method's K, on the current parameters."""

    def bound(state: GradientState, x):
        log_w = log_weights(pyro_sbn.model, pyro_sbn.recognition_guide, state.like, x, num_particles=k)
        return log_mean_exp(log_w)

    return bound


def _kernel(arch: Architecture, options: dict, update, k: int, objective=None) -> Kernel:
    """Theta and phi in the param store, one optimiser each (each stepped on its own loss);
    with our ``objective``, ``guide_gradient``: one draw of its phi step (wake-phi / sleep-phi)."""
    def loss(state: GradientState, model, guide, x):
        return sum(objective._loss(model, guide, (state.like, x), {}))  # wake-theta carries no phi

    return gradient_kernel(arch, store_start(arch, options, split=True), update, _iwae_bound(k),
                           guide_gradient=None if objective is None else loss_guide_gradient(arch, loss))


def build_rws(arch: Architecture, options: dict) -> Kernel:
    """Our per-data-point RWS (:class:`ReweightedWakeSleep`) on the Pyro model and recognition
    guide; the runner's batch is the data plate's ``subsample``. ``info`` (per data point):
    ``objective``, the batch's mean ``log (1/K) sum_k w_nk``; ``wake_theta_loss``; ``phi_loss``."""
    objective = ReweightedWakeSleep(num_particles=options["k"], insomnia=options["insomnia"],
                                    num_sleep_particles=options["num_sleep_particles"], max_plate_nesting=1)
    return _kernel(arch, options, _per_point_update(objective), options["k"], objective)


def build_wake_sleep(arch: Architecture, options: dict) -> Kernel:
    """Classic wake-sleep (:class:`WakeSleep`) on the Pyro model and recognition guide;
    ``info["objective"]`` is the batch's mean one-sample ELBO estimate ``log p(x, h) - log q(h|x)``."""
    objective = WakeSleep(max_plate_nesting=1)
    return _kernel(arch, options, _per_point_update(objective), 1, objective)


def build_stock_rws(arch: Architecture, options: dict) -> Kernel:
    """Pyro's own ``pyro.infer.ReweightedWakeSleep`` on our model and guide (two optimisers,
    vectorised particles, the guide's ``observations`` keyword for sleep-phi), the batch rows
    passed as the data set. It weights the particles for each batch jointly."""
    if options["k"] < 2:
        raise ValueError(f"pyro.infer.ReweightedWakeSleep needs K >= 2 particles, got {options['k']}")
    objective = pyro.infer.ReweightedWakeSleep(num_particles=options["k"], insomnia=options["insomnia"],
                                               vectorize_particles=True, max_plate_nesting=1)
    return _kernel(arch, options, _stock_update(objective), options["k"])
