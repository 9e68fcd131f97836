"""The particle arithmetic that every importance-weighted method and scorer shares, once per
backend: draws ``h ~ q(. | x)`` from a guide (the recognition network or amortised mean
field) with their ``log q(h | x)``, the ancestral dreams ``(x, h) ~ p``, the log-weights
``log w = log p(x, h) - log q(h | x)``, their per-point reduction ``log (1/K) sum_k w_k`` (the
K-sample bound) and effective sample size ``(sum_k w_k)^2 / sum_k w_k^2``, and the wake-phi and
sleep-phi losses of (reweighted) wake-sleep. ``numpyro.py`` is the JAX copy (float32,
jittable); the NumPy float64 reference is :mod:`sbn_ppl.base.density`. A guide's draw uses one
uniform per hidden unit, compared on the unit's rare side, so a probability near 1 is never
rounded to 1 and a rare value keeps the probability ``log q`` gives it.
"""
