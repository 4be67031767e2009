"""``python -m ddpm_lib bench train``: images per second of the training step, per network and batch.

For each network and batch size, in one run: a plain eager fp32 loop (AdamW, no tricks) beside the
engine's step (``train.Trainer``: bf16 autocast where supported, channels_last, the whole step in a
CUDA graph) and the engine with the network compiled by ``torch.compile`` (CUDA only), plus FLOPs
per image (forward + backward, counted by ``torch.utils.flop_counter``) and peak GPU memory.
Optionally denoising-diffusion-pytorch's ``Unet(dim=64, dim_mults=(1, 2, 4, 8))`` as an outside
reference, when that package is importable. Prints a table and writes JSON.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from .build import build_diffusion
from .config import get_profile
from .models import BaselineUNet, SmallUNet, count_parameters
from .train import Trainer


def reference_unet() -> nn.Module:
    """denoising-diffusion-pytorch's ``Unet(dim=64, dim_mults=(1, 2, 4, 8))`` (35.7M parameters)."""
    from denoising_diffusion_pytorch import Unet

    return Unet(dim=64, dim_mults=(1, 2, 4, 8))


NETWORKS = {
    "SmallUNet": lambda: SmallUNet(),
    "SmallUNet+attention": lambda: SmallUNet(attention=True),
    "BaselineUNet": lambda: BaselineUNet(),
    "ddpm-pytorch Unet(64,(1,2,4,8))": reference_unet,
}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def flops_per_image(model: nn.Module, diffusion, device: torch.device, size: int) -> float | None:
    """Forward + backward FLOPs of one training example (matmuls and convolutions)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        x0 = torch.randn(2, 3, size, size, device=device)
        counter = FlopCounterMode(display=False)
        with counter:
            diffusion.training_loss(model, x0).backward()
        model.zero_grad(set_to_none=True)
        return counter.get_total_flops() / 2
    except Exception:  # a network with an operator the counter does not know
        return None


def _timed(step, device: torch.device, seconds: float, warmup: int) -> tuple[float, int]:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    count, started = 0, time.perf_counter()
    while True:
        for _ in range(10):
            step()
        count += 10
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return elapsed, count


def bench_plain(model, diffusion, images_uint8, batch_size, device, seconds, precision="fp32"):
    """A plain eager loop: AdamW, the given precision, contiguous tensors, no graph."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    data = images_uint8.to(device).float() / 127.5 - 1
    dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]

    def step():
        index = torch.randint(0, data.shape[0], (batch_size,), device=device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = diffusion.training_loss(model, data[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    elapsed, count = _timed(step, device, seconds, warmup=5)
    return count * batch_size / elapsed


def bench_engine(model, diffusion, images_uint8, batch_size, device, seconds, compile_network=False):
    """The engine's step: ``Trainer.train_step`` (precision, channels_last and graph as configured)."""
    config = get_profile("full")
    config.train.batch_size, config.train.wandb = batch_size, "disabled"
    config.train.compile = compile_network
    trainer = Trainer(model, diffusion, images_uint8, torch.full((3,), 0.5), torch.full((3,), 0.25), config,
                      device=device, progress=False)
    elapsed, count = _timed(trainer.train_step, device, seconds, warmup=3)
    return count * batch_size / elapsed, trainer.precision, trainer.use_graph


def bench_train(networks=None, batch_sizes=(32, 128), seconds: float = 3.0, device=None, image_size: int = 64,
                modes=("plain_fp32", "plain_bf16", "engine")) -> dict:
    """Measure every (network, batch size, mode); returns a JSON-ready dict with the device name."""
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    diffusion = build_diffusion(get_profile("full").diffusion).to(device)
    images = torch.randint(0, 256, (4096, 3, image_size, image_size), dtype=torch.uint8)
    rows = []
    for name in networks or NETWORKS:
        try:
            probe = NETWORKS[name]()
        except ImportError as error:
            rows.append({"network": name, "error": f"not installed: {error}"})
            continue
        parameters = count_parameters(probe)
        flops = flops_per_image(probe.to(device), diffusion, device, image_size)
        del probe
        for batch_size in batch_sizes:
            row = {"network": name, "parameters": parameters, "batch_size": batch_size,
                   "gflops_per_image_fwd_bwd": round(flops / 1e9, 2) if flops else None}
            for mode in modes:
                if mode in ("plain_bf16", "engine_compiled") and device.type != "cuda":
                    continue
                torch.manual_seed(0)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                try:
                    model = NETWORKS[name]().to(device)
                    if mode.startswith("engine"):
                        started = time.perf_counter()
                        speed, precision, graph = bench_engine(model, diffusion, images, batch_size, device, seconds,
                                                               compile_network=mode == "engine_compiled")
                        row["engine_precision"], row["engine_cuda_graph"] = precision, graph
                        row[f"{mode}_setup_and_run_s"] = round(time.perf_counter() - started, 1)
                    else:
                        speed = bench_plain(model, diffusion, images, batch_size, device, seconds, mode.split("_")[1])
                    row[f"{mode}_images_per_s"] = round(speed, 1)
                    if device.type == "cuda":
                        row[f"{mode}_peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
                except Exception as error:  # record and go on: one failing mode must not hide the others
                    row[f"{mode}_error"] = f"{type(error).__name__}: {str(error)[:200]}"
                finally:
                    model = None
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"device": device_name(device), "torch": torch.__version__, "image_size": image_size,
            "measured_seconds_per_case": seconds, "rows": rows,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def bench_sample(num_samples: int = 2350, steps: int = 50, image_size: int = 64, device=None,
                 batch_size: int | None = None, modes=("plain_fp32", "bf16", "bf16_compiled"),
                 ddpm: bool = True) -> dict:
    """Seconds to draw ``num_samples`` images with DDIM-``steps`` (SmallUNet), per mode, and DDPM-T
    with the fastest mode. Modes: ``plain_fp32`` (eval, fp32, contiguous), ``bf16`` (bf16 autocast,
    channels_last) and ``bf16_compiled`` (the same, network compiled)."""
    import copy

    from .sampling import prepare_for_sampling, sample_many

    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    base = SmallUNet()
    torch.nn.init.normal_(base.output_conv.weight, std=0.02)  # not the zero init: real arithmetic
    diffusion = build_diffusion(get_profile("full").diffusion).to(device)
    shape = (3, image_size, image_size)
    rows, best = [], None

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for mode in modes:
        if mode != "plain_fp32" and device.type != "cuda":
            continue
        row = {"mode": mode, "sampler": f"DDIM-{steps}", "num_samples": num_samples, "batch_size": batch_size}
        try:
            started = time.perf_counter()
            network = prepare_for_sampling(copy.deepcopy(base), device, channels_last=mode != "plain_fp32",
                                           compile_network=mode.endswith("compiled"))
            precision = "fp32" if mode == "plain_fp32" else "bf16"
            sample_many(network, diffusion, min(batch_size or num_samples, num_samples), shape, steps=2,
                        batch_size=batch_size, precision=precision, device=device)  # warm-up / compile
            sync()
            row["setup_s"] = round(time.perf_counter() - started, 1)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
            sample_many(network, diffusion, num_samples, shape, steps=steps, batch_size=batch_size,
                        precision=precision, device=device)
            sync()
            row["seconds"] = round(time.perf_counter() - started, 3)
            row["seconds_per_1000_samples"] = round(row["seconds"] * 1000 / num_samples, 3)
            if device.type == "cuda":
                row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
            if best is None or row["seconds"] < best[0]["seconds"]:
                best = (row, network, precision)
        except Exception as error:  # record and go on
            row["error"] = f"{type(error).__name__}: {str(error)[:200]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    if ddpm and best is not None:
        row, network, precision = best
        started = time.perf_counter()
        sample_many(network, diffusion, num_samples, shape, sampler="ddpm", batch_size=batch_size,
                    precision=precision, device=device)
        sync()
        seconds = time.perf_counter() - started
        ddpm_row = {"mode": row["mode"], "sampler": f"DDPM-{diffusion.num_steps}", "num_samples": num_samples,
                    "batch_size": batch_size, "seconds": round(seconds, 2),
                    "seconds_per_1000_samples": round(seconds * 1000 / num_samples, 2)}
        rows.append(ddpm_row)
        print(json.dumps(ddpm_row), flush=True)
    return {"device": device_name(device), "torch": torch.__version__, "network": "SmallUNet",
            "parameters": count_parameters(base), "image_size": image_size, "rows": rows,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ddpm_lib bench")
    parser.add_argument("what", choices=("train", "sample"))
    parser.add_argument("--num-samples", type=int, default=2350, help="sample: images to draw (test-set size)")
    parser.add_argument("--steps", type=int, default=50, help="sample: DDIM steps")
    parser.add_argument("--no-ddpm", action="store_true", help="sample: skip the DDPM-T timing")
    parser.add_argument("--networks", nargs="*", default=None, help=f"any of {list(NETWORKS)}")
    parser.add_argument("--batch-sizes", nargs="*", type=int, default=[32, 128])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per case")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--device", default=None)
    parser.add_argument("--modes", nargs="*", default=None,
                        help="train: plain_fp32, plain_bf16, engine, engine_compiled; "
                             "sample: plain_fp32, bf16, bf16_compiled (default: all)")
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/train_<device>.json)")
    args = parser.parse_args(argv)
    if args.what == "train":
        modes = tuple(args.modes or ("plain_fp32", "plain_bf16", "engine", "engine_compiled"))
        result = bench_train(args.networks, tuple(args.batch_sizes), args.seconds, args.device, args.image_size, modes)
    else:
        modes = tuple(args.modes or ("plain_fp32", "bf16", "bf16_compiled"))
        result = bench_sample(args.num_samples, args.steps, args.image_size, args.device, modes=modes,
                              ddpm=not args.no_ddpm)
    slug = "".join(c if c.isalnum() else "_" for c in result["device"]).strip("_")[:40]
    out = Path(args.out) if args.out else Path(__file__).resolve().parents[1] / "benchmarks" / "results" / (
        f"{args.what}_{slug}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"device: {result['device']}; wrote {out}")
    return 0
