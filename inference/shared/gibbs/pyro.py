"""Single-unit Gibbs sweeps of an SBN's posterior in torch (the math: this folder's
``__init__``; the twin: ``numpyro.py``, same sweep order, same arithmetic).

Own tricks: :class:`SBNGibbs` is a Pyro :class:`~pyro.infer.mcmc.mcmc_kernel.MCMCKernel`, so
``pyro.infer.MCMC(SBNGibbs(pyro_sbn.model), ...)`` samples the model's ``h1 .. hL``.
"""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import pyro
import torch
import torch.nn.functional as F
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from sbn_ppl.base.architecture import Architecture, site_name
from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.models import pyro_sbn
from sbn_ppl.base.params import SBNParams, generative_keys


class TorchParams(NamedTuple):
    """The SBN's generative parameters as torch tensors (``theta[name]``) and its architecture."""

    architecture: Architecture
    theta: Mapping


def as_torch(params) -> TorchParams:
    """:class:`~sbn_ppl.SBNParams` (or a ready :class:`TorchParams`) as float32 tensors."""
    if isinstance(params, TorchParams):
        return params
    return TorchParams(params.architecture, {k: v for k, v in params.to_torch().items() if not k.startswith("q_")})


class GibbsState(NamedTuple):
    """``hidden[l - 1]`` is ``h_l``, shape ``(*batch, n_l)`` of 0./1. (batch: chains, data points)."""

    hidden: tuple


class GibbsInfo(NamedTuple):
    """After the sweep: ``log p(x, h)``, ``log p(x | h)`` per batch element, fraction of units changed."""

    log_joint: torch.Tensor
    log_likelihood: torch.Tensor
    flip_rate: torch.Tensor


def _layers(x, hidden):
    batch = hidden[0].shape[:-1]
    return [torch.as_tensor(x, dtype=hidden[0].dtype).expand(batch + (x.shape[-1],))] + list(hidden)


def _preactivations(p: TorchParams, layers):
    shape = layers[0].shape[:-1]
    return [pyro_sbn.preactivation(p.architecture, p.theta, layers, l).expand(shape + (p.architecture.sizes[l],))
            for l in range(p.architecture.num_layers + 1)]


def _flip_log_odds(sign, a_own, children):
    """``log p(h_k = 1 - s | rest) - log p(h_k = s | rest)``, ``sign = 1 - 2 s``; see gibbs_jax."""
    d = sign * a_own  # own term: (1 - 2 s) a_k
    flipped = []
    for c, a_c, sp_c, w, coef in children:
        delta = sign.unsqueeze(-1) * w
        a_alt = a_c + delta  # a_c with h_k flipped
        sp_alt = F.softplus(a_alt)
        # sum_j [c_j a_j - softplus(a_j)] at the flipped state minus at the current one
        d = d + coef * (c * delta - sp_alt + sp_c).sum(-1)
        flipped.append((a_alt, sp_alt))
    return d, flipped


def _sweep_layer(p, l, layers, a, sp, noise, beta):
    arch = p.architecture
    kids = arch.children(l)
    weights = [p.theta[f"W_{l}_{c}"] for c in kids]
    coefs = [beta if c == 0 else 1.0 for c in kids]
    a_own = a[l].t().contiguous()  # (n_l, B), fixed while the layer is swept
    h_t = layers[l].t().clone(memory_format=torch.contiguous_format)  # a copy: the caller's state is kept
    a_kids = [a[c].clone() for c in kids]
    sp_kids = [sp[c].clone() for c in kids]
    for k in range(arch.sizes[l]):
        s = h_t[k]
        sign = 1.0 - 2.0 * s
        children = [(layers[c], a_kids[i], sp_kids[i], weights[i][k], coefs[i]) for i, c in enumerate(kids)]
        d, flipped = _flip_log_odds(sign, a_own[k], children)
        flip = d > noise[k]  # logistic noise: P(flip) = sigmoid(d), the exact conditional
        h_t[k] = torch.where(flip, 1.0 - s, s)
        mask = flip.unsqueeze(-1)
        for i, (alt, spa) in enumerate(flipped):
            a_kids[i] = torch.where(mask, alt, a_kids[i])
            sp_kids[i] = torch.where(mask, spa, sp_kids[i])
    for i, c in enumerate(kids):
        a[c], sp[c] = a_kids[i], sp_kids[i]
    return h_t.t()


