"""What the unbiased estimators of the single-sample ELBO's gradient share (REINFORCE
leave-one-out, ARM, DisARM), once per backend.

Per data point ``x``, with ``f(h) = log p(x, h) - log q(h | x)`` (the learning signal),

    ELBO           E_q[f(h)]
    grad_theta     E_q[grad_theta log p(x, h)]
    grad_phi       E_q[f(h) grad_phi log q(h | x)]        (E_q[grad_phi log q] = 0 removes f's own phi)

Each method is a *surrogate* ``S_n`` whose value is an unbiased estimate of the ELBO and whose
gradient is the method's estimator; the methods differ only in how they estimate
``grad_phi``. :mod:`numpyro` holds the kernel that turns a surrogate into a method (one optax
optimiser over theta and phi, the per-point ELBO as the bound, one draw of the guide's
gradient for the variance diagnostic) and the antithetic pairs of ARM and DisARM;
:mod:`pyro` the same on Pyro traces, with a messenger that makes the guide's Bernoulli draws
from given uniforms.

**Antithetic pairs, per layer** (Yin & Zhou 2019, Appendix "multi-layer ARM"; Dong, Mnih &
Tucker 2020, sec. "multi-layer"): the guide is ``q(h_1 | x) q(h_2 | below) ... q(h_L | below)``,
layer ``l``'s units independent given the layers below with logits ``c_l``. Draw one uniform
``u`` per hidden unit; the forward pass ``h`` (branch 0) compares ``u`` on each unit's rare side.
For each layer ``l`` a branch ``l`` repeats the forward pass with layer ``l``'s uniforms
replaced by ``1 - u_l``: the same layers below, the antithetic ``h~_l`` of ``h_l`` at the same
logits, and the layers above drawn from ``h~_l`` with the same uniforms ``u_{>l}`` (common
random numbers). Branch ``l``'s sample and branch 0's are each a draw of ``q`` given ``h_{<l}``,
``f`` is evaluated once per branch: ``L + 1`` evaluations per data point (the paper's form
evaluates both members of each pair, ``2L``; here one member of every pair is the forward pass
itself, which is a valid conditional draw of the layers above, so the estimator stays unbiased).
The layer's logit gradient ``g_l`` (ARM's or DisARM's, from ``f_0, f_l, u_l, c_l, h_l, h~_l``)
then flows into ``phi`` through ``c_l`` at the forward pass's layers below:

    S_n = (1/(L+1)) sum_b [log p(x, h^b) - sg(log q(h^b | x))] + sum_l sum_i sg(g_li) (c_li - sg(c_li))

(``sg``: stop-gradient; the second term is zero in value). theta's gradient is the mean of
``grad_theta log p`` over the ``L + 1`` branches, each a draw of ``q``.
"""
