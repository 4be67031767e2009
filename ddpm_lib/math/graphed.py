"""Sampling replayed from CUDA graphs: one graph per (batch shape, sampler setting), captured once.

A SmallUNet call on 256 images of 64x64 is a couple of hundred short kernels, and DDIM-50 makes 50
such calls per batch plus each step's update: at this size the GPU waits for the host to launch
kernels more than it computes. So the whole deterministic sampling loop of one batch (every network
call, the guided doubled batch included, and every update, exactly as ``sampling.py`` writes them)
is recorded once as a CUDA graph and replayed for every later batch of the same shape and setting:
one launch per batch instead of thousands.

What a loop needs to be recorded:

* static shapes: the caller pads its last batch to the batch size (``Run.sample`` does);
* no host synchronisation inside: the loops read their per-step coefficients (``alphas_cumprod``)
  from a copy of the schedule on the host (:class:`HostSchedule`), and the start noise and the
  labels live in static device buffers that each batch is copied into;
* no random numbers: only deterministic settings (DDIM with eta 0, DPM-Solver++) are recorded.
  DDPM and DDIM with eta > 0 draw every image's noise from its own generator on the host side, and
  trajectories copy snapshots to the host; those run eagerly, as before (:func:`eager_reason`);
* a warm-up before recording: the first batch runs eagerly (a compiled network compiles there,
  kernels are chosen) and its result is kept, so nothing is computed twice.

A graph reads the network's weights where they are, so weights changed in place (a later EMA
update, ``load_state_dict``) are seen by the next replay. :class:`ReplayStub` stands in for the
CUDA graph where there is no GPU, so the same path is tested on the CPU.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ddpm_lib.math.diffusion import GaussianDiffusion
from ddpm_lib.math.sampling import Denoiser, SampleOutput, SamplerSpec, sample

log = logging.getLogger(__name__)


def eager_reason(spec: SamplerSpec, trajectory_every: int | None) -> str | None:
    """Why a draw with ``spec`` cannot be replayed from a graph (None: it can)."""
    if spec.sampler == "ddpm" or spec.eta > 0:
        return f"{spec.name} draws noise at every step from per-image generators"
    if trajectory_every is not None:
        return "a trajectory copies snapshots to the host during the loop"
    return None


class HostSchedule:
    """``diffusion`` as a sampling loop sees it while it is recorded: every method as before, on the
    device, but ``schedule`` (whose table the loops read for each step's coefficients) is a copy on
    the CPU, so reading it is no device-to-host copy, which a capture forbids."""

    def __init__(self, diffusion: GaussianDiffusion):
        self.diffusion = diffusion
        self.schedule = diffusion.schedule.to("cpu")

    def __getattr__(self, name: str):
        return getattr(self.diffusion, name)


class CUDAGraphBackend:
    """Records with ``torch.cuda.graph`` and replays. Every graph of one backend shares one memory
    pool: graphs are replayed one at a time and their outputs are copied out before the next replay."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.pool = torch.cuda.graph_pool_handle()
        self.stream = torch.cuda.Stream(self.device)

    def warmup(self, run: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``run()`` once, eagerly, on the side stream the capture will use (PyTorch's recipe)."""
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            out = run()
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return out

    def capture(self, run: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
        """Record ``run()``; returns (replay, the output tensor each replay rewrites in place)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            out = run()
        return graph.replay, out


class ReplayStub:
    """A stand-in for :class:`CUDAGraphBackend` without a GPU (tests). Recording keeps the function
    and its output tensor; replaying runs the function again and writes the result into that same
    tensor, as a graph replay rewrites its outputs in place. So a batch that reached the loop other
    than through the static buffers, or an output read after the next replay, gives wrong images."""

    def __init__(self):
        self.captured = 0

    def warmup(self, run: Callable[[], torch.Tensor]) -> torch.Tensor:
        return run()

    def capture(self, run: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
        self.captured += 1
        out = run()

        def replay() -> None:
            out.copy_(run())

        return replay, out


def default_backend(device) -> CUDAGraphBackend | None:
    """The graph backend of ``device``: CUDA graphs on a GPU, none elsewhere."""
    device = torch.device(device)
    return CUDAGraphBackend(device) if device.type == "cuda" else None


@dataclass
class _Graph:
    """One recorded loop: replaying it reads ``noise`` (and ``labels``) and rewrites ``output``."""

    replay: Callable[[], None]
    noise: torch.Tensor
    labels: torch.Tensor | None
    output: torch.Tensor
    denoiser: Denoiser  # kept alive: the graph reads its clip range and labels


class SamplingGraphs:
    """The recorded sampling loops of one network, one per (batch shape, sampler setting, labels or
    not, guidance), with counts of what was recorded, replayed and run eagerly (and why).

    :meth:`sample` has the signature of ``sampling.sample``: a drop-in for it.
    """

    def __init__(self, backend):
        self.backend = backend
        self.graphs: dict[tuple, _Graph] = {}
        self.captures = 0
        self.replays = 0
        self.eager: Counter[str] = Counter()

    def wants(self, spec: SamplerSpec, trajectory_every: int | None = None) -> bool:
        """Whether a draw with ``spec`` is replayed from a graph (so its batches must share one shape)."""
        return eager_reason(spec, trajectory_every) is None

    def sample(self, denoiser: Denoiser, diffusion: GaussianDiffusion, noise: torch.Tensor, spec: SamplerSpec,
               generator=None, *, trajectory_every: int | None = None, progress: bool = False) -> SampleOutput:
        """``sampling.sample`` for one batch, from the graph of its shape and setting (recorded on first
        use); eagerly where :func:`eager_reason` says it cannot be recorded."""
        reason = eager_reason(spec, trajectory_every)
        if reason is not None:
            self.eager[reason] += 1
            return sample(denoiser, diffusion, noise, spec, generator, trajectory_every=trajectory_every,
                          progress=progress)
        key = (tuple(noise.shape), noise.dtype, noise.device, spec, denoiser.labels is not None, denoiser.network,
               denoiser.guidance, denoiser.precision, diffusion)
        graph = self.graphs.get(key)
        if graph is None:
            first, self.graphs[key] = self._record(denoiser, diffusion, noise, spec)
            return SampleOutput(first)
        graph.noise.copy_(noise)
        if graph.labels is not None:
            graph.labels.copy_(denoiser.labels)
        graph.replay()
        self.replays += 1
        return SampleOutput(graph.output.clone())  # the next replay rewrites the output in place

    def _record(self, denoiser: Denoiser, diffusion: GaussianDiffusion, noise: torch.Tensor,
                spec: SamplerSpec) -> tuple[torch.Tensor, _Graph]:
        """Run the batch eagerly (the warm-up; its images are this batch's), then record the loop."""
        static_noise = noise.clone()
        labels = denoiser.labels.to(noise.device).clone() if denoiser.labels is not None else None
        recorded = Denoiser(denoiser.network, denoiser.diffusion, labels, denoiser.guidance, denoiser.clip_range,
                            denoiser.precision)
        host = HostSchedule(diffusion)

        def loop() -> torch.Tensor:
            return sample(recorded, host, static_noise, spec, None).images

        first = self.backend.warmup(loop).clone()
        replay, output = self.backend.capture(loop)
        self.captures += 1
        log.info("recorded a sampling graph: batch %d, %s (%d graph(s) now)", noise.shape[0], spec.name,
                 len(self.graphs) + 1)
        return first, _Graph(replay, static_noise, labels, output, recorded)

    def stats(self) -> dict:
        """What happened so far: graphs recorded, replays, eager draws by reason."""
        return {"graphs": len(self.graphs), "captures": self.captures, "replays": self.replays,
                "eager": dict(self.eager)}
