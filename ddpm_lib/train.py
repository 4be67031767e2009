"""The training loop, one for every network (Ho et al. 2020, Algorithm 1).

The whole uint8 training set lives on the device; each step draws a batch of indices, flips half
the images horizontally and standardizes them there, so no DataLoader or JPEG decoding sits in
the loop. AdamW, EMA weights (``ema.py``) for sampling, a log line every ``log_every`` steps, and
``metrics.csv`` plus ``config.json`` and a final checkpoint in the run folder when one is given.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config import Config
from .diffusion import GaussianDiffusion
from .ema import EMA


@dataclass
class TrainResult:
    """What a training run returns: the network, its EMA, and the logged metrics (one dict per log)."""

    model: nn.Module
    ema: EMA
    history: list[dict] = field(default_factory=list)


def standardize(images_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, C, H, W) in 0..255 -> float32 with per-channel mean 0 and std 1.

    Args:
        mean, std: per-channel statistics of the pixel values scaled to [0, 1], shape (C,).
    """
    x = images_uint8.float() / 255.0
    return (x - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)


def destandardize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`standardize`: float images -> uint8 (B, C, H, W), clipped to 0..255."""
    x = images.float() * std.reshape(1, -1, 1, 1).to(images.device) + mean.reshape(1, -1, 1, 1).to(images.device)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def random_batch(
    images: torch.Tensor, batch_size: int, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """A random batch from the device-resident uint8 set, half flipped left-right, standardized.

    Args:
        images: uint8 (N, C, H, W) on the training device.
        generator: a generator on the same device as ``images``.
    Returns:
        float32 (batch_size, C, H, W).
    """
    index = torch.randint(0, images.shape[0], (batch_size,), device=images.device, generator=generator)
    batch = standardize(images[index], mean, std)
    flip = torch.rand(batch_size, device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)


def train(
    model: nn.Module,
    diffusion: GaussianDiffusion,
    images: torch.Tensor,
    config: Config,
    mean: torch.Tensor,
    std: torch.Tensor,
    run_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> TrainResult:
    """Train ``model`` on ``images`` for ``config.train.steps`` steps.

    Args:
        model: any network ``model(x_t, cond)``.
        diffusion: the diffusion (schedule, prediction target, loss).
        images: the training set, uint8 (N, C, H, W); moved to ``device`` once.
        config: the run's config (``config.train`` holds the loop's settings).
        mean, std: per-channel statistics of the training split in [0, 1], shape (C,).
        run_dir: where to write ``config.json``, ``metrics.csv`` and ``checkpoint.pt`` (optional).
        device: the training device.
    """
    settings = config.train
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    device = torch.device(device)
    torch.manual_seed(settings.seed)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    images, mean, std = images.to(device), mean.to(device).float(), std.to(device).float()
    model = model.to(device).train()
    diffusion.to(device)
    ema = EMA(model, settings.ema_decay, warmup=settings.ema_warmup)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.to_json(run_dir / "config.json")

    result = TrainResult(model, ema)
    running, count, started = 0.0, 0, time.perf_counter()
    for step in range(1, settings.steps + 1):
        x0 = random_batch(images, settings.batch_size, mean, std, generator)
        loss = diffusion.training_loss(model, x0, generator=generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower train.lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(model)
        running, count = running + loss.item(), count + 1
        if step % settings.log_every == 0 or step == settings.steps:
            elapsed = time.perf_counter() - started
            entry = {"step": step, "loss": running / count, "images_per_s": count * settings.batch_size / elapsed}
            result.history.append(entry)
            print(f"step {step:6d}/{settings.steps}  loss {entry['loss']:.4f}  {entry['images_per_s']:.0f} img/s",
                  flush=True)
            running, count, started = 0.0, 0, time.perf_counter()

    if run_dir is not None:
        with open(run_dir / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["step", "loss", "images_per_s"])
            writer.writeheader()
            writer.writerows(result.history)
        checkpoint = {"model": model.state_dict(), "ema": ema.state_dict(), "config": config.to_dict(),
                      "mean": mean.cpu(), "std": std.cpu(), "step": settings.steps}
        temporary = run_dir / "checkpoint.pt.tmp"
        torch.save(checkpoint, temporary)
        temporary.replace(run_dir / "checkpoint.pt")  # atomic: a killed save never leaves half a file
    return result
