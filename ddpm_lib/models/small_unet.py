"""SmallUNet: the U-Net of the Keras DDIM example, in PyTorch.

Widths [32, 64, 96, 128], block depth 2; the noise variance (1 - alphas_cumprod) is embedded with
16 log-spaced frequencies (32 dims), upsampled to the image size and concatenated with a 1x1 conv
of the image at the input only; residual block = BatchNorm (no affine) -> 3x3 conv + swish ->
3x3 conv, plus the input (through a 1x1 conv when widths differ); average-pool down, bilinear up,
a skip saved after every residual block of the down path; a zero-initialised 1x1 output conv.
At its defaults: 1,950,627 parameters, as the Keras model.

Option: ``attention=True`` adds self-attention after the residual blocks of the two lowest
resolutions (16x16 and 8x8 for a 64x64 input), the study's third network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SelfAttention, noise_variance_embedding


class KerasResidualBlock(nn.Module):
    """BatchNorm(no affine) -> conv3x3 -> swish -> conv3x3, plus a (1x1-projected) residual."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.norm = nn.BatchNorm2d(in_channels, affine=False)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv1(self.norm(x)))
        return self.conv2(h) + self.skip(x)


class SmallUNet(nn.Module):
    """The Keras DDIM example's U-Net, conditioned on the noise variance.

    Args:
        in_channels: image channels (3).
        widths: channels per resolution level; the last is the bottleneck.
        block_depth: residual blocks per level.
        embedding_dim: size of the noise-variance embedding (32).
        attention: add self-attention at the two lowest resolutions.
        num_heads: attention heads when ``attention`` is on.

    Call: ``model(x_t, noise_variance)`` with x_t (B, C, H, W), H and W divisible by
    2 ** (len(widths) - 1), and noise_variance (B,) = 1 - alphas_cumprod[t]; returns (B, C, H, W).
    """

    conditioning = "noise_variance"

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 96, 128),
        block_depth: int = 2,
        embedding_dim: int = 32,
        attention: bool = False,
        num_heads: int = 4,
    ):
        super().__init__()
        widths = tuple(widths)
        if len(widths) < 2:
            raise ValueError(f"SmallUNet needs at least two widths, got {widths}")
        self.widths, self.block_depth, self.embedding_dim = widths, block_depth, embedding_dim
        levels = len(widths)
        attention_levels = {levels - 2, levels - 1} if attention else set()

        self.input_conv = nn.Conv2d(in_channels, widths[0], 1)
        channels = widths[0] + embedding_dim
        skip_channels = []
        self.down = nn.ModuleList()
        for level, width in enumerate(widths[:-1]):
            blocks = nn.ModuleList()
            for _ in range(block_depth):
                blocks.append(self._block(channels, width, level in attention_levels, num_heads))
                channels = width
                skip_channels.append(channels)
            self.down.append(blocks)
        self.middle = nn.ModuleList()
        for _ in range(block_depth):
            self.middle.append(self._block(channels, widths[-1], levels - 1 in attention_levels, num_heads))
            channels = widths[-1]
        self.up = nn.ModuleList()
        for level in reversed(range(levels - 1)):
            blocks = nn.ModuleList()
            for _ in range(block_depth):
                blocks.append(
                    self._block(channels + skip_channels.pop(), widths[level], level in attention_levels, num_heads)
                )
                channels = widths[level]
            self.up.append(blocks)
        self.output_conv = nn.Conv2d(channels, in_channels, 1)
        nn.init.zeros_(self.output_conv.weight)  # start by predicting zero noise, as the Keras model
        nn.init.zeros_(self.output_conv.bias)

    @staticmethod
    def _block(in_channels: int, out_channels: int, attention: bool, num_heads: int) -> nn.Module:
        block = KerasResidualBlock(in_channels, out_channels)
        if not attention:
            return block
        return nn.Sequential(block, SelfAttention(out_channels, num_heads, norm="batch"))

    def forward(self, x: torch.Tensor, noise_variance: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        factor = 2 ** (len(self.widths) - 1)
        if h % factor or w % factor:
            raise ValueError(f"SmallUNet needs H and W divisible by {factor}, got {h}x{w}")
        embedding = noise_variance_embedding(noise_variance.reshape(b), self.embedding_dim)
        embedding = embedding[:, :, None, None].expand(b, self.embedding_dim, h, w)  # "upsampled"
        x = torch.cat([self.input_conv(x), embedding.to(x.dtype)], dim=1)

        skips = []
        for blocks in self.down:
            for block in blocks:
                x = block(x)
                skips.append(x)
            x = F.avg_pool2d(x, 2)
        for block in self.middle:
            x = block(x)
        for blocks in self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            for block in blocks:
                x = block(torch.cat([x, skips.pop()], dim=1))
        return self.output_conv(x)
