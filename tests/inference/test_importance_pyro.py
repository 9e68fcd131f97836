"""Importance-sampled log p(x) with any Pyro guide, against the exact value by enumeration."""
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from sbn_ppl import SBNParams, evaluation
from sbn_ppl.inference.rws_pyro import importance_log_likelihood
from sbn_ppl.models import pyro_sbn
from tests.conftest import all_binary


def coin_guide(params, x, **kwargs):
    """A user's own guide: every hidden unit a fair coin, whatever x is."""
    with pyro.plate("data", x.shape[-2], dim=-2):
        for l in range(params.architecture.num_layers, 0, -1):
            with pyro.plate(f"units_h{l}", params.architecture.sizes[l], dim=-1):
                pyro.sample(f"h{l}", dist.Bernoulli(probs=torch.tensor(0.5)))


@pytest.mark.parametrize("guide", [coin_guide, pyro_sbn.recognition_guide])
def test_any_guide_gives_the_exact_log_likelihood_within_its_standard_error(guide):
    params = SBNParams.init("5-3-2", seed=1, scale=1.0)
    x = all_binary(5)[::3]
    exact = evaluation.exact_log_likelihood(params, x)
    pyro.clear_param_store()
    est = importance_log_likelihood(pyro_sbn.model, guide, params, torch.as_tensor(x),
                                    num_particles=4000, particles_per_batch=1000, seed=0)
    assert est.per_point.shape == (len(x),) and np.all(est.stderr > 0)
    # 32 hidden states and a proposal with no zeros: at K = 4,000 the delta-method standard
    # error is reliable, and 5 of them over 11 points keeps a false alarm below 1e-5.
    assert np.all(np.abs(est.per_point - exact) < 5 * est.stderr + 1e-3)


def test_seeded_and_batched_the_same_way():
    params = SBNParams.init("5-3-2", seed=1)
    x = torch.as_tensor(all_binary(5)[:4])
    pyro.clear_param_store()
    a = importance_log_likelihood(pyro_sbn.model, coin_guide, params, x, num_particles=50, seed=3)
    b = importance_log_likelihood(pyro_sbn.model, coin_guide, params, x, num_particles=50, seed=3)
    np.testing.assert_array_equal(a.per_point, b.per_point)
    with pytest.raises(ValueError, match="at least|>= 1"):
        importance_log_likelihood(pyro_sbn.model, coin_guide, params, x, num_particles=0)
