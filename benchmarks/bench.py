"""``python benchmarks/bench.py train | sample | evaluate | fit | profile | flops``: training throughput,
sampling time and where the time goes, with the numbers a performance engineer asks for.

Sized for the machine by default. On the CPU: the demo profile's networks at the demo size (about a
minute for ``train``); graph and compile modes, which need a GPU, and the GPU-sized peers appear as
rows saying why they were not run. On a GPU: the study's networks at 64 px and the peers, every
mode, 5 windows of 2 s per case. Every choice has a flag; ``--help`` lists them. Each run shows a
progress line with an ETA on stderr, ends with a table, and writes its rows to ``--out`` (default
``outputs/bench/<what>_<device>.json`` under the current folder) and, as they come, to
``<out>.rows.jsonl`` (what a run cut short leaves).

``bench train``: images per second of the *full* training step (batch drawing, flips,
standardization, forward, backward, AdamW, EMA: ``engine.train.Trainer``) per network, batch size
and mode:

| mode | what |
|---|---|
| ``eager`` | the engine's step in the device's precision (bf16 on Ampere and newer), channels_last |
| ``graph`` | the same step captured once in a CUDA graph and replayed |
| ``compile`` | eager, with the network compiled by ``torch.compile`` |
| ``graph+compile`` | both (the engine's default on CUDA) |

Our networks and the peers (``bench_peers.py``: denoising-diffusion-pytorch's Unet, compiled
through a documented harness-side workaround; diffusers' ``UNet2DModel`` at the BaselineUNet's
shape) run through the same engine in every mode, so ratios compare like with like
(``bench_report.like_for_like``: eager / eager, graph / graph, ..., best / best). Each case: median,
min and max of its windows, GFLOP per image (forward + backward, ``torch.utils.flop_counter``),
TFLOP/s and MFU (% of the card's dense bf16 peak), peak memory, and the GPU's clocks sampled during
the windows.

``bench sample``: seconds per draw of N images exactly as ``evaluate`` draws them (``Run.sample``:
batches of 256, x0 clipping, the device's precision, uint8 conversion included), per case of
:data:`SAMPLE_CASES`: plain, compiled, or compiled and replayed from CUDA graphs
(``ddpm_lib/math/graphed.py``); with the compiled graphs torch.compile made (a recompile shows).
``bench evaluate``: what ``python -m ddpm_lib evaluate`` does on N samples. ``bench fit``: a whole
``Trainer.fit`` with the study's settings. ``bench profile``: the training step's top kernels with
the operator, shapes, strides and source lines that launched them (``bench_profile.py``).
``bench flops``: GFLOP per image of each network.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from pathlib import Path
from typing import NamedTuple

import bench_peers
import bench_report
import torch
from bench_measure import (
    ClockSampler,
    Progress,
    busy_warning,
    environment,
    mfu,
    peak_tflops,
    spread,
    sync,
    timed_windows,
)
from bench_measure import device_name as device_label
from bench_report import MODES
from torch import nn

from ddpm_lib.build import build_diffusion, build_model
from ddpm_lib.config import Config, get_profile
from ddpm_lib.device import compile_supported, resolve_device
from ddpm_lib.engine.train import Trainer
from ddpm_lib.experiment import SAMPLING_BATCH_SIZE
from ddpm_lib.math.sampling import SamplerSpec
from ddpm_lib.models import BaselineUNet, SmallUNet, count_parameters

SKIP_GRAPH = "skipped: CUDA graphs need CUDA"
SKIP_COMPILE = "skipped: torch.compile needs CUDA with compute capability >= 7.0 (ddpm_lib.device.compile_supported)"


def _demo(model: str) -> Config:
    return get_profile("demo", model=model)


OURS = {  # name -> network at image size s
    "SmallUNet": lambda s: SmallUNet(),
    "SmallUNet+attention": lambda s: SmallUNet(attention=True),
    "SmallUNet conditional (200 species)": lambda s: SmallUNet(num_classes=200),
    "BaselineUNet": lambda s: BaselineUNet(image_size=s),
    "SmallUNet (demo)": lambda s: build_model(_demo("small_unet").model, s),
    "BaselineUNet (demo)": lambda s: build_model(_demo("baseline_unet").model, s),
}
NETWORKS = (*OURS, *bench_peers.PEERS)
GPU_NETWORKS = ("SmallUNet", "SmallUNet conditional (200 species)", "BaselineUNet", bench_peers.DDPM_PYTORCH,
                bench_peers.DIFFUSERS)
GPU_BATCHES = {"SmallUNet": (32, 128), "SmallUNet conditional (200 species)": (32,)}  # others: 128
CPU_NETWORKS = ("SmallUNet (demo)", "BaselineUNet (demo)")
HEADLINE_BASELINE = "BaselineUNet"  # the network the peers are compared with


def build_network(name: str, image_size: int, workaround: str = "reparametrize") -> nn.Module:
    """The network ``name`` (one of :data:`NETWORKS`) for ``image_size`` pixels."""
    if name in OURS:
        return OURS[name](image_size)
    if name == bench_peers.DDPM_PYTORCH:
        return bench_peers.ddpm_pytorch_unet(workaround)
    if name == bench_peers.DIFFUSERS:
        return bench_peers.diffusers_unet(image_size)
    return bench_peers.PEERS[name].build()


def machine_defaults(device: torch.device) -> dict:
    """What a run measures when not told: the demo networks at the demo size on the CPU, the study's
    networks and the peers at 64 px on a GPU."""
    if device.type == "cuda":
        return {"networks": GPU_NETWORKS, "image_size": 64, "window": 2.0, "repeats": 5, "num_samples": 2350,
                "sample_network": "full", "batch_sizes": None}
    demo = _demo("small_unet")
    return {"networks": CPU_NETWORKS, "image_size": demo.data.image_size, "window": 1.0, "repeats": 3,
            "num_samples": 32, "sample_network": "demo", "batch_sizes": (demo.train.batch_size,)}


class RowLog:
    """Collects rows and appends each, as it comes, to ``<out>.rows.jsonl`` (None: nowhere)."""

    def __init__(self, out: Path | None):
        self.rows: list[dict] = []
        self.path = out.with_name(out.name + ".rows.jsonl") if out is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def __call__(self, row: dict) -> dict:
        self.rows.append(row)
        if self.path is not None:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(row) + "\n")
        return row


# ----- FLOPs --------------------------------------------------------------------------------------------
def flops_per_image(model: nn.Module, diffusion, device: torch.device, size: int, labels: bool = False,
                    backward: bool = True) -> float | None:
    """FLOPs of one training example (forward + backward) or of one forward call, per image."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        x0 = torch.randn(2, 3, size, size, device=device)
        extra = {"labels": torch.zeros(2, dtype=torch.long, device=device)} if labels else {}
        counter = FlopCounterMode(display=False)
        with counter:
            if backward:
                diffusion.training_loss(model, x0, **extra).backward()
            else:  # with autograd on (the counter's module hooks need it), but no backward pass
                diffusion.model_output(model, x0, torch.zeros(2, dtype=torch.long, device=device), extra.get("labels"))
        model.zero_grad(set_to_none=True)
        return counter.get_total_flops() / 2
    except Exception:  # a network with an operator the counter does not know
        return None


