"""Importance-sampled log p(x) with any Pyro guide, against the exact value by enumeration."""
from functools import partial

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from sbn_ppl import SBNParams
import sbn_ppl.yardstick.exact as enumeration
from sbn_ppl.yardstick.importance_pyro import guide_importance_log_likelihood
from sbn_ppl.models import pyro_sbn
from tests.conftest import all_binary

unit_plated_model = partial(pyro_sbn.model, unit_plates=True)


def coin_guide(params, x, **kwargs):
    """A user's own guide: every hidden unit a fair coin, whatever x is, each unit of a layer
    in a plate over the layer's units (so it pairs with the model's ``unit_plates=True``)."""
    with pyro.plate("data", x.shape[-2], dim=-2):
        for l in range(params.architecture.num_layers, 0, -1):
            with pyro.plate(f"units_h{l}", params.architecture.sizes[l], dim=-1):
                pyro.sample(f"h{l}", dist.Bernoulli(probs=torch.tensor(0.5)))


def layer_coin_guide(params, x, **kwargs):
    """The same fair coins, one ``.to_event(1)`` site per layer (the model's default layout)."""
    with pyro.plate("data", x.shape[-2], dim=-1):
        for l in range(params.architecture.num_layers, 0, -1):
            pyro.sample(f"h{l}", dist.Bernoulli(probs=torch.full((params.architecture.sizes[l],), 0.5)).to_event(1))


@pytest.mark.parametrize("model, guide", [(unit_plated_model, coin_guide), (pyro_sbn.model, layer_coin_guide),
                                          (pyro_sbn.model, pyro_sbn.recognition_guide)],
                         ids=["unit-plated-coins", "coins", "recognition"])
def test_any_guide_gives_the_exact_log_likelihood_within_its_standard_error(model, guide):
    params = SBNParams.init("5-3-2", seed=1, scale=1.0)
    x = all_binary(5)[::3]
    exact = enumeration.exact_log_likelihood(params, x)
    pyro.clear_param_store()
    with pyro.validation_enabled(True):  # the model/guide pairing is checked
        est = guide_importance_log_likelihood(model, guide, params, torch.as_tensor(x),
                                              num_particles=4000, particles_per_batch=1000, seed=0)
    assert est.per_point.shape == (len(x),) and np.all(est.stderr > 0)
    # 32 hidden states and a proposal with no zeros: at K = 4,000 the delta-method standard
    # error is reliable, and 5 of them over 11 points keeps a false alarm below 1e-5.
    assert np.all(np.abs(est.per_point - exact) < 5 * est.stderr + 1e-3)


def test_seeded_and_needs_a_particle():
    params = SBNParams.init("5-3-2", seed=1)
    x = torch.as_tensor(all_binary(5)[:4])
    pyro.clear_param_store()
    a = guide_importance_log_likelihood(unit_plated_model, coin_guide, params, x, num_particles=50, seed=3)
    b = guide_importance_log_likelihood(unit_plated_model, coin_guide, params, x, num_particles=50, seed=3)
    np.testing.assert_array_equal(a.per_point, b.per_point)
    with pytest.raises(ValueError, match="at least|>= 1"):
        guide_importance_log_likelihood(unit_plated_model, coin_guide, params, x, num_particles=0)


def test_a_guide_in_the_other_site_layout_is_refused():
    """Pyro's validation checks the pairing: unit-plated coins against the default model."""
    params = SBNParams.init("5-3-2", seed=1)
    pyro.clear_param_store()
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="event_dims disagree"):
        guide_importance_log_likelihood(pyro_sbn.model, coin_guide, params, torch.as_tensor(all_binary(5)[:4]),
                                        num_particles=10)
