"""Single-unit Gibbs sampling of an SBN's posterior ``p(h | x)`` (Neal 1992, section 3).

One sweep resamples every hidden unit once from its exact conditional, layer by layer
(``h1`` first, then ``h2`` ...), the units of a layer in turn (they are coupled through
shared children). For unit ``k`` with children ``c``, ``a_c^0`` the child's pre-activation
with ``h_k = 0``:

    logit p(h_k = 1 | rest) = a_k + sum_c [ c w_kc - softplus(a_c^0 + w_kc) + softplus(a_c^0) ]

The sweep keeps every layer's pre-activation ``a`` and its ``softplus(a)``; a unit's update
evaluates the children's pre-activation with the unit flipped, ``a_c + (1 - 2 s) w_kc``, and
its softplus (the only transcendental: one per child), and a flip keeps those as the new
cached values. A sweep costs O(edges) per data point and chain, like a forward pass; data
points and chains are the vectorised (leading) axes. Tempering (for AIS): ``beta``
multiplies the likelihood terms ``log p(x | h)`` only, so the sweep leaves ``p(h) p(x |
h)^beta`` invariant.

The kernels, one per backend, the same sweep order and the same arithmetic: ``numpyro.py``
(JAX) and ``pyro.py`` (torch). Each holds ``init``, ``sample_prior``, ``step`` (one sweep:
``step(key, state, params, x, beta) -> (state, info)``), ``conditional_logits`` (every
unit's exact conditional) and ``SBNGibbs``, the sweep as the PPL's ``MCMCKernel``. They are
samplers, not training methods: the learning rule that runs them is
:mod:`sbn_ppl.inference.neal` (method ``"gibbs"``), and annealed importance sampling
(:mod:`sbn_ppl.yardstick.ais`) uses the tempered sweep.
"""

METHODS = ()  # the "gibbs" methods are Neal's learning rule: see sbn_ppl.inference.neal
