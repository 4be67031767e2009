"""Where training numbers go: ``metrics.csv`` always, Weights & Biases when wanted, GPU readings.

W&B mode: ``$WANDB_MODE`` wins when set; otherwise ``online`` when the user is logged in (an API
key in the environment or in ``~/.netrc``), else ``offline`` (no key needed; ``wandb sync`` uploads
later). ``disabled`` writes nothing. W&B runs silently: its banners go to its own log in the run
folder (``wandb/``), not between the training's progress lines. Each run that starts from step 0
gets a new W&B id, kept in its checkpoints, so a resume continues the same W&B run and a retrained
run never writes over the old one's curves.
"""

from __future__ import annotations

import csv
import netrc
import os
import uuid
from pathlib import Path

import torch

from .config import WANDB_MODES

CSV_FIELDS = ("step", "loss", "lr", "images_per_s", "elapsed_s", "gpu_memory_gb", "gpu_power_w", "nonfinite_steps")


def wandb_logged_in() -> bool:
    """Whether a W&B API key is available without asking the user."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode(setting: str = "auto") -> str:
    """The W&B mode to use: ``$WANDB_MODE``, else ``setting``, where ``auto`` means online if logged in."""
    mode = os.environ.get("WANDB_MODE") or setting
    if mode not in WANDB_MODES:
        raise ValueError(f"W&B mode {mode!r}: use one of {WANDB_MODES}")
    if mode == "auto":
        mode = "online" if wandb_logged_in() else "offline"
    return mode


def new_run_id(config, name: str) -> str:
    """A fresh W&B run id for a run that starts from step 0: ``<profile>-<name>-<8 hex digits>``."""
    return f"{config.profile}-{name}-{uuid.uuid4().hex[:8]}"


def gpu_power_watts(device: torch.device) -> float | None:
    """The GPU's current power draw in watts through NVML, or None where NVML is unavailable."""
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        return pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
    except Exception:  # no pynvml, no driver access, a virtualised GPU without power readings
        return None


def gpu_memory_gb(device: torch.device) -> float | None:
    """Peak GPU memory allocated by PyTorch so far, in GB (None on the CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 1e9


class MetricsLogger:
    """Writes each log entry to ``metrics.csv`` (appending, so a killed run keeps its rows) and to W&B.

    Args:
        run_dir: the run folder (None: log to memory only).
        config: the run's config (sent to W&B).
        wandb_setting: ``auto``, ``online``, ``offline`` or ``disabled``.
        history: rows already logged (on resume); the CSV is rewritten to hold exactly these first.
        enabled: False on non-zero ranks of a distributed run.
        run_id: the W&B run id (from :func:`new_run_id`, or the checkpoint on a resume).
    """

    def __init__(self, run_dir, config, wandb_setting: str = "auto", history: list | None = None,
                 enabled: bool = True, run_id: str | None = None):
        self.history = list(history or [])
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.enabled = enabled
        self.wandb_run = None
        if not enabled or self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.csv_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.history)
        mode = wandb_mode(wandb_setting)
        if mode != "disabled":
            import wandb

            self.wandb_run = wandb.init(project="ddpm-cub", dir=str(self.run_dir), mode=mode,
                                        name=self.run_dir.name, config=config.to_dict(), resume="allow",
                                        id=run_id or new_run_id(config, self.run_dir.name),
                                        settings=wandb.Settings(silent=True))

    @property
    def csv_path(self) -> Path:
        return self.run_dir / "metrics.csv"

    def log(self, entry: dict) -> None:
        """Record one row (keys from ``CSV_FIELDS``)."""
        self.history.append(entry)
        if not self.enabled or self.run_dir is None:
            return
        with open(self.csv_path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore").writerow(entry)
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in entry.items() if v is not None}, step=entry["step"])

    def log_image(self, name: str, path: Path, step: int) -> None:
        """Send a saved image (a sample grid) to W&B."""
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({name: wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
