"""From a config to objects: the network and the diffusion a config describes."""

from __future__ import annotations

from torch import nn

from ddpm_lib.config import DiffusionConfig, ModelConfig
from ddpm_lib.data.cub import DEFAULT_IMAGE_SIZE
from ddpm_lib.math.diffusion import GaussianDiffusion
from ddpm_lib.math.schedules import get_named_schedule
from ddpm_lib.models import BaselineUNet, SmallUNet


def build_model(config: ModelConfig, image_size: int = DEFAULT_IMAGE_SIZE) -> nn.Module:
    """The network named by ``config.name`` with the config's sizes."""
    if config.name == "small_unet":
        return SmallUNet(widths=config.widths, block_depth=config.block_depth, attention=config.attention,
                         num_classes=config.num_classes)
    if config.name == "baseline_unet":
        return BaselineUNet(
            base_channels=config.base_channels,
            channel_mults=config.channel_mults,
            num_res_blocks=config.num_res_blocks,
            attention_resolutions=config.attention_resolutions,
            image_size=image_size,
            dropout=config.dropout,
            num_classes=config.num_classes,
        )
    raise ValueError(f"unknown model {config.name!r}")


def build_diffusion(config: DiffusionConfig) -> GaussianDiffusion:
    """The schedule and diffusion a config describes."""
    schedule = get_named_schedule(
        config.schedule,
        config.num_steps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        cosine_s=config.cosine_s,
    )
    return GaussianDiffusion(schedule, prediction=config.prediction, loss=config.loss)
