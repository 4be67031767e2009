"""Several processes with PyTorch's own engine: ``torchrun`` + ``torch.distributed`` + DDP.

``torchrun --nproc_per_node=N -m ddpm_lib train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`init_from_environment` joins them into one process
group (NCCL on GPUs, gloo on CPUs). Without torchrun (a notebook, a plain ``python -m``) nothing
happens and the trainer runs as one process.
"""

from __future__ import annotations

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
    """The context of an already initialised process group (or a single process)."""
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(),
                                  torch.device(device) if device is not None else None)
    return DistributedContext(device=torch.device(device) if device is not None else None)


def barrier(context: DistributedContext) -> None:
    """Wait for every process (a no-op for one process)."""
    if context.enabled:
        dist.barrier()


def mean_over_processes(value: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """The mean of ``value`` over all processes (``value`` itself for one process)."""
    if not context.enabled:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / context.world_size
