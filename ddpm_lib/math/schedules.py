"""Noise schedules: the betas of the forward process and every quantity derived from them.

Three schedules, chosen by name with :func:`get_named_schedule`:

* ``"linear"``: betas spaced linearly from ``beta_start`` to ``beta_end`` (Ho et al. 2020, Sec. 4).
* ``"cosine"``: Nichol & Dhariwal 2021, Eq. 17:
  ``alphas_cumprod(t) = f(t) / f(0)``, ``f(t) = cos(((t / T + s) / (1 + s)) * pi / 2) ** 2``,
  with betas clipped at 0.999 so the last steps stay finite. ``alphas_cumprod`` at ``t = T`` is
  about 2e-9: the final latent is pure noise, as the sampler assumes.
* ``"keras"``: the continuous-time schedule of the Keras DDIM example, sampled at ``t / T``:
  ``angle = acos(0.95) + (t / T) * (acos(0.02) - acos(0.95))``, signal rate ``cos(angle)``,
  noise rate ``sin(angle)``, so ``alphas_cumprod = cos(angle) ** 2``.

Indexing: arrays have length ``T`` and index ``t`` in ``0..T-1`` is the paper's step ``t + 1``
(as in openai/improved-diffusion). ``alphas_cumprod[0]`` is the first noisy step, and
``alphas_cumprod_prev[0] = 1`` is the clean image.

Every derived quantity is computed once, in float64, and cast to the working dtype when used
(:meth:`NoiseSchedule.at`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

SCHEDULE_NAMES = ("linear", "cosine", "keras")


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linearly spaced betas (Ho et al. 2020), float64, shape (T,)."""
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor, max_beta: float = 0.999) -> torch.Tensor:
    """Betas with ``prod(1 - betas[:t+1]) == alphas_cumprod[t]``, each clipped to ``max_beta``.

    ``beta_t = 1 - alphas_cumprod[t] / alphas_cumprod[t-1]`` (Nichol & Dhariwal 2021, Sec. 3.2),
    with ``alphas_cumprod[-1] = 1`` for the clean image.
    """
    previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return (1.0 - alphas_cumprod / previous).clamp(max=max_beta)


