"""Small helpers shared across the library."""

from __future__ import annotations


def unwrap_model(model):
    """The plain module inside ``DistributedDataParallel`` (``.module``) or ``torch.compile``
    (``._orig_mod``) wrappers; ``model`` itself when it is not wrapped."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner
