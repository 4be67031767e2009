"""From a config to a trained run: the calls notebooks 03-06 and the command line share.

``run_experiment(config, name)`` prepares the data the config names, builds the network and the
diffusion, and trains, resuming a killed run from its newest checkpoint and reusing a finished run
instead of training again. ``load_run(run_dir)`` gives back a finished run's EMA network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import checkpoints, paths
from .build import build_diffusion, build_model
from .config import Config
from .data.cub import load_cache
from .data.prepare import prepare_from_config
from .diffusion import GaussianDiffusion
from .distributed import barrier, init_from_environment
from .train import Trainer, TrainResult


@dataclass
class TrainingData:
    """The training split as a uint8 tensor (N, C, H, W) and its per-channel statistics."""

    images: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    cache_path: Path


def load_training_data(config: Config, progress: bool = True) -> TrainingData:
    """Prepare (if needed) and load the training split the config names."""
    cache_path = prepare_from_config(config.data, progress=progress)
    cache = load_cache(cache_path)
    split = config.data.split
    images = torch.from_numpy(cache.train_images(split)).permute(0, 3, 1, 2).contiguous()
    stats = cache.stats[split]  # computed on the train split only
    return TrainingData(images, torch.tensor(stats["mean"]), torch.tensor(stats["std"]), cache_path)


@dataclass
class Run:
    """A trained run: the EMA network (eval mode), its diffusion, data statistics and folder."""

    config: Config
    model: nn.Module
    diffusion: GaussianDiffusion
    mean: torch.Tensor
    std: torch.Tensor
    run_dir: Path
    history: list[dict]
    step: int


def load_run(run_dir: str | Path, device=None, checkpoint_dir=None) -> Run:
    """Load the newest checkpoint of ``run_dir`` (EMA weights) for sampling and evaluation."""
    run_dir = Path(run_dir)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else run_dir / "checkpoints"
    state, path = checkpoints.load_latest(checkpoint_dir, map_location="cpu")
    if state is None:
        raise FileNotFoundError(f"{run_dir}: no readable checkpoint; train the run first")
    config = Config.from_dict(state["config"])
    model = build_model(config.model, config.data.image_size)
    model.load_state_dict(state["ema"]["model"])
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    return Run(config, model.to(device).eval(), build_diffusion(config.diffusion).to(device), state["mean"],
               state["std"], run_dir, state.get("history", []), int(state["step"]))


def run_experiment(config: Config, name: str, resume: str | None = "latest", retrain: bool = False,
                   checkpoint_dir=None, device=None, progress: bool = True) -> Run:
    """Train the run ``runs/<profile>/<name>`` unless it is already finished; return it.

    Args:
        config: everything about the run.
        name: the run's folder name.
        resume: ``"latest"`` continues a killed run; None starts afresh.
        retrain: train again even if a finished run exists (its checkpoints are replaced).
        checkpoint_dir: where checkpoints go (default: the run folder; e.g. Google Drive on Colab).

    Under ``torchrun`` every process runs this; rank 0 prepares the data first and alone writes files.
    """
    context = init_from_environment(device)
    device = context.device or device
    run_dir = paths.run_dir(config.profile, name)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else run_dir / "checkpoints"
    if not context.is_main:
        barrier(context)  # wait until rank 0 has prepared the cache
    data = load_training_data(config, progress=progress and context.is_main)
    if context.is_main:
        barrier(context)
    total = config.train.total_steps(data.images.shape[0])
    state, _ = checkpoints.load_latest(checkpoint_dir)
    if not retrain and state is not None and state["step"] >= total and state["config"] == config.to_dict():
        if progress:
            print(f"reusing the finished run in {run_dir} ({state['step']} steps)")
        return load_run(run_dir, device, checkpoint_dir)
    if retrain:
        resume = None
        barrier(context)  # every process has looked at the old checkpoints before they go
        if context.is_main:
            for old in checkpoints.list_checkpoints(checkpoint_dir):
                old.unlink()
        barrier(context)
    torch.manual_seed(config.train.seed)  # the network's initial weights follow the seed
    model = build_model(config.model, config.data.image_size)
    trainer = Trainer(model, build_diffusion(config.diffusion), data.images, data.mean, data.std, config,
                      run_dir=run_dir, checkpoint_dir=checkpoint_dir, device=device, resume=resume,
                      progress=progress)
    result: TrainResult = trainer.fit()
    model = result.ema.model.eval() if result.ema is not None else result.model  # the EMA lives on rank 0
    return Run(config, model, trainer.diffusion, data.mean, data.std, run_dir, result.history, result.step)
