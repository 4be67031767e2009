"""The samplers, proved right independently of any training by an analytic oracle.

For data x0 ~ N(mu, sigma^2) the optimal noise predictor is known in closed form
(``conftest.gaussian_oracle``); driven by it, an exact sampler must reproduce the data
distribution. Reference spreads for few-step DDIM come from a separate numpy implementation
(``shared/FACTS.md``, "Checked numerically here": linspace spacing, 200,000 draws).
"""

import pytest
import torch

from ddpm_lib.math.diffusion import GaussianDiffusion
from ddpm_lib.math.sampling import (
    Denoiser,
    SamplerSpec,
    ddim_sample,
    ddim_timesteps,
    sampling_timesteps,
    standardized_range,
)
from ddpm_lib.math.schedules import get_named_schedule

from conftest import DATA_MEAN, DATA_STD, draw, gaussian_oracle

DRAWS = (100_000, 1, 1, 1)


def make(name):
    diffusion = GaussianDiffusion(get_named_schedule(name, 1000))
    return diffusion, gaussian_oracle(diffusion)


def start_noise(seed=0, shape=DRAWS):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def assert_matches_data(x, rel=0.02):
    assert float(x.mean()) == pytest.approx(DATA_MEAN, rel=rel)
    assert float(x.std()) == pytest.approx(DATA_STD, rel=rel)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddpm_over_all_steps_reproduces_the_data_distribution(name):
    diffusion, oracle = make(name)
    generator = torch.Generator().manual_seed(1)
    x = draw("ddpm", oracle, diffusion, start_noise(), generator).images
    assert_matches_data(x)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_eta0_over_all_steps_reproduces_the_data_distribution(name):
    diffusion, oracle = make(name)
    x = draw("ddim", oracle, diffusion, start_noise(), steps=1000, eta=0.0).images
    assert_matches_data(x)


# FACTS.md's numpy reference: DDIM eta 0, linspace spacing, std at 10 / 50 / 200 steps.
REFERENCE_STD = {"linear": {10: 0.181, 50: 0.275, 200: 0.293}, "cosine": {10: 0.233, 50: 0.287, 200: 0.297}}


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["linspace", "trailing"])
def test_few_step_ddim_keeps_the_mean_and_shrinks_the_spread(name, spacing):
    diffusion, oracle = make(name)
    noise = start_noise()
    spreads = []
    for steps in (10, 50, 200, 1000):
        x = draw("ddim", oracle, diffusion, noise, steps=steps, spacing=spacing).images
        assert float(x.mean()) == pytest.approx(DATA_MEAN, rel=0.02)
        spreads.append(float(x.std()))
        if spacing == "linspace" and steps in REFERENCE_STD[name]:
            assert spreads[-1] == pytest.approx(REFERENCE_STD[name][steps], abs=0.005)
    assert spreads == sorted(spreads) and len(set(spreads)) == 4  # strictly increasing with steps
    assert spreads[-1] == pytest.approx(DATA_STD, rel=0.02)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_eta1_over_all_steps_is_ddpm_draw_for_draw(name):
    diffusion, oracle = make(name)
    shape = (2_000, 1, 2, 2)
    noise = start_noise(3, shape)
    ddpm = draw("ddpm", oracle, diffusion, noise, torch.Generator().manual_seed(7)).images
    ddim = draw("ddim", oracle, diffusion, noise, torch.Generator().manual_seed(7), steps=1000, eta=1.0).images
    assert torch.allclose(ddim, ddpm, atol=1e-8, rtol=1e-8)
    other = draw("ddpm", oracle, diffusion, noise, torch.Generator().manual_seed(8)).images
    assert not torch.allclose(other, ddpm, atol=1e-3)  # the draws really matter


def test_ddim_eta0_is_deterministic_given_the_start_noise():
    diffusion, oracle = make("linear")
    noise = start_noise(4, (16, 1, 2, 2))
    a = draw("ddim", oracle, diffusion, noise, torch.Generator().manual_seed(1), steps=20)
    b = draw("ddim", oracle, diffusion, noise, torch.Generator().manual_seed(2), steps=20)
    assert torch.equal(a.images, b.images)


def test_a_seeded_ddpm_call_repeats_exactly():
    diffusion = GaussianDiffusion(get_named_schedule("linear", 100))
    oracle = gaussian_oracle(diffusion)
    shape = (8, 3, 4, 4)
    a, b, c = (draw("ddpm", oracle, diffusion, torch.randn(shape, generator=g), g).images
               for g in (torch.Generator().manual_seed(seed) for seed in (5, 5, 6)))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_trajectories_record_x_t_and_predicted_x0_at_chosen_steps():
    diffusion, oracle = make("linear")
    noise = start_noise(5, (3, 1, 2, 2))
    out = draw("ddim", oracle, diffusion, noise, steps=10, trajectory_every=3)
    trajectory = out.trajectory
    visited = ddim_timesteps(1000, 10)
    assert trajectory.timesteps == [visited[i] for i in (0, 3, 6, 9)]
    assert trajectory.x_t.shape == (4, 3, 1, 2, 2) and trajectory.pred_x0.shape == (4, 3, 1, 2, 2)
    assert torch.allclose(trajectory.x_t[0].double(), noise.float().double())  # first frame is x_T
    ddpm = draw("ddpm", oracle, diffusion, noise, trajectory_every=100)
    assert ddpm.trajectory.timesteps == list(range(999, -1, -100)) + [0]
    assert draw("ddim", oracle, diffusion, noise, steps=5).trajectory is None


