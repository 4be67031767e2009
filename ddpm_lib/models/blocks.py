"""Building blocks shared by the U-Nets: embeddings, normalization, attention.

Tensors only: no data code, no training loop. Shapes use (B, C, H, W) for feature maps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of (possibly fractional) timesteps (Ho et al., App. B).

    Args:
        t: timesteps, (B,), any real values.
        dim: embedding size (even).
    Returns:
        (B, dim): ``[sin(t * w_k), cos(t * w_k)]`` with ``w_k = max_period ** (-k / (dim / 2))``.
    """
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    angles = t.float()[:, None] * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def noise_variance_embedding(
    noise_variance: torch.Tensor, dim: int = 32, min_frequency: float = 1.0, max_frequency: float = 1000.0
) -> torch.Tensor:
    """The Keras DDIM example's sinusoidal embedding of the noise variance.

    ``dim / 2`` frequencies log-spaced from ``min_frequency`` to ``max_frequency``;
    the embedding is ``[sin(2 pi f x), cos(2 pi f x)]``.

    Args:
        noise_variance: 1 - alphas_cumprod at each sample's timestep, (B,), values in [0, 1].
    Returns:
        (B, dim).
    """
    frequencies = torch.exp(
        torch.linspace(
            math.log(min_frequency), math.log(max_frequency), dim // 2, device=noise_variance.device
        )
    )
    angles = 2.0 * math.pi * noise_variance.float()[:, None] * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= max_groups that divides ``channels`` and keeps at
    least two channels per group (one channel per group would be instance norm, which erases each
    channel's mean: its colour, and the gradient of any bias before it)."""
    groups = math.gcd(channels, max(1, min(max_groups, channels // 2)))
    return nn.GroupNorm(groups, channels)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, with a residual.

    Uses ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels where available).
    """

    def __init__(self, channels: int, num_heads: int = 4, norm: str = "group"):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.norm = group_norm(channels) if norm == "group" else nn.BatchNorm2d(channels, affine=False)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x))  # (B, 3C, H, W)
        qkv = qkv.reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = qkv.permute(1, 0, 2, 4, 3).unbind(0)  # each (B, heads, HW, C/heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        out = out.permute(0, 1, 3, 2).reshape(b, c, h, w)
        return x + self.proj(out)
