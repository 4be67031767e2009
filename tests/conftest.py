"""Shared fixtures: the analytic oracle denoiser for Gaussian data, and an environment every test
pins for itself (no test reads the caller's DDPM_* or WANDB_* settings, or the repository's data notes)."""

from __future__ import annotations

import os

import pytest
import torch

from ddpm_lib import paths

DATA_MEAN, DATA_STD = 0.7, 0.3
CALLER_SETTINGS = ("DDPM_PROFILE", "DDPM_DATA_DIR", "DDPM_INCEPTION_WEIGHTS", "DDPM_ROOT", "DDPM_RUNS_DIR")


@pytest.fixture(autouse=True)
def pinned_environment(monkeypatch, tmp_path_factory):
    """W&B off, no profile, data location or Inception weights from the caller, notes in a temp folder.

    Tests that need W&B (or anything else here) set it themselves."""
    for name in list(os.environ):
        if name.startswith("WANDB_") or name in CALLER_SETTINGS:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path_factory.mktemp("data"))


def child_env(**extra: str) -> dict:
    """The environment for a test's child process: the pinned one, this folder on PYTHONPATH, one thread."""
    here = os.path.dirname(__file__)
    return {**os.environ, "PYTHONPATH": here, "OMP_NUM_THREADS": "1", **extra}


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


def draw(sampler: str, network, diffusion, noise: torch.Tensor, generator=None, *, clip_range=None, labels=None,
         guidance: float | None = None, trajectory_every=None, **setting):
    """One sampler call through the public pieces: a ``Denoiser`` of ``network``, a ``SamplerSpec`` of
    ``sampler`` and ``setting`` (steps, eta, spacing, order, variance), the start ``noise``."""
    from ddpm_lib.math.sampling import Denoiser, SamplerSpec, sample

    denoiser = Denoiser(network, diffusion, labels, guidance, clip_range)
    spec = SamplerSpec(sampler, **({"guidance": guidance} if guidance is not None else {}), **setting)
    return sample(denoiser, diffusion, noise, spec, generator, trajectory_every=trajectory_every)
