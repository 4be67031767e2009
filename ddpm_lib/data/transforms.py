"""Between stored pixels and what the networks see: per-channel standardization and back."""

from __future__ import annotations

import numpy as np
import torch


def standardize(images_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, C, H, W) in 0..255 -> float32 with per-channel mean 0 and std 1.

    Args:
        mean, std: per-channel statistics of the pixel values scaled to [0, 1], shape (C,).
    """
    x = images_uint8.float() / 255.0
    return (x - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)


def destandardize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Inverse of :func:`standardize`: float images (B, C, H, W) -> uint8 (B, C, H, W), clipped."""
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1).to(images.device)
    std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1).to(images.device)
    return ((images.float() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)


def to_uint8_hwc(images, mean, std) -> np.ndarray:
    """Standardized float images (N, C, H, W) -> uint8 numpy (N, H, W, C), ready to show or save."""
    return destandardize(torch.as_tensor(images), mean, std).permute(0, 2, 3, 1).cpu().numpy()
