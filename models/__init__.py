"""The SBN as a Pyro model and as a NumPyro model, with their guides.

``sbn_ppl.models.pyro_sbn`` imports torch and Pyro only; ``sbn_ppl.models.numpyro_sbn``
imports JAX and NumPyro only. Both define the same sites: ``"hL" ... "h1"`` (hidden, top
first) and ``"x"`` (visible), each an elementwise Bernoulli inside a plate over its units
(``units_<site>``, dim -1) inside the data plate (``"data"``, dim -2).
"""
