"""The SBN as a Pyro model and as a NumPyro model, with their guides.

``sbn_ppl.models.pyro_sbn`` imports torch and Pyro only; ``sbn_ppl.models.numpyro_sbn``
imports JAX and NumPyro only. Both define the same sites, ``"hL" ... "h1"`` (hidden, top
first) and ``"x"`` (visible), one site per layer inside the data plate ``"data"``:

- ``model(...)`` (default) and both guides: each layer one ``Bernoulli(logits).to_event(1)``
  site of shape ``(N, n_l)``, the ``"data"`` plate at dim -1. A guide's layer depends on all
  of the layers below it, so no plate may declare its units independent: a TraceGraph ELBO
  prunes the learning signal by plates, and a plate over the units of the recognition
  guide biased its gradients.
- ``model(..., unit_plates=True)``: the same density with elementwise Bernoulli sites, each
  inside a plate over its units (``units_<site>``, dim -1) inside ``"data"`` (dim -2), for
  NumPyro's stock ``DiscreteHMCGibbs`` (it needs elementwise discrete sites). Pyro and NumPyro
  both refuse to pair it with the guides (their event dims differ).

``model`` and the guides take ``subsample_size=B`` (a random mini-batch) or ``subsample=idx``
(an explicit one); either way the log-densities are scaled by ``N / B``.
"""