def bench_flops(networks, image_size: int, device, record) -> dict:
    """GFLOP per image (forward + backward, and forward alone) and parameters of each network."""
    device = resolve_device(device)
    diffusion = build_diffusion(get_profile("full").diffusion).to(device)
    for name in networks:
        missing = bench_peers.PEERS[name].missing() if name in bench_peers.PEERS else None
        if missing:
            record({"network": name, "skipped": missing})
            continue
        torch.manual_seed(0)
        model = build_network(name, image_size).to(device)
        labels = getattr(model, "num_classes", None) is not None
        both = flops_per_image(model, diffusion, device, image_size, labels)
        forward = flops_per_image(model, diffusion, device, image_size, labels, backward=False)
        record({"network": name, "parameters": count_parameters(model), "image_size": image_size,
                "gflop_per_image_fwd_bwd": round(both / 1e9, 2) if both else None,
                "gflop_per_image_fwd": round(forward / 1e9, 3) if forward else None})
    return {**environment(device), "image_size": image_size,
            "peers": {peer.package: peer.version() for peer in bench_peers.PEERS.values()}}


# ----- training -----------------------------------------------------------------------------------------
def engine_config(batch_size: int, mode: str, num_classes: int | None = None) -> Config:
    return get_profile("full").override({"train.batch_size": batch_size, "train.wandb": "disabled",
                                         "train.cuda_graph": "graph" in mode, "train.compile": "compile" in mode,
                                         "model.num_classes": num_classes})


