"""Samplers that start at a timestep t instead of T-1 (``start_step``; SDEdit, Meng et al. 2021), checked
against closed forms for Gaussian data x0 ~ N(mu, s^2) and the exact denoiser (``conftest.gaussian_oracle``).

Given x_t, the true reverse process draws x0 from the posterior p(x0 | x_t) = N(m, v) with
    v = 1 / (1 / s^2 + abar / (1 - abar)),   m = v (mu / s^2 + sqrt(abar) x_t / (1 - abar)),
and the probability-flow ODE (deterministic DDIM, DPM-Solver++) maps x_t to the x0 with the same
standardized value: x0 = mu + s (x_t - sqrt(abar) mu) / sqrt(abar s^2 + 1 - abar) (the unique increasing
affine map from the Gaussian marginal at t to the data's). Both are written here from these formulas alone.
"""

import pytest
import torch

from ddpm_lib.math.diffusion import GaussianDiffusion
from ddpm_lib.math.sampling import Denoiser, SamplerSpec, sample, sampling_timesteps
from ddpm_lib.math.schedules import get_named_schedule

from conftest import DATA_MEAN as MU
from conftest import DATA_STD as S
from conftest import gaussian_oracle

START = 399  # the paper's t = 400 of T = 1000: abar ~ 0.27 (linear), ~ 0.38 (cosine)


def make(name: str, num_steps: int = 1000):
    diffusion = GaussianDiffusion(get_named_schedule(name, num_steps))
    return diffusion, Denoiser(gaussian_oracle(diffusion, MU, S), diffusion)


def run(denoiser, diffusion, x_t, spec, seed=1, start_step=START):
    return sample(denoiser, diffusion, x_t, SamplerSpec.parse(spec), torch.Generator().manual_seed(seed),
                  start_step=start_step).images


@pytest.mark.parametrize("spec", ["DDPM", "DDIM-10", "DDIM-10 eta 1", "DPM-Solver++-10", "DDIM-7 logsnr"])
def test_starting_at_the_last_step_is_the_plain_sampler(spec):
    diffusion, denoiser = make("cosine", 100)
    noise = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    plain = sample(denoiser, diffusion, noise, SamplerSpec.parse(spec), torch.Generator().manual_seed(5)).images
    assert torch.equal(run(denoiser, diffusion, noise, spec, seed=5, start_step=99), plain)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_stochastic_sdedit_draws_from_the_posterior_of_x0_given_x_t(name):
    """Every draw starts at the same x_t (a data point 3 s above the mean, noised to START with eps = 1): the
    stochastic samplers must draw from p(x0 | x_t), closer as the number of steps grows."""
    diffusion, denoiser = make(name)
    abar = float(diffusion.schedule.alphas_cumprod[START])
    x_t = abar**0.5 * (MU + 3 * S) + (1 - abar) ** 0.5
    v = 1 / (1 / S**2 + abar / (1 - abar))
    m = v * (MU / S**2 + abar**0.5 * x_t / (1 - abar))
    start = torch.full((100_000, 1, 1, 1), x_t, dtype=torch.float64)
    errors = []
    for spec in ("DDIM-10 eta 1", "DDIM-50 eta 1", "DDPM"):  # DDPM: all START + 1 steps
        out = run(denoiser, diffusion, start, spec)
        assert float(out.mean()) == pytest.approx(m, abs=0.01 * S)  # the posterior mean, not the data's
        errors.append(abs(float(out.std()) - v**0.5) / v**0.5)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.02, errors
    assert abs(m - MU) > 0.2 * S  # so a run that ignored x_t (the data mean) would fail above


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_deterministic_sdedit_follows_the_probability_flow_map_draw_for_draw(name):
    diffusion, denoiser = make(name)
    abar = float(diffusion.schedule.alphas_cumprod[START])
    eps = torch.randn(20_000, 1, 1, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x_t = abar**0.5 * (MU + 2 * S) + (1 - abar) ** 0.5 * eps  # one data point, noised to START
    exact = MU + S * (x_t - abar**0.5 * MU) / (abar * S**2 + 1 - abar) ** 0.5
    ddim = [float((run(denoiser, diffusion, x_t, f"DDIM-{steps}") - exact).abs().max()) / S for steps in (5, 20, 100)]
    assert ddim[0] > ddim[1] > ddim[2] and ddim[2] < 0.1, ddim  # first order: error ~ 1 / steps
    solver = float((run(denoiser, diffusion, x_t, "DPM-Solver++-100") - exact).abs().max()) / S
    assert solver < 0.005, solver


def test_the_visited_timesteps_start_at_start_step():
    schedule = get_named_schedule("cosine", 1000)
    assert sampling_timesteps(schedule, 4, start_step=399) == [399, 299, 199, 99]  # trailing over t = 0..399
    assert sampling_timesteps(schedule, 400, start_step=399) == list(range(399, -1, -1))
    assert sampling_timesteps(schedule, 5, start_step=None) == sampling_timesteps(schedule, 5)
    logsnr = sampling_timesteps(schedule, 6, "logsnr", start_step=399)
    assert logsnr[0] == 399 and logsnr[-1] == 0 and logsnr == sorted(logsnr, reverse=True)


def test_bad_start_steps_are_refused_with_a_message():
    diffusion, denoiser = make("linear", 100)
    x = torch.zeros(2, 1, 1, 1)
    for bad in (100, -1, 3.0):
        with pytest.raises(ValueError, match=r"start_step must be a timestep in 0..99"):
            run(denoiser, diffusion, x, "DDIM-5", start_step=bad)
    with pytest.raises(ValueError, match=r"at most|1 <= steps <= 10 "):
        run(denoiser, diffusion, x, "DDIM-20", start_step=9)
    with pytest.raises(ValueError, match="start_step must be"):
        run(denoiser, diffusion, x, "DDPM", start_step=100)
