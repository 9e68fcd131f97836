"""Mean-field SVI: the SBN and a fully factorised guide, fitted together by stochastic
gradient ascent on the ELBO with each PPL's own ``SVI``.

The guide ``q(h | x) = prod_{l,i} Bernoulli(h_{l,i} | mu_{l,i})`` is amortised
(``logit mu_l = q_mf_b_l + x @ q_mf_W_0_l``, :func:`sbn_ppl.models.numpyro_sbn.mean_field_guide`)
or local (one free logit per training point and unit, ``q_mf_local_l[n]``,
:mod:`sbn_ppl.models.mean_field_local`). For a batch ``B`` of the ``N`` training points
(the runner's: the model and guide see its rows, the local guide also its indices to pick
its logits, with every log-density scaled by ``N / B``) one step ascends

    (N / B) sum_{n in B} [log p(x_n, h_n) - log q(h_n | x_n)],   h_n ~ q(. | x_n),

an unbiased estimate of ``sum_n ELBO_n``; the reported ``objective`` is it divided by
``N`` (the ELBO per data point). The hidden units are discrete, so the guide's gradient is
the score-function estimator with a baseline (:mod:`sbn_ppl.inference.shared.score_function`):
NumPyro's ``SVI`` with :class:`~sbn_ppl.inference.shared.score_function.numpyro.TraceGraphBaselineELBO`,
Pyro's ``SVI`` with its stock ``TraceGraph_ELBO`` and ``infer["baseline"]``.

Options (one schema for both backends):

* ``jit``, "compile the training step", the same meaning on both. NumPyro: the step is a
  jitted ``svi.update`` that the runner ``lax.scan``s; it is always compiled, so ``jit=False``
  is refused there (JAX's own ``jax.disable_jit()`` context runs it op by op for
  debugging). Pyro: ``JitTraceGraph_ELBO`` (the same estimator, traced once by
  ``torch.jit``) instead of ``TraceGraph_ELBO``; it cannot compile Pyro's decaying-average
  baseline (Pyro writes the average into the param store inside the traced step, which the
  trace does not replay), so ``jit=True`` with ``baseline="decaying"`` is refused. The
  default, ``True``, is the compiled step on both.
* ``amortised`` (default) or ``--no-amortised`` (local logits). A local fit saves its
  logits ``q_mf_local_<l>`` (``N x n_l`` per layer: the state a resumed run needs), but no
  amortised ``q_mf_b``/``q_mf_W`` keys: its guide has no ``q(h | x)`` for new data, and
  importance sampling refuses it.
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING, Option, boolean, choice, positive_int

from sbn_ppl.inference.shared.score_function import BASELINES

AMORTISED = Option("amortised", True, boolean,
                   "amortised guide logit mu = q_mf_b + x @ q_mf_W (else one free logit per training point)")
BASELINE = Option("baseline", "nvil", choice(*BASELINES),
                  "score-function baseline: none, decaying (Pyro's average) or nvil (input-dependent net)")
NUM_PARTICLES = Option("num_particles", 1, positive_int, "samples h ~ q per data point and step")
JIT = Option("jit", True, boolean, "compile the training step (Pyro: JitTraceGraph_ELBO; NumPyro: always)")

MEAN_FIELD_SVI_OPTIONS = TRAINING + (AMORTISED, BASELINE, NUM_PARTICLES, JIT)

_SVI = "mean-field guide by SVI, score-function ELBO with baselines (none, decaying, NVIL's input-dependent)"
METHODS = (
    Entry("mean-field-svi", "numpyro", ".numpyro", "build", MEAN_FIELD_SVI_OPTIONS, _SVI + "; NumPyro SVI, jitted",
          guide="mean_field"),
    Entry("mean-field-svi", "pyro", ".pyro", "build", MEAN_FIELD_SVI_OPTIONS,
          _SVI + "; Pyro SVI + (Jit)TraceGraph_ELBO", guide="mean_field"),
)