_PARALLEL_ELEMENTS = 1 << 16  # below this many elements per child array, one thread is faster


@contextmanager
def threads_for(elements: int):
    """One intra-op thread while the arrays are small (``elements``: the largest one's size):
    a sweep is a long chain of small ops, and a thread pool woken for each (and left
    spinning after it) costs more than the op: 5-10x slower on a busy 2-core CPU."""
    before = torch.get_num_threads()
    if elements < _PARALLEL_ELEMENTS and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _logistic(generator, shape):
    u = torch.rand(shape, generator=generator).clamp_(1e-7, 1.0 - 1e-7)
    return torch.log(u) - torch.log1p(-u)


def step(generator: torch.Generator, state: GibbsState, params, x, beta: float = 1.0):
    """One Gibbs sweep over all hidden units of ``p(h | x)`` (tempered: ``p(h) p(x|h)^beta``).

    :param generator: a seeded ``torch.Generator`` (the randomness).
    :param state: current hidden layers, each ``(*batch, n_l)`` (batch: chains x data points).
    :param params: :class:`~sbn_ppl.SBNParams` or :class:`TorchParams`.
    :param x: observed data ``(..., D)`` of 0./1., broadcastable to ``(*batch, D)``.
    :param beta: inverse temperature on the likelihood ``log p(x | h)`` (1: the posterior).
    :returns: ``(new state, GibbsInfo)``.
    """
    p = as_torch(params)
    rows = state.hidden[0].numel() // state.hidden[0].shape[-1]
    with torch.no_grad(), threads_for(rows * max(p.architecture.sizes)):
        return _step(generator, state, p, x, beta)


def _step(generator, state, p, x, beta):
    arch = p.architecture
    batch = state.hidden[0].shape[:-1]
    layers = [v.reshape(-1, v.shape[-1]) for v in _layers(torch.as_tensor(x), state.hidden)]
    a = _preactivations(p, layers)
    sp = [F.softplus(v) for v in a]
    old = list(layers)
    for l in range(1, arch.num_layers + 1):
        noise = _logistic(generator, (arch.sizes[l], layers[0].shape[0]))
        layers[l] = _sweep_layer(p, l, layers, a, sp, noise, beta)
    # log p(x, h) = sum_l sum_j [s_j a_j - softplus(a_j)], from the caches kept current
    per_layer = [(layers[l] * a[l] - sp[l]).sum(-1) for l in range(arch.num_layers + 1)]
    flips = sum((layers[l] != old[l]).sum(-1) for l in range(1, arch.num_layers + 1)) / arch.num_hidden
    hidden = tuple(layers[l].reshape(batch + (arch.sizes[l],)).contiguous() for l in range(1, arch.num_layers + 1))
    info = GibbsInfo(sum(per_layer).reshape(batch), per_layer[0].reshape(batch), flips.reshape(batch))
    return GibbsState(hidden), info


@torch.no_grad()
def sample_prior(generator: torch.Generator, params, batch_shape) -> GibbsState:
    """Hidden layers drawn ancestrally from the prior ``p(h)``, each ``(*batch_shape, n_l)``."""
    p = as_torch(params)
    arch = p.architecture
    layers: list = [None] * (arch.num_layers + 1)
    for l in range(arch.num_layers, 0, -1):
        a = pyro_sbn.preactivation(arch, p.theta, layers, l).expand(tuple(batch_shape) + (arch.sizes[l],))
        layers[l] = (torch.rand(a.shape, generator=generator) < torch.sigmoid(a)).float()
    return GibbsState(tuple(layers[1:]))


def init(generator: torch.Generator, params, x, num_chains: int | None = None) -> GibbsState:
    """Hidden layers from the prior for data ``x`` ``(N, D)``: ``(N, n_l)`` or ``(num_chains, N, n_l)``.
    ``x`` is checked (binary, no NaN, the model's width) as by the JAX twin's ``init``."""
    x = _checked_data(params, x)
    if num_chains is not None and num_chains < 1:
        raise ValueError(f"the number of chains must be at least 1, got {num_chains}")
    batch = tuple(x.shape[:-1]) if num_chains is None else (int(num_chains),) + tuple(x.shape[:-1])
    return sample_prior(generator, params, batch)


