"""``python benchmarks/bench.py train | sample | evaluate | fit``: training throughput and sampling time,
with the numbers a performance engineer asks for.

``bench train``: images per second of the *full* training step (batch drawing, flips,
standardization, forward, backward, AdamW, EMA: ``train.Trainer``) for every network in every mode:

| mode | what |
|---|---|
| ``eager`` | the engine's step in the device's precision (bf16 on Ampere and newer), channels_last |
| ``graph`` | the same step captured once in a CUDA graph and replayed |
| ``compile`` | eager, with the network compiled by ``torch.compile`` |
| ``graph+compile`` | both (the default on CUDA) |

The same engine runs the peer networks (``denoising-diffusion-pytorch``'s ``Unet(64, (1, 2, 4, 8))``
and ``diffusers``' ``UNet2DModel`` at the DDPM CIFAR-10 configuration, when installed), so every
ratio compares like with like, each network's best with each network's best. Each case is timed
over ``repeats`` windows of ``window`` seconds after warm-up (median, min, max), with GFLOP per image
(forward + backward, ``torch.utils.flop_counter``), achieved TFLOP/s against the card's peak, peak
memory, the TF32 settings and the GPU's clocks, power and temperature.

``bench sample``: seconds to draw N images exactly as ``evaluate`` draws them (``Run.sample``:
batches of 256, x0 clipping, the device's precision, uint8 conversion included) for DDIM-50,
DPM-Solver++-20 and guided DDIM-50 (a conditional SmallUNet, w = 3), plain and compiled, and DDPM-T.
``bench evaluate``: seconds for what ``python -m ddpm_lib evaluate`` does on N samples (sampling,
Inception, KID / FID; a stand-in Inception, labelled). ``bench fit``: the wall time of a whole
``Trainer.fit`` with the study's settings. All print one JSON line per case and write a JSON file.
"""

from __future__ import annotations

import csv
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from ddpm_lib.build import build_diffusion
from ddpm_lib.config import Config, get_profile
from ddpm_lib.device import compile_supported, resolve_device
from ddpm_lib.device import device_name as device_name_of
from ddpm_lib.engine.train import Trainer
from ddpm_lib.experiment import SAMPLING_BATCH_SIZE
from ddpm_lib.math.sampling import SamplerSpec
from ddpm_lib.models import BaselineUNet, SmallUNet, count_parameters

MODES = ("eager", "graph", "compile", "graph+compile")
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' datasheets, for "achieved / peak".
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "T4": 65.0}


class _PeerAdapter(nn.Module):
    """A peer network as the engine calls networks: ``model(x_t, t) -> tensor``."""

    conditioning = "timestep"

    def __init__(self, network: nn.Module, field: str | None = None):
        super().__init__()
        self.network, self.field = network, field

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.network(x, t)
        return getattr(out, self.field) if self.field else out


def ddpm_pytorch_unet() -> nn.Module:
    """denoising-diffusion-pytorch's ``Unet(dim=64, dim_mults=(1, 2, 4, 8))`` (35.7M parameters)."""
    from denoising_diffusion_pytorch import Unet

    return _PeerAdapter(Unet(dim=64, dim_mults=(1, 2, 4, 8)))


