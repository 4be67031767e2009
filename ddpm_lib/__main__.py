"""Command line: ``python -m ddpm_lib prepare | demo``.

* ``prepare``: download (or find, or synthesise) CUB-200-2011, extract it safely, crop, resize and
  cache it (``ddpm_lib.data.prepare``). A second run does nothing.
* ``demo``: the main job on the embedded synthetic data: build the synthetic CUB-format archive,
  run it through the real preprocessing, train the profile's network on the CPU or GPU, sample with
  the EMA weights, and write a data grid, a sample grid, the loss log and the checkpoint under
  ``runs/<profile>/demo/``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from . import paths
from .build import build_diffusion, build_model
from .config import get_profile
from .data.cub import PreprocessOptions, load_cache
from .data.download import CUB_MD5
from .data.prepare import prepare, prepare_from_config
from .models import count_parameters
from .sampling import ddim_sample, ddpm_sample, standardized_range
from .train import destandardize, train
from .utils import default_device


def save_grid(images_uint8: torch.Tensor, path, columns: int = 8) -> None:
    """Save uint8 images (B, C, H, W) as one PNG grid."""
    from PIL import Image

    b, c, h, w = images_uint8.shape
    rows = (b + columns - 1) // columns
    grid = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for index, image in enumerate(images_uint8.permute(0, 2, 3, 1).cpu().numpy()):
        row, column = divmod(index, columns)
        grid[row * h:(row + 1) * h, column * w:(column + 1) * w] = image
    Image.fromarray(grid.squeeze(-1) if c == 1 else grid).save(path)


def run_demo(profile: str, steps: int | None) -> int:
    config = get_profile(profile)
    if steps is not None:
        config.train.steps = steps
    if config.data.source != "synthetic":
        print(f"profile {profile!r} uses real CUB; the demo runs on synthetic data (use demo or smoke)")
        return 2
    device = default_device()
    out = paths.run_dir(config.profile, "demo")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"[1/3] preparing {config.data.num_synthetic_images} synthetic birds at {config.data.image_size}px ...")
    cache = load_cache(prepare_from_config(config.data))
    images = torch.from_numpy(cache.train_images(config.data.split)).permute(0, 3, 1, 2).contiguous()
    stats = cache.stats[config.data.split]  # computed on the train split only
    mean, std = torch.tensor(stats["mean"]), torch.tensor(stats["std"])
    save_grid(images[:32], out / "data.png")

    model = build_model(config.model, config.data.image_size)
    diffusion = build_diffusion(config.diffusion)
    print(f"[2/3] training {config.model.name} ({count_parameters(model):,} parameters) for "
          f"{config.train.steps} steps on {device} ...")
    result = train(model, diffusion, images, config, mean, std, run_dir=out, device=device)

    print(f"[3/3] sampling {config.sample.num_samples} images with {config.sample.sampler} ...")
    generator = torch.Generator(device=device).manual_seed(config.train.seed)
    shape = (config.sample.num_samples, 3, config.data.image_size, config.data.image_size)
    clip = standardized_range(mean.tolist(), std.tolist())
    if config.sample.sampler == "ddim":
        samples = ddim_sample(result.ema.model, diffusion, shape, steps=config.sample.steps,
                              eta=config.sample.eta, generator=generator, clip_range=clip, device=device)
    else:
        samples = ddpm_sample(result.ema.model, diffusion, shape, generator=generator, clip_range=clip,
                              device=device)
    save_grid(destandardize(samples.images, mean, std), out / "samples.png", columns=6)
    print(f"done in {time.perf_counter() - started:.0f} s. Wrote to {out}:")
    for path in sorted(out.iterdir()):
        print(f"  {path.name}")
    return 0


def run_prepare(args) -> int:
    config = get_profile(args.profile)
    source = args.source or ("cub" if args.data_dir else config.data.source)
    if source == "synthetic" and args.data_dir:
        raise ValueError("--data-dir points at real CUB data; drop --source synthetic to use it")
    options = PreprocessOptions(image_size=args.image_size or config.data.image_size,
                                crop=args.crop or config.data.crop, margin=config.data.margin,
                                non_rgb=args.non_rgb or config.data.non_rgb, split_seed=config.data.seed)
    extra = {"urls": args.url} if args.url else {}
    cache_path = prepare(source=source, data_dir=args.data_dir, options=options, md5=args.md5 or CUB_MD5,
                         synthetic_images=config.data.num_synthetic_images,
                         synthetic_classes=config.data.num_synthetic_classes, synthetic_seed=config.data.seed,
                         workers=args.workers, **extra)
    counts = load_cache(cache_path).manifest["counts"]
    print(f"cache: {cache_path}")
    print("counts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddpm_lib", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="download / extract / preprocess CUB (or the synthetic replica)")
    prep.add_argument("--profile", default=None, help="profile whose data settings to use (default: $DDPM_PROFILE)")
    prep.add_argument("--source", choices=("cub", "synthetic"), default=None, help="real CUB or the replica")
    prep.add_argument("--data-dir", default=None, help="an archive or CUB_200_2011 folder you already have")
    prep.add_argument("--url", action="append", help="download URL (repeat for fallbacks)")
    prep.add_argument("--md5", default=None, help="expected archive MD5 (default: the real CUB archive's)")
    prep.add_argument("--image-size", type=int, default=None, help="output side in pixels")
    prep.add_argument("--crop", choices=("bbox", "square"), default=None)
    prep.add_argument("--non-rgb", choices=("convert", "drop"), default=None)
    prep.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    demo = commands.add_parser("demo", help="train and sample on the embedded synthetic data")
    demo.add_argument("--profile", default=None, help="smoke or demo (default: $DDPM_PROFILE or demo)")
    demo.add_argument("--steps", type=int, default=None, help="override the profile's training steps")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return run_demo(args.profile or get_profile().profile, args.steps)
        if args.command == "prepare":
            return run_prepare(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:  # bad input: one clear line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
