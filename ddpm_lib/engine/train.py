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
import signal
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ddpm_lib.config import Config, run_manifest
from ddpm_lib.device import autocast, choose_precision, compile_supported, device_name
from ddpm_lib.engine import checkpoints
from ddpm_lib.engine.distributed import (
    all_ok,
    barrier,
    current_context,
    data_parallel,
    local_batch_size,
    local_slice,
    mean_over_processes,
    private_rng,
    rank_seed,
    training_device,
)
from ddpm_lib.engine.ema import EMA
from ddpm_lib.engine.graphs import capture_step
from ddpm_lib.engine.tracking import (
    LossWatch,
    MetricsLogger,
    ProgressReport,
    TrainingDivergedError,
    gpu_memory_gb,
    gpu_power_watts,
    new_run_id,
)
from ddpm_lib.identity import IdentityMismatch, Manifest, reuse_differences, write_manifest
from ddpm_lib.math.diffusion import GaussianDiffusion
from ddpm_lib.transforms import standardize


class RunMismatchError(IdentityMismatch):
    """A checkpoint belongs to another run (other data, network, diffusion or recipe)."""


class RunExtensionError(ValueError):
    """A longer run was asked for whose learning-rate schedule would change steps already planned."""


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


def learning_rate(settings, segments: list[list[int]], step: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based).

    ``segments`` are the lengths the run was planned for, ``[[0, T1], [T1, T2], ...]``: a run starts
    with one, and each ``--extend`` of a decaying schedule adds one (a recorded warm restart). In each
    segment: a linear warm-up over ``settings.warmup_steps`` (at most half the segment), then constant
    or a cosine decay to 0 at the segment's end."""
    start, end = next(((a, b) for a, b in segments if a <= step < b), segments[-1])
    position, span = step - start, max(end - start, 1)
    warmup = min(settings.warmup_steps, span // 2) if start > 0 else settings.warmup_steps
    if warmup > 0 and position < warmup:
        return settings.lr * (position + 1) / warmup
    if settings.lr_schedule == "cosine":
        progress = min(max(position - warmup, 0) / max(span - warmup, 1), 1.0)
        return settings.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return settings.lr


def planned_segments(saved: list[list[int]] | None, total_steps: int, lr_schedule: str, extend: bool,
                     where: str) -> list[list[int]]:
    """The learning-rate segments of a run asked to reach ``total_steps``, given those it was planned
    with (``saved``; None for a new run). A constant learning rate extends its last segment; a
    decaying one refuses to grow unless ``extend``, which appends a warm-restart segment; fewer steps
    than planned keep the plan (the run just stops earlier)."""
    if not saved:
        return [[0, total_steps]]
    segments = [list(segment) for segment in saved]
    end = segments[-1][1]
    if total_steps <= end:
        return segments
    if lr_schedule == "constant":
        segments[-1][1] = total_steps
    elif extend:
        segments.append([end, total_steps])
    else:
        raise RunExtensionError(
            f"{where} was planned for {end:,} steps with a {lr_schedule} learning-rate decay; training it to "
            f"{total_steps:,} would change the rate of steps already planned. Pass --extend (train.extend) to add a "
            f"warm restart from step {end:,} to {total_steps:,}, recorded in the run, or train another run")
    return segments


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class TrainingBatches:
    """The training split on the device, and how each step draws from it (Algorithm 1, lines 2-4).

    Args:
        images: uint8 (N, C, H, W), moved to ``device`` once; ``mean``, ``std``: its pixels' statistics (C,).
        labels: species indices (N,) for a conditional run (``num_classes`` K), else None.
        settings: the ``train`` config section (batch size, label dropout, channels_last, seed).
        context: this process's place under torchrun (``distributed.DistributedContext``).
    """

    def __init__(self, images: torch.Tensor, mean, std, labels: torch.Tensor | None, num_classes: int | None,
                 device: torch.device, settings, context):
        check_species_labels(labels, images.shape[0], num_classes)
        self.images = images.to(device)
        self.labels = labels.to(device, torch.long) if num_classes is not None else None
        self.mean = torch.as_tensor(mean, dtype=torch.float32).to(device)
        self.std = torch.as_tensor(std, dtype=torch.float32).to(device)
        self.num_classes, self.device, self.settings, self.context = num_classes, device, settings, context
        self.local_batch = local_batch_size(context, settings.batch_size)

    def draw(self, diffusion: GaussianDiffusion) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                          torch.Tensor | None]:
        """This process's slice of a global batch: images x0 (flipped at random), timesteps t, noise
        and labels (with label dropout's "no label" index K).

        Every process draws the whole global batch from the same random stream (indices, flips,
        t, noise, in the order ``GaussianDiffusion.training_loss`` would, then the label-dropout
        draws of a conditional run), then keeps its slice. All on the device: graph-safe.
        """
        size = self.settings.batch_size
        x0, index = random_batch(self.images, size, self.mean, self.std)
        t = diffusion.sample_timesteps(size, self.device)
        noise = torch.randn(x0.shape, device=self.device, dtype=x0.dtype)
        labels = None
        if self.labels is not None:  # label dropout: that share trains the "no label" index K
            drop = torch.rand(size, device=self.device) < self.settings.label_dropout
            labels = torch.where(drop, torch.full_like(index, self.num_classes), self.labels[index])
        if self.context.enabled:
            part = local_slice(self.context, self.local_batch)
            x0, t, noise = x0[part], t[part], noise[part]
            labels = labels[part] if labels is not None else None
        if self.settings.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        return x0, t, noise, labels

    def private_rng(self, step: int):
        """Under DDP, the forward pass (dropout) draws from this process's own stream, seeded by
        (seed, step, rank), and the shared stream that draws the batches is left as it was."""
        if not self.context.enabled:
            return nullcontext()
        return private_rng(self.device, rank_seed(self.settings.seed, step, self.context.rank))