def diffusers_unet() -> nn.Module:
    """diffusers' ``UNet2DModel`` at the DDPM CIFAR-10 configuration (google/ddpm-cifar10-32: widths
    128, 256, 256, 256, two layers per block, attention at the second level), for 64x64 images."""
    from diffusers import UNet2DModel

    return _PeerAdapter(UNet2DModel(
        sample_size=64, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")), field="sample")


NETWORKS = {
    "SmallUNet": lambda: SmallUNet(),
    "SmallUNet+attention": lambda: SmallUNet(attention=True),
    "SmallUNet conditional (200 species)": lambda: SmallUNet(num_classes=200),
    "BaselineUNet": lambda: BaselineUNet(),
    "ddpm-pytorch Unet(64,(1,2,4,8))": ddpm_pytorch_unet,
    "diffusers UNet2DModel (DDPM CIFAR-10 config)": diffusers_unet,
}
PEER_PACKAGES = {"ddpm-pytorch Unet(64,(1,2,4,8))": "denoising_diffusion_pytorch",
                 "diffusers UNet2DModel (DDPM CIFAR-10 config)": "diffusers"}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return device_name_of(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    """What shapes the numbers: card, driver, torch, TF32 flags, and the GPU's state now."""
    info = {"device": device_name(device), "torch": torch.__version__,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if device.type == "cuda":
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["cuda"] = torch.version.cuda
        info.update(gpu_state(device))
    return info


def gpu_state(device: torch.device) -> dict:
    """Clocks (MHz), power (W), temperature (C) and driver through NVML; {} where unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        return {"driver": pynvml.nvmlSystemGetDriverVersion(),
                "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                "max_sm_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
                "memory_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
                "power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
                "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)}
    except Exception:  # no NVML here (a CPU, a virtualised GPU)
        return {}


def peak_tflops(name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def flops_per_image(model: nn.Module, diffusion, device: torch.device, size: int, labels: bool = False) -> float | None:
    """Forward + backward FLOPs of one training example (matmuls and convolutions)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        x0 = torch.randn(2, 3, size, size, device=device)
        extra = {"labels": torch.zeros(2, dtype=torch.long, device=device)} if labels else {}
        counter = FlopCounterMode(display=False)
        with counter:
            diffusion.training_loss(model, x0, **extra).backward()
        model.zero_grad(set_to_none=True)
        return counter.get_total_flops() / 2
    except Exception:  # a network with an operator the counter does not know
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_windows(step, device: torch.device, window: float, repeats: int, warmup: int = 3) -> list[float]:
    """Steps per second in each of ``repeats`` windows of at least ``window`` seconds."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        _sync(device)
        count, started = 0, time.perf_counter()
        while True:
            for _ in range(5):
                step()
            count += 5
            _sync(device)
            elapsed = time.perf_counter() - started
            if elapsed >= window:
                rates.append(count / elapsed)
                break
    return rates


def engine_config(batch_size: int, mode: str, num_classes: int | None = None) -> Config:
    return get_profile("full").override({"train.batch_size": batch_size, "train.wandb": "disabled",
                                         "train.cuda_graph": "graph" in mode, "train.compile": "compile" in mode,
                                         "model.num_classes": num_classes})


def bench_engine(model, diffusion, images_uint8, batch_size, device, seconds=2.0, compile_network=False,
                 cuda_graph=True, repeats: int = 1, num_classes: int | None = None) -> tuple[float, str, bool]:
    """The engine's step (``Trainer.train_step``); returns (median images/s, precision, graph used)."""
    mode = ("graph" if cuda_graph else "eager") + ("+compile" if compile_network else "")
    config = engine_config(batch_size, mode, num_classes)
    labels = torch.randint(0, num_classes, (len(images_uint8),)) if num_classes else None
    trainer = Trainer(model, diffusion, images_uint8, torch.full((3,), 0.5), torch.full((3,), 0.25), config,
                      device=device, progress=False, labels=labels)
    rates = timed_windows(trainer.train_step, device, seconds, repeats)
    return statistics.median(rates) * batch_size, trainer.precision, trainer.use_graph


def profile_top_kernels(trainer: Trainer, device: torch.device, steps: int = 10, top: int = 6) -> list[dict]:
    """The CUDA kernels that take the most time over ``steps`` steps (torch.profiler), with their share."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            trainer.train_step()
        _sync(device)
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    total = sum(e.device_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.device_time_total, reverse=True)
    return [{"kernel": e.key[:90], "share": round(e.device_time_total / total, 3), "calls": e.count}
            for e in events[:top]]


def bench_network(name: str, batch_sizes=(32, 128), modes=MODES, window: float = 2.0, repeats: int = 5,
                  device=None, image_size: int = 64, profile_best: bool = False) -> list[dict]:
    """Every (batch size, mode) case of one network; one dict per case."""
    device = resolve_device(device)
    try:
        probe = NETWORKS[name]()
    except ImportError as error:
        return [{"network": name, "error": f"not installed: {error}"}]
    num_classes = getattr(probe, "num_classes", None)
    diffusion = build_diffusion(get_profile("full").diffusion).to(device)
    flops = flops_per_image(probe.to(device), diffusion, device, image_size, labels=num_classes is not None)
    parameters = count_parameters(probe)
    del probe
    images = torch.randint(0, 256, (4096, 3, image_size, image_size), dtype=torch.uint8)
    peak = peak_tflops(device_name(device))
    rows = []
    for batch_size in batch_sizes:
        best = None
        for mode in modes:
            row = {"network": name, "parameters": parameters, "batch_size": batch_size, "mode": mode,
                   "gflop_per_image_fwd_bwd": round(flops / 1e9, 2) if flops else None}
            if ("graph" in mode or "compile" in mode) and device.type != "cuda":
                continue
            if "compile" in mode and not compile_supported(device):
                row["error"] = "torch.compile is not supported on this card"
                rows.append(row)
                continue
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            trainer = None
            try:
                torch.manual_seed(0)
                started = time.perf_counter()
                labels = torch.randint(0, num_classes, (len(images),)) if num_classes else None
                trainer = Trainer(NETWORKS[name]().to(device), diffusion, images, torch.full((3,), 0.5),
                                  torch.full((3,), 0.25), engine_config(batch_size, mode, num_classes),
                                  device=device, progress=False, labels=labels)
                for _ in range(3):
                    trainer.train_step()  # capture, compile
                _sync(device)
                row["setup_s"] = round(time.perf_counter() - started, 1)
                rates = [r * batch_size for r in timed_windows(trainer.train_step, device, window, repeats, warmup=2)]
                row.update(images_per_s_median=round(statistics.median(rates), 1),
                           images_per_s_min=round(min(rates), 1), images_per_s_max=round(max(rates), 1),
                           repeats=repeats, window_s=window,
                           precision=trainer.precision, cuda_graph=trainer.use_graph, compiled=trainer.compiled)
                if flops:
                    achieved = flops * row["images_per_s_median"] / 1e12
                    row["achieved_tflops"] = round(achieved, 1)
                    if peak:
                        row["share_of_peak_bf16"] = round(achieved / peak, 3)
                if device.type == "cuda":
                    row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
                    row.update(gpu_state(device))
                if best is None or row["images_per_s_median"] > best[0]["images_per_s_median"]:
                    best = (row, trainer)
            except Exception as error:  # record and go on: one failing mode must not hide the others
                row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
            if best is None or best[1] is not trainer:
                trainer = None
        if profile_best and best is not None and device.type == "cuda":
            best[0]["top_kernels"] = profile_top_kernels(best[1], device)
            print(json.dumps({"network": name, "batch_size": batch_size, "best_mode": best[0]["mode"],
                              "top_kernels": best[0]["top_kernels"]}), flush=True)
        best = None
    return rows


def bench_train(networks=None, batch_sizes=(32, 128), window: float = 2.0, repeats: int = 5, device=None,
                image_size: int = 64, modes=MODES, profile_best: bool = False) -> dict:
    """Measure every (network, batch size, mode); a JSON-ready dict with the environment."""
    device = resolve_device(device)
    rows = []
    for name in networks or NETWORKS:
        rows += bench_network(name, batch_sizes, modes, window, repeats, device, image_size, profile_best)
    return {**environment(device), "image_size": image_size, "rows": rows, "peak_bf16_tflops": peak_tflops(
        device_name(device)), "peers": _peer_versions()}


def _peer_versions() -> dict:
    import importlib.metadata

    versions = {}
    for package in ("denoising-diffusion-pytorch", "diffusers"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _sampling_run(num_classes: int | None, image_size: int, device: torch.device):
    """A Run with a randomly initialised Keras-size SmallUNet (output layer not zero: real arithmetic)."""
    from ddpm_lib.experiment import Run

    torch.manual_seed(0)
    config = get_profile("full").override({"model.num_classes": num_classes, "data.image_size": image_size})
    model = SmallUNet(num_classes=num_classes)
    torch.nn.init.normal_(model.output_conv.weight, std=0.02)
    diffusion = build_diffusion(config.diffusion).to(device)
    return Run(config, model.to(device).eval(), diffusion, torch.full((3,), 0.5), torch.full((3,), 0.25), Path("."),
               [], 0)


# The cases of ``bench sample``, by name: (sampler setting, network, compiled, batch size); network
# "unconditional" or "conditional" (200 species, labelled draws); batch "evaluate" is what ``evaluate``
# uses, None all at once. Guided and unguided conditional cases use the same network, so their ratio
# is the price of guidance alone.
SAMPLE_CASES = {
    "ddim": ("DDIM-50", "unconditional", False, "evaluate"),
    "ddim-compiled": ("DDIM-50", "unconditional", True, "evaluate"),
    "ddim-compiled-one-batch": ("DDIM-50", "unconditional", True, None),
    "dpmpp": ("DPM-Solver++-20", "unconditional", False, "evaluate"),
    "dpmpp-compiled": ("DPM-Solver++-20", "unconditional", True, "evaluate"),
    "conditional": ("DDIM-50", "conditional", False, "evaluate"),
    "conditional-compiled": ("DDIM-50", "conditional", True, "evaluate"),
    "guided": ("DDIM-50 w=3", "conditional", False, "evaluate"),
    "guided-compiled": ("DDIM-50 w=3", "conditional", True, "evaluate"),
    "ddpm-compiled": ("DDPM", "unconditional", True, "evaluate"),
}
DEFAULT_SAMPLE_CASES = ("ddim", "ddim-compiled", "dpmpp", "dpmpp-compiled", "guided", "guided-compiled",
                        "ddpm-compiled")


def bench_sample(num_samples: int = 2350, image_size: int = 64, device=None,
                 batch_size: int | None = SAMPLING_BATCH_SIZE, repeats: int = 3, cases=DEFAULT_SAMPLE_CASES) -> dict:
    """Seconds to draw ``num_samples`` images through ``Run.sample`` (as ``evaluate`` does), per case
    (names of :data:`SAMPLE_CASES`; ``batch_size`` is evaluate's batch). Guided cases use a
    conditional SmallUNet (200 species) with one doubled-batch network call per step; DDPM-T is
    timed once (its T steps dwarf any warm-up).
    """
    device = resolve_device(device)
    unknown = [case for case in cases if case not in SAMPLE_CASES]
    if unknown:
        raise ValueError(f"unknown sampling cases {unknown}; use any of {list(SAMPLE_CASES)}")
    runs = {}
    rows = []
    for case in cases:
        setting, network, compiled, batch = SAMPLE_CASES[case]
        batch = batch_size if batch == "evaluate" else batch
        if network not in runs:
            runs[network] = _sampling_run(200 if network == "conditional" else None, image_size, device)
        run = runs[network]
        spec = SamplerSpec.parse(setting).for_diffusion(run.diffusion.num_steps)
        label = ("conditional " if network == "conditional" else "") + spec.name
        row = {"case": case, "sampler": label, "compiled": compiled, "num_samples": num_samples,
               "batch_size": batch or num_samples}
        if compiled and not compile_supported(device):
            continue
        how = {"batch_size": batch, "compile_network": compiled,
               "labels": torch.arange(num_samples) % 200 if network == "conditional" else None}
        try:
            started = time.perf_counter()
            if spec.sampler != "ddpm":
                run.sample(num_samples, spec.replace(steps=2), **how)  # warm-up: every batch shape, compiled once
                _sync(device)
            row["setup_s"] = round(time.perf_counter() - started, 1)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds = []
            for _ in range(1 if spec.sampler == "ddpm" else repeats):
                started = time.perf_counter()
                drawn = run.sample(num_samples, spec, **how)
                _sync(device)
                seconds.append(time.perf_counter() - started)
            assert drawn.images.dtype.name == "uint8" and len(drawn.images) == num_samples
            row.update(seconds_median=round(statistics.median(seconds), 3), seconds_min=round(min(seconds), 3),
                       repeats=len(seconds))
            if device.type == "cuda":
                row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
        except Exception as error:  # record and go on
            row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {**environment(device), "network": "SmallUNet (Keras size)", "image_size": image_size, "rows": rows}


def bench_evaluate(num_samples: int = 2350, steps: int = 50, image_size: int = 64, device=None,
                   compile_network: bool = True, num_real: int | None = None) -> dict:
    """Seconds for what ``python -m ddpm_lib evaluate`` does on ``num_samples`` samples: DDIM sampling
    (``Run.sample``), Inception features of both sets and KID / FID, with a calibrated stand-in Inception
    (the timing is the real network's; the numbers are labelled as the stand-in's). The real set is
    ``num_real`` synthetic birds at ``image_size`` (default: as many as the samples, the study's test size)."""
    import tempfile

    import numpy as np

    from ddpm_lib.data.synthetic import render_dataset
    from ddpm_lib.evaluation.metrics import kid_fid, write_standin_weights

    device = resolve_device(device)
    real, _ = render_dataset(num_real or num_samples, 10, image_size=image_size, seed=0)
    run = _sampling_run(None, image_size, device)
    with tempfile.TemporaryDirectory() as folder:
        weights = write_standin_weights(Path(folder) / "standin.pth", real[:32])
        started = time.perf_counter()
        drawn = run.sample(num_samples, SamplerSpec("ddim", steps), compile_network=compile_network)
        sampling = time.perf_counter() - started
        result = kid_fid(drawn.images, np.asarray(real), weights=weights, device=device)
        _sync(device)
        total = time.perf_counter() - started
    row = {"what": "evaluate: sampling + Inception + KID/FID", "num_samples": num_samples, "num_real": len(real),
           "seconds_total": round(total, 1), "sampler": drawn.spec.name, "sampling seconds": round(sampling, 2),
           **{k: v for k, v in result.items() if k != "note"}}
    print(json.dumps(row), flush=True)
    return {**environment(device), "image_size": image_size, "rows": [row]}


def bench_fit(steps: int = 4_000, image_size: int = 64, device=None, batch_size: int = 32) -> dict:
    """Wall time of ``Trainer.fit`` with the ``full`` profile's settings (SmallUNet, batch 32, logging,
    checkpoints, sample grids and compilation included) for ``steps`` steps on synthetic birds, and
    that rate carried over to the study's 28,000 steps (labelled as an extrapolation)."""
    import tempfile

    from ddpm_lib.data.synthetic import render_dataset
    from ddpm_lib.experiment import save_sample_grid
    from ddpm_lib.transforms import nhwc_to_nchw

    device = resolve_device(device)
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
        _sync(device)
        seconds = time.perf_counter() - started
        with open(Path(folder) / "metrics.csv") as handle:  # the logged rates; the first holds the warm-up
            rates = [float(row["images_per_s"]) for row in csv.DictReader(handle)][1:]
    steady = statistics.median(rates) if rates else steps * batch_size / seconds
    row = {"what": "Trainer.fit, full profile (SmallUNet, batch 32): logging, checkpoints, grids, compile",
           "steps": steps, "batch_size": batch_size, "seconds": round(seconds, 1),
           "images_per_s_overall": round(steps * batch_size / seconds, 1),
           "images_per_s_logged_median": round(steady, 1),
           # what the run took, plus the remaining steps at the logged rate: compile and capture are paid
           # once, not once per 4,000 steps (grids and checkpoints of a longer run come on top)
           "study_28000_steps_s_extrapolated": round(seconds + (28_000 - steps) * batch_size / steady, 1),
           "precision": trainer.precision, "cuda_graph": trainer.use_graph, "compiled": trainer.compiled}
    print(json.dumps(row), flush=True)
    return {**environment(device), "image_size": image_size, "rows": [row]}


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py")
    parser.add_argument("what", choices=("train", "sample", "evaluate", "fit"))
    parser.add_argument("--num-samples", type=int, default=2350, help="sample: images to draw (test-set size)")
    parser.add_argument("--cases", nargs="*", default=list(DEFAULT_SAMPLE_CASES),
                        help=f"sample: any of {list(SAMPLE_CASES)}")
    parser.add_argument("--steps", type=int, default=None, help="evaluate: DDIM steps (50); fit: training steps (4000)")
    parser.add_argument("--no-compile", action="store_true", help="evaluate: sample without torch.compile")
    parser.add_argument("--networks", nargs="*", default=None, help=f"train: any of {list(NETWORKS)}")
    parser.add_argument("--batch-sizes", nargs="*", type=int, default=[32, 128])
    parser.add_argument("--modes", nargs="*", default=None, help=f"train: any of {MODES} (default: all)")
    parser.add_argument("--window", type=float, default=2.0, help="seconds per timed window")
    parser.add_argument("--repeats", type=int, default=5, help="timed windows (train) or draws (sample) per case")
    parser.add_argument("--profile-best", action="store_true", help="train: torch.profiler's top kernels per network")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/<what>_<device>.json)")
    args = parser.parse_args(argv)
    if args.what == "train":
        unknown = set(args.modes or ()) - set(MODES)
        if unknown:
            parser.error(f"unknown modes {sorted(unknown)}; use {MODES}")
        result = bench_train(args.networks, tuple(args.batch_sizes), args.window, args.repeats, args.device,
                             args.image_size, tuple(args.modes or MODES), args.profile_best)
    elif args.what == "sample":
        unknown = set(args.cases) - set(SAMPLE_CASES)
        if unknown:
            parser.error(f"unknown sampling cases {sorted(unknown)}; use any of {list(SAMPLE_CASES)}")
        result = bench_sample(args.num_samples, args.image_size, args.device, repeats=args.repeats,
                              cases=tuple(args.cases))
    elif args.what == "evaluate":
        result = bench_evaluate(args.num_samples, args.steps or 50, args.image_size, args.device,
                                compile_network=not args.no_compile)
    else:
        result = bench_fit(args.steps or 4_000, args.image_size, args.device)
    slug = "".join(c if c.isalnum() else "_" for c in result["device"]).strip("_")[:40]
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"{args.what}_{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"device: {result['device']}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
