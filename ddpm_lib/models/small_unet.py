"""SmallUNet: the U-Net of the Keras DDIM example, in PyTorch.

Widths [32, 64, 96, 128], block depth 2; the noise variance (1 - alphas_cumprod) is embedded with
16 log-spaced frequencies (32 dims), upsampled to the image size and concatenated with a 1x1 conv
of the image at the input only; residual block = BatchNorm (no affine) -> 3x3 conv + swish ->
3x3 conv, plus the input (through a 1x1 conv when widths differ); average-pool down, bilinear up,
a skip saved after every residual block of the down path; a zero-initialised 1x1 output conv.
At its defaults: 1,950,627 parameters, as the Keras model.

Option: ``attention=True`` adds self-attention after the residual blocks of the two lowest
resolutions (16x16 and 8x8 for a 64x64 input), the study's third network.

Option: ``num_classes=K`` conditions on the species (notebook 07). A learned embedding of the label
(K species plus a "no label" index K) modulates every residual block by FiLM: after the block's
BatchNorm (which has no affine part of its own), ``h = norm(x) (1 + scale) + shift`` with
(scale, shift) a linear map of the embedding, zero-initialised so training starts from the
unconditional network. Why FiLM and not one more input channel group beside the noise embedding:
the Keras network sees its conditioning at the first layer only, and a species signal entered there
must survive every block to shape the wing and tail at the bottleneck; FiLM puts it into each block
at the cost of one small linear layer each, the same place the baseline U-Net adds its time and
class embedding. With ``num_classes=None`` nothing is added: the network, its parameter count and
its checkpoints are the unconditional ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ddpm_lib.models.blocks import SelfAttention, noise_variance_embedding


class KerasResidualBlock(nn.Module):
    """BatchNorm(no affine) -> conv3x3 -> swish -> conv3x3, plus a (1x1-projected) residual.

    With ``class_dim`` set, a FiLM layer maps a class embedding (B, class_dim) to a per-channel scale
    and shift applied after the BatchNorm (zero-initialised: the identity at the start).
    """

    def __init__(self, in_channels: int, out_channels: int, class_dim: int | None = None):
        super().__init__()
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.norm = nn.BatchNorm2d(in_channels, affine=False)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if class_dim is not None:
            self.film = nn.Linear(class_dim, 2 * in_channels)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, class_embedding: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)
        if class_embedding is not None:
            scale, shift = self.film(class_embedding)[:, :, None, None].to(h.dtype).chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = F.silu(self.conv1(h))
        return self.conv2(h) + self.skip(x)


class _AttentionBlock(nn.Sequential):
    """A residual block then self-attention (a Sequential, so its weights keep the keys ``0.*``, ``1.*``)."""

    def forward(self, x: torch.Tensor, class_embedding: torch.Tensor | None = None) -> torch.Tensor:
        return self[1](self[0](x, class_embedding))


class SmallUNet(nn.Module):
    """The Keras DDIM example's U-Net, conditioned on the noise variance.

    Args:
        in_channels: image channels (3).
        widths: channels per resolution level; the last is the bottleneck.
        block_depth: residual blocks per level.
        embedding_dim: size of the noise-variance embedding (32).
        attention: add self-attention at the two lowest resolutions.
        num_heads: attention heads when ``attention`` is on.
        num_classes: species to condition on (FiLM in every residual block), or None.

    Call: ``model(x_t, noise_variance)`` with x_t (B, C, H, W), H and W divisible by
    2 ** (len(widths) - 1), and noise_variance (B,) = 1 - alphas_cumprod[t]; returns (B, C, H, W).
    A conditional network takes ``model(x_t, noise_variance, labels)``, labels (B,) in 0..K, where K
    (or ``labels=None``) means "no label".
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
        num_classes: int | None = None,
    ):
        super().__init__()
        widths = tuple(widths)
        if len(widths) < 2:
            raise ValueError(f"SmallUNet needs at least two widths, got {widths}")
        self.widths, self.block_depth, self.embedding_dim = widths, block_depth, embedding_dim
        self.num_classes = num_classes
        levels = len(widths)
        attention_levels = {levels - 2, levels - 1} if attention else set()
        class_dim = embedding_dim if num_classes is not None else None
        if num_classes is not None:
            self.class_embedding = nn.Embedding(num_classes + 1, embedding_dim)  # index K: "no label"

        self.input_conv = nn.Conv2d(in_channels, widths[0], 1)
        channels = widths[0] + embedding_dim
        skip_channels = []
        self.down = nn.ModuleList()
        for level, width in enumerate(widths[:-1]):
            blocks = nn.ModuleList()
            for _ in range(block_depth):
                blocks.append(self._block(channels, width, level in attention_levels, num_heads, class_dim))
                channels = width
                skip_channels.append(channels)
            self.down.append(blocks)
        self.middle = nn.ModuleList()
        for _ in range(block_depth):
            self.middle.append(self._block(channels, widths[-1], levels - 1 in attention_levels, num_heads,
                                           class_dim))
            channels = widths[-1]
        self.up = nn.ModuleList()
        for level in reversed(range(levels - 1)):
            blocks = nn.ModuleList()
            for _ in range(block_depth):
                blocks.append(
                    self._block(channels + skip_channels.pop(), widths[level], level in attention_levels, num_heads,
                                class_dim)
                )
                channels = widths[level]
            self.up.append(blocks)
        self.output_conv = nn.Conv2d(channels, in_channels, 1)
        nn.init.zeros_(self.output_conv.weight)  # start by predicting zero noise, as the Keras model
        nn.init.zeros_(self.output_conv.bias)

    @staticmethod
    def _block(in_channels: int, out_channels: int, attention: bool, num_heads: int,
               class_dim: int | None) -> nn.Module:
        block = KerasResidualBlock(in_channels, out_channels, class_dim)
        if not attention:
            return block
        return _AttentionBlock(block, SelfAttention(out_channels, num_heads, norm="batch"))

    def forward(self, x: torch.Tensor, noise_variance: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        factor = 2 ** (len(self.widths) - 1)
        if h % factor or w % factor:
            raise ValueError(f"SmallUNet needs H and W divisible by {factor}, got {h}x{w}")
        classes = None
        if self.num_classes is not None:
            if labels is None:
                labels = torch.full((b,), self.num_classes, dtype=torch.long, device=x.device)
            classes = self.class_embedding(labels)  # (B, embedding_dim)
        elif labels is not None:
            raise ValueError("labels given to an unconditional SmallUNet (built without num_classes)")
        embedding = noise_variance_embedding(noise_variance.reshape(b), self.embedding_dim)
        embedding = embedding[:, :, None, None].expand(b, self.embedding_dim, h, w)  # "upsampled"
        x = torch.cat([self.input_conv(x), embedding.to(x.dtype)], dim=1)

        skips = []
        for blocks in self.down:
            for block in blocks:
                x = block(x, classes)
                skips.append(x)
            x = F.avg_pool2d(x, 2)
        for block in self.middle:
            x = block(x, classes)
        for blocks in self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            for block in blocks:
                x = block(torch.cat([x, skips.pop()], dim=1), classes)
        return self.output_conv(x)
