"""Exponential moving average (EMA) of a network's weights, used for every sample and evaluation.

``ema = decay * ema + (1 - decay) * weights`` after each optimizer step (the Keras example and
Ho et al. both use it; the study did not). Floating-point buffers (BatchNorm running statistics) are
averaged the same way, as the Keras example averages them with the weights, so the averaged
weights are paired with averaged statistics; integer buffers (``num_batches_tracked``) are copied.
The update is pure tensor arithmetic (the step count lives on the device), so it can be captured in
a CUDA graph with the rest of the training step.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ddpm_lib.utils import unwrap_model


class EMA:
    """Keeps ``self.model``, a frozen copy of a network whose weights track an EMA of the original.

    Args:
        model: the network being trained.
        decay: the EMA decay (0.999 by default, as the Keras example).
        warmup: if True the effective decay is ``min(decay, (1 + n) / (10 + n))`` after n updates,
            so early samples are not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = False):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.model = copy.deepcopy(unwrap_model(model)).eval().requires_grad_(False)
        device = next(self.model.parameters()).device
        self.updates = torch.zeros((), dtype=torch.float32, device=device)  # n, on the device

    @property
    def num_updates(self) -> int:
        return int(self.updates.item())

    def current_decay(self) -> torch.Tensor:
        """The decay the next update will use, as a 0-d tensor."""
        if not self.warmup:
            return torch.full_like(self.updates, self.decay)
        return torch.clamp((1 + self.updates) / (10 + self.updates), max=self.decay)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the EMA weights towards ``model``'s: ema = decay * ema + (1 - decay) * w."""
        decay = self.current_decay()
        source = unwrap_model(model)
        ema_params = list(self.model.parameters())
        params = [p.detach().to(e.dtype) for p, e in zip(source.parameters(), ema_params, strict=True)]
        ema_buffers, buffers = [], []
        for ema_buffer, buffer in zip(self.model.buffers(), source.buffers(), strict=True):
            if ema_buffer.is_floating_point():
                ema_buffers.append(ema_buffer)
                buffers.append(buffer.detach().to(ema_buffer.dtype))
            else:
                ema_buffer.copy_(buffer)
        torch._foreach_mul_(ema_params + ema_buffers, decay)
        torch._foreach_add_(ema_params + ema_buffers, torch._foreach_mul(params + buffers, 1.0 - decay))
        self.updates.add_(1)

    def state_dict(self) -> dict:
        """Weights plus the update count, for checkpoints."""
        return {"model": self.model.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.updates.fill_(float(state["num_updates"]))
