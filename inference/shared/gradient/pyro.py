"""A gradient method's :class:`~sbn_ppl.base.methods.Kernel` from its pieces (Pyro / torch).

The method supplies ``start(seed, params, train) -> GradientState`` (:func:`store_start` for
one that trains the generative arrays and a guide's with ``torch.optim``); ``update(seed,
state, batch) -> info``, which leaves the gradient of its loss on the batch in the ``.grad`` of
its trained tensors (a Pyro ``ELBO``'s ``loss_and_grads``, or ``loss.backward()``); and
``bound(state, x) -> (B,)``, its per-point lower bound on ``log p(x_n)`` on a chunk of rows.
Each closes over the architecture and the checked options. The kernel steps the optimisers
and clears the gradients, reads the parameters back from Pyro's param store
(:func:`~sbn_ppl.models.pyro_sbn.read_params`), and runs the bound on its own seeded torch RNG
stream. The runner supplies the param-store scope and seeds torch before each step.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import pyro
import pyro.poutine as poutine
import torch

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.base.optimizers import torch_optimizer
from sbn_ppl.base.params import SBNParams, generative_keys, mean_field_keys, recognition_keys
from sbn_ppl.models import pyro_sbn

_GUIDE_KEYS = {"recognition": recognition_keys, "mean_field": mean_field_keys}


def per_point_programs(num_data: int, guide=pyro_sbn.recognition_guide):
    """The SBN's Pyro model and ``guide``, each scaled by ``1 / num_data``: the data plate scales
    a batch's terms by ``N / B``, so with the whole training set and ``subsample=batch.index``
    (``N = num_data``) a loss is a mean per data point."""
    return poutine.scale(pyro_sbn.model, 1.0 / num_data), poutine.scale(guide, 1.0 / num_data)


class GradientState(NamedTuple):
    """A Pyro gradient method between steps; its tensors live in the runner's param store.

    ``like``: the trained arrays' initial values (``pyro.param``'s defaults) and the
    architecture, ``sizes`` included: ``get_params`` reads these keys back; ``train``: the
    training set ``(N, D)`` (a batch is ``subsample=batch.index`` of its rows);
    ``optimizers``: ``torch.optim`` optimisers over the trained tensors, each stepped after
    ``update``; ``objects``: what else the method trains or keeps (NVIL's baseline nets, a
    ``pyro.infer.SVI``); ``seed``: seeds the method's own bound."""

    like: SBNParams
    train: torch.Tensor
    optimizers: tuple
    objects: Any
    seed: int


def as_data(x, arch: Architecture, name: str = "data") -> torch.Tensor:
    """``x`` checked (binary, the model's width) as a tensor of torch's default dtype."""
    return torch.as_tensor(validate_binary(x, width=arch.visible_size, name=name), dtype=torch.get_default_dtype())


def in_store(like: SBNParams, keys) -> list[torch.Tensor]:
    """``like``'s arrays ``keys`` as ``pyro.param`` sites of the current param store (copies:
    the optimisers update the store in place, never the caller's arrays), unconstrained."""
    return [pyro.param(k, torch.tensor(like[k], dtype=torch.get_default_dtype())).unconstrained() for k in keys]


def store_start(arch: Architecture, options: dict, *, guide: str = "recognition", split: bool = False,
                nets: Callable[[int], dict] | None = None) -> Callable:
    """``start(seed, params, train) -> GradientState`` of a method that trains the generative
    arrays and ``guide``'s (at its default initialisation, seeded, if ``params`` has none; no
    other guide's keys) with the optimiser of ``options`` (``optimizer``, ``lr``,
    ``lr_half_life``).

    :param split: one optimiser for theta and one for phi (each stepped on its own loss's
        gradient), else one over both.
    :param nets: ``nets(seed) -> {name: torch.nn.Module}``: nets trained beside theta and phi
        (registered with ``pyro.module``, stepped by the last optimiser), kept as ``objects``.
    """
    make = torch_optimizer(options["optimizer"], options["lr"], options["lr_half_life"],
                           options["lr_schedule"])

    def start(seed: int, params: SBNParams, train) -> GradientState:
        x = as_data(train, arch, "training data")
        like = params.with_guide(guide, int(seed)).only(guide)
        modules = {} if nets is None else nets(int(seed))
        for name, net in modules.items():
            pyro.module(name, net)
        theta, phi = generative_keys(arch), _GUIDE_KEYS[guide](arch)
        groups = (theta, phi) if split else (theta + phi,)
        extra = [p for net in modules.values() for p in net.parameters()]
        optimizers = tuple(make(in_store(like, keys) + (extra if i == len(groups) - 1 else []))
                           for i, keys in enumerate(groups))
        return GradientState(like, x, optimizers, modules, int(seed))

    return start


def loss_guide_gradient(arch: Architecture, loss: Callable, guide: str = "recognition") -> Callable:
    """``guide_gradient(seed, state, x) -> {name: array}`` of a method whose step descends
    ``loss(state, model, guide, x)``: a scalar tensor, the method's loss on the rows ``x`` with
    the Pyro model and recognition guide given scaled by ``1/B`` (a mean per data point). One
    draw of minus its gradient in ``guide``'s arrays (the step direction, ascent), on a torch
    stream seeded by ``seed`` (the caller's left as it was); the ``.grad`` of the param store's
    tensors are not touched. Run it in the runner's param-store scope."""
    names = _GUIDE_KEYS[guide](arch)

    def guide_gradient(seed: int, state: GradientState, x) -> dict:
        x = as_data(x, arch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            value = loss(state, *per_point_programs(len(x)), x)
        store = pyro.get_param_store()
        grads = torch.autograd.grad(value, [store[k].unconstrained() for k in names])
        return {k: -g.detach().numpy().copy() for k, g in zip(names, grads)}

    return guide_gradient


def gradient_kernel(arch: Architecture, start: Callable, update: Callable, bound: Callable | None = None, *,
                    guide_gradient: Callable | None = None, chunk: int = 1000) -> Kernel:
    """The :class:`Kernel` of a Pyro gradient method on ``arch``.

    :param start: ``start(seed, params, train) -> GradientState`` (:func:`store_start`).
    :param update: ``update(seed, state, batch) -> info``: the gradient of the method's loss
        on the :class:`Batch`, left in the trained tensors' ``.grad``; the kernel then steps
        every optimiser and clears the gradients.
    :param bound: ``bound(state, x) -> (B,)`` tensor: the per-point bound on rows ``x``
        ``(B, D)``, run ``chunk`` rows at a time on the kernel's own torch RNG stream, seeded
        by ``state.seed + 1`` (the caller's stream is left as it was). ``None``: no bound.
    :param guide_gradient: the kernel's ``guide_gradient(seed, state, x)`` (:func:`loss_guide_gradient`).
    """

    def step(seed: int, state: GradientState, batch: Batch):
        info = update(seed, state, batch)
        for optimizer in state.optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return state, info

    def get_params(state: GradientState) -> SBNParams:
        return pyro_sbn.read_params(state.like)

    def seeded_bound(state: GradientState, x):
        x = as_data(x, arch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(state.seed + 1)
            out = [bound(state, x[s:s + chunk]) for s in range(0, len(x), chunk)]
        return torch.cat(out).double().numpy()

    return Kernel(start, step, get_params, None if bound is None else seeded_bound, guide_gradient=guide_gradient)
