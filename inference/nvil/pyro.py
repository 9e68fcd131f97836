"""NVIL for Pyro as Pyro's own ``TraceGraph_ELBO`` plus what it lacks (the math: this folder's
``__init__``; the twin: ``numpyro.py``).

Own tricks: Pyro's provenance tracking finds exactly the local signals ``c_l`` on our guide
(one ``.to_event(1)`` site per layer, no unit plates), and each hidden site's
``infer={"baseline": {"nn_baseline": b_l, "nn_baseline_input": u_l}}`` (set by
:func:`with_baselines`) carries the baseline nets, which ``pyro.module`` registers for SVI's
optimiser. :class:`NVIL` replaces only ``TraceGraph_ELBO``'s last step (costs into score
terms) to add what Pyro lacks:

* the running ``C_l, v_l`` and the normalisation, kept in the param store
  (``__nvil_signal_mean_<site>``, ``__nvil_signal_var_<site>``) like Pyro's decaying averages,
  so scoped, saved and reset with it (Pyro's ``use_decaying_avg_baseline`` is another thing:
  a per-batch-position average of the raw cost);
* per-data-point signals under subsampling: Pyro scales each cost by its site's scale, so its
  baseline would fit ``(N/B) c``; :class:`NVIL` builds the signal from the unscaled
  log-densities and applies the data plate's one scale ``s`` to the score term and the
  baseline loss, so a mini-batch is still unbiased.

    net = LayerBaselines(arch)                       # b_l, one small tanh net per guide layer
    svi = pyro.infer.SVI(model, with_baselines(recognition_guide, net), optim, loss=NVIL())
"""
from __future__ import annotations

import functools
from collections import defaultdict
from typing import NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.enum import get_importance_trace
from pyro.infer.tracegraph_elbo import TraceGraph_ELBO, _get_baseline_options
from pyro.infer.util import MultiFrameTensor, is_validation_enabled
from pyro.ops.provenance import detach_provenance, get_provenance
from pyro.poutine.messenger import Messenger
from pyro.util import check_if_enumerated, warn_if_nan

from sbn_ppl.base.architecture import Architecture, site_name
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.inference.nvil import BOUND_SAMPLES, baseline_init, signal_terms
from sbn_ppl.inference.shared.gradient.pyro import GradientState, gradient_kernel, per_point_programs, store_start
from sbn_ppl.inference.shared.particles.pyro import per_point_log_prob
from sbn_ppl.models import pyro_sbn

# -- the baselines ---------------------------------------------------------------------------


class LayerBaselines(torch.nn.Module):
    """The input-dependent baselines ``b_s(u) = tanh(sum_m h_m U_m_s + e_s) . w_s + d_s``, one
    net per learning signal ``s``, starting from :func:`~sbn_ppl.inference.nvil.baseline_init`
    (the JAX twin's arrays for the same seed). ``b = 0`` at the start.

    :param arch: the SBN's architecture; ``hidden``: tanh units per net;
    :param local: one net per guide layer, reading that layer's guide input (else one net on ``x``).
    """

    def __init__(self, arch, hidden: int = 100, seed: int = 0, local: bool = True):
        super().__init__()
        self.terms = signal_terms(arch, local)
        init = baseline_init(arch, hidden, seed, local)
        self.weights = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.get_default_dtype())) for k, v in init.items()})

    def forward(self, inputs, signal: int) -> torch.Tensor:
        """``b_signal(u)`` ``(B,)``, for ``inputs`` the layers ``terms.inputs[signal - 1]``, each ``(B, n_m)``."""
        w, s = self.weights, signal
        pre = sum(h @ w[f"nvil_U_{m}_{s}"] for m, h in zip(self.terms.inputs[s - 1], inputs))
        return torch.tanh(pre + w[f"nvil_e_{s}"]) @ w[f"nvil_w_{s}"] + w[f"nvil_d_{s}"]


class _Values(Messenger):
    """Records every sample site's value as the guide draws it (later layers' baseline inputs)."""

    def __init__(self, values: dict):
        super().__init__()
        self.values = values

    def _pyro_post_sample(self, msg):
        self.values[msg["name"]] = msg["value"]


