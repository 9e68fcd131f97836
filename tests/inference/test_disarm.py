"""DisARM (Dong, Mnih & Tucker 2020), both backends, in its per-layer form.

The specification: phi's (and theta's) gradient is unbiased for the exact gradient of the ELBO,
enumerated on a 10-4-3 net of either connectivity; on the same net, parameters and uniforms its
phi-gradient variance is at most ARM's (Dong et al.'s theorem, measured here, not assumed); a
short fit through the runner raises the ELBO; the kernel draws the guide's gradient.
"""
import numpy as np
import pytest

from sbn_ppl.inference.arm.numpyro import arm_logit_gradient
from sbn_ppl.inference.arm.pyro import ARM
from sbn_ppl.inference.disarm.numpyro import disarm_logit_gradient
from sbn_ppl.inference.disarm.pyro import DisARM
from sbn_ppl.inference.shared.elbo.numpyro import antithetic_surrogate
from tests.inference.elbo_gradients import (CONNECTIVITIES, assert_a_short_fit_raises_the_elbo,
                                            assert_the_kernel_draws_the_guide_gradient, assert_unbiased, data,
                                            exact_elbo_gradient, jax_draws, net, phi_mask, pyro_draws)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The variance test: DisARM / ARM, the summed variance over phi's coordinates, same draws. The
# theorem gives <= 1 per coordinate; the ratio estimated from paired draws (2,000 in JAX, 200
# of 50 rows in Pyro) carries a sampling error of a few per cent, so the assertion keeps a
# margin below 1 that the measured ratios (0.73-0.80) clear by far: < 0.9.
VARIANCE_MARGIN = 0.9


def variance_ratio(disarm: np.ndarray, arm: np.ndarray, phi: np.ndarray) -> float:
    return float(disarm[:, phi].var(0).sum() / arm[:, phi].var(0).sum())


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
def test_jax_disarm_is_unbiased_and_less_variable_than_arm(connectivity):
    """2,000 draws on 4 data points: every theta and phi coordinate within 4.5 standard errors of
    the exact ELBO gradient (measured max |z| 2.3 layered, 2.2 dense). The same keys give ARM the
    same uniforms and samples: the summed phi variance of DisARM over ARM's is < 0.9 (measured
    0.751 layered, 0.785 dense; the ratio is printed by a failing assertion)."""
    params, x = net(connectivity), data(connectivity)
    arch = params.architecture
    exact = exact_elbo_gradient(params, x)
    disarm = jax_draws(lambda key, p, x: antithetic_surrogate(key, arch, p, x, disarm_logit_gradient), params, x)
    arm = jax_draws(lambda key, p, x: antithetic_surrogate(key, arch, p, x, arm_logit_gradient), params, x)
    assert_unbiased(disarm, exact, f"disarm numpyro {connectivity}")
    ratio = variance_ratio(disarm, arm, phi_mask(params))
    assert ratio < VARIANCE_MARGIN, f"variance(DisARM) / variance(ARM) = {ratio:.3f} ({connectivity}, JAX)"
    np.testing.assert_allclose(disarm[:, ~phi_mask(params)], arm[:, ~phi_mask(params)], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
def test_pyro_disarm_is_unbiased_and_less_variable_than_arm(connectivity):
    """The Pyro loss, 200 draws of 50 replicated rows: every coordinate within 4.5 standard
    errors (measured max |z| 1.8 layered, 2.7 dense); ARM on the same torch seed (the same
    uniforms): the summed phi variance ratio < 0.9 (measured 0.728 layered, 0.804 dense)."""
    params, x = net(connectivity), data(connectivity)
    disarm = pyro_draws(DisARM(max_plate_nesting=1), params, x)
    arm = pyro_draws(ARM(max_plate_nesting=1), params, x)
    assert_unbiased(disarm, exact_elbo_gradient(params, x), f"disarm pyro {connectivity}")
    ratio = variance_ratio(disarm, arm, phi_mask(params))
    assert ratio < VARIANCE_MARGIN, f"variance(DisARM) / variance(ARM) = {ratio:.3f} ({connectivity}, Pyro)"


@pytest.mark.parametrize("backend,steps", [("numpyro", 300), ("pyro", 150)])
def test_a_short_fit_raises_the_elbo(backend, steps):
    """Synthetic 10-4-3 teacher, batch 100, lr 0.03: the held-out ELBO rises from -6.98 to
    about -5.2 (measured -5.19 numpyro after 300 steps, -5.25 pyro after 150); asserted: by > 1 nat."""
    assert_a_short_fit_raises_the_elbo("disarm", backend, steps)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_the_kernel_draws_the_guide_gradient(backend):
    assert_the_kernel_draws_the_guide_gradient("disarm", backend)
