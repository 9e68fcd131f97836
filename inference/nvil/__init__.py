"""NVIL (Mnih & Gregor 2014, "Neural variational inference and learning in belief networks").

The ELBO, fitted in the model's parameters theta and the layered recognition network's
phi together, with one sample ``h ~ q(. | x)`` per data point (the recognition guide of
:mod:`sbn_ppl.models`, never the mean-field one). Per data point ``x``:

    L          = E_q[log p(x, h) - log q(h | x)]                     (the ELBO)
    theta      grad_theta log p(x, h)
    phi_l      A_l grad_phi log q(h_l | pa_q(h_l))                    (for each hidden layer l)
    A_l        (c_l - b_l(u_l) - C_l) / max(1, sqrt(v_l))             (the centred, normalised signal)

The learning signal ``c_l`` (sec. 3.4, "local learning signals") keeps the terms of
``log p(x, h) - log q(h | x)`` that may depend on ``h_l``. The guide samples bottom-up,
``h_1 ~ q(. | x)``, then ``h_2 ~ q(. | below)``, ... Let ``D_l`` be the layers that depend on
``h_l`` in that order: ``h_l``, plus every layer with a recognition parent in ``D_l``, taken
in order. With our recognition networks (layered or dense) this is ``{l, ..., L}``. A term
that is a function of ``x, h_1 .. h_{l-1}`` alone has zero mean against the score
``grad log q(h_l | .)``: its expectation over ``h_l`` given the layers below is
``E[grad log q] = 0``. Such a term may be dropped without bias. What remains is

    c_l = sum_{j in P_l} log p(h_j | pa(h_j))  -  sum_{j in D_l} log q(h_j | pa_q(h_j)),
    P_l = {j : j in D_l, or pa(h_j) meets D_l}           (j = 0 is x)

* layered ``p``: ``P_l = {l-1, ..., L}``. This is the paper's ``log p(h^{l-1:L}) - log
  q(h^{l:L} | h^{l-1})``: ``log p(x | h1)`` is left out of the signals of layers 2 and up.
* dense ``p``: every layer below ``l`` has ``h_l`` as a parent, so ``P_l`` is every layer.
  ``c_l`` is ``log p(x, h) - sum_{j >= l} log q_j``.

``local_signals=False`` gives every layer the whole ``c = log p(x, h) - log q(h | x)``, with
one baseline ``b(x)`` and one ``(C, v)`` (the paper's basic NVIL).

The remaining pieces:

* ``b_l(u_l) = tanh(u_l U_l + e_l) . w_l + d_l`` is the input-dependent baseline of
  sec. 3.3, a net with one hidden layer of ``baseline_hidden`` tanh units (100 in the
  paper). Its input ``u_l`` is layer ``l``'s input in the guide: ``h_{l-1}`` (layered), or
  ``[x, h_1 .. h_{l-1}]`` (dense). It is fitted alongside theta and phi by minimising
  ``E[(c_l - C_l - b_l)^2]``.
* ``C_l`` and ``v_l`` are running averages, with decay ``alpha`` (``signal_decay``, 0.8 in the
  paper), of the batch mean and batch variance of ``c_l - b_l``. ``C_l`` centres the
  signal. ``max(1, sqrt(v_l))`` divides it (sec. 3.2, Algorithm 1), unless
  ``variance_normalisation`` is off. ``C_l`` and ``v_l`` are updated before they are used,
  as in Algorithm 1. ``signal_decay = 1`` freezes them.

Neither ``b_l``, which reads only layers sampled before ``h_l``, nor ``C_l`` depends on
``h_l``, so centring keeps the estimator unbiased. The normalisation by the running ``v_l``
is the same for the whole batch. It rescales the phi-gradient of layer ``l`` by
``1 / max(1, sqrt(v_l))``, a step size per layer that adapts to the signal's noise. Its
direction in mean is unchanged.

One loss steps theta, phi and the baselines' parameters ``psi`` together. For a batch of B,
one ``h_n ~ q(. | x_n)`` each (``sg``: stop-gradient; ``C_l, v_l`` take no gradient):

    surrogate  (1/B) sum_n [ log p(x_n, h_n) + sum_l sg(A_ln) log q(h_ln | pa_q) ]
    loss       -surrogate + (1/B) sum_n sum_l (c_ln - C_l - b_l(u_ln))^2

Its gradient is ``-grad_theta log p`` in theta (the samples carry no gradient), NVIL's
``-A_l grad log q`` in phi, and the least-squares gradient in ``psi``.

One option schema for both backends (NumPy only):

* ``numpyro.py`` is a jitted pure JAX step on the NumPyro model's densities.
* ``pyro.py`` is :class:`~sbn_ppl.inference.nvil.pyro.NVIL`, Pyro's own ``TraceGraph_ELBO``.
  Its provenance-tracked learning signals on our guide are exactly the local ``c_l``, and
  its ``nn_baseline`` infer settings carry ``b_l``. The ELBO adds the centring and
  normalisation by ``C_l, v_l``, which Pyro lacks.
"""
from typing import NamedTuple