def cosine_alphas_cumprod(num_steps: int, s: float = 0.008) -> torch.Tensor:
    """The unclipped cosine ``alphas_cumprod`` at t = 1..T (Nichol & Dhariwal 2021, Eq. 17)."""
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return f[1:] / f[0]


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Betas of the cosine schedule, clipped at ``max_beta`` (Nichol & Dhariwal 2021, Sec. 3.2)."""
    return betas_from_alphas_cumprod(cosine_alphas_cumprod(num_steps, s), max_beta)


def keras_alphas_cumprod(
    num_steps: int, max_signal_rate: float = 0.95, min_signal_rate: float = 0.02
) -> torch.Tensor:
    """The Keras DDIM example's continuous schedule, sampled at t / T for t = 1..T.

    ``angle = acos(max_signal_rate) + (t / T) * (acos(min_signal_rate) - acos(max_signal_rate))``;
    the signal rate is ``cos(angle)``, so ``alphas_cumprod = cos(angle) ** 2``.
    """
    t = torch.arange(1, num_steps + 1, dtype=torch.float64) / num_steps
    start, end = math.acos(max_signal_rate), math.acos(min_signal_rate)
    angle = start + t * (end - start)
    return torch.cos(angle) ** 2


def keras_betas(num_steps: int, max_signal_rate: float = 0.95, min_signal_rate: float = 0.02):
    """Betas whose cumulative product is the Keras continuous schedule (no clipping needed)."""
    return betas_from_alphas_cumprod(
        keras_alphas_cumprod(num_steps, max_signal_rate, min_signal_rate), max_beta=1.0
    )


@dataclass(frozen=True)
class NoiseSchedule:
    """Betas and their derived quantities, each a float64 tensor of shape (T,).

    Names follow Ho et al. 2020; ``posterior_*`` are the mean coefficients and variance of
    q(x_{t-1} | x_t, x_0), Eq. 6-7.
    """

    name: str
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor

    @classmethod
    def from_betas(cls, betas: torch.Tensor, name: str = "custom") -> NoiseSchedule:
        """Derive every quantity from ``betas`` (shape (T,), values in (0, 1]) in float64."""
        betas = torch.as_tensor(betas, dtype=torch.float64).cpu()
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("every beta must lie in (0, 1]")
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([betas.new_ones(1), alphas_cumprod[:-1]])
        return cls(
            name=name,
            betas=betas,
            alphas=alphas,
            alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=alphas_cumprod_prev,
            sqrt_alphas_cumprod=alphas_cumprod.sqrt(),
            sqrt_one_minus_alphas_cumprod=(1.0 - alphas_cumprod).sqrt(),
            sqrt_recip_alphas_cumprod=(1.0 / alphas_cumprod).sqrt(),
            sqrt_recipm1_alphas_cumprod=(1.0 / alphas_cumprod - 1.0).sqrt(),
            # Eq. 7: beta_tilde = (1 - abar_{t-1}) / (1 - abar_t) * beta_t
            posterior_variance=betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            posterior_mean_coef1=betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
        )

    @property
    def num_steps(self) -> int:
        """T, the number of diffusion steps."""
        return len(self.betas)

    @property
    def noise_variance(self) -> torch.Tensor:
        """``1 - alphas_cumprod``, the variance of the noise in x_t (what SmallUNet sees)."""
        return 1.0 - self.alphas_cumprod

    @property
    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio ``alphas_cumprod / (1 - alphas_cumprod)``."""
        return self.alphas_cumprod / (1.0 - self.alphas_cumprod)

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """The same schedule with every tensor on ``device`` (still float64)."""
        values = {
            f.name: (getattr(self, f.name).to(device) if f.name != "name" else self.name)
            for f in fields(self)
        }
        return NoiseSchedule(**values)

    def at(self, quantity: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``quantity[t]`` cast to ``like``'s dtype/device and shaped (B, 1, ..., 1) to broadcast.

        Args:
            quantity: the name of a field, e.g. ``"sqrt_alphas_cumprod"``.
            t: integer timesteps in 0..T-1, shape (B,).
            like: the tensor the result will be multiplied with, shape (B, ...).
        """
        values = getattr(self, quantity)
        if values.device != t.device:
            values = values.to(t.device)
        out = values[t].to(device=like.device, dtype=like.dtype)
        return out.reshape(t.shape[0], *([1] * (like.ndim - 1)))


def get_named_schedule(
    name: str,
    num_steps: int = 1000,
    *,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    cosine_s: float = 0.008,
    max_beta: float = 0.999,
) -> NoiseSchedule:
    """Build a schedule by name: ``"linear"``, ``"cosine"`` or ``"keras"``.

    Args:
        name: which schedule (see the module docstring).
        num_steps: T, the number of diffusion steps (the study used 1000).
        beta_start, beta_end: the linear schedule's end points (the study: 1e-4, 0.02).
        cosine_s: the cosine schedule's offset s (Nichol & Dhariwal: 0.008).
        max_beta: the cosine schedule's clip on betas.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if name == "linear":
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(
                f"linear schedule needs 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}"
            )
        betas = linear_betas(num_steps, beta_start, beta_end)
    elif name == "cosine":
        if cosine_s < 0:
            raise ValueError(f"cosine_s must be >= 0, got {cosine_s}")
        betas = cosine_betas(num_steps, cosine_s, max_beta)
    elif name == "keras":
        betas = keras_betas(num_steps)
    else:
        raise ValueError(
            f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULE_NAMES)}"
        )
    return NoiseSchedule.from_betas(betas, name=name)
