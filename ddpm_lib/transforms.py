"""Between stored pixels and what the networks see, the one place that converts image layouts.

Stored images are uint8 NHWC (the cache, torch-fidelity's inputs, PNGs); networks see float32 NCHW
standardized per channel, ``x' = (x / 255 - mean) / std`` with the training split's statistics.
"""

from __future__ import annotations

import numpy as np
import torch


def _channels(values, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1).to(like.device)


def standardize(images_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 images (B, C, H, W) in 0..255 -> float32 with per-channel mean 0 and std 1.

    Args:
        mean, std: per-channel statistics of the pixel values scaled to [0, 1], shape (C,).
    """
    x = images_uint8.float() / 255.0
    return (x - _channels(mean, x)) / _channels(std, x)


def destandardize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Inverse of :func:`standardize`: float images (B, C, H, W) -> uint8 (B, C, H, W), clipped."""
    images = torch.as_tensor(images).float()
    return ((images * _channels(std, images) + _channels(mean, images)).clamp(0, 1) * 255).round().to(torch.uint8)


def nhwc_to_nchw(images_uint8) -> torch.Tensor:
    """uint8 (N, H, W, C) array or tensor -> a contiguous uint8 tensor (N, C, H, W)."""
    tensor = torch.as_tensor(np.asarray(images_uint8) if not torch.is_tensor(images_uint8) else images_uint8)
    return tensor.permute(0, 3, 1, 2).contiguous()


def to_model_space(images_uint8_nhwc, mean, std) -> torch.Tensor:
    """Stored uint8 images (N, H, W, C) -> what a network sees: float32 (N, C, H, W), standardized."""
    return standardize(nhwc_to_nchw(images_uint8_nhwc), mean, std)


def to_uint8_hwc(images, mean, std) -> np.ndarray:
    """Standardized float images (N, C, H, W) -> uint8 numpy (N, H, W, C), ready to show or save."""
    return destandardize(images, mean, std).permute(0, 2, 3, 1).cpu().numpy()
