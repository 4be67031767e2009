"""BaselineUNet: a U-Net in the style of Ho et al. 2020 (their App. B), the study's big network.

Residual blocks with GroupNorm and SiLU, a sinusoidal timestep embedding through a two-layer MLP
projected into every residual block (``dense(silu(temb))``, as Ho et al.'s code), self-attention at
chosen resolutions (16x16 and 8x8 by default),
strided-conv downsampling and nearest-neighbour + conv upsampling, a skip saved after every block
of the down path and concatenated on the way up, a zero-initialised output conv.

Where the cost goes at 64x64: channels at full resolution and attention over many tokens, not the
parameter count. So the default keeps 64 channels at 64x64 and puts width (and attention) at the
low resolutions: channel multipliers (1, 2, 4, 4), attention at 16x16 and 8x8.

Option: ``num_classes=K`` adds a learned class embedding (K species plus a "no label" index K) to
the time embedding, so it reaches every residual block the way t does (notebook 07). With
``num_classes=None`` the network is exactly the unconditional one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ddpm_lib.models.blocks import SelfAttention, group_norm, timestep_embedding


class ResidualBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, + time embedding, GroupNorm -> SiLU -> dropout -> conv3x3."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding = nn.Linear(embedding_dim, out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (Ho et al.'s init)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        # a nonlinearity before the per-block projection (Ho et al.: dense(silu(temb))); without it the
        # MLP's last Linear and this one would collapse into a single linear map
        h = h + self.embedding(F.silu(embedding))[:, :, None, None].to(h.dtype)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.skip(x)


class ResidualAttentionBlock(nn.Module):
    """A residual block, optionally followed by self-attention."""

    def __init__(self, in_channels, out_channels, embedding_dim, dropout, attention, num_heads):
        super().__init__()
        self.residual = ResidualBlock(in_channels, out_channels, embedding_dim, dropout)
        self.attention = SelfAttention(out_channels, num_heads) if attention else None

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        x = self.residual(x, embedding)
        return self.attention(x) if self.attention is not None else x


class BaselineUNet(nn.Module):
    """The baseline U-Net, conditioned on the integer timestep.

    Args:
        in_channels: image channels (3).
        base_channels: channels at full resolution.
        channel_mults: channel multiplier per resolution level.
        num_res_blocks: residual blocks per level on the down path (one more on the up path).
        attention_resolutions: feature-map sizes (for ``image_size``) that get self-attention.
        image_size: the training resolution, used to place attention.
        dropout: dropout inside the residual blocks (Ho et al.: 0.1 on CIFAR-10).
        num_heads: attention heads.
        num_classes: species to condition on (an embedding added to the time embedding), or None.

    Call: ``model(x_t, t)`` with x_t (B, C, H, W) and t (B,) timesteps as floats; returns
    (B, C, H, W). Other input sizes work when divisible by 2 ** (levels - 1); attention stays at
    the same levels. A conditional network takes ``model(x_t, t, labels)``, labels (B,) in 0..K,
    where K (or ``labels=None``) means "no label".
    """

    conditioning = "timestep"

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16, 8),
        image_size: int = 64,
        dropout: float = 0.1,
        num_heads: int = 4,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.base_channels = base_channels
        self.levels = len(channel_mults)
        self.num_classes = num_classes
        embedding_dim = 4 * base_channels
        self.time_mlp = nn.Sequential(
            nn.Linear(base_channels, embedding_dim), nn.SiLU(), nn.Linear(embedding_dim, embedding_dim)
        )
        if num_classes is not None:
            self.class_embedding = nn.Embedding(num_classes + 1, embedding_dim)  # index K: "no label"
            # zero at the start: a conditional network starts as exactly the unconditional one (for any
            # label), so fine-tuning from an unconditional run (train.init_from) starts from that run
            nn.init.zeros_(self.class_embedding.weight)
        self.input_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        def attends(level: int) -> bool:
            return image_size // 2**level in set(attention_resolutions)

        channels, skip_channels = base_channels, [base_channels]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for level, mult in enumerate(channel_mults):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                out = base_channels * mult
                blocks.append(
                    ResidualAttentionBlock(channels, out, embedding_dim, dropout, attends(level), num_heads)
                )
                channels = out
                skip_channels.append(channels)
            self.down.append(blocks)
            if level < self.levels - 1:
                self.downsample.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
                skip_channels.append(channels)
        self.middle = nn.ModuleList([
            ResidualAttentionBlock(channels, channels, embedding_dim, dropout, True, num_heads),
            ResidualAttentionBlock(channels, channels, embedding_dim, dropout, False, num_heads),
        ])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(self.levels)):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                out = base_channels * channel_mults[level]
                blocks.append(
                    ResidualAttentionBlock(
                        channels + skip_channels.pop(), out, embedding_dim, dropout, attends(level), num_heads
                    )
                )
                channels = out
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(nn.Conv2d(channels, channels, 3, padding=1))
        self.output_norm = group_norm(channels)
        self.output_conv = nn.Conv2d(channels, in_channels, 3, padding=1)
        nn.init.zeros_(self.output_conv.weight)
        nn.init.zeros_(self.output_conv.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        factor = 2 ** (self.levels - 1)
        if h % factor or w % factor:
            raise ValueError(f"BaselineUNet needs H and W divisible by {factor}, got {h}x{w}")
        embedding = self.time_mlp(timestep_embedding(t.reshape(b), self.base_channels))
        if self.num_classes is not None:
            if labels is None:
                labels = torch.full((b,), self.num_classes, dtype=torch.long, device=x.device)
            embedding = embedding + self.class_embedding(labels)
        elif labels is not None:
            raise ValueError("labels given to an unconditional BaselineUNet (built without num_classes)")

        x = self.input_conv(x)
        skips = [x]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                x = block(x, embedding)
                skips.append(x)
            if level < self.levels - 1:
                x = self.downsample[level](x)
                skips.append(x)
        for block in self.middle:
            x = block(x, embedding)
        for index, blocks in enumerate(self.up):
            for block in blocks:
                x = block(torch.cat([x, skips.pop()], dim=1), embedding)
            if index < self.levels - 1:
                x = self.upsample[index](F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.output_conv(F.silu(self.output_norm(x)))