def with_baselines(guide, net: LayerBaselines):
    """``guide`` with Pyro's ``infer["baseline"]`` (``nn_baseline``, ``nn_baseline_input``) on
    the hidden sites that carry a signal's baseline: each layer with local signals, ``h1`` alone
    with the global signal. Uses ``pyro.poutine.infer_config``; the guide itself is unchanged.

    :param guide: a guide with the model's signature ``guide(params, x, ..., subsample=...)``,
        one site ``h<l>`` per hidden layer inside the ``"data"`` plate (our recognition guide).
    :param net: the :class:`LayerBaselines`, registered with ``pyro.module("nvil_baseline", net)``.
    """
    first_layer = {layers[0]: s for s, layers in enumerate(net.terms.score, start=1)}  # where b_s sits

    def guide_with_baselines(params, x=None, **kwargs):
        pyro.module("nvil_baseline", net)
        values: dict = {}

        def layer_value(m):
            if m > 0:
                return values[site_name(m)]
            rows = x if x is not None else kwargs["observations"]["x"]
            index = values.get("data")  # the data plate's indices: the batch's rows of x
            return rows if index is None or x is None else rows.index_select(-2, torch.as_tensor(index))

        def config(msg):
            name = msg["name"]
            if msg["is_observed"] or not (name.startswith("h") and name[1:].isdigit()):
                return {}
            s = first_layer.get(int(name[1:]))
            if s is None:
                return {}
            inputs = [layer_value(m) for m in net.terms.inputs[s - 1]]
            return {"baseline": {"nn_baseline": functools.partial(net, signal=s), "nn_baseline_input": inputs}}

        return poutine.infer_config(_Values(values)(guide), config)(params, x, **kwargs)

    return guide_with_baselines


# -- the estimator ---------------------------------------------------------------------------


class NVILTerms(NamedTuple):
    """One particle's NVIL quantities. The dicts are keyed by the guide site that carries each
    signal's baseline and statistics; their values are per data point, unscaled, with no
    gradient."""

    elbo: torch.Tensor  # sum of scaled log p - log q (the ELBO estimate, as TraceGraph_ELBO's)
    surrogate_loss: torch.Tensor  # its gradient: NVIL's step direction (minus)
    signals: dict  # c_s
    baselines: dict  # b_s
    centred: dict  # A_s = (c_s - b_s - C_s) / max(1, sqrt(v_s))
    baseline_mse: torch.Tensor  # sum_s mean_n (c_sn - C_s - b_sn)^2


def _detached(inputs):
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(_detached(v) for v in inputs)
    return detach_provenance(inputs).detach() if isinstance(inputs, torch.Tensor) else inputs


