"""One training step recorded in a CUDA graph and replayed: the launch-bound small-batch case.

At batch 32 the SmallUNet's step is a few hundred small kernels; launching them costs more than
running them. A CUDA graph records the whole step once (batch drawing, label dropout, forward,
backward, AdamW, EMA) and replays it with one launch. Recording needs a few warm-up steps first (to
allocate AdamW's state and pick kernels), which must not change the run: everything they touched is
put back, in place, so the graph records the very tensors that hold the state.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ddpm_lib.engine.checkpoints import rng_state, set_rng_state
from ddpm_lib.engine.ema import EMA

WARMUP_STEPS = 3  # side-stream steps before recording: AdamW's state exists, kernels are chosen


def capture_step(step: Callable[[], torch.Tensor], record: Callable[[torch.Tensor], None], model: nn.Module,
                 ema: EMA, optimizer: torch.optim.Optimizer, device: torch.device) -> torch.cuda.CUDAGraph:
    """Record ``record(step())`` in a CUDA graph (``step``: forward, backward, AdamW and EMA, returning
    the loss; ``record``: the loss bookkeeping), leaving the model, the EMA, AdamW's state and the
    random number generators as they were before the call.

    Replaying the returned graph performs one step; nothing else of the run changes by capturing.
    """
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    ema_weights = {k: v.clone() for k, v in ema.model.state_dict().items()}
    ema_updates = ema.updates.clone()
    adam = {p: {k: v.clone() for k, v in state.items() if torch.is_tensor(v)} for p, state in optimizer.state.items()}
    generators = rng_state(device)
    with torch.cuda.stream(stream):
        for _ in range(WARMUP_STEPS):
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream(device).wait_stream(stream)
    with torch.no_grad():  # undo the warm-up in place (AdamW's state starts at zero)
        model.load_state_dict(weights)
        ema.model.load_state_dict(ema_weights)
        ema.updates.copy_(ema_updates)
        for parameter, state in optimizer.state.items():
            saved = adam.get(parameter, {})
            for key, value in state.items():
                if torch.is_tensor(value):
                    value.copy_(saved[key]) if key in saved else value.zero_()
    set_rng_state(generators, device)
    optimizer.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        record(step())
    return graph
