"""Single-unit Gibbs sampling of an SBN's posterior ``p(h | x)`` (Neal 1992, section 3).

The kernels, one per backend, the same sweep and the same arithmetic: ``numpyro.py`` (JAX,
with :class:`~sbn_ppl.inference.shared.gibbs.numpyro.SBNGibbs` for ``numpyro.infer.MCMC``) and
``pyro.py`` (torch, with its ``SBNGibbs`` for ``pyro.infer.MCMC``). Each holds ``init``,
``step`` (one sweep: ``step(key, state, params, x, beta) -> (state, info)``) and
``conditional_logits``. They are samplers, not training methods: the learning rule that
runs them is :mod:`sbn_ppl.inference.neal` (method ``"gibbs"``), and annealed importance
sampling (:mod:`sbn_ppl.yardstick.ais`) uses the tempered sweep.
"""

METHODS = ()  # the "gibbs" methods are Neal's learning rule: see sbn_ppl.inference.neal
