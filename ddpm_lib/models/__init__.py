"""The denoising networks. Each takes ``(x_t, cond)`` and declares what ``cond`` is in its
``conditioning`` attribute (see ``ddpm_lib.math.diffusion``)."""

from ddpm_lib.models.baseline_unet import BaselineUNet
from ddpm_lib.models.small_unet import SmallUNet

__all__ = ["MODEL_NAMES", "BaselineUNet", "SmallUNet", "count_parameters"]

MODEL_NAMES = ("small_unet", "baseline_unet")  # the Keras example's U-Net; Ho et al.'s style


def count_parameters(model) -> int:
    """The number of parameters of ``model`` (frozen ones too, so an EMA copy counts the same)."""
    return sum(p.numel() for p in model.parameters())
