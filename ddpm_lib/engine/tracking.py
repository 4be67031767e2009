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

from ddpm_lib.config import WANDB_MODES

CSV_FIELDS = ("step", "loss", "lr", "images_per_s", "elapsed_s", "gpu_memory_gb", "gpu_power_w", "skipped_steps")


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


# ----- the loss between log lines, and the divergence watch -----------------------------------------
MAX_SKIPPED_STEPS = 20  # this many skipped steps in a row stop the run (a few fp16 skips at the start are normal)


class TrainingDivergedError(RuntimeError):
    """The loss stayed NaN or infinite, fp16 gradients kept overflowing, or the weights became non-finite."""


class LossWatch:
    """Accumulates the loss on the device, without a host sync (so it can live inside a CUDA graph):
    finite losses are summed and counted; a step is *skipped* when its loss is not finite or when fp16's
    GradScaler skipped the update (its gradients overflowed), and runs of skipped steps are measured.
    :meth:`collect`, at a log step, gives the mean loss and the skipped steps since the last one, and
    stops a run that diverged."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.finite_count = torch.zeros((), device=device)
        self.skipped_count = torch.zeros((), device=device)
        self.skipped_run = torch.zeros((), device=device)  # consecutive skipped steps
        self.skipped_max = torch.zeros((), device=device)  # the longest such run since the last log
        self.overflow_count = torch.zeros((), device=device)  # skipped with a finite loss: fp16 overflows

    def record(self, outcome: tuple[torch.Tensor, bool | torch.Tensor]) -> None:
        """Add one step's ``(loss, applied)`` (graph-safe: tensor arithmetic only)."""
        loss, applied = outcome
        finite = torch.isfinite(loss)
        skipped = ~(finite & torch.as_tensor(applied, device=finite.device))
        self.loss_sum += torch.where(finite, loss.float(), torch.zeros_like(self.loss_sum))
        self.finite_count += finite.float()
        self.skipped_count += skipped.float()
        self.overflow_count += (skipped & finite).float()
        self.skipped_run.copy_((self.skipped_run + 1) * skipped.float())
        torch.maximum(self.skipped_max, self.skipped_run, out=self.skipped_max)

    def collect(self, reduce, weights_finite: bool, step: int, advice: str) -> tuple[float, int]:
        """The mean finite loss and the number of skipped steps since the last call (summed over
        processes by ``reduce``), then reset. Raises :class:`TrainingDivergedError` when
        :data:`MAX_SKIPPED_STEPS` steps in a row were skipped, or the weights are not finite; ``advice``
        ends the message (where the last checkpoint is, what to change)."""
        totals = reduce(torch.stack([self.loss_sum, self.finite_count, self.skipped_count]))
        longest, overflows = int(self.skipped_max.item()), int(self.overflow_count.item())
        loss = (totals[0] / totals[1].clamp(min=1)).item() if totals[1] > 0 else float("nan")
        skipped = int(round(totals[2].item()))
        for tensor in (self.loss_sum, self.finite_count, self.skipped_count, self.skipped_max, self.overflow_count):
            tensor.zero_()
        if longest >= MAX_SKIPPED_STEPS or not weights_finite:
            if not weights_finite:
                what = "the weights became non-finite"
            elif overflows:
                what = (f"{longest} steps in a row were skipped because the fp16 gradients overflowed (the loss was "
                        "finite: the GradScaler could not find a scale that fits)")
            else:
                what = f"the loss stayed non-finite for {longest} steps in a row"
            raise TrainingDivergedError(f"{what} by step {step}; {advice}")
        return loss, skipped


class ProgressReport:
    """How a run shows its progress: a tqdm bar, a plain line per log step (papermill, log files) or
    nothing; only the main process shows anything."""

    STYLES = ("bar", "lines", "none")

    def __init__(self, style: bool | str, total: int, initial: int, enabled: bool = True):
        self.style = self.style_of(style)
        self.total, self.enabled, self.bar = total, enabled, None
        if self.style == "bar" and enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step")

    @classmethod
    def style_of(cls, style: bool | str) -> str:
        """``style`` checked, with True / False read as ``"bar"`` / ``"none"``."""
        style = {True: "bar", False: "none"}.get(style, style)
        if style not in cls.STYLES:
            raise ValueError(f"progress={style!r}: use one of {cls.STYLES}")
        return style

    def show(self, entry: dict, count: int) -> None:
        """One logged entry, after ``count`` more steps."""
        if self.style == "lines" and self.enabled:
            print(f"step {entry['step']}/{self.total}  loss {entry['loss']:.4f}  {entry['images_per_s']:.0f} img/s",
                  flush=True)
        if self.bar is not None:
            self.bar.update(count)
            self.bar.set_postfix(loss=f"{entry['loss']:.4f}", img_s=f"{entry['images_per_s']:.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
