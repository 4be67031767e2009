"""The device and what it can do: the one place that decides device, precision and compilation.

Training, sampling, evaluation, the benchmarks and the Colab set-up all ask here, so a card is
never treated one way when training and another when sampling:

| card | compute capability | precision | ``torch.compile`` |
|---|---|---|---|
| H100 / H200 / A100 / L4 | 9.0 / 9.0 / 8.0 / 8.9 | bf16 (native) | yes |
| T4 (Colab's free GPU) | 7.5 | fp16 + GradScaler (bf16 is only emulated there) | yes |
| P100 (the study's, Kaggle's) | 6.0 | fp16 + GradScaler | no: Triton needs 7.0 |
| CPU | - | fp32 | no (it would only add start-up time here) |

``torch.cuda.is_bf16_supported()`` also answers yes where bf16 is emulated (sm 7.5), so the choice
reads the compute capability instead.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MIN_BF16_CAPABILITY = (8, 0)  # Ampere: native bf16 tensor cores
MIN_COMPILE_CAPABILITY = (7, 0)  # Triton (torch.compile's GPU backend) refuses older cards


def default_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device=None) -> torch.device:
    """``device`` as a ``torch.device``, or :func:`default_device` when None."""
    return torch.device(device) if device is not None else default_device()


def capability(device: torch.device) -> tuple[int, int] | None:
    """The CUDA compute capability of ``device`` (None on the CPU)."""
    if device.type != "cuda":
        return None
    return tuple(torch.cuda.get_device_capability(device))


def choose_precision(device, setting: str = "auto") -> str:
    """``"bf16"``, ``"fp16"`` or ``"fp32"`` for ``device``, for training and sampling alike.

    ``"auto"``: bf16 where the card has it natively (compute capability >= 8.0), fp16 on older GPUs
    (T4 7.5, P100 6.0; training adds a GradScaler), fp32 on the CPU. Any other setting is taken as
    given.
    """
    if setting not in PRECISIONS:
        raise ValueError(f"precision={setting!r}: use one of {PRECISIONS}")
    if setting != "auto":
        return setting
    device = torch.device(device)
    if device.type != "cuda":
        return "fp32"
    return "bf16" if capability(device) >= MIN_BF16_CAPABILITY else "fp16"


def compile_supported(device) -> bool:
    """Whether ``torch.compile`` can build GPU kernels here: CUDA with compute capability >= 7.0."""
    device = torch.device(device)
    return device.type == "cuda" and capability(device) >= MIN_COMPILE_CAPABILITY


def autocast(device, precision: str, cache_enabled: bool = True):
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    device = torch.device(device)
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision], cache_enabled=cache_enabled)


def describe(device) -> str:
    """One line for people: the card, its memory and the precision it trains and samples in."""
    device = torch.device(device)
    if device.type != "cuda":
        return "CPU (fp32)"
    properties = torch.cuda.get_device_properties(device)
    precision = choose_precision(device)
    shown = "bf16" if precision == "bf16" else "fp16 + GradScaler"
    compiled = "" if compile_supported(device) else ", no torch.compile (compute capability < 7.0)"
    return f"{properties.name}, {properties.total_memory / 2**30:.1f} GiB, {shown}{compiled}"


def device_name(device) -> str:
    """The card's name, or ``"CPU"``."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
