"""What the relaxation estimators' tests share: the 10-4-3 nets, a batch, and the exact ELBO and
its gradient by enumerating all 2^7 hidden states (JAX, differentiable in theta and phi)."""
import jax.numpy as jnp
import numpy as np

from sbn_ppl import SBNParams
from sbn_ppl.base import density
from sbn_ppl.inference.shared.particles.numpyro import guide_log_prob
from sbn_ppl.models.numpyro_sbn import log_joint
from tests.conftest import all_binary

ARCH = "10-4-3"
CONNECTIVITIES = ("layered", "dense")


def net(connectivity: str):
    """A 10-4-3 SBN with a recognition network, non-zero biases, and 6 data points drawn from it."""
    params = SBNParams.init(ARCH, seed=3, scale=1.0, connectivity=connectivity).with_guide("recognition", 5)
    rng = np.random.default_rng(4)
    params = params.replace(**{k: rng.normal(0, 0.5, v.shape) for k, v in params.items() if "b_" in k})
    x = density.sample_prior(params, 6, np.random.default_rng(7))[0].astype(np.float32)
    return params, jnp.asarray(x)


def exact_elbo(arrays, arch, x):
    """``(1/N) sum_n sum_h q(h | x_n) [log p(x_n, h) - log q(h | x_n)]`` over all hidden states."""
    states = jnp.asarray(all_binary(arch.num_hidden))[:, None, :]  # (S, 1, H)
    cuts = np.cumsum((0,) + tuple(arch.hidden_sizes))
    layers = [x] + [jnp.broadcast_to(states[..., cuts[i]:cuts[i + 1]], (states.shape[0], x.shape[0], n))
                    for i, n in enumerate(arch.hidden_sizes)]
    log_q = guide_log_prob(arch, arrays, layers)
    return (jnp.exp(log_q) * (log_joint(arch, arrays, layers) - log_q)).sum(0).mean()


def phi_vector(grads: dict, keys) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(grads[k], np.float64)) for k in keys], axis=-1)


def draws_vector(grads: dict, keys) -> np.ndarray:
    """``(M, P)`` from a dict of ``(M, ...)`` draws."""
    return np.concatenate([np.asarray(grads[k], np.float64).reshape(len(grads[k]), -1) for k in keys], axis=1)
