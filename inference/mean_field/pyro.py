"""Mean-field SVI with Pyro's own ``SVI`` and ``TraceGraph_ELBO`` (the math and the options:
this folder's ``__init__``; the twin: ``numpyro.py``).

Own tricks: none beyond Pyro's. A step is ``svi.step`` on the runner's batch (the local guide
also reads ``batch.index``), the log-densities scaled by ``N / B`` with ``poutine.scale``,
the loss Pyro's stock ``JitTraceGraph_ELBO`` (``jit=True``) or ``TraceGraph_ELBO`` with the
baselines of :mod:`sbn_ppl.inference.shared.score_function.pyro` in the guide's ``infer``
dicts; the parameters live in the runner's param store scope.
"""
from __future__ import annotations

import numpy as np
import pyro
import torch
from pyro import poutine

from sbn_ppl.base.architecture import Architecture, site_name
from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.base.methods import Batch, Kernel, by_chunks
from sbn_ppl.base.optimizers import pyro_optimizer
from sbn_ppl.base.params import SBNParams, generative_keys, mean_field_keys
from sbn_ppl.inference.shared.gradient.pyro import GradientState, as_data, gradient_kernel
from sbn_ppl.inference.shared.score_function.pyro import NVILBaseline, guide_gradient_moments, with_baselines
from sbn_ppl.models import pyro_sbn
from sbn_ppl.models.local_guides_pyro import local_mean_field_guide
from sbn_ppl.models.mean_field_local import local_keys, with_local_params


def batch_model(params, x, *, index, num_data: int):
    """The SBN on a batch's rows ``x`` ``(B, D)``, its log-densities scaled by ``N / B``
    (``index``, the rows' places in the training set, is the local guide's)."""
    del index
    with poutine.scale(scale=num_data / x.shape[-2]):
        return pyro_sbn.model(params, x)


def amortised_batch_guide(params, x, *, index, num_data: int):
    """The amortised mean-field guide on a batch's rows, scaled by ``N / B`` like :func:`batch_model`."""
    del index
    with poutine.scale(scale=num_data / x.shape[-2]):
        return pyro_sbn.mean_field_guide(params, x)


def local_batch_guide(params, x, *, index, num_data: int):
    """The local mean-field guide on a batch's rows (its logits at ``index``), scaled by ``N / B``."""
    with poutine.scale(scale=num_data / x.shape[-2]):
        return local_mean_field_guide(params, x, index=index)


def build(arch: Architecture, options: dict) -> Kernel:
    """``mean-field-svi`` on the Pyro backend: ``info`` is ``{"objective": ELBO per data point}``.

    The state's ``objects`` is the ``pyro.infer.SVI`` (its parameters in the runner's param
    store, its optimiser its own); ``like`` the generative arrays and the trained guide's
    (``q_mf_*``, a default network if ``params`` has none; or zero local logits
    ``q_mf_local_*``). The bound: the amortised guide's Monte Carlo ELBO per data point
    (seeded; none for the local guide, which has logits only for its training points)."""
    if options["jit"] and options["baseline"] == "decaying":
        raise ValueError("jit=True cannot use baseline='decaying': Pyro writes its decaying average into the param "
                         "store inside the traced step, which torch.jit.trace does not replay; pass jit=False "
                         "(or use baseline 'nvil' or 'none')")
    amortised, jit = options["amortised"], options["jit"]

    def start(seed: int, params: SBNParams, train) -> GradientState:
        x = as_data(train, arch, "training data")
        num_data = len(x)
        if amortised:
            params = params.with_guide("mean_field", int(seed))
            guide, guide_keys = amortised_batch_guide, mean_field_keys(arch)
        else:
            params = with_local_params(params, num_data)
            guide, guide_keys = local_batch_guide, local_keys(arch)
        # only the generative and this guide's parameters: no other guide's keys (issue 14)
        like = SBNParams({"sizes": np.asarray(arch.sizes), **{k: params[k] for k in generative_keys(arch) + guide_keys}},
                         arch.connectivity)
        net = NVILBaseline(arch, seed=int(seed)) if options["baseline"] == "nvil" else None
        guide = with_baselines(guide, options["baseline"], net)
        optim = pyro_optimizer(options["optimizer"], options["lr"], options["lr_half_life"],
                               options["lr_schedule"])
        if jit:  # the same estimator, traced by torch.jit: tensors only as arguments
            def model_fn(x, index):
                return batch_model(like, x, index=index, num_data=num_data)

            def guide_fn(x, index):
                return guide(like, x, index=index, num_data=num_data)

            elbo = pyro.infer.JitTraceGraph_ELBO(num_particles=options["num_particles"], max_plate_nesting=1,
                                                 ignore_jit_warnings=True)
            svi = pyro.infer.SVI(model_fn, guide_fn, optim, elbo)
        else:
            elbo = pyro.infer.TraceGraph_ELBO(num_particles=options["num_particles"], max_plate_nesting=1)
            svi = pyro.infer.SVI(batch_model, guide, optim, elbo)
        return GradientState(like, x, (), svi, int(seed))

    def update(seed: int, state: GradientState, batch: Batch):
        """One SVI step on ``batch``: its rows, scaled by ``N / B``."""
        num_data = len(state.train)
        if jit:
            loss = state.objects.step(batch.x, batch.index)
        else:
            loss = state.objects.step(state.like, batch.x, index=batch.index, num_data=num_data)
        return {"objective": -loss / num_data}  # loss = -(N / B) sum_batch ELBO_n

    def bound(state: GradientState, x, num_particles: int = 100, chunk: int = 500):
        params = pyro_sbn.read_params(state.like)
        return by_chunks(lambda i, rows: mc_elbo(params, rows, num_particles, seed=state.seed + 1 + i)[0], x, chunk)

    kernel = gradient_kernel(arch, start, update)
    return kernel._replace(bound=bound if amortised else None)