class NVIL(TraceGraph_ELBO):
    """NVIL's estimator of the ELBO's gradient (module docstring): Pyro's ``TraceGraph_ELBO``
    (one particle, provenance-tracked local learning signals, ``nn_baseline`` baselines) with
    NVIL's running centring ``C`` and variance normalisation ``v``.

    :param bool local_signals: one signal per guide site, its provenance-tracked downstream
        cost (else the whole ``log p - log q`` for every site).
    :param bool variance_normalisation: divide the centred signal by ``max(1, sqrt(v))``.
    :param float decay: ``alpha`` of the running ``C`` and ``v`` (0.8 in the paper; 1 freezes them).
    :param max_plate_nesting: as in Pyro (1 for our SBN).
    :param dict signal_sites: optional, ``{guide site: (model sites, guide sites)}``, the
        terms of each local signal given outright (:func:`signal_sites` for our SBN), so
        Pyro's provenance tracking is not needed. Provenance finds the same terms, but costs
        about three quarters of a step on a small net (16-6-3).
    """

    def __init__(self, local_signals: bool = True, variance_normalisation: bool = True, decay: float = 0.8,
                 max_plate_nesting: float = float("inf"), signal_sites: dict | None = None):
        super().__init__(num_particles=1, max_plate_nesting=max_plate_nesting)
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay!r}")
        self.local_signals, self.variance_normalisation, self.decay = local_signals, variance_normalisation, decay
        self.signal_sites = signal_sites

    def _get_trace(self, model, guide, args, kwargs):
        """The guide's trace and the model replayed on it. Provenance is tracked (as
        ``TraceGraph_ELBO`` does) only when the local signals' terms must be found from it."""
        if self.local_signals and self.signal_sites is None:
            return super()._get_trace(model, guide, args, kwargs)
        model_trace, guide_trace = get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)
        if is_validation_enabled():
            check_if_enumerated(guide_trace)
        return model_trace, guide_trace

    def _loss_and_surrogate_loss_particle(self, model_trace, guide_trace):
        terms = self.nvil_terms(model_trace, guide_trace)
        return terms.elbo, terms.surrogate_loss

    def nvil_terms(self, model_trace, guide_trace) -> NVILTerms:
        """The ELBO, the surrogate loss and the signals of one pair of traces (from
        ``self._get_trace``: provenance-tracked). Updates the running statistics in the param store."""
        model_sites = [s for s in model_trace.nodes.values() if s["type"] == "sample"]
        guide_sites = {n: s for n, s in guide_trace.nodes.items() if s["type"] == "sample"}
        scale = _one_scale(model_sites + list(guide_sites.values()))
        elbo = sum(s["log_prob_sum"] for s in model_sites) - sum(s["log_prob_sum"] for s in guide_sites.values())
        surrogate = sum(s["log_prob_sum"] for s in model_sites)  # grad_theta log p(x, h)
        for site in guide_sites.values():  # reparameterised sites' pathwise term, as TraceGraph_ELBO
            entropy = site["score_parts"].entropy_term
            if isinstance(entropy, torch.Tensor):
                surrogate = surrogate - entropy.sum()
        scored = [n for n, s in guide_sites.items()
                  if not s["is_observed"] and not getattr(s["fn"], "has_rsample", False)]
        out = {"signals": {}, "baselines": {}, "centred": {}}
        baseline_loss = baseline_mse = torch.zeros(())
        for names, cost in self._signals(model_sites, guide_sites, scored):
            first = guide_sites[names[0]]
            # per data point, the site's batch shape: Pyro's sum_to squeezes leading dims of
            # size 1, the data dim too when the batch has one row
            c = detach_provenance(cost).detach().reshape(first["unscaled_log_prob"].shape)
            b = self._baseline(first, c)
            a, mean = self._centre(names[0], c - b.detach())
            for name in names:  # the score-function term: s sum_n log q(h_n | .) sg(A_n)
                surrogate = surrogate + scale * (guide_sites[name]["score_parts"].score_function * a).sum()
            residual = (c - mean - b) ** 2
            baseline_loss = baseline_loss + scale * residual.sum()
            baseline_mse = baseline_mse + residual.detach().mean()
            for key, value in zip(("signals", "baselines", "centred"), (c, b.detach(), a)):
                out[key][names[0]] = value
        surrogate_loss = detach_provenance(-surrogate + baseline_loss)
        warn_if_nan(surrogate_loss, "NVIL surrogate loss")
        return NVILTerms(detach_provenance(elbo), surrogate_loss, out["signals"], out["baselines"], out["centred"],
                         baseline_mse)

    def _signals(self, model_sites, guide_sites, scored):
        """``[(sites, c)]``: each learning signal, unscaled, summed to its first site's plates,
        with the guide sites whose scores it multiplies."""
        if not scored:
            return []
        terms = [(s["cond_indep_stack"], s["unscaled_log_prob"]) for s in model_sites]
        terms += [(s["cond_indep_stack"], -s["unscaled_log_prob"]) for s in guide_sites.values()]
        if not self.local_signals:
            return [(scored, MultiFrameTensor(*terms).sum_to(guide_sites[scored[0]]["cond_indep_stack"]))]
        if self.signal_sites is not None:
            model_by_name = {s["name"]: s for s in model_sites}
            out = []
            for name in scored:
                model_names, guide_names = self.signal_sites[name]
                cost = MultiFrameTensor(*[(model_by_name[n]["cond_indep_stack"], model_by_name[n]["unscaled_log_prob"])
                                          for n in model_names],
                                        *[(guide_sites[n]["cond_indep_stack"], -guide_sites[n]["unscaled_log_prob"])
                                          for n in guide_names])
                out.append(([name], cost.sum_to(guide_sites[name]["cond_indep_stack"])))
            return out
        costs = defaultdict(MultiFrameTensor)  # Pyro's provenance: the terms that depend on each site
        for stack, log_prob in terms:
            for key in get_provenance(log_prob):
                costs[key].add((stack, log_prob))
        return [([name], costs[name].sum_to(guide_sites[name]["cond_indep_stack"])) for name in scored]

    @staticmethod
    def _baseline(site, c):
        nn_baseline, nn_input, use_average, _, value = _get_baseline_options(site)
        if use_average:
            raise ValueError(f"site {site['name']!r}: NVIL centres each signal by its own running mean C; "
                             "use nn_baseline or baseline_value, not use_decaying_avg_baseline")
        if nn_baseline is not None:
            b = nn_baseline(_detached(nn_input))
        elif value is not None:
            b = value
        else:
            return torch.zeros_like(c)
        if b.shape != c.shape:
            raise ValueError(f"site {site['name']!r}: baseline of shape {tuple(b.shape)}, learning signal "
                             f"{tuple(c.shape)}")
        return b

    def _centre(self, name: str, residual: torch.Tensor):
        """``C <- a C + (1 - a) mean r``, ``v <- a v + (1 - a) var r`` (param store), and
        ``A = (r - C) / max(1, sqrt(v))``: ``(A, C)``."""
        with torch.no_grad():
            # the store's own tensors, updated in place (a new tensor per step would be a new
            # parameter to SVI's optimiser at every step)
            stored_mean, stored_var = (pyro.param(f"__nvil_signal_{stat}_{name}", torch.zeros(())).unconstrained()
                                       for stat in ("mean", "var"))
            var_r = residual.var(unbiased=False) if residual.numel() > 1 else torch.zeros(())
            mean = self.decay * stored_mean + (1 - self.decay) * residual.mean()
            var = self.decay * stored_var + (1 - self.decay) * var_r
            stored_mean.copy_(mean)
            stored_var.copy_(var)
            centred = residual - mean
            if self.variance_normalisation:
                centred = centred / var.sqrt().clamp(min=1.0)
        return centred, mean