class Trainer:
    """Trains any network ``model(x_t, cond[, labels])`` with a :class:`GaussianDiffusion`.

    Args:
        images: the training split, uint8 (N, C, H, W), with ``mean``, ``std`` of its pixels in [0, 1], (C,).
        config: the run's config; ``config.train`` holds the loop's settings.
        run_dir: where ``config.json``, ``metrics.csv``, ``samples/`` and W&B files go (None: nowhere);
            checkpoints go to ``checkpoint_dir`` (default ``run_dir/checkpoints``).
        resume: ``"latest"`` continues from the newest readable checkpoint; None starts afresh (moving
            older checkpoints aside).
        progress: ``"bar"``, ``"lines"`` (papermill, logs) or ``"none"`` (``tracking.ProgressReport``).
        labels: species indices (N,) in 0..K-1 for a class-conditional network (``model.num_classes``).
        on_sample: ``on_sample(trainer)`` at the start, every ``train.sample_every`` steps and at the end
            (the wiring's sample grids); returns a saved image's path or None.
        metadata: facts kept in every checkpoint (e.g. the species names).
        manifest: the run's identity (``config.run_manifest``: its data, network, diffusion, recipe); a
            checkpoint of another identity is refused. Default: the config's, with unrecorded data.
        extend: let a run with a decaying learning rate grow past its planned length (a warm restart).

    Under ``torchrun`` each of the N processes draws the same global batch from one shared seed and
    trains on its 1/N slice (``distributed.py``), so N processes follow one process's optimisation.
    Only rank 0 keeps the EMA and writes files.
    """

    def __init__(self, model: nn.Module, diffusion: GaussianDiffusion, images: torch.Tensor, mean, std,
                 config: Config, run_dir=None, checkpoint_dir=None, device=None, resume: str | None = None,
                 progress: bool | str = True, labels: torch.Tensor | None = None,
                 on_sample: Callable[[Trainer], Path | None] | None = None, metadata: dict | None = None,
                 manifest: Manifest | None = None, extend: bool = False):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if resume not in (None, "latest"):
            raise ValueError(f"resume={resume!r}: use 'latest' or None")
        self.progress = ProgressReport.style_of(progress)
        self.config, self.settings = config, config.train
        self.device = training_device(current_context(), device)
        self.dist = current_context(self.device)  # every collective's tensors go to this device
        self.precision = choose_precision(self.device, self.settings.precision)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else (
            self.run_dir / "checkpoints" if self.run_dir is not None else None)
        self.on_sample, self.metadata = on_sample, dict(metadata or {})
        self.manifest, self.extend = manifest or run_manifest(config, None), extend
        self.total_steps = self.settings.total_steps(images.shape[0])
        self.channels_last = self.settings.channels_last
        self.use_graph = (self.settings.cuda_graph and self.device.type == "cuda" and self.precision != "fp16"
                          and not self.dist.enabled)  # DDP's all-reduce stays outside graphs
        torch.manual_seed(self.settings.seed)  # before anything random, so a seed repeats a run
        self.num_classes = config.model.num_classes
        self.data = TrainingBatches(images, mean, std, labels, self.num_classes, self.device, self.settings, self.dist)
        self.images, self.mean, self.std = self.data.images, self.data.mean, self.data.std
        self._build(model, diffusion)
        self.step, self.applied_steps, self.wandb_id, self._graph, self.lr_segments = 0, 0, None, None, None
        self._start_or_resume(resume)

    # ----- set-up -------------------------------------------------------------------------
    def _build(self, model: nn.Module, diffusion: GaussianDiffusion) -> None:
        """The network (DDP-wrapped, compiled where asked and supported), its EMA, AdamW, the scaler."""
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format).train()
        self.diffusion = diffusion.to(self.device)
        # The network the loss calls; state dicts and the EMA use the plain module, so checkpoints
        # depend on neither DDP nor compilation.
        self.network = data_parallel(self.model, self.dist, self.device)
        self.compiled = self.settings.compile and compile_supported(self.device)
        if self.compiled:
            self.network = torch.compile(self.network)
        self.ema = (EMA(self.model, self.settings.ema_decay, warmup=self.settings.ema_warmup)
                    if self.dist.is_main else None)  # rank 0 keeps the EMA
        lr = torch.tensor(self.settings.lr, device=self.device) if self.use_graph else self.settings.lr
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=self.settings.weight_decay,
                                           capturable=self.use_graph, foreach=True)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self.watch = LossWatch(self.device)

    def _start_or_resume(self, resume: str | None) -> None:
        """Resume from the newest readable checkpoint of this run's identity (``resume="latest"``), or
        start afresh with every older checkpoint moved aside; plan the learning rate's segments; then
        write config.json and manifest.json and open the metrics log. A refusal writes nothing."""
        state, path, history = None, None, []
        if self.checkpoint_dir is not None and resume == "latest":
            state, path = checkpoints.load_latest(self.checkpoint_dir, map_location=self.device)
        if state is not None:
            differences = reuse_differences(state.get("manifest"), self.manifest)
            if differences:
                raise RunMismatchError(f"the checkpoint {path} belongs to another run: " + "; ".join(differences)
                                       + ". Use another run name, or --retrain to set the old run aside.")
            history = checkpoints.restore_training_state(self, state)
        self.lr_segments = planned_segments(self.lr_segments, self.total_steps, self.settings.lr_schedule,
                                            self.extend, f"the run in {self.checkpoint_dir or 'memory'}")
        if state is not None and self.dist.is_main:
            print(f"resumed from {path} at step {self.step}")
        if self.checkpoint_dir is not None and self.dist.is_main:  # another line of training's files
            count, moved = checkpoints.set_aside_beyond(self.checkpoint_dir, self.step if state else None)
            if moved is not None:
                print(f"moved {count} checkpoint(s) of an earlier run or an unreadable tail aside to {moved}")
        barrier(self.dist)
        if self.wandb_id is None:
            self.wandb_id = new_run_id(self.config, self.run_dir.name if self.run_dir is not None else "run")
        if self.run_dir is not None and self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config.to_json(self.run_dir / "config.json")
            write_manifest(self.run_dir / "manifest.json", self.manifest, lr_segments=self.lr_segments)
        self.logger = MetricsLogger(self.run_dir, self.config, self.settings.wandb, history,
                                    enabled=self.dist.is_main, run_id=self.wandb_id)

    # ----- one step of Algorithm 1 ----------------------------------------------------------
    def train_step(self) -> None:
        """One optimizer step: eagerly, or by replaying the step's CUDA graph (recorded on first use)."""
        _set_lr(self.optimizer, learning_rate(self.settings, self.lr_segments, self.applied_steps))
        if self.use_graph:
            if self._graph is None:  # recording runs the step once without applying it (graphs.py)
                self._graph = capture_step(self._step, self.watch.record, self.model, self.ema, self.optimizer,
                                           self.device)
            self._graph.replay()
            self.applied_steps += 1  # no skipped steps without a GradScaler
        else:
            self.optimizer.zero_grad(set_to_none=True)
            outcome = self._step()
            self.watch.record(outcome)
            self.applied_steps += int(outcome[1])
        self.step += 1

    def _step(self) -> tuple[torch.Tensor, bool]:
        """Ho et al. 2020, Algorithm 1, on this process's slice of the batch; then AdamW and the EMA.

        x0 ~ q(x0), t ~ Uniform({0..T-1}), eps ~ N(0, I) (lines 2-4), a gradient step on
        || target - f(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2 (line 5; the target is eps, x0
        or v as the diffusion says). Returns the loss (on the device, no host sync) and whether the
        update was applied (fp16: the GradScaler skips a step whose gradients overflowed).
        """
        x0, t, noise, labels = self.data.draw(self.diffusion)
        with self.data.private_rng(self.step), autocast(self.device, self.precision,
                                                       cache_enabled=not self.use_graph):
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
        return loss.detach(), applied

    # ----- checkpoints and logs -------------------------------------------------------------
    def engine(self) -> dict:
        """How this run trains here: device, precision, CUDA graph, compilation, processes (for reports)."""
        return {"device": device_name(self.device), "precision": self.precision, "cuda_graph": self.use_graph,
                "compiled": self.compiled, "channels_last": self.channels_last, "processes": self.dist.world_size}

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (refusing when the weights are not finite).

        Under DDP rank 0 writes; a failure there (a full disk) stops every rank with the error.
        """
        if self.checkpoint_dir is None:
            return None
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise TrainingDivergedError(f"weights are not finite at step {self.step}; not saving a checkpoint. "
                                        f"The last checkpoint (in {self.checkpoint_dir}) is intact.")
        return checkpoints.save_on_main(lambda: checkpoints.training_state(self), self.checkpoint_dir, self.step,
                                        self.settings.keep_checkpoints, self.dist)

    def _log(self, count: int, seconds: float) -> dict:
        advice = (f"the run stopped and the last checkpoint (in {self.checkpoint_dir}) is intact. Lower train.lr "
                  f"(now {self.settings.lr}), set train.grad_clip, or check the data.")
        loss, skipped = self.watch.collect(lambda totals: mean_over_processes(totals, self.dist),
                                           all(torch.isfinite(p).all() for p in self.model.parameters()),
                                           self.step, advice)
        lr = learning_rate(self.settings, self.lr_segments, max(self.applied_steps - 1, 0))
        entry = {"step": self.step, "loss": loss, "lr": lr,
                 "images_per_s": count * self.settings.batch_size / max(seconds, 1e-9),
                 "elapsed_s": seconds, "gpu_memory_gb": gpu_memory_gb(self.device),
                 "gpu_power_w": gpu_power_watts(self.device), "skipped_steps": skipped}
        self.logger.log(entry)
        return entry

    def _sample(self) -> None:
        if self.on_sample is None or not self.dist.is_main:
            return
        path = self.on_sample(self)
        if path is not None:
            self.logger.log_image("samples", path, self.step)

    # ----- the loop -------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train until ``total_steps``, logging, checkpointing and sampling on the way.

        SIGINT (a notebook's Interrupt, Ctrl-C) or SIGTERM (a preempted VM, a cluster's scheduler) does not
        lose the steps since the last checkpoint: the current step finishes, a checkpoint of it is written,
        the logger closes, one line says so, and :class:`TrainingStopped` ends the run (exit status 130 /
        143 on the command line); the same command resumes it.
        """
        s = self.settings
        report = ProgressReport(self.progress, self.total_steps, self.step, enabled=self.dist.is_main)
        try:
            with StopRequest() as stop:
                if self.step == 0 and s.sample_every > 0:
                    self._sample()  # the study's Figure 3: samples at the start of training
                count, started = 0, time.perf_counter()
                while self.step < self.total_steps:
                    if self.step == 0:
                        self._first_step_fits()
                    else:
                        self.train_step()
                    count += 1
                    last, stopping = self.step == self.total_steps, stop.agreed(self.dist)
                    checkpoint = self.step % s.checkpoint_every == 0 or last or stopping
                    if self.step % s.log_every == 0 or checkpoint:
                        if self.device.type == "cuda":
                            torch.cuda.synchronize(self.device)
                        report.show(self._log(count, time.perf_counter() - started), count)
                        count, started = 0, time.perf_counter()
                    if checkpoint:
                        path = self.save_checkpoint()
                    if (s.sample_every > 0 and self.step % s.sample_every == 0) or last:
                        self._sample()
                    if stopping and not last:
                        raise TrainingStopped(stop.signal, self.step, path)
        finally:
            report.close()
            self.logger.close()
        return TrainResult(self.model, self.ema, self.logger.history, self.step, self.run_dir)

    def _first_step_fits(self) -> None:
        """The first step, with running out of GPU memory turned into advice on the batch size."""
        try:
            self.train_step()
        except torch.cuda.OutOfMemoryError as error:
            raise RuntimeError(f"out of GPU memory at train.batch_size={self.settings.batch_size} with "
                               f"{self.config.model.name}; try train.batch_size={max(self.settings.batch_size // 2, 1)}"
                               ) from error