def new_trainer(name: str, batch_size: int, mode: str, device: torch.device, image_size: int, diffusion,
                workaround: str) -> Trainer:
    """A Trainer of network ``name`` in ``mode`` on 4,096 random uint8 images."""
    torch.manual_seed(0)
    model = build_network(name, image_size, workaround)
    num_classes = getattr(model, "num_classes", None)
    images = torch.randint(0, 256, (4096, 3, image_size, image_size), dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (len(images),)) if num_classes else None
    return Trainer(model.to(device), diffusion, images, torch.full((3,), 0.5), torch.full((3,), 0.25),
                   engine_config(batch_size, mode, num_classes), device=device, progress=False, labels=labels)


def skip_reason(name: str, mode: str, device: torch.device) -> str | None:
    """Why (network, mode) is not measured here, or None."""
    if name in bench_peers.PEERS and bench_peers.PEERS[name].missing():
        return "skipped: " + bench_peers.PEERS[name].missing()
    if "graph" in mode and device.type != "cuda":
        return SKIP_GRAPH
    if "compile" in mode and not compile_supported(device):
        return SKIP_COMPILE
    return None


def measure_case(name: str, batch_size: int, mode: str, device: torch.device, image_size: int, window: float,
                 repeats: int, flops: float | None, workaround: str) -> dict:
    """One (network, batch, mode) case: setup, warm-up, ``repeats`` windows with the clocks sampled."""
    diffusion = build_diffusion(get_profile("full").diffusion).to(device)
    row = {"network": name, "batch_size": batch_size, "mode": mode, "image_size": image_size,
           "gflop_per_image_fwd_bwd": round(flops / 1e9, 2) if flops else None}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    trainer = new_trainer(name, batch_size, mode, device, image_size, diffusion, workaround)
    row["parameters"] = count_parameters(trainer.model)
    for _ in range(3):
        trainer.train_step()  # capture, compile
    sync(device)
    row["setup_s"] = round(time.perf_counter() - started, 1)
    clocks = ClockSampler(device).start()
    rates = [r * batch_size for r in timed_windows(trainer.train_step, device, window, repeats, warmup=2,
                                                   batch=5 if device.type == "cuda" else 1)]
    row.update(clocks.stop())
    stats = spread(rates)
    row.update(images_per_s_median=round(stats["median"], 1), images_per_s_min=round(stats["min"], 1),
               images_per_s_max=round(stats["max"], 1), window_spread=stats["spread"], repeats=repeats,
               window_s=window, precision=trainer.precision, cuda_graph=trainer.use_graph,
               compiled=trainer.compiled)
    if flops:
        row["achieved_tflops"] = round(flops * row["images_per_s_median"] / 1e12, 2)
        row["mfu_percent"] = mfu(flops / 1e9, row["images_per_s_median"], peak_tflops(device_label(device)))
    if device.type == "cuda":
        row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    if trainer.compiled and name in bench_peers.PEERS and bench_peers.PEERS[name].needs_workaround:
        row["workaround"] = workaround
        row["gradient_check"] = bench_peers.gradient_error(trainer)
    return row


