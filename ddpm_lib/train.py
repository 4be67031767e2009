"""The training engine, one loop for every network (Ho et al. 2020, Algorithm 1).

Where the speed comes from (DESIGN.md):
* the whole uint8 training set lives on the device; each step draws indices, flips half the images
  and standardizes them there: no DataLoader, no JPEG decoding in the loop;
* mixed precision chosen by the device: bf16 autocast where supported, fp16 with a GradScaler on
  GPUs without bf16 (Colab's T4, the study's P100), fp32 on the CPU; channels_last on CUDA;
* small batches are launch-bound, so on CUDA the whole step (batch drawing, forward, backward,
  AdamW, EMA) is captured once in a CUDA graph and replayed (``train.cuda_graph``; not with fp16,
  whose GradScaler needs a host sync).

And what makes it safe: atomic checkpoints with every state needed to continue exactly
(``resume="latest"``), a NaN check before every checkpoint, metrics in ``metrics.csv`` and W&B,
sample grids from the EMA weights.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import checkpoints
from .config import Config
from .data.transforms import destandardize, standardize
from .diffusion import GaussianDiffusion
from .distributed import barrier, current_context, mean_over_processes
from .ema import EMA
from .sampling import ddim_sample, standardized_range
from .tracking import MetricsLogger, gpu_memory_gb, gpu_power_watts


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What a run returns: the network, its EMA, the logged metrics and where things were written."""

    model: nn.Module
    ema: EMA
    history: list[dict] = field(default_factory=list)
    step: int = 0
    run_dir: Path | None = None


