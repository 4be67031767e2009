"""Small helpers shared across the library: unwrapping networks, devices, seeding."""

from __future__ import annotations

import random

import numpy as np
import torch


def unwrap_model(model):
    """The plain module inside ``DistributedDataParallel`` (``.module``) or ``torch.compile``
    (``._orig_mod``) wrappers; ``model`` itself when it is not wrapped."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def default_device() -> torch.device:
    """CUDA when available, else the CPU (library code never hard-codes a device)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a CPU ``torch.Generator`` seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