def signal_sites(arch) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Each local signal's terms as site names, ``{"h<l>": (model sites, guide sites)}``
    (:func:`~sbn_ppl.inference.nvil.signal_terms`), for :class:`NVIL`'s ``signal_sites``."""
    terms = signal_terms(arch, local=True)
    return {site_name(layers[0]): (tuple(map(site_name, p)), tuple(map(site_name, q)))
            for layers, p, q in zip(terms.score, terms.model, terms.guide)}


def _one_scale(sites) -> float:
    scales = {float(s["scale"]) for s in sites}
    if len(scales) > 1:
        raise ValueError(f"NVIL's per-data-point signals need one scale for every site (the data plate's), "
                         f"got {sorted(scales)}")
    return scales.pop() if scales else 1.0


def log_weights(model, guide, *args, **kwargs) -> torch.Tensor:
    """``log p(x_n, h_n) - log q(h_n | x_n)`` for one ``h_n ~ q(. | x_n)`` per data point:
    ``(B,)``, unscaled, no gradient (every site of our model and guide is ``(B,)``)."""
    with torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        log_p, _ = per_point_log_prob(model_trace, nesting=1)  # (1, B): no particle plate
        log_q, _ = per_point_log_prob(guide_trace, nesting=1)
        return (log_p - log_q)[0]


# -- the method ------------------------------------------------------------------------------


class PyroNVILInfo(NamedTuple):
    objective: float  # mean over the batch of the one-sample ELBO estimate
    baseline_mse: float  # sum over signals of the batch mean of (c - C - b)^2


def build(arch: Architecture, options: dict) -> Kernel:
    """NVIL on the Pyro model and recognition guide: one optimiser over theta, phi and the
    :class:`LayerBaselines` (kept in the state's ``objects``); mini-batches are the data
    plate's ``subsample``, scaled by ``1/N`` so the loss is a mean per data point. ``info``
    is :class:`PyroNVILInfo`. Its bound, per data point, is the Monte Carlo ELBO: the mean of
    ``log p(x, h) - log q(h | x)`` over ``BOUND_SAMPLES`` (10) draws ``h ~ q``, unbiased for the
    ELBO that NVIL maximises (not an IWAE bound)."""
    objective = NVIL(options["local_signals"], options["variance_normalisation"], options["signal_decay"],
                     max_plate_nesting=1, signal_sites=signal_sites(arch))

    def nets(seed: int) -> dict:
        return {"nvil_baseline": LayerBaselines(arch, options["baseline_hidden"], seed, options["local_signals"])}

    def update(seed: int, state: GradientState, batch: Batch):
        model, guide = per_point_programs(len(state.train),
                                          with_baselines(pyro_sbn.recognition_guide, state.objects["nvil_baseline"]))
        traces = objective._get_trace(model, guide, (state.like, state.train), {"subsample": batch.index})
        terms = objective.nvil_terms(*traces)
        terms.surrogate_loss.backward()
        return PyroNVILInfo(terms.elbo.item(), terms.baseline_mse.item())

    def bound(state: GradientState, x):
        draws = [log_weights(pyro_sbn.model, pyro_sbn.recognition_guide, state.like, x) for _ in range(BOUND_SAMPLES)]
        return torch.stack(draws).mean(0)

    return gradient_kernel(arch, store_start(arch, options, nets=nets), update, bound)
