"""DPM-Solver++ (2M), proved by the analytic oracle: with the exact denoiser the probability-flow
ODE maps N(0, I) onto the data distribution, so what a sampler misses is its discretisation error.

With the exact denoiser of Gaussian data every deterministic sampler is an affine map of the start
noise, so the spread it produces is measured as std(output) / std(start noise): that ratio is the
map's slope, free of the draws' own sampling error (which would drown errors below ~0.5%).
"""

import numpy as np
import pytest
import torch

from ddpm_lib.math.diffusion import GaussianDiffusion
from ddpm_lib.math.sampling import SamplerSpec, sampling_timesteps
from ddpm_lib.math.schedules import get_named_schedule

from conftest import DATA_MEAN, DATA_STD, draw, gaussian_oracle

STEPS = (5, 10, 20, 50)


def make(name, num_steps=1000):
    diffusion = GaussianDiffusion(get_named_schedule(name, num_steps))
    return diffusion, gaussian_oracle(diffusion)


def noise(count=2_000, seed=0):
    return torch.randn(count, 1, 1, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def errors(sampler, diffusion, oracle, start, steps):
    """(spread error, mean error): |slope - sigma| and |intercept - mu| of the affine map noise -> sample."""
    out = draw(sampler, oracle, diffusion, start, steps=steps).images
    slope = float(out.std() / start.std())
    intercept = float(out.mean() - slope * start.mean())
    return abs(slope - DATA_STD), abs(intercept - DATA_MEAN)


def oracle_table(name):
    diffusion, oracle = make(name)
    start = noise()
    return {sampler: {steps: errors(sampler, diffusion, oracle, start, steps) for steps in (*STEPS, 1000)}
            for sampler in ("ddim", "dpm_solver")}


def fitted_order(spread_errors: dict) -> float:
    """The slope of log(error) against log(step size 1/S) over S = 10, 20, 50."""
    steps = np.array([10, 20, 50])
    return float(np.polyfit(np.log(1 / steps), np.log([spread_errors[s][0] for s in steps]), 1)[0])


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpm_solver_is_second_order_and_beats_ddim_from_10_steps(name):
    table = oracle_table(name)
    for steps in (10, 20, 50):
        assert table["dpm_solver"][steps][0] < table["ddim"][steps][0], steps  # closer spread at every count from 10
    dpm_order, ddim_order = fitted_order(table["dpm_solver"]), fitted_order(table["ddim"])
    assert dpm_order >= 1.8, dpm_order  # the error falls at least with the square of the step size
    assert 0.8 <= ddim_order <= 1.2, ddim_order  # DDIM is first order
    for sampler in ("ddim", "dpm_solver"):
        spread, mean = table[sampler][1000]
        assert spread < 0.01 * DATA_STD and mean < 0.01 * DATA_MEAN  # all T steps: within 1% of the data


def test_order_1_is_ddim_with_eta_0_on_the_same_noise():
    for name in ("linear", "cosine"):
        diffusion, oracle = make(name)
        start = noise(500, 3)
        for steps in (1, 5, 37):
            for spacing in ("trailing", "logsnr"):
                ddim = draw("ddim", oracle, diffusion, start, steps=steps, spacing=spacing).images
                first = draw("dpm_solver", oracle, diffusion, start, steps=steps, order=1, spacing=spacing).images
                assert torch.allclose(first, ddim, atol=1e-10, rtol=1e-10)


class Counting:
    """A network wrapper that counts its calls (and the images it saw)."""

    def __init__(self, network):
        self.network, self.calls = network, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.network(x, t)


@pytest.mark.parametrize("spacing", ["trailing", "logsnr", "linspace"])
@pytest.mark.parametrize("order", [1, 2])
def test_exactly_steps_network_evaluations(spacing, order):
    diffusion, oracle = make("linear", 100)
    for steps in (1, 2, 3, 10, 100):
        counting = Counting(oracle)
        draw("dpm_solver", counting, diffusion, torch.randn(4, 1, 2, 2), steps=steps, order=order, spacing=spacing)
        assert counting.calls == steps


def test_eps_x0_and_v_networks_give_the_same_samples():
    schedule = get_named_schedule("cosine", 1000)
    start = noise(200, 4)
    outputs = {}
    for prediction in ("eps", "x0", "v"):
        diffusion = GaussianDiffusion(schedule, prediction=prediction)
        eps_oracle = gaussian_oracle(diffusion)

        def network(x, t, diffusion=diffusion, eps_oracle=eps_oracle):
            eps = eps_oracle(x, t)
            x0 = diffusion.predict_x0_from_eps(x, t.long(), eps)
            return {"eps": eps, "x0": x0, "v": diffusion.v_from_x0_eps(x0, t.long(), eps)}[diffusion.prediction]

        outputs[prediction] = draw("dpm_solver", network, diffusion, start, steps=20).images
    assert torch.allclose(outputs["x0"], outputs["eps"], atol=1e-8)
    assert torch.allclose(outputs["v"], outputs["eps"], atol=1e-8)


def test_trajectory_and_clipping():
    diffusion, oracle = make("linear", 100)
    start = noise(3, 1).reshape(3, 1, 1, 1)
    out = draw("dpm_solver", oracle, diffusion, start, steps=10, trajectory_every=3)
    assert out.trajectory.timesteps == [sampling_timesteps(diffusion.schedule, 10, "trailing")[i] for i in (0, 3, 6, 9)]
    assert torch.equal(out.images, draw("dpm_solver", oracle, diffusion, start, steps=10).images)  # deterministic
    wide = gaussian_oracle(diffusion, mu=0.0, sigma=5.0)
    clipped = draw("dpm_solver", wide, diffusion, noise(500, 2).float(), steps=10, clip_range=(-2.0, 2.0))
    assert float(clipped.images.abs().max()) <= 2.0 + 1e-5  # the last step lands on the clipped x0


def test_bad_solver_settings_name_themselves():
    diffusion, oracle = make("linear", 100)
    with pytest.raises(ValueError, match="steps=0: DPM-Solver"):
        SamplerSpec("dpm_solver", 0)
    with pytest.raises(ValueError, match="steps=101: at most T = 100"):
        draw("dpm_solver", oracle, diffusion, noise(1), steps=101)
    with pytest.raises(ValueError, match="spacing='uniform'"):
        SamplerSpec("dpm_solver", 5, spacing="uniform")
    with pytest.raises(ValueError, match="order=3"):
        SamplerSpec("dpm_solver", 5, order=3)
