"""Typed configuration: one dataclass per concern, and the named profiles.

A profile is chosen by name (``get_profile``), usually through the ``DDPM_PROFILE`` environment
variable or a notebook's ``parameters`` cell:

| profile | data | purpose |
|---|---|---|
| ``smoke`` | tiny synthetic set, small sizes, few steps | CI: every notebook in seconds |
| ``demo``  | synthetic set, CPU-sized training | the main job on a laptop, end to end |
| ``colab`` | real CUB | a T4-sized run with real birds in under an hour |
| ``full``  | real CUB | the study's Table 1 on a real GPU |

A run saves its config as JSON (``Config.to_json``) beside its checkpoints and results.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .diffusion import LOSS_TYPES, PREDICTION_TYPES
from .schedules import SCHEDULE_NAMES

PROFILES = ("smoke", "demo", "colab", "full")
MODEL_NAMES = ("small_unet", "baseline_unet")
SAMPLERS = ("ddpm", "ddim")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"bad config value: {message}")


@dataclass
class DataConfig:
    source: str = "synthetic"  # "synthetic" (the embedded procedural CUB replica) or "cub" (real)
    image_size: int = 64  # images are cropped to the bird's box and resized to this square size
    num_synthetic_images: int = 600  # size of the synthetic replica (real CUB: 11,788)
    num_synthetic_classes: int = 10  # species in the synthetic replica (real CUB: 200)
    crop: str = "bbox"  # "bbox" (the study's stated method) or "square" (box-centred, with margin)
    margin: float = 0.25  # extra side around the box for crop="square"
    non_rgb: str = "convert"  # grayscale/CMYK JPEGs: "convert" to RGB or "drop" (as the study did)
    split: str = "random"  # "random" (seeded 80/20, the study's style) or "official" (5,994 / 5,794)
    seed: int = 0  # seed of the synthetic replica and of the random split

    def __post_init__(self):
        _check(self.source in ("synthetic", "cub"), f"data.source={self.source!r}: use 'synthetic' or 'cub'")
        _check(self.crop in ("bbox", "square"), f"data.crop={self.crop!r}: use 'bbox' or 'square'")
        _check(self.non_rgb in ("convert", "drop"), f"data.non_rgb={self.non_rgb!r}: use 'convert' or 'drop'")
        _check(self.split in ("random", "official"), f"data.split={self.split!r}: use 'random' or 'official'")
        _check(self.image_size >= 8 and self.image_size % 8 == 0, f"data.image_size={self.image_size}: a multiple of 8")


@dataclass
class ModelConfig:
    name: str = "small_unet"  # "small_unet" (Keras example) or "baseline_unet" (Ho et al. style)
    # SmallUNet
    widths: tuple[int, ...] = (32, 64, 96, 128)  # channels per level (Keras example)
    block_depth: int = 2  # residual blocks per level (Keras example)
    attention: bool = False  # self-attention at the two lowest resolutions (the study's 3rd net)
    # BaselineUNet
    base_channels: int = 64  # channels at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 4, 4)  # multiplier per level
    num_res_blocks: int = 2  # residual blocks per level on the down path
    attention_resolutions: tuple[int, ...] = (16, 8)  # feature-map sizes with self-attention
    dropout: float = 0.1  # Ho et al.'s CIFAR-10 value

    def __post_init__(self):
        _check(self.name in MODEL_NAMES, f"model.name={self.name!r}: use one of {MODEL_NAMES}")
        self.widths = tuple(self.widths)
        self.channel_mults = tuple(self.channel_mults)
        self.attention_resolutions = tuple(self.attention_resolutions)
        _check(0.0 <= self.dropout < 1.0, f"model.dropout={self.dropout}: in [0, 1)")


@dataclass
class DiffusionConfig:
    schedule: str = "linear"  # "linear" (the study), "cosine" (Nichol & Dhariwal) or "keras"
    num_steps: int = 1000  # T (the study: 1000)
    beta_start: float = 1e-4  # linear schedule start (the study: 1e-4)
    beta_end: float = 0.02  # linear schedule end (the study: 0.02)
    cosine_s: float = 0.008  # cosine schedule offset (the study: 0.008)
    prediction: str = "eps"  # what the network predicts: "eps", "x0" or "v"
    loss: str = "mse"  # "mse" (Ho et al.) or "mae" (the Keras example)

    def __post_init__(self):
        _check(self.schedule in SCHEDULE_NAMES, f"diffusion.schedule={self.schedule!r}: use one of {SCHEDULE_NAMES}")
        _check(self.num_steps >= 1, f"diffusion.num_steps={self.num_steps}: must be >= 1")
        _check(self.prediction in PREDICTION_TYPES, f"diffusion.prediction={self.prediction!r}")
        _check(self.loss in LOSS_TYPES, f"diffusion.loss={self.loss!r}: use one of {LOSS_TYPES}")


@dataclass
class TrainConfig:
    batch_size: int = 32  # the study's Table 1
    lr: float = 3e-4  # AdamW learning rate (the study's Table 1)
    weight_decay: float = 1e-4  # AdamW weight decay (Keras example)
    steps: int = 28_000  # optimizer steps (the study's best run: 28,000); see epochs
    epochs: float | None = None  # if set, steps = ceil(epochs * train images / batch_size)
    warmup_steps: int = 0  # linear learning-rate warm-up from 0 (0: none)
    grad_clip: float | None = None  # clip the gradient norm to this (None: no clipping)
    ema_decay: float = 0.999  # EMA of the weights (Keras example)
    ema_warmup: bool = True  # decay min(ema_decay, (1+n)/(10+n)): short runs are not stuck near the init
    precision: str = "auto"  # "auto": bf16 where supported, fp16 + GradScaler on older GPUs, fp32 on CPU
    cuda_graph: bool = True  # capture the whole step in a CUDA graph on CUDA (never on the CPU)
    channels_last: bool = True  # NHWC memory layout on CUDA
    compile: bool = True  # torch.compile the network on CUDA (fuses norms and activations; 0.5-1.5 min at start)
    seed: int = 0  # seeds weights, batches and noise
    log_every: int = 50  # steps between log lines / metrics.csv rows
    checkpoint_every: int = 1000  # steps between checkpoints (and at the end)
    keep_checkpoints: int = 3  # how many checkpoints to keep
    sample_every: int = 2000  # steps between sample grids (and at start and end); 0: only at the end
    num_grid_samples: int = 16  # images in each sample grid
    wandb: str = "auto"  # "auto" (online if logged in, else offline), "online", "offline", "disabled"

    def __post_init__(self):
        _check(self.batch_size >= 1, f"train.batch_size={self.batch_size}: must be >= 1")
        _check(self.lr > 0, f"train.lr={self.lr}: must be > 0")
        _check(self.steps >= 0, f"train.steps={self.steps}: must be >= 0")
        _check(self.epochs is None or self.epochs > 0, f"train.epochs={self.epochs}: must be > 0")
        _check(0.0 <= self.ema_decay < 1.0, f"train.ema_decay={self.ema_decay}: in [0, 1)")
        _check(self.precision in ("auto", "bf16", "fp16", "fp32"),
               f"train.precision={self.precision!r}: use auto, bf16, fp16 or fp32")
        _check(self.grad_clip is None or self.grad_clip > 0, f"train.grad_clip={self.grad_clip}: must be > 0")
        _check(self.log_every >= 1 and self.checkpoint_every >= 1, "train.log_every and checkpoint_every must be >= 1")
        _check(self.wandb in ("auto", "online", "offline", "disabled"),
               f"train.wandb={self.wandb!r}: use auto, online, offline or disabled")

    def total_steps(self, num_train_images: int) -> int:
        """Optimizer steps of the run: from ``epochs`` when set, else ``steps``."""
        if self.epochs is None:
            return self.steps
        return math.ceil(self.epochs * num_train_images / self.batch_size)


@dataclass
class SampleConfig:
    sampler: str = "ddim"  # "ddpm" (all T steps) or "ddim"
    steps: int = 5  # DDIM steps (the study's Table 1: 5)
    eta: float = 0.0  # DDIM stochasticity, 0 = deterministic
    num_samples: int = 64  # images drawn for grids

    def __post_init__(self):
        _check(self.sampler in SAMPLERS, f"sample.sampler={self.sampler!r}: use one of {SAMPLERS}")
        _check(self.steps >= 1, f"sample.steps={self.steps}: must be >= 1")
        _check(0.0 <= self.eta <= 1.0, f"sample.eta={self.eta}: in [0, 1]")


@dataclass
class Config:
    profile: str = "full"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path) -> None:
        """Write the config as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """Rebuild a config from :meth:`to_dict`'s output; unknown keys are an error."""
        sections = {"data": DataConfig, "model": ModelConfig, "diffusion": DiffusionConfig,
                    "train": TrainConfig, "sample": SampleConfig}
        kwargs = {}
        for key, value in values.items():
            if key == "profile":
                kwargs[key] = value
            elif key in sections:
                kwargs[key] = _build_section(sections[key], key, value)
            else:
                raise ValueError(f"bad config: unknown section {key!r}")
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | Path) -> Config:
        """Read a config written by :meth:`to_json`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def _build_section(section_cls, name: str, values: dict):
    known = {f.name for f in dataclasses.fields(section_cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"bad config: unknown key(s) {sorted(unknown)} in section {name!r}; known: {sorted(known)}")
    return section_cls(**values)


# Training length (optimizer steps) of a network whose cost per image does not suit its profile's
# default: the 26.6M-parameter BaselineUNet costs ~8x the SmallUNet per image (54 vs 6.85 GFLOP).
MODEL_STEPS = {"demo": {"baseline_unet": 40}, "colab": {"baseline_unet": 4_000}}
# The sampler settings notebook 06 scores, as [sampler, DDIM steps]. DDPM-1000 on 2,350 images took
# 35 s on an H200 (bf16, compiled); on a T4 in fp32 it would take over an hour (an estimate from the
# H200's fp32 DDIM-50 time and the cards' bandwidth), so the colab and demo profiles leave it out.
EVAL_SAMPLERS = {
    "smoke": [["ddpm", 0], ["ddim", 5], ["ddim", 50]],
    "demo": [["ddim", 20]],
    "colab": [["ddim", 5], ["ddim", 50]],
    "full": [["ddpm", 0], ["ddim", 5], ["ddim", 50]],
}


def get_profile(name: str | None = None, model: str | None = None) -> Config:
    """The named profile's config; ``name`` defaults to ``$DDPM_PROFILE``, else ``"demo"``.

    ``model`` ("small_unet" or "baseline_unet") picks the network, with that network's training
    length where the profile sets one (:data:`MODEL_STEPS`).
    """
    config = _profile(name or os.environ.get("DDPM_PROFILE") or "demo")
    if model is not None:
        _check(model in MODEL_NAMES, f"model={model!r}: use one of {MODEL_NAMES}")
        config.model.name = model
        steps = MODEL_STEPS.get(config.profile, {}).get(model)
        if steps is not None:
            config.train.steps, config.train.epochs = steps, None
    return config


def _profile(name: str) -> Config:
    if name == "smoke":
        return Config(
            profile="smoke",
            data=DataConfig(source="synthetic", image_size=32, num_synthetic_images=48, num_synthetic_classes=4),
            model=ModelConfig(widths=(8, 16, 24), block_depth=1, base_channels=16, channel_mults=(1, 2, 2),
                              num_res_blocks=1),
            diffusion=DiffusionConfig(num_steps=100),
            train=TrainConfig(batch_size=16, lr=1e-3, steps=20, log_every=5, checkpoint_every=10, sample_every=20,
                              num_grid_samples=8, wandb="disabled"),
            sample=SampleConfig(steps=5, num_samples=8),
        )
    if name == "demo":
        # Sized for `make demo` on 2 CPU cores (~13 min for all six notebooks). v-prediction and a fourth
        # level (a global receptive field at 4x4) are what turn ~1,000 CPU steps into recognisable
        # synthetic birds; with eps-prediction the same budget gave saturated patches.
        return Config(
            profile="demo",
            data=DataConfig(source="synthetic", image_size=32, num_synthetic_images=600, num_synthetic_classes=10),
            model=ModelConfig(widths=(16, 32, 64, 96), block_depth=1, base_channels=32, channel_mults=(1, 2, 4),
                              num_res_blocks=1),
            diffusion=DiffusionConfig(num_steps=1000, prediction="v", loss="mse"),
            train=TrainConfig(batch_size=64, lr=2e-3, steps=900, ema_decay=0.995, log_every=100,
                              checkpoint_every=300, sample_every=300),
            sample=SampleConfig(steps=20, num_samples=36),
        )
    if name == "colab":
        return Config(
            profile="colab",
            data=DataConfig(source="cub", image_size=64),
            model=ModelConfig(),
            diffusion=DiffusionConfig(schedule="cosine"),
            train=TrainConfig(batch_size=64, lr=1e-3, steps=12_000, warmup_steps=500, checkpoint_every=1000),
            sample=SampleConfig(steps=50),
        )
    if name == "full":
        # The study's Table 1: batch 32, 200 epochs, lr 3e-4, linear betas 1e-4..0.02 over 1000 steps
        return Config(profile="full", data=DataConfig(source="cub", image_size=64),
                      train=TrainConfig(batch_size=32, lr=3e-4, epochs=200))
    raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)} (set DDPM_PROFILE)")