def bench_train(networks, batch_sizes, modes, window: float, repeats: int, device, image_size: int, record,
                workaround: str = "reparametrize", listed: tuple = ()) -> dict:
    """Every (network, batch size, mode) of ``networks``; ``listed``: networks shown as rows saying why they
    were not run (the GPU-sized peers in the CPU default). ``batch_sizes`` None: per network (GPU default)."""
    device = resolve_device(device)
    bench_peers.apply_workaround(workaround)
    plan, skipped = [], []
    for name in networks:
        for batch in batch_sizes or GPU_BATCHES.get(name, (128,)):
            for mode in modes:
                reason = skip_reason(name, mode, device)
                (skipped if reason else plan).append((name, batch, mode, reason))
    for name in listed:
        missing = bench_peers.PEERS[name].missing() if name in bench_peers.PEERS else None
        skipped.append((name, None, "all", "skipped: " + (missing or "GPU-sized, not in the CPU default; name it "
                                                             "with --networks to run it here")))
    flops, progress = {}, Progress(len(plan), guess=repeats * window + 5)
    for name, batch, mode, _ in plan:
        progress.show(f"{name}, batch {batch}, {mode}")
        if name not in flops:
            torch.manual_seed(0)
            probe = build_network(name, image_size, workaround).to(device)
            diffusion = build_diffusion(get_profile("full").diffusion).to(device)
            flops[name] = flops_per_image(probe, diffusion, device, image_size,
                                          labels=getattr(probe, "num_classes", None) is not None)
            del probe
        try:
            record(measure_case(name, batch, mode, device, image_size, window, repeats, flops[name], workaround))
        except Exception as error:  # record and go on: one failing mode must not hide the others
            record({"network": name, "batch_size": batch, "mode": mode,
                    "error": f"{type(error).__name__}: {str(error)[:300]}"})
        progress.finish()
    for name, batch, mode, reason in skipped:
        record({"network": name, "batch_size": batch, "mode": mode, "skipped": reason})
    return {**environment(device), "image_size": image_size, "peak_bf16_tflops": peak_tflops(device_label(device)),
            "peers": {peer.package: peer.version() for peer in bench_peers.PEERS.values()},
            "peer_workaround": workaround}


def bench_profile(networks, batch_sizes, mode: str | None, steps: int, device, image_size: int, record,
                  workaround: str = "reparametrize") -> dict:
    """The training step's top kernels (GPU) or operators (CPU) with what launched them, per network."""
    from bench_profile import profile_steps

    device = resolve_device(device)
    mode = mode or ("compile" if compile_supported(device) else "eager")
    bench_peers.apply_workaround(workaround)
    diffusion = build_diffusion(get_profile("full").diffusion).to(device)
    for name in networks:
        for batch in batch_sizes or GPU_BATCHES.get(name, (128,)):
            reason = skip_reason(name, mode, device)
            if reason:
                record({"network": name, "batch_size": batch, "mode": mode, "skipped": reason})
                continue
            trainer = new_trainer(name, batch, mode, device, image_size, diffusion, workaround)
            for _ in range(3):
                trainer.train_step()
            sync(device)
            record({"network": name, "batch_size": batch, "mode": mode,
                    **profile_steps(trainer.train_step, device, steps)})
    return {**environment(device), "image_size": image_size}


# ----- sampling -----------------------------------------------------------------------------------------
class SampleCase(NamedTuple):
    setting: str  # the sampler setting's name
    network: str  # "unconditional" or "conditional" (200 species, labelled draws)
    mode: str  # "plain", "compiled" (torch.compile, static shapes) or "graph" (compiled + CUDA graphs)
    batch: str | None  # "evaluate": evaluate's batch size; None: all at once


# Guided and unguided conditional cases use the same network, so their ratio is the price of guidance.
SAMPLE_CASES = {
    "ddim": SampleCase("DDIM-50", "unconditional", "plain", "evaluate"),
    "ddim-compiled": SampleCase("DDIM-50", "unconditional", "compiled", "evaluate"),
    "ddim-graph": SampleCase("DDIM-50", "unconditional", "graph", "evaluate"),
    "ddim-compiled-one-batch": SampleCase("DDIM-50", "unconditional", "compiled", None),
    "dpmpp": SampleCase("DPM-Solver++-20", "unconditional", "plain", "evaluate"),
    "dpmpp-compiled": SampleCase("DPM-Solver++-20", "unconditional", "compiled", "evaluate"),
    "dpmpp-graph": SampleCase("DPM-Solver++-20", "unconditional", "graph", "evaluate"),
    "conditional": SampleCase("DDIM-50", "conditional", "plain", "evaluate"),
    "conditional-compiled": SampleCase("DDIM-50", "conditional", "compiled", "evaluate"),
    "conditional-graph": SampleCase("DDIM-50", "conditional", "graph", "evaluate"),
    "guided": SampleCase("DDIM-50 w=3", "conditional", "plain", "evaluate"),
    "guided-compiled": SampleCase("DDIM-50 w=3", "conditional", "compiled", "evaluate"),
    "guided-graph": SampleCase("DDIM-50 w=3", "conditional", "graph", "evaluate"),
    "ddpm-compiled": SampleCase("DDPM", "unconditional", "compiled", "evaluate"),
}
DEFAULT_SAMPLE_CASES = ("ddim", "ddim-compiled", "ddim-graph", "dpmpp", "dpmpp-compiled", "dpmpp-graph",
                        "conditional", "conditional-graph", "guided", "guided-compiled", "guided-graph")


