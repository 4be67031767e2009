"""Several processes with PyTorch's own engine: ``torchrun`` + ``torch.distributed`` + DDP.

``torchrun --nproc_per_node=N -m ddpm_lib train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`init_from_environment` joins them into one process
group (NCCL on GPUs, gloo on CPUs). Without torchrun (a notebook, a plain ``python -m``) nothing
happens and the trainer runs as one process.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the number of processes, and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files: checkpoints, metrics, sample grids, W&B."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_environment(device: str | torch.device | None = None) -> DistributedContext:
    """Join the process group torchrun describes in the environment (once); a single process
    without torchrun gets the default context (rank 0 of 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(device=torch.device(device) if device is not None else None)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    chosen = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), chosen)


def current_context(device=None) -> DistributedContext:
    """The context of an already initialised process group (or a single process), on ``device``: the
    device every collective's tensors are put on. NCCL has no CPU backend, so a context that will meet a
    collective must know its process's GPU (``Trainer`` passes its training device)."""
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(),
                                  torch.device(device) if device is not None else None)
    return DistributedContext(device=torch.device(device) if device is not None else None)


def _device(context: DistributedContext) -> torch.device:
    if context.device is None:
        raise ValueError("a collective needs the process's device (DistributedContext.device): NCCL has no CPU "
                         "tensors; build the context with current_context(device)")
    return context.device


def barrier(context: DistributedContext) -> None:
    """Wait for every process (a no-op for one process); on CUDA, on this process's own GPU."""
    if context.enabled:
        device = context.device
        dist.barrier(device_ids=[device.index or 0]) if device is not None and device.type == "cuda" else dist.barrier()


def mean_over_processes(value: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """The mean of ``value`` over all processes (``value`` itself for one process)."""
    if not context.enabled:
        return value
    value = value.to(_device(context), copy=True)
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / context.world_size


def all_ok(ok: bool, context: DistributedContext) -> bool:
    """True on every process when ``ok`` is true on every process (one all-reduce; ``ok`` for one
    process). Lets a failure on one rank (a full disk while rank 0 writes a checkpoint) stop every
    rank at once instead of leaving the others waiting in a barrier."""
    if not context.enabled:
        return ok
    flag = torch.tensor([1.0 if ok else 0.0], device=_device(context))
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def rank_seed(seed: int, step: int, rank: int) -> int:
    """A seed for what one process draws privately at one step (dropout masks), from (seed, step, rank)."""
    return (seed * 1_000_003 + step) * 1_009 + rank + 1


class SyncBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the *global* batch under DDP, on the CPU.

    Each process sums its slice, the sums are all-reduced (through ``torch.distributed.nn``, so the
    gradient flows across processes too), and every process normalises with the global mean and
    (biased) variance: N processes compute exactly what one process computes on the whole batch. Two
    collectives per layer and forward (the sum, then the centred sum of squares); the element count is
    the local one times the number of processes, since every process holds an equal slice. For gloo on
    the CPU, which ``torch.nn.SyncBatchNorm`` refuses; on CUDA :func:`convert_batchnorm` uses that one
    (one fused collective). In eval mode, or in one process, it is a plain ``BatchNorm2d``; its weights
    keep the same names.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        values = x.float()
        dims = (0, 2, 3)
        count = values.numel() // values.shape[1] * dist.get_world_size()  # equal slices on every process
        mean = all_reduce(values.sum(dims)) / count
        centered = values - mean[None, :, None, None]
        variance = all_reduce((centered * centered).sum(dims)) / count
        out = centered * torch.rsqrt(variance + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = variance * count / max(count - 1, 1)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), factor)
        return out.to(x.dtype)


def convert_batchnorm(module: torch.nn.Module, device: torch.device | None = None) -> torch.nn.Module:
    """Synchronise every ``BatchNorm2d`` of ``module`` over the processes, for DDP training: on CUDA
    with ``torch.nn.SyncBatchNorm`` (returns the converted module), elsewhere with
    :class:`SyncBatchNorm2d` in place; weights, buffers and state-dict keys stay the same."""
    if device is not None and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.BatchNorm2d) and not isinstance(child, SyncBatchNorm2d):
            replacement = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                          child.track_running_stats).to(
                device=child.running_mean.device if child.running_mean is not None else None)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            convert_batchnorm(child)
    return module


def local_slice(context: DistributedContext, local_batch: int) -> slice:
    """This process's part of a global batch drawn alike by every process: rows rank * b .. (rank + 1) * b."""
    return slice(context.rank * local_batch, (context.rank + 1) * local_batch)


@contextlib.contextmanager
def private_rng(device: torch.device, seed: int):
    """Draw from a private stream seeded with ``seed`` inside the block (a process's own dropout masks),
    leaving the shared stream as it was."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def training_device(context: DistributedContext, device=None) -> torch.device:
    """The device a process trains on: ``device``, else under torchrun its own GPU, else CUDA when available."""
    if device is None and context.enabled and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")


def local_batch_size(context: DistributedContext, batch_size: int) -> int:
    """This process's share of the global batch (which the number of processes must divide)."""
    if batch_size % context.world_size:
        raise ValueError(f"train.batch_size={batch_size} is the global batch and must be divisible by the "
                         f"{context.world_size} processes")
    return batch_size // context.world_size


def data_parallel(model: torch.nn.Module, context: DistributedContext, device: torch.device) -> torch.nn.Module:
    """``model`` as the loss should call it: itself for one process; under torchrun with synchronised
    BatchNorm (global-batch statistics: N processes = one process) inside ``DistributedDataParallel``."""
    if not context.enabled:
        return model
    model = convert_batchnorm(model, device)
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