# -- the amortised guide's ELBO, and gradient variance (tests and benchmarks) -----------------------


def mc_elbo(params: SBNParams, x, num_particles: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo ELBO of the amortised mean-field guide per data point, from Pyro traces.

    ``(1/K) sum_k [log p(x_n, h_k) - log q(h_k | x_n)]``, ``h_k ~ q(. | x_n)``, vectorised with a
    ``particles`` plate; returns the estimates ``(N,)`` and their standard errors ``(N,)`` (float64).
    """
    if num_particles < 2:
        raise ValueError(f"num_particles must be at least 2 (for a standard error), got {num_particles}")
    arch = params.architecture
    x = torch.as_tensor(validate_binary(x, width=arch.visible_size, name="data"))
    with pyro.get_param_store().scope(), torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)  # a fresh param store: the values are those of `params`
        with pyro.plate("particles", num_particles, dim=-2):
            guide_tr = poutine.trace(pyro_sbn.mean_field_guide).get_trace(params, x)
            model_tr = poutine.trace(poutine.replay(pyro_sbn.model, trace=guide_tr)).get_trace(params, x)

    def log_prob(tr, l):
        return tr.nodes[site_name(l)]["fn"].log_prob(tr.nodes[site_name(l)]["value"])  # (K, N): one site per layer

    log_w = sum(log_prob(model_tr, l) for l in range(arch.num_layers + 1))  # log p(x_n, h_k)
    log_w = log_w - sum(log_prob(guide_tr, l) for l in range(1, arch.num_layers + 1))  # - log q(h_k | x_n)
    log_w = log_w.detach().double().numpy()
    return log_w.mean(0), log_w.std(0, ddof=1) / np.sqrt(num_particles)


def mean_field_gradient_moments(params: SBNParams, x, baseline: str = "none", *, amortised: bool = True,
                                index=None, subsample_size: int | None = None, **kwargs):
    """Moments of the one-sample ``TraceGraph_ELBO`` gradient w.r.t. the mean-field guide's
    parameters (:func:`~sbn_ppl.inference.shared.score_function.pyro.guide_gradient_moments` on this
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
        return guide_gradient_moments(batch_model, guide, params, rows, keys, baseline,
                                      index=torch.as_tensor(np.asarray(index)), num_data=len(x), **kwargs)
    if amortised:
        return guide_gradient_moments(pyro_sbn.model, pyro_sbn.mean_field_guide, params, x, keys, baseline, **kwargs)
    return guide_gradient_moments(pyro_sbn.model, local_mean_field_guide, params, x, keys, baseline,
                                  subsample_size=subsample_size, **kwargs)