def _sampling_run(num_classes: int | None, image_size: int, device: torch.device, size: str = "full"):
    """A Run with a randomly initialised SmallUNet of the profile ``size`` (output layer not zero: real
    arithmetic); the same weights in every process (seed 0)."""
    from ddpm_lib.experiment import Run

    torch.manual_seed(0)
    config = get_profile(size, model="small_unet").override({"model.num_classes": num_classes,
                                                             "data.image_size": image_size})
    model = build_model(config.model, image_size)
    torch.nn.init.normal_(model.output_conv.weight, std=0.02)
    diffusion = build_diffusion(get_profile("full").diffusion).to(device)
    return Run(config, model.to(device).eval(), diffusion, torch.full((3,), 0.5), torch.full((3,), 0.25), Path("."),
               [], 0)


def _dynamo_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def measure_draws(run, case: SampleCase, spec: SamplerSpec, num_samples: int, batch: int | None,
                  device: torch.device, window: float, repeats: int) -> dict:
    """Setup (warm-up, compile, graph recording), then ``repeats`` windows of whole draws."""
    how = {"batch_size": batch, "compile_network": case.mode != "plain", "cuda_graph": case.mode == "graph",
           "labels": torch.arange(num_samples) % 200 if case.network == "conditional" else None}
    compiled_before = _dynamo_graphs()
    started = time.perf_counter()
    if spec.sampler != "ddpm":  # compile at every batch shape; a graph is recorded for the real setting
        run.sample(num_samples, spec if case.mode == "graph" else spec.replace(steps=2), **how)
    sync(device)
    row = {"setup_s": round(time.perf_counter() - started, 1)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    drawn = []
    clocks = ClockSampler(device).start()
    rates = timed_windows(lambda: drawn.append(run.sample(num_samples, spec, **how).images.shape), device,
                          0.0 if spec.sampler == "ddpm" else window, 1 if spec.sampler == "ddpm" else repeats,
                          warmup=0)
    row.update(clocks.stop())
    seconds = spread([1.0 / rate for rate in rates])
    count, height, width, _ = drawn[-1]
    assert count == num_samples and height == width == run.image_size, (drawn[-1], run.image_size)
    row.update(image_size=height, seconds_median=round(seconds["median"], 3), seconds_min=round(seconds["min"], 3),
               seconds_max=round(seconds["max"], 3), window_spread=seconds["spread"], windows=len(rates),
               draws=len(drawn), window_s=window, dynamo_graphs=_dynamo_graphs() - compiled_before)
    if run.sampling_graphs is not None:
        row["sampling_graphs"] = run.sampling_graphs.stats()
    if device.type == "cuda":
        row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    return row


def bench_sample(num_samples: int, image_size: int, device, batch_size: int | None = SAMPLING_BATCH_SIZE,
                 window: float = 2.0, repeats: int = 5, cases=DEFAULT_SAMPLE_CASES, size: str = "full",
                 record=None) -> dict:
    """Seconds per draw of ``num_samples`` images through ``Run.sample`` (as ``evaluate`` draws), per case
    (names of :data:`SAMPLE_CASES`; ``batch_size`` is evaluate's batch). ``size``: the profile whose
    SmallUNet draws ("full": the Keras size; "demo")."""
    device = resolve_device(device)
    record = record or RowLog(None)
    unknown = [case for case in cases if case not in SAMPLE_CASES]
    if unknown:
        raise ValueError(f"unknown sampling cases {unknown}; use any of {list(SAMPLE_CASES)}")
    runs, forward = {}, {}
    peak = peak_tflops(device_label(device))
    runnable = [c for c in cases if SAMPLE_CASES[c].mode == "plain" or compile_supported(device)]
    progress = Progress(len(runnable), guess=repeats * window + 5)
    for name in cases:
        case = SAMPLE_CASES[name]
        batch = batch_size if case.batch == "evaluate" else case.batch
        row = {"case": name, "mode": case.mode, "num_samples": num_samples, "batch_size": batch or num_samples,
               "image_size": image_size}
        if case.mode != "plain" and not compile_supported(device):
            record({**row, "sampler": case.setting, "skipped": SKIP_GRAPH if case.mode == "graph" else SKIP_COMPILE})
            continue
        progress.show(f"sample {name}: {case.setting}, {case.mode}, {num_samples} images")
        if case.network not in runs:
            runs[case.network] = _sampling_run(200 if case.network == "conditional" else None, image_size, device,
                                               size)
            forward[case.network] = flops_per_image(runs[case.network].model, runs[case.network].diffusion, device,
                                                    image_size, labels=case.network == "conditional", backward=False)
        run = runs[case.network]
        spec = SamplerSpec.parse(case.setting).for_diffusion(run.diffusion.num_steps)
        row["sampler"] = ("conditional " if case.network == "conditional" else "") + spec.name
        try:
            row.update(measure_draws(run, case, spec, num_samples, batch, device, window, repeats))
            calls = spec.steps * (2 if spec.guidance not in (0.0, 1.0) and case.network == "conditional" else 1)
            if forward[case.network]:
                row["gflop_per_image"] = round(calls * forward[case.network] / 1e9, 2)
                row["mfu_percent"] = mfu(row["gflop_per_image"], num_samples / row["seconds_median"], peak)
        except Exception as error:  # record and go on
            row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        record(row)
        progress.finish()
    return {**environment(device), "network": f"SmallUNet ({size} profile)", "image_size": image_size}


# ----- evaluate and fit ---------------------------------------------------------------------------------
def bench_evaluate(num_samples: int = 2350, steps: int = 50, image_size: int = 64, device=None,
                   compile_network: bool = True, num_real: int | None = None, record=None) -> dict:
    """Seconds for what ``python -m ddpm_lib evaluate`` does on ``num_samples`` samples: DDIM sampling
    (``Run.sample``), Inception features of both sets and KID / FID, with a calibrated stand-in Inception
    (the timing is the real network's; the numbers are labelled as the stand-in's). The real set is
    ``num_real`` synthetic birds at ``image_size`` (default: as many as the samples, the study's test size)."""
    import tempfile

    import numpy as np

    from ddpm_lib.data.synthetic import render_dataset
    from ddpm_lib.evaluation.metrics import kid_fid, write_standin_weights

    device = resolve_device(device)
    record = record or RowLog(None)
    real, _ = render_dataset(num_real or num_samples, 10, image_size=image_size, seed=0)
    run = _sampling_run(None, image_size, device)
    with tempfile.TemporaryDirectory() as folder:
        weights = write_standin_weights(Path(folder) / "standin.pth", real[:32])
        started = time.perf_counter()
        drawn = run.sample(num_samples, SamplerSpec("ddim", steps), compile_network=compile_network)
        sampling = time.perf_counter() - started
        result = kid_fid(drawn.images, np.asarray(real), weights=weights, device=device)
        sync(device)
        total = time.perf_counter() - started
    record({"what": "evaluate: sampling + Inception + KID/FID", "num_samples": num_samples, "num_real": len(real),
            "seconds_total": round(total, 1), "sampler": drawn.spec.name, "sampling seconds": round(sampling, 2),
            **{k: v for k, v in result.items() if k != "note"}})
    return {**environment(device), "image_size": image_size}


def bench_fit(steps: int = 4_000, image_size: int = 64, device=None, batch_size: int = 32, record=None) -> dict:
    """Wall time of ``Trainer.fit`` with the ``full`` profile's settings (SmallUNet, batch 32, logging,
    checkpoints, sample grids and compilation included) for ``steps`` steps on synthetic birds, and
    that rate carried over to the study's 28,000 steps (labelled as an extrapolation)."""
    import tempfile

    from ddpm_lib.data.synthetic import render_dataset
    from ddpm_lib.experiment import save_sample_grid
    from ddpm_lib.transforms import nhwc_to_nchw

    device = resolve_device(device)
    record = record or RowLog(None)
    images, _ = render_dataset(512, 10, image_size=image_size, seed=0)
    config = get_profile("full").override({
        "train.steps": steps, "train.epochs": None, "train.batch_size": batch_size, "train.wandb": "disabled",
        "train.checkpoint_every": max(steps // 4, 1), "train.sample_every": max(steps // 2, 1),
        "train.log_every": max(steps // 20, 1), "data.image_size": image_size})
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        started = time.perf_counter()
        trainer = Trainer(SmallUNet(), build_diffusion(config.diffusion), nhwc_to_nchw(images), torch.full((3,), 0.5),
                          torch.full((3,), 0.25), config, run_dir=folder, device=device, progress=False,
                          on_sample=save_sample_grid)
        trainer.fit()
        sync(device)
        seconds = time.perf_counter() - started
        with open(Path(folder) / "metrics.csv") as handle:  # the logged rates; the first holds the warm-up
            rates = [float(row["images_per_s"]) for row in csv.DictReader(handle)][1:]
    steady = statistics.median(rates) if rates else steps * batch_size / seconds
    record({"what": "Trainer.fit, full profile (SmallUNet, batch 32): logging, checkpoints, grids, compile",
            "steps": steps, "batch_size": batch_size, "seconds": round(seconds, 1),
            "images_per_s_overall": round(steps * batch_size / seconds, 1),
            "images_per_s_logged_median": round(steady, 1),
            # an extrapolation, not a measurement: what the run took, plus the remaining steps at the logged
            # rate (compile and capture are paid once; grids and checkpoints of a longer run come on top)
            "study_28000_steps_s_extrapolated": round(seconds + (28_000 - steps) * batch_size / steady, 1),
            "precision": trainer.precision, "cuda_graph": trainer.use_graph, "compiled": trainer.compiled})
    return {**environment(device), "image_size": image_size}


# ----- the command line ---------------------------------------------------------------------------------
def default_out(what: str, device: str) -> Path:
    """``outputs/bench/<what>_<device>.json`` under the current folder (``outputs/`` is ignored by git)."""
    slug = "".join(c if c.isalnum() else "_" for c in device).strip("_")[:40]
    return Path.cwd() / "outputs" / "bench" / f"{what}_{slug}.json"


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("train", "sample", "evaluate", "fit", "profile", "flops"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--networks", nargs="*", default=None,
                        help=f"train, profile, flops: any of {list(NETWORKS)} (default: sized for the machine)")
    parser.add_argument("--batch-sizes", nargs="*", type=int, default=None,
                        help="train, profile (default: CPU the demo's; GPU 32 and 128 for SmallUNet, else 128)")
    parser.add_argument("--modes", nargs="*", default=None, help=f"train: any of {MODES} (default: all)")
    parser.add_argument("--mode", default=None, help="profile: one mode (default: compile on a GPU, else eager)")
    parser.add_argument("--peer-workaround", default="reparametrize", choices=bench_peers.WORKAROUNDS,
                        help="train, profile: how denoising-diffusion-pytorch compiles (bench_peers.py)")
    parser.add_argument("--num-samples", type=int, default=None, help="sample: images per draw (GPU: 2,350)")
    parser.add_argument("--cases", nargs="*", default=list(DEFAULT_SAMPLE_CASES),
                        help=f"sample: any of {list(SAMPLE_CASES)}")
    parser.add_argument("--steps", type=int, default=None,
                        help="evaluate: DDIM steps (50); fit: training steps (4000); profile: profiled steps (5)")
    parser.add_argument("--no-compile", action="store_true", help="evaluate: sample without torch.compile")
    parser.add_argument("--window", type=float, default=None, help="seconds per timed window (GPU 2, CPU 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed windows per case (GPU 5, CPU 3)")
    parser.add_argument("--image-size", type=int, default=None, help="pixels (GPU 64, CPU the demo's 32)")
    parser.add_argument("--out", default=None, help="JSON file (default: outputs/bench/<what>_<device>.json here)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    defaults = machine_defaults(device)
    size = args.image_size or defaults["image_size"]
    window = args.window if args.window is not None else defaults["window"]
    repeats = args.repeats or defaults["repeats"]
    batches = tuple(args.batch_sizes) if args.batch_sizes else defaults["batch_sizes"]
    if args.networks:
        unknown = sorted(set(args.networks) - set(NETWORKS))
        if unknown:
            parser.error(f"unknown networks {unknown}; use any of {list(NETWORKS)}")
    unknown = sorted(set(args.modes or ()) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; use {MODES}")
    unknown = sorted(set(args.cases) - set(SAMPLE_CASES))
    if unknown:
        parser.error(f"unknown sampling cases {unknown}; use any of {list(SAMPLE_CASES)}")
    out = Path(args.out) if args.out else default_out(args.what, device_label(device))
    record = RowLog(out)
    networks = tuple(args.networks or defaults["networks"])
    if args.what == "train":
        listed = () if args.networks or device.type == "cuda" else tuple(bench_peers.PEERS)
        result = bench_train(networks, batches, tuple(args.modes or MODES), window, repeats, device, size, record,
                             args.peer_workaround, listed)
        table = bench_report.train_table(record.rows)
        peers = [p for p in (bench_peers.DDPM_PYTORCH, bench_peers.DIFFUSERS) if p in networks]
        for batch in batches or (128,):
            table += "\n" + "\n".join(bench_report.ratio_lines(record.rows, HEADLINE_BASELINE, peers, batch))
    elif args.what == "sample":
        result = bench_sample(args.num_samples or defaults["num_samples"], size, device, window=window,
                              repeats=repeats, cases=tuple(args.cases), size=defaults["sample_network"],
                              record=record)
        table = bench_report.sample_table(record.rows)
    elif args.what == "evaluate":
        result = bench_evaluate(args.num_samples or 2350, args.steps or 50, size, device,
                                compile_network=not args.no_compile, record=record)
        table = json.dumps(record.rows[-1])
    elif args.what == "fit":
        result = bench_fit(args.steps or 4_000, size, device, record=record)
        table = json.dumps(record.rows[-1])
    elif args.what == "profile":
        result = bench_profile(networks, batches, args.mode, args.steps or 5, device, size, record,
                               args.peer_workaround)
        table = "\n".join(_profile_lines(row) for row in record.rows)
    else:
        result = bench_flops(networks if args.networks else NETWORKS, size, device, record)
        table = "\n".join(f"{r['network']:46s} {r.get('parameters', '-')!s:>10s} params  "
                          f"{r.get('gflop_per_image_fwd_bwd', '-')!s:>8s} GFLOP/image fwd+bwd  "
                          f"{r.get('gflop_per_image_fwd', '-')!s:>8s} fwd  {r.get('skipped', '')}" for r in record.rows)
    result["rows"] = record.rows
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.what} on {result['device']} (torch {result['torch']}):\n{table}\nwrote {out}")
    warning = busy_warning(result)
    if warning:
        print(f"note: {warning}")
    return 0


def _profile_lines(row: dict) -> str:
    if "top" not in row:
        return f"{row['network']}, batch {row['batch_size']}, {row['mode']}: {row.get('skipped')}"
    lines = [f"{row['network']}, batch {row['batch_size']}, {row['mode']}: {row['total_ms_per_step']} ms of "
             f"{row['what']} per step; layout conversions {row['layout_conversions']}"]
    for entry in row["top"]:
        site = entry["sites"][0] if entry["sites"] else {}
        lines.append(f"  {entry['share']:6.1%} {entry['calls_per_step']:7.1f}/step {entry['name'][:70]}  <- "
                     f"{site.get('op')} {site.get('shapes')} {' | '.join(site.get('stack', [])[:1])}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