import numpy as np

from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING, Option, boolean, positive_int, unit_interval

BASELINE_HIDDEN = Option("baseline_hidden", 100, positive_int,
                         "tanh units of each input-dependent baseline net b_l (NVIL: 100)")
DECAY = Option("signal_decay", 0.8, unit_interval,
               "decay alpha of the running mean C and variance v of the centred learning signal (1 freezes them)")
NORMALISE = Option("variance_normalisation", True, boolean,
                   "divide the centred learning signal by max(1, sqrt(running variance))")
LOCAL = Option("local_signals", True, boolean,
               "a learning signal per guide layer, only the terms downstream of it (else log p - log q for all)")

NVIL_OPTIONS = TRAINING + (BASELINE_HIDDEN, DECAY, NORMALISE, LOCAL)

BOUND_SAMPLES = 10  # the method's own bound: the ELBO per data point, the mean over 10 samples of h ~ q

_NVIL = "NVIL (Mnih & Gregor 2014): ELBO, recognition guide, local learning signals, input-dependent baselines"
METHODS = (
    Entry("nvil", "numpyro", ".numpyro", "build", NVIL_OPTIONS, _NVIL, guide="recognition"),
    Entry("nvil", "pyro", ".pyro", "build", NVIL_OPTIONS, _NVIL, guide="recognition"),
)


class SignalTerms(NamedTuple):
    """Which terms make each learning signal ``c_s`` (``s`` = 0 .. S-1), as layer indices
    (0 is ``x``), static and hashable.

    ``model[s]``: the layers ``j`` whose ``log p(h_j | pa(h_j))`` enter ``c_s`` (``P_l``);
    ``guide[s]``: the layers whose ``log q`` enter it, with a minus sign (``D_l``);
    ``score[s]``: the layers whose score ``grad_phi log q(h_l | .)`` it multiplies;
    ``inputs[s]``: the layers the baseline ``b_s`` reads.
    """

    model: tuple[tuple[int, ...], ...]
    guide: tuple[tuple[int, ...], ...]
    score: tuple[tuple[int, ...], ...]
    inputs: tuple[tuple[int, ...], ...]


def guide_downstream(arch, layer: int) -> tuple[int, ...]:
    """``D_l``: ``layer`` and every layer the guide samples after it with a recognition
    parent already in the set (``{l, ..., L}`` for layered and dense recognition networks)."""
    down = {layer}
    for k in range(layer + 1, arch.num_layers + 1):
        if down & set(arch.recognition_parents(k)):
            down.add(k)
    return tuple(sorted(down))


def signal_terms(arch, local: bool = True) -> SignalTerms:
    """The learning signals' terms (the module docstring's ``P_l`` and ``D_l``).

    With ``local`` there is one signal per guide layer ``l``. It multiplies the score of that
    layer alone, and its baseline reads the layer's guide input ``arch.recognition_parents(l)``.
    Otherwise one signal, ``log p(x, h) - log q(h | x)``, serves every layer, and its baseline
    reads ``x``.
    """
    layers = tuple(range(1, arch.num_layers + 1))
    if not local:
        return SignalTerms((tuple(range(arch.num_layers + 1)),), (layers,), (layers,), ((0,),))
    model, guide = [], []
    for l in layers:
        down = set(guide_downstream(arch, l))
        model.append(tuple(j for j in range(arch.num_layers + 1) if j in down or down & set(arch.parents(j))))
        guide.append(tuple(sorted(down)))
    return SignalTerms(tuple(model), tuple(guide), tuple((l,) for l in layers),
                       tuple(tuple(arch.recognition_parents(l)) for l in layers))


def baseline_init(arch, hidden: int = 100, seed: int = 0, local: bool = True) -> dict[str, np.ndarray]:
    """Initial parameters of the baseline nets ``b_s(u) = tanh(sum_m h_m U_m_s + e_s) . w_s + d_s``.

    There is one net per signal ``s`` (1-based: the guide layer, or 1 for the global signal).
    ``nvil_U_<m>_<s>`` ``(n_m, hidden)`` is drawn from N(0, 1/fan_in). ``nvil_e_<s>``,
    ``nvil_w_<s>`` and ``nvil_d_<s>`` start at zero, so ``b = 0`` at the start and the first
    steps are the plain estimator. The arrays are float32, and both backends start from
    them.
    """
    rng = np.random.default_rng([int(seed), 0x4E56])
    out = {}
    for s, inputs in enumerate(signal_terms(arch, local).inputs, start=1):
        fan_in = sum(arch.sizes[m] for m in inputs)
        for m in inputs:
            out[f"nvil_U_{m}_{s}"] = rng.standard_normal((arch.sizes[m], hidden)) / np.sqrt(fan_in)
        out[f"nvil_e_{s}"], out[f"nvil_w_{s}"], out[f"nvil_d_{s}"] = np.zeros(hidden), np.zeros(hidden), np.zeros(())
    return {k: np.asarray(v, np.float32) for k, v in out.items()}