def _checked_data(params, x) -> torch.Tensor:
    """``x`` as a float32 tensor, checked (binary, no NaN, the model's width) with
    :func:`sbn_ppl.base.arrays.validate_binary`, as the JAX twin checks its data."""
    shape = tuple(np.shape(x))
    rows = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x).reshape(-1, shape[-1] if shape else 1)
    return torch.as_tensor(validate_binary(rows, width=params.architecture.visible_size, name="x").reshape(shape))


@torch.no_grad()
def conditional_logits(params, x, hidden, beta: float = 1.0) -> list:
    """``logit p(h_{l,k} = 1 | rest, x)`` for every hidden unit at ``hidden`` (tempered by ``beta``)."""
    p = as_torch(params)
    layers = _layers(torch.as_tensor(x), tuple(hidden))
    a = _preactivations(p, layers)
    sp = [F.softplus(v) for v in a]
    out = []
    for l in range(1, p.architecture.num_layers + 1):
        sign = 1.0 - 2.0 * layers[l]
        children = [(layers[c].unsqueeze(-2), a[c].unsqueeze(-2), sp[c].unsqueeze(-2), p.theta[f"W_{l}_{c}"],
                     beta if c == 0 else 1.0) for c in p.architecture.children(l)]
        d, _ = _flip_log_odds(sign, a[l], children)
        out.append(sign * d)  # log p(1)/p(0) = d when s = 0, -d when s = 1
    return out


# -- Pyro adapter -----------------------------------------------------------------------------


def model_problem(model, like: SBNParams, args, kwargs):
    """``(TorchParams, x)`` that the Pyro SBN ``model`` conditions on: its ``pyro.param``
    values (the param store's, as for any Pyro model) and its observed ``x``."""
    if kwargs.get("subsample_size") is not None or kwargs.get("subsample") is not None:
        raise ValueError("the SBN Gibbs kernel samples every data point; do not pass subsample_size or subsample")
    with torch.no_grad():
        trace = pyro.poutine.trace(model).get_trace(*args, **kwargs)
    if "x" not in trace.nodes or not trace.nodes["x"]["is_observed"]:
        raise ValueError("the SBN Gibbs kernel samples p(h | x): call the model with observed data x")
    theta = {k: trace.nodes[k]["value"].detach() for k in generative_keys(like.architecture)}
    return TorchParams(like.architecture, theta), trace.nodes["x"]["value"]


class SBNGibbs(MCMCKernel):
    """Our single-unit Gibbs sweep as a Pyro MCMC kernel for :func:`pyro_sbn.model`.

    Usage::

        mcmc = pyro.infer.MCMC(SBNGibbs(pyro_sbn.model, seed=0), num_samples=1000, warmup_steps=100)
        mcmc.run(params, x)
        mcmc.get_samples()["h1"]          # (1000, N, n_1)

    One MCMC sample is ``sweeps`` full sweeps; ``chains`` independent chains per data point
    are vectorised inside the kernel (samples ``(chains, N, n_l)`` per site then); ``beta``
    tempers the likelihood (AIS).
    """

    def __init__(self, model=pyro_sbn.model, *, sweeps: int = 1, beta: float = 1.0, seed: int = 0,
                 chains: int | None = None):
        if sweeps < 1:
            raise ValueError(f"sweeps must be at least 1, got {sweeps}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        self.model, self.sweeps, self.beta, self.seed, self.chains = model, int(sweeps), float(beta), seed, chains
        self.transforms = {}  # discrete sites: no change of variables
        self._initial = None

    def setup(self, warmup_steps, *args, **kwargs):
        like = next((v for v in list(args) + list(kwargs.values()) if isinstance(v, SBNParams)), None)
        if like is None:
            raise ValueError("the model's arguments hold no SBNParams (expected model(params, x))")
        self._params, self._x = model_problem(self.model, like, args, kwargs)
        self._generator = torch.Generator().manual_seed(self.seed)
        self._names = [site_name(l) for l in range(1, like.architecture.num_layers + 1)]
        if self._initial is None:
            self._initial = dict(zip(self._names, init(self._generator, self._params, self._x, self.chains).hidden))

    @property
    def initial_params(self):
        return self._initial

    @initial_params.setter
    def initial_params(self, params):
        self._initial = params

    def sample(self, params):
        state = GibbsState(tuple(params[n] for n in self._names))
        for _ in range(self.sweeps):
            state, _ = step(self._generator, state, self._params, self._x, self.beta)
        return dict(zip(self._names, state.hidden))