def test_clipping_keeps_the_predicted_x0_in_the_data_range():
    diffusion, oracle = make("linear")
    low, high = standardized_range([0.5], [0.25])  # pixels 0..1 -> -2..2
    wide = gaussian_oracle(diffusion, mu=0.0, sigma=5.0)  # data far outside the clip range
    out = draw("ddim", wide, diffusion, start_noise(6, (2_000, 1, 1, 1)), steps=10, clip_range=(low, high),
               trajectory_every=1)
    assert float(out.trajectory.pred_x0.min()) >= -2.0 - 1e-6 and float(out.trajectory.pred_x0.max()) <= 2.0 + 1e-6
    assert float(out.images.min()) >= -2.0 - 1e-6 and float(out.images.max()) <= 2.0 + 1e-6
    unclipped = draw("ddim", wide, diffusion, start_noise(6, (2_000, 1, 1, 1)), steps=10)
    assert float(unclipped.images.abs().max()) > 4.0


def test_timestep_spacings():
    assert ddim_timesteps(1000, 5, "trailing") == [999, 799, 599, 399, 199]
    assert ddim_timesteps(1000, 5, "linspace") == [999, 749, 500, 250, 0]
    assert ddim_timesteps(1000, 5, "leading") == [800, 600, 400, 200, 0]
    for spacing in ("trailing", "linspace", "leading"):
        assert ddim_timesteps(1000, 1000, spacing) == list(range(999, -1, -1))
        assert ddim_timesteps(1000, 1, spacing)[0] in (999, 0)
    with pytest.raises(ValueError, match="1 <= steps <= T = 1000"):
        ddim_timesteps(1000, 1001)
    with pytest.raises(ValueError, match="spacing"):
        ddim_timesteps(1000, 5, "uniform")


def test_bad_sampler_settings_name_the_field():
    diffusion, oracle = make("linear")
    with pytest.raises(ValueError, match="eta=1.5: must lie in"):
        SamplerSpec("ddim", 10, eta=1.5)
    with pytest.raises(ValueError, match="eta=0.5: only DDIM takes eta"):
        SamplerSpec("dpm_solver", 10, eta=0.5)
    with pytest.raises(ValueError, match="variance='learned'"):
        SamplerSpec("ddpm", variance="learned")
    with pytest.raises(ValueError, match="steps=None: DDIM needs a whole number"):
        SamplerSpec("ddim")
    with pytest.raises(ValueError, match="sampler='dpmpp'"):
        SamplerSpec("dpmpp", 20)
    with pytest.raises(ValueError, match="steps=10: DDPM runs all T = 1000 steps"):
        SamplerSpec("ddpm", 10).for_diffusion(1000)
    with pytest.raises(ValueError, match="DDIM was given the setting DPM-Solver"):
        ddim_sample(Denoiser(oracle, diffusion), diffusion, torch.zeros(1, 1, 1, 1), SamplerSpec("dpm_solver", 5))


def test_a_setting_names_itself_and_reads_its_name_back():
    for name in ("DDPM", "DDPM-1000", "DDIM-50", "DDIM-50 eta 1", "DDIM-5 eta 0.5 w=3", "DPM-Solver++-20",
                 "DPM-Solver++-20 order 1 logsnr w=2", "DDIM-20 leading", "DDPM variance beta"):
        spec = SamplerSpec.parse(name)
        assert spec.name == name and SamplerSpec.parse(spec.to_dict()) == spec
    assert SamplerSpec.parse("ddim-50 ETA 1") == SamplerSpec("ddim", 50, eta=1.0)
    assert SamplerSpec("ddpm").for_diffusion(100).name == "DDPM-100"
    with pytest.raises(ValueError, match="unknown part 'fast'"):
        SamplerSpec.parse("DDIM-50 fast")
    with pytest.raises(ValueError, match="write it as a table names it"):
        SamplerSpec.parse("Euler-20")


@pytest.mark.parametrize("num_steps", [100, 1000])
@pytest.mark.parametrize("spacing", ["trailing", "linspace", "leading"])
def test_every_step_count_gives_exactly_that_many_distinct_decreasing_timesteps(num_steps, spacing):
    for steps in range(1, num_steps + 1):
        visited = ddim_timesteps(num_steps, steps, spacing)
        assert len(visited) == steps and len(set(visited)) == steps, (steps, visited[-3:])
        assert visited == sorted(visited, reverse=True)
        assert 0 <= visited[-1] and visited[0] <= num_steps - 1
        if spacing != "leading":
            assert visited[0] == num_steps - 1  # the first step starts from pure noise


def test_logsnr_spacing_gives_distinct_steps_for_every_step_count():
    for name in ("linear", "cosine"):
        schedule = get_named_schedule(name, 100)
        for steps in range(1, 101):
            visited = sampling_timesteps(schedule, steps, "logsnr")
            assert len(set(visited)) == steps and visited == sorted(visited, reverse=True)
            assert visited[0] == 99 and visited[-1] >= 0


def test_the_oracle_spread_grows_with_every_step_count_around_the_old_off_by_one():
    # DDIM-61 used to visit a 62nd timestep, -1, and collapse the finished samples (spread 0.000)
    diffusion, oracle = make("linear")
    noise = start_noise(9, (4_000, 1, 1, 1))
    spreads = [float(draw("ddim", oracle, diffusion, noise, steps=s).images.std()) for s in range(55, 66)]
    assert spreads == sorted(spreads) and min(spreads) > 0.25
