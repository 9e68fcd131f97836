"""The yardstick's estimators of ``log p(x)`` (NumPy-only here: their default settings).

* ``importance.py``: importance sampling with a guide, jitted, streaming, with ESS and
  Pareto k-hat (:func:`~sbn_ppl.yardstick.importance.is_log_likelihood`);
* ``ais.py``: annealed importance sampling from the prior, guide-free;
* ``posthoc.py``: a recognition network fitted to a frozen model, for methods without a
  usable guide.

The entry point is :func:`sbn_ppl.yardstick.score`; these modules import JAX, this one does not.
"""

IS_PARTICLES = 1000  # K, importance samples per data point (the papers use 5,000 for final figures)
AIS_TEMPERATURES = 500  # T, annealing steps (one tempered Gibbs sweep each)
AIS_CHAINS = 20  # C, independent annealing runs per data point

# The post-hoc guide: the same settings for every method unless told otherwise.
POSTHOC_STEPS = 10_000  # phi updates (20 epochs of 50,000 images at B = 100)
POSTHOC_PARTICLES = 5  # K for wake-phi, and dreams per data point for sleep-phi
POSTHOC_LR = 3e-3  # Adam's learning rate (the RWS default)
POSTHOC_BATCH_SIZE = 100
POSTHOC_INSOMNIA = 0.5  # weight of wake-phi against sleep-phi
