"""Exponential moving average (EMA) of a network's weights, used for every sample and evaluation.

``ema = decay * ema + (1 - decay) * weights`` after each optimizer step (the Keras example and
Ho et al. both use it; the study did not). Buffers (BatchNorm running statistics) are copied, not
averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .utils import unwrap_model


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
        self.decay, self.warmup, self.num_updates = decay, warmup, 0
        self.model = copy.deepcopy(unwrap_model(model)).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update will use."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the EMA weights towards ``model``'s: ema += (1 - decay) * (w - ema)."""
        decay = self.current_decay()
        source = unwrap_model(model)
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in source.parameters()]
        torch._foreach_lerp_(ema_params, [p.to(e.dtype) for p, e in zip(params, ema_params, strict=True)], 1.0 - decay)
        for ema_buffer, buffer in zip(self.model.buffers(), source.buffers(), strict=True):
            ema_buffer.copy_(buffer)
        self.num_updates += 1

    def state_dict(self) -> dict:
        """Weights plus the update count, for checkpoints."""
        return {"model": self.model.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])