class TrainingStopped(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM after writing a checkpoint of the step it reached.

    ``code`` is the exit status a shell expects (128 + the signal: 130, 143). In a notebook it shows as
    its one line (IPython's ``_render_traceback_``), not as a traceback."""

    def __init__(self, signal_number: int, step: int, path: Path | None):
        name = signal.Signals(signal_number).name
        where = f"checkpoint {path}" if path is not None else "no checkpoint folder (nothing written)"
        super().__init__(f"{name}: stopped after step {step:,}; {where}; run the same command again to resume")
        self.code, self.step, self.path = 128 + signal_number, step, path

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


class StopRequest:
    """Within the block, SIGINT and SIGTERM only ask the loop to stop (at the end of the current step);
    a second SIGINT interrupts at once. Handlers are installed only in the main thread, and the previous
    ones are put back on exit. Under torchrun every process stops at the same step (:meth:`agreed`)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal, self._previous = None, {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number, frame) -> None:
        if number == signal.SIGINT and self.signal == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.signal = self.signal or number
        print(f"{signal.Signals(number).name} received: finishing this step and writing a checkpoint", flush=True)

    def agreed(self, context) -> bool:
        """Whether to stop after this step: this process was signalled, or (under torchrun) any process was."""
        if not context.enabled:
            return self.signal is not None
        stop = not all_ok(self.signal is None, context)
        if stop and self.signal is None:
            self.signal = signal.SIGTERM  # another process was signalled: stop with it
        return stop


def check_species_labels(labels: torch.Tensor | None, count: int, num_classes: int | None) -> None:
    """A conditional run (``num_classes`` set) needs one species index in 0..K-1 per training image."""
    if num_classes is None:
        return
    if labels is None or len(labels) != count:
        raise ValueError(f"a conditional run (model.num_classes={num_classes}) needs one species label "
                         f"per training image ({count})")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"species labels must lie in 0..{num_classes - 1}, got "
                         f"{int(labels.min())}..{int(labels.max())}")