def random_batch(images: torch.Tensor, batch_size: int, mean: torch.Tensor, std: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """A random batch from the device-resident uint8 set, half flipped left-right, standardized.

    Args:
        images: uint8 (N, C, H, W) on the training device.
        generator: None uses the global generator (graph-safe on CUDA).
    Returns:
        float32 (batch_size, C, H, W).
    """
    index = torch.randint(0, images.shape[0], (batch_size,), device=images.device, generator=generator)
    batch = standardize(images[index], mean, std)
    flip = torch.rand(batch_size, device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)


def choose_precision(device: torch.device, setting: str = "auto") -> str:
    """``"bf16"``, ``"fp16"`` or ``"fp32"`` for ``device``: bf16 where the GPU supports it, fp16 on
    older GPUs (T4, P100), fp32 on the CPU (``setting`` other than ``auto`` is taken as given)."""
    if setting != "auto":
        return setting
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Trainer:
    """Trains any network ``model(x_t, cond)`` with a :class:`GaussianDiffusion`.

    Args:
        model: the network (moved to ``device``).
        diffusion: schedule, prediction target and loss.
        images: the training split, uint8 (N, C, H, W); moved to the device once.
        mean, std: per-channel statistics of the training split in [0, 1], shape (C,).
        config: the run's config; ``config.train`` holds the loop's settings.
        run_dir: where ``config.json``, ``metrics.csv``, ``samples/`` and W&B files go (None: nowhere).
        checkpoint_dir: where checkpoints go (default ``run_dir/checkpoints``; e.g. Google Drive).
        device: the training device (default: CUDA when available).
        resume: ``"latest"`` continues from the newest readable checkpoint, if any.
        progress: show a tqdm bar.

    Under ``torchrun`` (a process group initialised by ``distributed.init_from_environment``) each of
    the N processes draws the same global batch of ``train.batch_size`` from one shared seed and
    trains on its 1/N slice; DDP averages the gradients, so N processes follow the same optimisation
    as one process with the whole batch. Only rank 0 keeps the EMA and writes files.
    """

    def __init__(self, model: nn.Module, diffusion: GaussianDiffusion, images: torch.Tensor, mean, std,
                 config: Config, run_dir=None, checkpoint_dir=None, device=None, resume: str | None = None,
                 progress: bool = True):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.config, self.settings = config, config.train
        self.dist = current_context()
        if device is None and self.dist.enabled and torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        if self.settings.batch_size % self.dist.world_size:
            raise ValueError(f"train.batch_size={self.settings.batch_size} is the global batch and must be divisible "
                             f"by the {self.dist.world_size} processes")
        self.local_batch = self.settings.batch_size // self.dist.world_size
        self.precision = choose_precision(self.device, self.settings.precision)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else (
            self.run_dir / "checkpoints" if self.run_dir is not None else None)
        self.progress = progress
        self.total_steps = self.settings.total_steps(images.shape[0])
        self.channels_last = self.settings.channels_last and self.device.type == "cuda"
        self.use_graph = (self.settings.cuda_graph and self.device.type == "cuda" and self.precision != "fp16"
                          and not self.dist.enabled)  # DDP's all-reduce stays outside graphs

        torch.manual_seed(self.settings.seed)  # before anything random, so a seed repeats a run
        self.images = images.to(self.device)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).to(self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32).to(self.device)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format).train()
        self.diffusion = diffusion.to(self.device)
        # The network the loss calls: DDP-wrapped under torchrun, compiled on CUDA when asked (state
        # dicts and the EMA keep using the plain module, so checkpoints depend on neither).
        self.network = self.model
        if self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        if self.settings.compile and self.device.type == "cuda":
            self.network = torch.compile(self.network)
        self.ema = (EMA(self.model, self.settings.ema_decay, warmup=self.settings.ema_warmup)
                    if self.dist.is_main else None)  # rank 0 keeps the EMA
        lr = torch.tensor(self.settings.lr, device=self.device) if self.use_graph else self.settings.lr
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=self.settings.weight_decay,
                                           capturable=self.use_graph, foreach=True)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.step = 0
        history = []
        if resume == "latest" and self.checkpoint_dir is not None:
            state, path = checkpoints.load_latest(self.checkpoint_dir, map_location=self.device)
            if state is not None:
                history = self._restore(state)
                if self.dist.is_main:
                    print(f"resumed from {path} at step {self.step}")
        elif resume not in (None, "latest"):
            raise ValueError(f"resume={resume!r}: use 'latest' or None")
        if self.run_dir is not None and self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config.to_json(self.run_dir / "config.json")
        self.logger = MetricsLogger(self.run_dir, config, self.settings.wandb, history, enabled=self.dist.is_main)
        self._graph = None
        self._loss_sum = torch.zeros((), device=self.device)

    # ----- one step -----------------------------------------------------------------------
    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype, cache_enabled=not self.use_graph)

    def _draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This process's slice of the global batch: images x0, timesteps t and noise.

        Every process draws the whole global batch from the same random stream (indices, flips,
        t, noise, in the order ``GaussianDiffusion.training_loss`` would), then keeps its slice.
        """
        size = self.settings.batch_size
        x0 = random_batch(self.images, size, self.mean, self.std)
        t = self.diffusion.sample_timesteps(size, self.device)
        noise = torch.randn(x0.shape, device=self.device, dtype=x0.dtype)
        if self.dist.enabled:
            part = slice(self.dist.rank * self.local_batch, (self.dist.rank + 1) * self.local_batch)
            x0, t, noise = x0[part], t[part], noise[part]
        if self.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        return x0, t, noise

    def _forward_backward(self) -> torch.Tensor:
        """Draw a batch, compute the loss, backpropagate, step AdamW and the EMA. Returns the loss."""
        with self._autocast():
            loss = self.diffusion.training_loss(self.network, *self._draw())
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.settings.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip, foreach=True)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.detach()

    def _eager_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._loss_sum += self._forward_backward()

    def _capture(self) -> None:
        """Record the whole step in a CUDA graph (after warm-up steps on a side stream)."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        state = {k: v.clone() for k, v in self.model.state_dict().items()}  # (graphs: one process only)
        ema_state = {k: v.clone() for k, v in self.ema.model.state_dict().items()}
        ema_updates = self.ema.updates.clone()
        optimizer_state = {p: {k: v.clone() for k, v in st.items() if torch.is_tensor(v)}
                           for p, st in self.optimizer.state.items()}
        rng = _rng_state(self.device)
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm-up: allocate optimizer state, pick kernels
                self.optimizer.zero_grad(set_to_none=True)
                self._forward_backward()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        # The warm-up must not change the run: put everything back, in place, so the graph
        # records the very tensors that hold the state (AdamW's state starts at zero).
        with torch.no_grad():
            self.model.load_state_dict(state)
            self.ema.model.load_state_dict(ema_state)
            self.ema.updates.copy_(ema_updates)
            for parameter, param_state in self.optimizer.state.items():
                saved = optimizer_state.get(parameter, {})
                for key, value in param_state.items():
                    if torch.is_tensor(value):
                        value.copy_(saved[key]) if key in saved else value.zero_()
        _set_rng_state(rng, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._loss_sum += self._forward_backward()

    def _set_lr(self) -> None:
        if self.settings.warmup_steps <= 0:
            return
        lr = self.settings.lr * min(1.0, (self.step + 1) / self.settings.warmup_steps)
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def train_step(self) -> None:
        """One optimizer step (replaying the CUDA graph when one is used)."""
        self._set_lr()
        if self.use_graph:
            if self._graph is None:
                self._capture()
            self._graph.replay()
        else:
            self._eager_step()
        self.step += 1

    # ----- checkpoints ----------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "step": self.step, "model": self.model.state_dict(), "ema": self.ema.state_dict(),  # rank 0
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": _rng_state(self.device), "config": self.config.to_dict(),
            "history": self.logger.history, "mean": self.mean.cpu(), "std": self.std.cpu(),
        }

    def _restore(self, state: dict) -> list:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_state({k: v.cpu() for k, v in state["rng"].items()}, self.device)
        self.step = int(state["step"])
        return list(state.get("history", []))

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (refusing when the weights are not finite)."""
        if self.checkpoint_dir is None:
            return None
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise TrainingDivergedError(f"weights are not finite at step {self.step}; not saving a checkpoint")
        path = None
        if self.dist.is_main:
            path = checkpoints.save_checkpoint(self._state(), self.checkpoint_dir, self.step,
                                               self.settings.keep_checkpoints)
        barrier(self.dist)  # every process sees the checkpoint before going on
        return path

    # ----- samples --------------------------------------------------------------------------
    @torch.no_grad()
    def sample_grid(self, count: int | None = None, seed: int = 1234) -> torch.Tensor:
        """uint8 samples (B, C, H, W) from the EMA weights with the config's sampler settings.

        The same seed every time, so grids over training show one set of start noises.
        """
        count = count or self.settings.num_grid_samples
        _, channels, height, width = self.images.shape
        generator = torch.Generator(device=self.device).manual_seed(seed)
        low, high = standardized_range(self.mean.tolist(), self.std.tolist())
        with self._autocast() if self.precision == "bf16" else contextlib.nullcontext():
            out = ddim_sample(self.ema.model, self.diffusion, (count, channels, height, width),
                              steps=self.config.sample.steps, eta=self.config.sample.eta, generator=generator,
                              clip_range=(low.float(), high.float()), device=self.device)
        return destandardize(out.images, self.mean, self.std)

    def _write_grid(self) -> None:
        if self.run_dir is None or not self.dist.is_main:
            return
        from .viz import save_image_grid

        folder = self.run_dir / "samples"
        folder.mkdir(exist_ok=True)
        path = save_image_grid(self.sample_grid(), folder / f"step_{self.step:08d}.png")
        self.logger.log_image("samples", path, self.step)

    # ----- the loop -------------------------------------------------------------------------
    def _log(self, count: int, seconds: float) -> dict:
        loss = mean_over_processes(self._loss_sum, self.dist).item() / max(count, 1)
        self._loss_sum.zero_()
        if not torch.isfinite(torch.tensor(loss)):
            raise TrainingDivergedError(
                f"the loss became {loss} by step {self.step}; the run stopped and the last checkpoint "
                f"(in {self.checkpoint_dir}) is intact. Lower train.lr (now {self.settings.lr}), set "
                "train.grad_clip, or check the data.")
        lr = self.optimizer.param_groups[0]["lr"]
        entry = {"step": self.step, "loss": loss, "lr": float(lr),
                 "images_per_s": count * self.settings.batch_size / max(seconds, 1e-9),
                 "elapsed_s": seconds, "gpu_memory_gb": gpu_memory_gb(self.device),
                 "gpu_power_w": gpu_power_watts(self.device)}
        self.logger.log(entry)
        return entry

    def fit(self) -> TrainResult:
        """Train until ``total_steps``, logging, checkpointing and sampling on the way."""
        s = self.settings
        bar = None
        if self.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step")
        try:
            if self.step == 0 and s.sample_every > 0:
                self._write_grid()  # the study's Figure 3: samples at the start of training
            count, started = 0, time.perf_counter()
            while self.step < self.total_steps:
                try:
                    self.train_step()
                except torch.cuda.OutOfMemoryError as error:
                    if self.step > 0:
                        raise
                    raise RuntimeError(
                        f"out of GPU memory at train.batch_size={s.batch_size} with {self.config.model.name}; "
                        f"try train.batch_size={max(s.batch_size // 2, 1)}") from error
                count += 1
                last = self.step == self.total_steps
                if self.step % s.log_every == 0 or last or self.step % s.checkpoint_every == 0:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    entry = self._log(count, time.perf_counter() - started)
                    if self.progress and self.dist.is_main and os.environ.get("DDPM_TEXT_PROGRESS"):  # papermill
                        print(f"step {self.step}/{self.total_steps}  loss {entry['loss']:.4f}  "
                              f"{entry['images_per_s']:.0f} img/s", flush=True)
                    if bar is not None:
                        bar.update(count)
                        bar.set_postfix(loss=f"{entry['loss']:.4f}", img_s=f"{entry['images_per_s']:.0f}")
                    if self.step % s.checkpoint_every == 0 or last:
                        self.save_checkpoint()
                    if (s.sample_every > 0 and self.step % s.sample_every == 0) or last:
                        self._write_grid()
                    count, started = 0, time.perf_counter()
        finally:
            if bar is not None:
                bar.close()
            self.logger.close()
        return TrainResult(self.model, self.ema, self.logger.history, self.step, self.run_dir)

