"""The forward process, the eps / x0 / v conversions and the training loss."""

import pytest
import torch

from ddpm_lib.math.diffusion import GaussianDiffusion
from ddpm_lib.math.schedules import get_named_schedule


@pytest.fixture(params=["linear", "cosine"])
def diffusion(request):
    return GaussianDiffusion(get_named_schedule(request.param, 1000))


def test_q_sample_moments_match_the_closed_form(diffusion):
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([0.8, -1.5, 0.0]).reshape(1, 3, 1, 1).expand(200_000, 3, 1, 1)
    for step in (0, 250, 999):
        t = torch.full((x0.shape[0],), step)
        x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=g))
        abar = float(diffusion.schedule.alphas_cumprod[step])
        expected_mean = abar**0.5 * x0[0].flatten()
        assert torch.allclose(x_t.mean(0).flatten(), expected_mean, atol=0.01)
        assert torch.allclose(x_t.var(0).flatten(), torch.full((3,), 1 - abar), rtol=0.02, atol=1e-4)


def test_conversions_between_eps_x0_and_v_are_mutually_inverse(diffusion):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 100, 500, 900, 998, 999])
    x_t = diffusion.q_sample(x0, t, eps)
    assert torch.allclose(diffusion.predict_eps_from_x0(x_t, t, x0), eps, atol=1e-6)
    v = diffusion.v_from_x0_eps(x0, t, eps)
    assert torch.allclose(diffusion.predict_x0_from_v(x_t, t, v), x0, atol=1e-9)
    assert torch.allclose(diffusion.predict_eps_from_v(x_t, t, v), eps, atol=1e-9)
    middle = t < 999  # at t = T-1 abar is tiny: recovering x0 from eps amplifies rounding
    assert torch.allclose(diffusion.predict_x0_from_eps(x_t, t, eps)[middle], x0[middle], atol=1e-8)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_a_perfect_network_of_each_kind_gives_the_true_eps_and_x0(prediction):
    diffusion = GaussianDiffusion(get_named_schedule("linear", 1000), prediction=prediction)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([3, 200, 600, 950])
    x_t = diffusion.q_sample(x0, t, eps)
    target = diffusion.training_target(x0, t, eps)

    def perfect(x, cond):
        return target

    eps_hat, x0_hat = diffusion.predict_eps_x0(perfect, x_t, t)
    assert torch.allclose(eps_hat, eps, atol=1e-6) and torch.allclose(x0_hat, x0, atol=1e-6)
    clipped_eps, clipped_x0 = diffusion.predict_eps_x0(perfect, x_t, t, clip_range=(-0.5, 0.5))
    assert clipped_x0.min() >= -0.5 and clipped_x0.max() <= 0.5
    assert torch.allclose(diffusion.q_sample(clipped_x0, t, clipped_eps), x_t, atol=1e-9)  # consistent pair


def test_timesteps_are_drawn_uniformly_from_all_T_steps():
    diffusion = GaussianDiffusion(get_named_schedule("linear", 10))
    t = diffusion.sample_timesteps(100_000, "cpu", torch.Generator().manual_seed(0))
    counts = torch.bincount(t, minlength=10)
    assert t.min() == 0 and t.max() == 9  # both ends, unlike the study's 1..T-1
    assert torch.allclose(counts.float() / 100_000, torch.full((10,), 0.1), atol=0.005)


def test_training_loss_mse_and_mae_against_hand_computed_values():
    schedule = get_named_schedule("linear", 1000)
    x0 = torch.ones(2, 1, 2, 2)
    noise = torch.full((2, 1, 2, 2), 2.0)
    t = torch.tensor([0, 999])

    def zero_network(x, cond):
        return torch.zeros_like(x)

    mse = GaussianDiffusion(schedule, loss="mse").training_loss(zero_network, x0, t, noise)
    mae = GaussianDiffusion(schedule, loss="mae").training_loss(zero_network, x0, t, noise)
    assert float(mse) == pytest.approx(4.0) and float(mae) == pytest.approx(2.0)


def test_networks_see_their_own_conditioning():
    diffusion = GaussianDiffusion(get_named_schedule("cosine", 1000))
    seen = {}

    class VarianceNet(torch.nn.Module):
        conditioning = "noise_variance"

        def forward(self, x, cond):
            seen["variance"] = cond
            return torch.zeros_like(x)

    def timestep_net(x, cond):
        seen["timestep"] = cond
        return torch.zeros_like(x)

    t = torch.tensor([0, 500, 999])
    x = torch.zeros(3, 1, 2, 2)
    diffusion.model_output(VarianceNet(), x, t)
    diffusion.model_output(timestep_net, x, t)
    expected = (1 - diffusion.schedule.alphas_cumprod[t]).float()
    assert torch.allclose(seen["variance"], expected)
    assert torch.equal(seen["timestep"], t.float())


def test_bad_choices_raise():
    schedule = get_named_schedule("linear", 10)
    with pytest.raises(ValueError, match="prediction"):
        GaussianDiffusion(schedule, prediction="score")
    with pytest.raises(ValueError, match="loss"):
        GaussianDiffusion(schedule, loss="huber")
