"""The peer networks ``bench train`` measures beside ours, built so that each comparison is fair.

* **denoising-diffusion-pytorch** ``Unet(dim=64, dim_mults=(1, 2, 4, 8))`` (35.7M parameters) with
  its own attention default (full attention at the innermost level, linear attention elsewhere),
  in every mode, compiled ones included. Under ``torch.compile`` its backward fails in PyTorch,
  not in its code: each ``RMSNorm`` multiplies by a gain parameter of shape (1, C, 1, 1) after a
  reduction over channels, and the compiled backward returns that gain's gradient with shape (C,)
  ("CompiledFunctionBackward returned an invalid gradient ... got [64] but expected shape compatible
  with [1, 64, 1, 1]"; tracked upstream as pytorch/pytorch#178080, GPU only: the CPU compiler
  passes). The harness works around it without touching their code (:data:`WORKAROUNDS`):

  - ``"reparametrize"`` (the default): every such gain is stored as a (C,) parameter and viewed as
    (1, C, 1, 1) in the forward pass (``torch.nn.utils.parametrize``). Same values, same arithmetic,
    every compiler optimisation kept; the gradient the compiler returns then has the parameter's
    own shape;
  - ``"no-mix-order-reduction"``: turns off Inductor's mix-order reductions (the GPU-only fusion of
    a per-row and a per-channel reduction in which the gain's (1, C, 1, 1) view is lost), for the
    peer's process only; a fallback should the first not help on some PyTorch version;
  - ``"none"``: as the package ships, to show the failure.

  A compiled peer's row carries ``gradient_check``: the relative distance between the gradients
  of its compiled and its plain network on one batch, so a workaround that compiles but computes
  wrong gradients cannot pass unseen.
* **diffusers** ``UNet2DModel`` at the BaselineUNet's shape (:func:`diffusers_unet`): its channels
  (64, 128, 256, 256), two residual blocks per level down and three up, attention at 16x16 and
  8x8 and in the middle, four heads, dropout 0.1: the FLOPs per image match ours within 10%
  (tests/test_bench.py counts both), so images/s compares kernels, not architectures. Its DDPM
  CIFAR-10 configuration (attention at 32x32, 3.0x our FLOPs) stays available by name for the
  record of earlier runs.

Each peer is optional: a missing package gives a row saying what to install
(``benchmarks/peers.txt`` pins the versions measured).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ddpm_lib.device import autocast

WORKAROUNDS = ("reparametrize", "no-mix-order-reduction", "none")


class PeerAdapter(nn.Module):
    """A peer network as the engine calls networks: ``model(x_t, t) -> tensor``."""

    conditioning = "timestep"

    def __init__(self, network: nn.Module, field: str | None = None):
        super().__init__()
        self.network, self.field = network, field

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.network(x, t)
        return getattr(out, self.field) if self.field else out


class ChannelGain(nn.Module):
    """A (C,) parameter seen as the (1, C, 1, 1) gain a channel norm multiplies by."""

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.view(1, -1, 1, 1)

    def right_inverse(self, gain: torch.Tensor) -> torch.Tensor:
        return gain.reshape(-1)


def reparametrize_channel_gains(network: nn.Module) -> int:
    """Store every (1, C, 1, 1) parameter named ``g`` (the peer's RMSNorm gains) as (C,), viewed back
    in the forward pass; returns how many. The module's code and outputs are unchanged."""
    from torch.nn.utils import parametrize

    count = 0
    for module in network.modules():
        gain = module._parameters.get("g")
        if gain is not None and gain.ndim == 4 and gain.shape[0] == 1 and gain.shape[2:] == (1, 1):
            parametrize.register_parametrization(module, "g", ChannelGain())
            count += 1
    return count


def apply_workaround(name: str) -> None:
    """Process-wide part of a workaround (set before anything is compiled)."""
    if name not in WORKAROUNDS:
        raise ValueError(f"unknown peer workaround {name!r}; use one of {WORKAROUNDS}")
    if name == "no-mix-order-reduction":
        import torch._inductor.config as inductor

        inductor.triton.mix_order_reduction = False


def ddpm_pytorch_unet(workaround: str = "reparametrize") -> nn.Module:
    """denoising-diffusion-pytorch's ``Unet(dim=64, dim_mults=(1, 2, 4, 8))``, its attention default."""
    from denoising_diffusion_pytorch import Unet

    unet = Unet(dim=64, dim_mults=(1, 2, 4, 8))
    if workaround == "reparametrize":
        reparametrize_channel_gains(unet)
    return PeerAdapter(unet)


def diffusers_unet(image_size: int = 64) -> nn.Module:
    """diffusers' ``UNet2DModel`` at the BaselineUNet's shape (``ddpm_lib/models/baseline_unet.py``
    defaults: base 64 channels, multipliers (1, 2, 4, 4), 2 blocks per level, attention at 16x16 and
    8x8 with 4 heads, dropout 0.1; levels 0-3 are 64, 32, 16, 8 pixels at 64 px)."""
    from diffusers import UNet2DModel

    channels = (64, 128, 256, 256)
    attends = [image_size // 2**level in (16, 8) for level in range(len(channels))]
    return PeerAdapter(UNet2DModel(
        sample_size=image_size, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=channels,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attends),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)),
        attention_head_dim=channels[-1] // 4, dropout=0.1, norm_num_groups=32), field="sample")


def diffusers_cifar_unet() -> nn.Module:
    """diffusers' ``UNet2DModel`` at the DDPM CIFAR-10 configuration (google/ddpm-cifar10-32: widths
    128, 256, 256, 256, attention at the second level, i.e. 32x32 at 64 px): 3.0x our FLOPs."""
    from diffusers import UNet2DModel

    return PeerAdapter(UNet2DModel(
        sample_size=64, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")), field="sample")


@dataclass(frozen=True)
class Peer:
    """A peer network: the module its package imports as, the name pip installs, how to build it,
    and whether it needs the compile workaround."""

    module: str
    package: str
    build: Callable[..., nn.Module]
    needs_workaround: bool = False

    def missing(self) -> str | None:
        """Why it cannot be built here (None: it can)."""
        if importlib.util.find_spec(self.module) is None:
            return (f"not installed: pip install {self.package} (versions measured: benchmarks/peers.txt; "
                    "never into the project's requirements)")
        return None

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None


DDPM_PYTORCH = "ddpm-pytorch Unet(64,(1,2,4,8))"
DIFFUSERS = "diffusers UNet2DModel (BaselineUNet shape)"
DIFFUSERS_CIFAR = "diffusers UNet2DModel (DDPM CIFAR-10 config)"
PEERS = {
    DDPM_PYTORCH: Peer("denoising_diffusion_pytorch", "denoising-diffusion-pytorch", ddpm_pytorch_unet, True),
    DIFFUSERS: Peer("diffusers", "diffusers", diffusers_unet),
    DIFFUSERS_CIFAR: Peer("diffusers", "diffusers", diffusers_cifar_unet),
}


def gradient_error(trainer) -> float:
    """Relative L2 distance between the gradients of ``trainer.network`` (compiled) and ``trainer.model``
    (plain) for one batch of the trainer's own draw, in its precision; 0 means identical. Leaves the
    weights and the gradients the trainer holds as they were."""
    parameters = [p for p in trainer.model.parameters() if p.requires_grad]
    held = [p.grad for p in parameters]
    x0, t, noise, labels = trainer.data.draw(trainer.diffusion)
    flat = []
    for network in (trainer.model, trainer.network):
        for parameter in parameters:
            parameter.grad = None
        with autocast(trainer.device, trainer.precision, cache_enabled=not trainer.use_graph):
            loss = trainer.diffusion.training_loss(network, x0, t, noise, labels=labels)
        loss.backward()
        flat.append(torch.cat([p.grad.float().flatten() for p in parameters if p.grad is not None]))
    for parameter, grad in zip(parameters, held, strict=True):
        parameter.grad = grad
    return float((flat[1] - flat[0]).norm() / flat[0].norm().clamp_min(1e-30))
