"""The training engine, one loop for every network (Ho et al. 2020, Algorithm 1).

Where the speed comes from (DESIGN.md):
* the whole uint8 training set lives on the device; each step draws indices, flips half the images
  and standardizes them there: no DataLoader, no JPEG decoding in the loop;
* mixed precision chosen by the device (``device.choose_precision``, the same rule sampling uses):
  bf16 autocast where native, fp16 with a GradScaler on older GPUs (Colab's T4, the study's P100),
  fp32 on the CPU; channels_last;
* small batches are launch-bound, so on CUDA the whole step (batch drawing, label dropout, forward,
  backward, AdamW, EMA) is captured once in a CUDA graph and replayed (``train.cuda_graph``; not
  with fp16, whose GradScaler needs a host sync), and the network is compiled where Triton supports
  the card.

And what makes it safe: durable checkpoints with every state needed to continue exactly
(``resume="latest"``), in whatever mode the resume runs (another card, CPU, another number of
processes); a stop on a loss that stays non-finite or on non-finite weights; metrics in
``metrics.csv`` and W&B. The engine imports no network and no plotting: the wiring
(``experiment.py``) hands it the network, the sample-grid callback and the progress style.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import checkpoints
from .config import Config, identity_differences
from .device import autocast, choose_precision, compile_supported, resolve_device
from .diffusion import GaussianDiffusion
from .distributed import (
    all_ok,
    barrier,
    convert_batchnorm,
    current_context,
    mean_over_processes,
    rank_seed,
)
from .ema import EMA
from .tracking import MetricsLogger, gpu_memory_gb, gpu_power_watts, new_run_id
from .transforms import standardize

MAX_NONFINITE_STEPS = 20  # a non-finite loss this many steps in a row stops the run (fp16 skips are normal)
PROGRESS_STYLES = ("bar", "lines", "none")


class TrainingDivergedError(RuntimeError):
    """The loss stayed NaN or infinite, or the weights became so."""


class RunMismatchError(ValueError):
    """A checkpoint belongs to another run (another network, diffusion or data)."""


@dataclass
class TrainResult:
    """What a run returns: the network, its EMA, the logged metrics and where things were written."""

    model: nn.Module
    ema: EMA
    history: list[dict] = field(default_factory=list)
    step: int = 0
    run_dir: Path | None = None


def random_batch(images: torch.Tensor, batch_size: int, mean, std,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch from the device-resident uint8 set, half flipped left-right, standardized.

    Args:
        images: uint8 (N, C, H, W) on the training device.
        generator: None uses the global generator (graph-safe on CUDA).
    Returns:
        float32 (batch_size, C, H, W) and the drawn indices (batch_size,).
    """
    index = torch.randint(0, images.shape[0], (batch_size,), device=images.device, generator=generator)
    batch = standardize(images[index], mean, std)
    flip = torch.rand(batch_size, device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch), index


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class Trainer:
    """Trains any network ``model(x_t, cond[, labels])`` with a :class:`GaussianDiffusion`.

    Args:
        model: the network (moved to ``device``).
        diffusion: schedule, prediction target and loss.
        images: the training split, uint8 (N, C, H, W); moved to the device once.
        mean, std: per-channel statistics of the training split in [0, 1], shape (C,).
        config: the run's config; ``config.train`` holds the loop's settings.
        run_dir: where ``config.json``, ``metrics.csv``, ``samples/`` and W&B files go (None: nowhere).
        checkpoint_dir: where checkpoints go (default ``run_dir/checkpoints``; e.g. Google Drive).
        device: the training device (default: CUDA when available).
        resume: ``"latest"`` continues from the newest readable checkpoint, if any; None starts
            afresh (moving older checkpoints aside).
        progress: ``"bar"`` (tqdm), ``"lines"`` (a plain line per log step, for papermill and
            logs) or ``"none"``; True / False mean "bar" / "none".
        labels: species indices (N,) in 0..K-1 for a class-conditional network (``model.num_classes``).
        on_sample: called as ``on_sample(trainer)`` at the start, every ``train.sample_every`` steps and
            at the end (sample grids; the wiring passes one); returns a saved image's path or None.
        metadata: facts about the run kept in every checkpoint (e.g. the species names).

    Under ``torchrun`` (a process group initialised by ``distributed.init_from_environment``) each of
    the N processes draws the same global batch of ``train.batch_size`` from one shared seed and
    trains on its 1/N slice; BatchNorm statistics are synchronised and DDP averages the gradients,
    so N processes follow the same optimisation as one process with the whole batch. Each process
    draws its own dropout masks. Only rank 0 keeps the EMA and writes files.
    """

    def __init__(self, model: nn.Module, diffusion: GaussianDiffusion, images: torch.Tensor, mean, std,
                 config: Config, run_dir=None, checkpoint_dir=None, device=None, resume: str | None = None,
                 progress: bool | str = True, labels: torch.Tensor | None = None,
                 on_sample: Callable[[Trainer], Path | None] | None = None, metadata: dict | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if resume not in (None, "latest"):
            raise ValueError(f"resume={resume!r}: use 'latest' or None")
        self.config, self.settings, self.dist = config, config.train, current_context()
        self.device = self._choose_device(device)
        self.local_batch = self._local_batch()
        self.precision = choose_precision(self.device, self.settings.precision)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else (
            self.run_dir / "checkpoints" if self.run_dir is not None else None)
        self.progress = {True: "bar", False: "none"}.get(progress, progress)
        if self.progress not in PROGRESS_STYLES:
            raise ValueError(f"progress={progress!r}: use one of {PROGRESS_STYLES}")
        self.on_sample, self.metadata = on_sample, dict(metadata or {})
        self.total_steps = self.settings.total_steps(images.shape[0])
        self.channels_last = self.settings.channels_last
        self.use_graph = (self.settings.cuda_graph and self.device.type == "cuda" and self.precision != "fp16"
                          and not self.dist.enabled)  # DDP's all-reduce stays outside graphs
        torch.manual_seed(self.settings.seed)  # before anything random, so a seed repeats a run
        self._place_data(images, mean, std, labels)
        self._build(model, diffusion)
        self.step, self.applied_steps, history, self.wandb_id = 0, 0, [], None
        self._start_or_resume(resume, history)
        self._graph = None

    # ----- set-up -------------------------------------------------------------------------
    def _choose_device(self, device) -> torch.device:
        if device is None and self.dist.enabled and torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return resolve_device(device)

    def _local_batch(self) -> int:
        if self.settings.batch_size % self.dist.world_size:
            raise ValueError(f"train.batch_size={self.settings.batch_size} is the global batch and must be divisible "
                             f"by the {self.dist.world_size} processes")
        return self.settings.batch_size // self.dist.world_size

    def _place_data(self, images: torch.Tensor, mean, std, labels) -> None:
        """The training set, its statistics and its species labels, on the device once."""
        self.num_classes = self.config.model.num_classes
        if self.num_classes is not None:
            if labels is None or len(labels) != images.shape[0]:
                raise ValueError(f"a conditional run (model.num_classes={self.num_classes}) needs one species label "
                                 f"per training image ({images.shape[0]})")
            if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
                raise ValueError(f"species labels must lie in 0..{self.num_classes - 1}, got "
                                 f"{int(labels.min())}..{int(labels.max())}")
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.long) if self.num_classes is not None else None
        self.mean = torch.as_tensor(mean, dtype=torch.float32).to(self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32).to(self.device)

    def _build(self, model: nn.Module, diffusion: GaussianDiffusion) -> None:
        """The network (DDP-wrapped, compiled where asked and supported), its EMA, AdamW, the scaler."""
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format).train()
        self.diffusion = diffusion.to(self.device)
        # The network the loss calls; state dicts and the EMA use the plain module, so checkpoints
        # depend on neither DDP nor compilation.
        self.network = self.model
        if self.dist.enabled:
            convert_batchnorm(self.model)  # global-batch statistics: N processes = one process
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.compiled = self.settings.compile and compile_supported(self.device)
        if self.compiled:
            self.network = torch.compile(self.network)
        self.ema = (EMA(self.model, self.settings.ema_decay, warmup=self.settings.ema_warmup)
                    if self.dist.is_main else None)  # rank 0 keeps the EMA
        lr = torch.tensor(self.settings.lr, device=self.device) if self.use_graph else self.settings.lr
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=self.settings.weight_decay,
                                           capturable=self.use_graph, foreach=True)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self._loss_sum = torch.zeros((), device=self.device)
        self._finite_count = torch.zeros((), device=self.device)
        self._nonfinite_run = torch.zeros((), device=self.device)  # consecutive non-finite losses
        self._nonfinite_max = torch.zeros((), device=self.device)  # longest such run since the last log

    def _start_or_resume(self, resume: str | None, history: list) -> None:
        """Resume from the newest readable checkpoint (``resume="latest"``), or start afresh with
        every older checkpoint moved aside; then write config.json and open the metrics log."""
        state, path = None, None
        if self.checkpoint_dir is not None and resume == "latest":
            state, path = checkpoints.load_latest(self.checkpoint_dir, map_location=self.device)
        if state is not None:
            differences = identity_differences(state["config"], self.config)
            if differences:
                raise RunMismatchError(f"the checkpoint {path} belongs to another run: " + "; ".join(differences)
                                       + ". Use another run name, or --retrain to replace it.")
            history = self._restore(state)
            if self.dist.is_main:
                print(f"resumed from {path} at step {self.step}")
        if self.checkpoint_dir is not None and self.dist.is_main:  # another line of training's files
            stale = [p for p in checkpoints.list_checkpoints(self.checkpoint_dir)
                     if state is None or checkpoints.checkpoint_step(p) > self.step]
            moved = checkpoints.set_aside(stale, self.checkpoint_dir)
            if moved is not None:
                print(f"moved {len(stale)} checkpoint(s) of an earlier run or an unreadable tail aside to {moved}")
        barrier(self.dist)
        if self.wandb_id is None:
            self.wandb_id = new_run_id(self.config, self.run_dir.name if self.run_dir is not None else "run")
        if self.run_dir is not None and self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config.to_json(self.run_dir / "config.json")
        self.logger = MetricsLogger(self.run_dir, self.config, self.settings.wandb, history,
                                    enabled=self.dist.is_main, run_id=self.wandb_id)

    # ----- one step -----------------------------------------------------------------------
    def _draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """This process's slice of the global batch: images x0, timesteps t, noise and labels.

        Every process draws the whole global batch from the same random stream (indices, flips,
        t, noise, in the order ``GaussianDiffusion.training_loss`` would, then the label-dropout
        draws of a conditional run), then keeps its slice. All on the device: graph-safe.
        """
        size = self.settings.batch_size
        x0, index = random_batch(self.images, size, self.mean, self.std)
        t = self.diffusion.sample_timesteps(size, self.device)
        noise = torch.randn(x0.shape, device=self.device, dtype=x0.dtype)
        labels = None
        if self.labels is not None:  # label dropout: that share trains the "no label" index K
            drop = torch.rand(size, device=self.device) < self.settings.label_dropout
            labels = torch.where(drop, torch.full_like(index, self.num_classes), self.labels[index])
        if self.dist.enabled:
            part = slice(self.dist.rank * self.local_batch, (self.dist.rank + 1) * self.local_batch)
            x0, t, noise = x0[part], t[part], noise[part]
            labels = labels[part] if labels is not None else None
        if self.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        return x0, t, noise, labels

    def _private_rng(self):
        """Under DDP, the forward pass (dropout) draws from this process's own stream, seeded by
        (seed, step, rank), and the shared stream that draws the batches is left as it was."""
        if not self.dist.enabled:
            return nullcontext()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        context = torch.random.fork_rng(devices=devices)
        return _SeededContext(context, rank_seed(self.settings.seed, self.step, self.dist.rank))

    def _forward_backward(self) -> torch.Tensor:
        """Draw a batch, compute the loss, backpropagate, step AdamW and the EMA. Returns the loss."""
        x0, t, noise, labels = self._draw()
        with self._private_rng(), autocast(self.device, self.precision, cache_enabled=not self.use_graph):
            loss = self.diffusion.training_loss(self.network, x0, t, noise, labels=labels)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.settings.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip, foreach=True)
        applied = True
        if self.scaler is not None:  # fp16: an overflow skips the step (GradScaler), and the EMA with it
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            applied = self.scaler.get_scale() >= scale
        else:
            self.optimizer.step()
        if self.ema is not None and applied:
            self.ema.update(self.model)
        self.applied_steps += int(applied)
        return loss.detach()

    def _record(self, loss: torch.Tensor) -> None:
        """Accumulate the loss on the device, without a host sync: finite losses are averaged and
        runs of non-finite ones counted."""
        finite = torch.isfinite(loss)
        self._loss_sum += torch.where(finite, loss.float(), torch.zeros_like(self._loss_sum))
        self._finite_count += finite.float()
        self._nonfinite_run.copy_((self._nonfinite_run + 1) * (~finite).float())
        torch.maximum(self._nonfinite_max, self._nonfinite_run, out=self._nonfinite_max)

    def _eager_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._record(self._forward_backward())

    def _capture(self) -> None:
        """Record the whole step in a CUDA graph (after warm-up steps on a side stream)."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        state = {k: v.clone() for k, v in self.model.state_dict().items()}  # (graphs: one process only)
        ema_state = {k: v.clone() for k, v in self.ema.model.state_dict().items()}
        ema_updates = self.ema.updates.clone()
        optimizer_state = {p: {k: v.clone() for k, v in st.items() if torch.is_tensor(v)}
                           for p, st in self.optimizer.state.items()}
        rng, applied = _rng_state(self.device), self.applied_steps
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
        self.applied_steps = applied
        self.optimizer.zero_grad(set_to_none=True)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._record(self._forward_backward())

    def learning_rate(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based): linear warm-up, then constant or a
        cosine decay to 0 at the last step."""
        s = self.settings
        if s.warmup_steps > 0 and step < s.warmup_steps:
            return s.lr * (step + 1) / s.warmup_steps
        if s.lr_schedule == "cosine":
            span = max(self.total_steps - s.warmup_steps, 1)
            progress = min(max(step - s.warmup_steps, 0) / span, 1.0)
            return s.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        return s.lr

    def train_step(self) -> None:
        """One optimizer step (replaying the CUDA graph when one is used)."""
        _set_lr(self.optimizer, self.learning_rate(self.applied_steps))
        if self.use_graph:
            if self._graph is None:
                self._capture()
            self._graph.replay()
            self.applied_steps += 1  # no skipped steps without a GradScaler
        else:
            self._eager_step()
        self.step += 1

    # ----- checkpoints ----------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "step": self.step, "applied_steps": self.applied_steps,
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),  # rank 0
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": _rng_state(self.device), "config": self.config.to_dict(), "wandb_id": self.wandb_id,
            "history": self.logger.history, "mean": self.mean.cpu(), "std": self.std.cpu(),
            "metadata": self.metadata, "engine": self.engine(),
        }

    def engine(self) -> dict:
        """How this run trains here: device, precision, CUDA graph, compilation, processes (for reports)."""
        from .device import name

        return {"device": name(self.device), "precision": self.precision, "cuda_graph": self.use_graph,
                "compiled": self.compiled, "channels_last": self.channels_last, "processes": self.dist.world_size}

    def _restore(self, state: dict) -> list:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._apply_own_mode()
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_state({k: v.cpu() for k, v in state["rng"].items()}, self.device)
        self.step = int(state["step"])
        self.applied_steps = int(state.get("applied_steps", self.step))
        self.wandb_id = state.get("wandb_id")
        return list(state.get("history", []))

    def _apply_own_mode(self) -> None:
        """After loading an optimizer state saved in another mode (a CUDA-graph run resumed on the CPU,
        an fp16 / DDP / eager run resumed by a graph trainer), this trainer's mode wins: ``capturable``,
        ``lr`` as a tensor (graph) or a float, each AdamW step counter where that mode keeps it; lr and
        weight decay come from the config, not the checkpoint."""
        for group in self.optimizer.param_groups:
            group["capturable"] = self.use_graph
            group["lr"] = torch.tensor(self.settings.lr, device=self.device) if self.use_graph else self.settings.lr
            group["weight_decay"] = self.settings.weight_decay
            for parameter in group["params"]:
                step = self.optimizer.state.get(parameter, {}).get("step")
                if torch.is_tensor(step):
                    where = parameter.device if self.use_graph else torch.device("cpu")
                    self.optimizer.state[parameter]["step"] = step.detach().to(where, torch.float32)

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (refusing when the weights are not finite).

        Under DDP rank 0 writes; a failure there (a full disk) stops every rank with the error.
        """
        if self.checkpoint_dir is None:
            return None
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise TrainingDivergedError(f"weights are not finite at step {self.step}; not saving a checkpoint. "
                                        f"The last checkpoint (in {self.checkpoint_dir}) is intact.")
        path, error = None, None
        if self.dist.is_main:
            try:
                path = checkpoints.save_checkpoint(self._state(), self.checkpoint_dir, self.step,
                                                   self.settings.keep_checkpoints)
            except Exception as failure:  # a full disk, a lost mount
                error = failure
        if not all_ok(error is None, self.dist):
            if error is not None:
                raise error
            raise RuntimeError(f"rank 0 could not write the checkpoint of step {self.step}; stopping")
        return path

    # ----- the loop -------------------------------------------------------------------------
    def _log(self, count: int, seconds: float) -> dict:
        totals = torch.stack([self._loss_sum, self._finite_count])
        totals = mean_over_processes(totals, self.dist)
        longest = int(self._nonfinite_max.item())
        loss = (totals[0] / totals[1].clamp(min=1)).item() if totals[1] > 0 else float("nan")
        skipped = count - int(round(totals[1].item()))
        for tensor in (self._loss_sum, self._finite_count, self._nonfinite_max):
            tensor.zero_()
        weights_finite = all(torch.isfinite(p).all() for p in self.model.parameters())
        if longest >= MAX_NONFINITE_STEPS or not weights_finite:
            what = (f"the loss stayed non-finite for {longest} steps in a row" if weights_finite
                    else f"the weights became non-finite (the loss was non-finite for {longest} step(s) in a row)")
            raise TrainingDivergedError(
                f"{what} by step {self.step}; the run stopped and the last checkpoint (in {self.checkpoint_dir}) is "
                f"intact. Lower train.lr (now {self.settings.lr}), set train.grad_clip, or check the data.")
        entry = {"step": self.step, "loss": loss, "lr": self.learning_rate(max(self.applied_steps - 1, 0)),
                 "images_per_s": count * self.settings.batch_size / max(seconds, 1e-9),
                 "elapsed_s": seconds, "gpu_memory_gb": gpu_memory_gb(self.device),
                 "gpu_power_w": gpu_power_watts(self.device), "nonfinite_steps": skipped}
        self.logger.log(entry)
        return entry

    def _sample(self) -> None:
        if self.on_sample is None or not self.dist.is_main:
            return
        path = self.on_sample(self)
        if path is not None:
            self.logger.log_image("samples", path, self.step)

    def fit(self) -> TrainResult:
        """Train until ``total_steps``, logging, checkpointing and sampling on the way."""
        s = self.settings
        bar = None
        if self.progress == "bar" and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step")
        try:
            if self.step == 0 and s.sample_every > 0:
                self._sample()  # the study's Figure 3: samples at the start of training
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
                    if self.progress == "lines" and self.dist.is_main:
                        print(f"step {self.step}/{self.total_steps}  loss {entry['loss']:.4f}  "
                              f"{entry['images_per_s']:.0f} img/s", flush=True)
                    if bar is not None:
                        bar.update(count)
                        bar.set_postfix(loss=f"{entry['loss']:.4f}", img_s=f"{entry['images_per_s']:.0f}")
                    if self.step % s.checkpoint_every == 0 or last:
                        self.save_checkpoint()
                    if (s.sample_every > 0 and self.step % s.sample_every == 0) or last:
                        self._sample()
                    count, started = 0, time.perf_counter()
        finally:
            if bar is not None:
                bar.close()
            self.logger.close()
        return TrainResult(self.model, self.ema, self.logger.history, self.step, self.run_dir)


class _SeededContext:
    """Enter ``fork_rng`` and seed the forked stream; leave it as it was."""

    def __init__(self, fork, seed: int):
        self.fork, self.seed = fork, seed

    def __enter__(self):
        self.fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        return self.fork.__exit__(*exc)
