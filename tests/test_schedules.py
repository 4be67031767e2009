"""Schedules against their closed forms."""

import math

import pytest
import torch

from ddpm_lib.math.schedules import NoiseSchedule, get_named_schedule

T = 1000


def study_cosine_alphas_cumprod(num_steps: int, s: float = 0.008) -> torch.Tensor:
    """The study's flawed "cosine" schedule: s acts as a floor, abar = 0.5 (1 + cos(pi t / T)) (1 - s) + s."""
    t = torch.arange(1, num_steps + 1, dtype=torch.float64)
    return 0.5 * (1 + torch.cos(math.pi * t / num_steps)) * (1 - s) + s


def reaches_pure_noise(alphas_cumprod: torch.Tensor) -> bool:
    """The property the samplers rely on: at t = T almost no signal is left."""
    return float(alphas_cumprod[-1]) < 1e-4


def test_linear_alphas_cumprod_matches_product_of_betas():
    schedule = get_named_schedule("linear", T)
    betas = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]  # closed form of linspace
    for t in (0, T // 2, T - 1):
        expected = math.prod(1 - b for b in betas[: t + 1])
        assert float(schedule.alphas_cumprod[t]) == pytest.approx(expected, rel=1e-12)
    assert float(schedule.betas[0]) == pytest.approx(1e-4)
    assert float(schedule.betas[-1]) == pytest.approx(0.02)
    # the known value for the study's schedule: ~4e-5 of the signal survives at T
    assert 3e-5 < float(schedule.alphas_cumprod[-1]) < 5e-5


def test_cosine_alphas_cumprod_matches_nichol_dhariwal_closed_form():
    schedule = get_named_schedule("cosine", T)
    s = 0.008

    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    # paper step t + 1 sits at index t; the clip at 0.999 only bites at the very end
    for t in (0, T // 2 - 1, T // 2):
        assert float(schedule.alphas_cumprod[t]) == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert float(schedule.alphas_cumprod[T // 2 - 1]) == pytest.approx(
        math.cos((0.5 + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    )
    assert float(schedule.betas.max()) == pytest.approx(0.999)
    assert reaches_pure_noise(schedule.alphas_cumprod)
    assert float(schedule.alphas_cumprod[-1]) < 1e-8  # ~2e-9


def test_the_studys_cosine_variant_fails_the_pure_noise_check():
    flawed = study_cosine_alphas_cumprod(T)
    assert not reaches_pure_noise(flawed)
    assert float(flawed[-1]) == pytest.approx(0.008)


def test_keras_schedule_matches_its_angles():
    schedule = get_named_schedule("keras", T)
    start, end = math.acos(0.95), math.acos(0.02)
    for t in (0, T // 2 - 1, T - 1):
        angle = start + (t + 1) / T * (end - start)
        assert float(schedule.alphas_cumprod[t]) == pytest.approx(math.cos(angle) ** 2, rel=1e-9)
    assert float(schedule.alphas_cumprod[-1]) == pytest.approx(0.02**2, rel=1e-9)


@pytest.mark.parametrize("name", ["linear", "cosine", "keras"])
def test_derived_quantities_are_float64_and_consistent(name):
    s = get_named_schedule(name, T)
    assert s.betas.dtype == torch.float64 and s.posterior_variance.dtype == torch.float64
    assert torch.allclose(torch.cumprod(1 - s.betas, 0), s.alphas_cumprod, rtol=1e-12)
    assert float(s.alphas_cumprod_prev[0]) == 1.0
    assert torch.equal(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1])
    # Eq. 7: beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t, and beta_tilde_0 = 0
    t = 500
    expected = (1 - s.alphas_cumprod[t - 1]) / (1 - s.alphas_cumprod[t]) * s.betas[t]
    assert float(s.posterior_variance[t]) == pytest.approx(float(expected), rel=1e-12)
    assert float(s.posterior_variance[0]) == 0.0
    assert torch.all(s.noise_variance[1:] > s.noise_variance[:-1])  # noise grows with t


def test_at_casts_and_broadcasts():
    s = get_named_schedule("linear", T)
    like = torch.zeros(3, 2, 4, 4, dtype=torch.float32)
    value = s.at("alphas_cumprod", torch.tensor([0, 10, 999]), like)
    assert value.shape == (3, 1, 1, 1) and value.dtype == torch.float32
    assert float(value[1]) == pytest.approx(float(s.alphas_cumprod[10]), rel=1e-6)


def test_unknown_names_and_bad_values_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown noise schedule 'cosin'.*linear, cosine, keras"):
        get_named_schedule("cosin")
    with pytest.raises(ValueError, match="num_steps"):
        get_named_schedule("linear", 0)
    with pytest.raises(ValueError, match="beta_start"):
        get_named_schedule("linear", 10, beta_start=0.5, beta_end=0.1)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        NoiseSchedule.from_betas(torch.tensor([0.1, 0.0]))
