"""Mean-field theory for sigmoid belief networks (Saul, Jaakkola & Jordan 1996, "Mean field
theory for sigmoid belief networks"): a deterministic lower bound on ``log p(x)``, maximised
by damped layer-parallel fixed-point sweeps on each data point's ``(mu, xi)`` and by gradient
ascent on the weights.

**The bound.** With ``q(h) = prod_i mu_i^{h_i} (1 - mu_i)^{1 - h_i}`` (``mu_i = sigma(lambda_i)``;
the visible units clamped, ``mu = x``), every unit ``i`` with pre-activation ``z_i = b_i +
sum_j w_ji s_j`` contributes ``E_q[s_i z_i - log(1 + e^{z_i})]``, and the intractable term is
bounded with a variational ``xi_i`` by Jensen (SJJ eq. 11):

    E[log(1 + e^z)] <= xi <z> + log <e^{-xi z} + e^{(1 - xi) z}>,
    log <e^{t z_i}> = t b_i + sum_j log d_ji(t),    d_ji(t) = 1 - mu_j + mu_j e^{t w_ji}.

With ``A_i``, ``B_i`` the log-moments at ``t = -xi_i`` and ``t = 1 - xi_i`` (SJJ eq. 12):

    L(mu, xi) = sum_i [(mu_i - xi_i) <z_i> - logaddexp(A_i, B_i)] + sum_{i hidden} H(mu_i).

**The sweeps, every unit at once.** With ``omega_i = sigma(A_i - B_i)`` and the tilted means
``p_ji(t) = mu_j e^{t w_ji} / d_ji(t)``, ``m_i(t) = b_i + sum_j w_ji p_ji(t)``:

* ``xi``: ``L`` is concave and separable in ``xi``, ``dL/dxi_i = omega_i m_i(-xi_i) + (1 -
  omega_i) m_i(1 - xi_i) - <z_i>``; the proposal is Newton's step clipped to ``[0, 1]``, its
  curvature's tilted variances replaced by the secant ``m_i(1 - xi_i) - m_i(-xi_i)``.
* ``lambda``: SJJ's fixed point ``lambda_i = dL/dmu_i`` without the entropy:
  ``lambda_i <- <z_i> + sum_{k child of i} [(mu_k - xi_k) w_ik - omega_k D_ik(-xi_k) - (1 -
  omega_k) D_ik(1 - xi_k)]``, ``D_ik(t) = (e^{t w_ik} - 1) / d_ik(t)``.

Both are ascent directions, so the damped move ``(lambda, xi) + eta (target - (lambda, xi))``
raises ``L`` for a small ``eta``. Units of a layer are coupled through shared children, so
each data point takes its move only if its bound does not go down, else keeps its point and
halves ``eta`` (a move taken doubles it, at most 1): ``L`` never decreases, and a sweep
costs one pass over the edges (SJJ update one unit at a time, each with a line search).

**Learning.** Gradient ascent on ``L`` in the generative weights at the ``(mu, xi)`` reached,
each training point keeping its ``lambda``, ``xi`` and ``eta`` between visits, in closed form:

    dL/dw_ji = (mu_i - xi_i) mu_j + omega_i xi_i p_ji(-xi_i) - (1 - omega_i)(1 - xi_i) p_ji(1 - xi_i),
    dL/db_i  = mu_i - sigma(B_i - A_i).

One option schema (NumPy only); ``numpyro.py`` is the jitted JAX method (no Pyro twin).
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING, Option, positive_int

ITERATIONS = Option("iterations", 1, positive_int,
                    "damped sweeps of the batch's (mu, xi) (all units at once) before each weight step")
BOUND_SWEEPS = Option("bound_sweeps", 100, positive_int,
                      "most sweeps from mu = xi = 1/2 for the bound on new data (it stops once converged)")

FIXED_POINT_OPTIONS = TRAINING + (ITERATIONS, BOUND_SWEEPS)

METHODS = (
    Entry("mean-field-fixed-point", "numpyro", ".numpyro", "build", FIXED_POINT_OPTIONS,
          "SJJ mean-field bound: layer-parallel fixed-point sweeps on (mu, xi), gradient steps on the weights"),
)
