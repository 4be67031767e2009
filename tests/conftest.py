"""Shared fixtures: the analytic oracle denoiser for Gaussian data."""

from __future__ import annotations

import pytest
import torch

DATA_MEAN, DATA_STD = 0.7, 0.3


def gaussian_oracle(diffusion, mu: float = DATA_MEAN, sigma: float = DATA_STD):
    """The mean-square-optimal noise predictor for data x0 ~ N(mu, sigma^2 I).

    With x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, (x_t, eps) are jointly Gaussian and
    E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar sigma^2 + 1 - abar).
    Written from this closed form alone: it shares no code with the samplers under test.
    """
    alphas_cumprod = diffusion.schedule.alphas_cumprod

    def predict_eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = alphas_cumprod[t.long()].reshape(-1, *([1] * (x_t.ndim - 1))).to(x_t.dtype)
        return (1 - abar).sqrt() * (x_t - abar.sqrt() * mu) / (abar * sigma**2 + 1 - abar)

    return predict_eps


@pytest.fixture
def oracle():
    return gaussian_oracle
