"""ARM (Yin & Zhou 2019, "ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary
Networks", ICLR 2019).

The single-sample ELBO, fitted in theta and the recognition network's phi together; phi's
gradient by antithetic uniforms. For one layer of independent binary units ``h_i ~
Bernoulli(sigma(c_i))`` and any ``F(h)``, with one uniform ``u_i`` per unit,

    grad_c E[F(h)] = E_u[(F(h~) - F(h)) (u - 1/2)],   h = [u < sigma(c)],  h~ = [u > sigma(-c)]

(the augmentation ``h = [u < sigma(c)]``, REINFORCE on ``u``, and the merge of ``u`` with ``1 - u``).
Here ``F = f = log p(x, h) - log q(h | x)`` held fixed (``E_q[grad_phi f] = -E_q[grad log q] =
0``). For the recognition network's ``L`` layers, the per-layer form of the paper's appendix:
for layer ``l``, the pair at layer ``l`` given the forward pass's layers below, the layers above
drawn from each member, ``f`` on each full sample; one uniform per unit and data point, one
pair per layer and data point (the shared form and its cost, ``L + 1`` evaluations of ``f``:
:mod:`sbn_ppl.inference.shared.elbo`). Layer ``l``'s logit gradient ``g_l = (f_l - f_0)(u'_l -
1/2)`` reaches phi through ``c_l``; theta's gradient is the mean of ``grad_theta log p`` over the
``L + 1`` samples.

One option schema for both backends (NumPy only): ``numpyro.py``, a jitted JAX step;
``pyro.py``, a Pyro loss object on the user's model and guide (its guide's Bernoulli draws made
from given uniforms by a messenger), used like ``pyro.infer.ReweightedWakeSleep``.
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING

ARM_OPTIONS = TRAINING

_ARM = ("ARM (Yin & Zhou 2019): single-sample ELBO, antithetic uniforms, one pair per layer and data point "
        "(per-layer form, L + 1 evaluations); bound: the ELBO, mean of f over 10 draws")
METHODS = (
    Entry("arm", "numpyro", ".numpyro", "build", ARM_OPTIONS, _ARM, guide="recognition"),
    Entry("arm", "pyro", ".pyro", "build", ARM_OPTIONS, _ARM, guide="recognition"),
)
