"""The particle arithmetic on Pyro traces (:mod:`sbn_ppl.inference.shared.particles.pyro`)
against the NumPy float64 reference densities (:mod:`sbn_ppl.base.density`)."""
import numpy as np
import pyro
import pytest
import torch
from scipy.special import logsumexp

from sbn_ppl.base import density
from sbn_ppl.inference.shared.particles.pyro import (effective_sample_size, log_mean_exp, log_weights,
                                                      particle_traces, per_point_log_prob)
from sbn_ppl.models import pyro_sbn
from tests.conftest import all_binary

pyro.enable_validation(True)
K = 7


@pytest.mark.parametrize("guide", ["recognition", "mean_field"])
def test_trace_reduction_gives_log_p_minus_log_q_per_particle_and_point(small_params, guide):
    """Every layer's site reduced to ``(K, B)``: ``log p(x_n, h_nk) - log q(h_nk | x_n)`` at the
    guide's own draws, as the float64 reference computes it (layered and dense nets)."""
    fn = pyro_sbn.recognition_guide if guide == "recognition" else pyro_sbn.mean_field_guide
    x = all_binary(small_params.architecture.visible_size)[::3]
    with pyro.get_param_store().scope(), torch.no_grad():
        pyro.set_rng_seed(0)
        model_trace, guide_trace = particle_traces(pyro_sbn.model, fn, K, 1, (small_params, torch.as_tensor(x)))
        log_p, scale = per_point_log_prob(model_trace, 1)
        log_q, _ = per_point_log_prob(guide_trace, 1)
    hidden = [guide_trace.nodes[f"h{l}"]["value"].double().numpy()
              for l in range(1, small_params.architecture.num_layers + 1)]
    assert hidden[0].shape == (K, len(x), small_params.architecture.sizes[1]) and scale == 1.0
    layers = [np.broadcast_to(x.astype(np.float64), (K,) + x.shape)] + hidden
    want = density.log_joint(small_params, layers) - density.guide_log_prob(small_params, guide, layers)
    np.testing.assert_allclose((log_p - log_q).double().numpy(), want, rtol=1e-5, atol=1e-4)


def test_log_weights_are_the_reduction_of_one_seeded_draw_and_scale_a_subsample(small_params):
    x = torch.as_tensor(all_binary(small_params.architecture.visible_size))
    index = torch.tensor([3, 0, 9])
    with pyro.get_param_store().scope():
        pyro.set_rng_seed(1)
        log_w = log_weights(pyro_sbn.model, pyro_sbn.recognition_guide, small_params, x, num_particles=K,
                            subsample=index)
        pyro.set_rng_seed(1)
        traces = particle_traces(pyro_sbn.model, pyro_sbn.recognition_guide, K, 1, (small_params, x),
                                 {"subsample": index})
    (log_p, scale), (log_q, _) = (per_point_log_prob(t, 1) for t in traces)
    assert log_w.shape == (K, 3) and not log_w.requires_grad
    assert scale == pytest.approx(len(x) / 3)  # the data plate's N / B
    np.testing.assert_array_equal(log_w.numpy(), (log_p - log_q).detach().numpy())


def test_a_site_outside_the_data_plate_is_refused():
    def model():
        pyro.sample("z", pyro.distributions.Normal(0.0, 1.0))

    trace = pyro.poutine.trace(model).get_trace()
    with pytest.raises(ValueError, match="outside the data plate"):
        per_point_log_prob(trace, 1)
    total, scale = per_point_log_prob(trace, 1, data_plate=None)
    assert total.shape == (1, 1) and scale == 1.0


def test_log_mean_exp_and_effective_sample_size_match_numpy():
    log_w = np.random.default_rng(0).normal(0, 3, (K, 5))
    w = np.exp(log_w)
    t = torch.as_tensor(log_w)
    np.testing.assert_allclose(log_mean_exp(t).numpy(), logsumexp(log_w, 0) - np.log(K), rtol=1e-12)
    np.testing.assert_allclose(effective_sample_size(t).numpy(), w.sum(0) ** 2 / (w ** 2).sum(0), rtol=1e-10)
    np.testing.assert_allclose(effective_sample_size(t.T, dim=1).numpy(), effective_sample_size(t).numpy())
    assert torch.allclose(effective_sample_size(torch.zeros(K, 2)), torch.full((2,), float(K)))
