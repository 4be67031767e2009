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

from . import study
from .data.cub import CROPS, DEFAULT_IMAGE_SIZE, NON_RGB_POLICIES, SOURCES, SPLITS, check_image_size
from .device import PRECISIONS
from .diffusion import LOSS_TYPES, PREDICTION_TYPES
from .models import MODEL_NAMES
from .sampling import SAMPLERS
from .schedules import SCHEDULE_NAMES

PROFILES = ("smoke", "demo", "colab", "full")
WANDB_MODES = ("auto", "online", "offline", "disabled")
LR_SCHEDULES = ("constant", "cosine")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"bad config value: {message}")


@dataclass
class DataConfig:
    source: str = "synthetic"  # "synthetic" (the embedded procedural CUB replica) or "cub" (real)
    image_size: int = DEFAULT_IMAGE_SIZE  # images are cropped to the bird's box and resized to this square size
    num_synthetic_images: int = 600  # size of the synthetic replica (real CUB: 11,788)
    num_synthetic_classes: int = 10  # species in the synthetic replica (real CUB: 200)
    crop: str = "bbox"  # "bbox" (the study's stated method) or "square" (box-centred, with margin)
    margin: float = 0.25  # extra side around the box for crop="square"
    non_rgb: str = "convert"  # grayscale/CMYK JPEGs: "convert" to RGB or "drop" (as the study did)
    split: str = "random"  # "random" (seeded 80/20 by species, the study's style) or "official" (5,994 / 5,794)
    seed: int = 0  # seed of the synthetic replica and of the random split

    def __post_init__(self):
        _check(self.source in SOURCES, f"data.source={self.source!r}: use one of {SOURCES}")
        _check(self.crop in CROPS, f"data.crop={self.crop!r}: use one of {CROPS}")
        _check(self.non_rgb in NON_RGB_POLICIES, f"data.non_rgb={self.non_rgb!r}: use one of {NON_RGB_POLICIES}")
        _check(self.split in SPLITS, f"data.split={self.split!r}: use one of {SPLITS}")
        try:
            check_image_size(self.image_size)
        except ValueError as error:
            raise ValueError(f"bad config value: data.{error}") from None


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
    # both
    num_classes: int | None = None  # species to condition on (notebook 07); None: unconditional

    def __post_init__(self):
        _check(self.name in MODEL_NAMES, f"model.name={self.name!r}: use one of {MODEL_NAMES}")
        self.widths = tuple(self.widths)
        self.channel_mults = tuple(self.channel_mults)
        self.attention_resolutions = tuple(self.attention_resolutions)
        _check(0.0 <= self.dropout < 1.0, f"model.dropout={self.dropout}: in [0, 1)")
        _check(self.num_classes is None or (isinstance(self.num_classes, int) and self.num_classes >= 1),
               f"model.num_classes={self.num_classes!r}: None (unconditional) or the number of species")


@dataclass
class DiffusionConfig:
    schedule: str = "linear"  # "linear" (the study), "cosine" (Nichol & Dhariwal) or "keras"
    num_steps: int = study.TABLE1["num_steps"]  # T (the study: 1000)
    beta_start: float = study.TABLE1["beta_start"]  # linear schedule start (the study: 1e-4)
    beta_end: float = study.TABLE1["beta_end"]  # linear schedule end (the study: 0.02)
    cosine_s: float = study.TABLE1["cosine_s"]  # cosine schedule offset (the study: 0.008)
    prediction: str = "eps"  # what the network predicts: "eps", "x0" or "v"
    loss: str = "mse"  # "mse" (Ho et al.) or "mae" (the Keras example)

    def __post_init__(self):
        _check(self.schedule in SCHEDULE_NAMES, f"diffusion.schedule={self.schedule!r}: use one of {SCHEDULE_NAMES}")
        _check(self.num_steps >= 1, f"diffusion.num_steps={self.num_steps}: must be >= 1")
        _check(self.prediction in PREDICTION_TYPES,
               f"diffusion.prediction={self.prediction!r}: use one of {PREDICTION_TYPES}")
        _check(self.loss in LOSS_TYPES, f"diffusion.loss={self.loss!r}: use one of {LOSS_TYPES}")


@dataclass
class TrainConfig:
    batch_size: int = study.TABLE1["batch_size"]  # the study's Table 1
    lr: float = study.TABLE1["lr"]  # AdamW learning rate (the study's Table 1)
    weight_decay: float = 1e-4  # AdamW weight decay (Keras example)
    steps: int = 28_000  # optimizer steps (the study's best run: 28,000); see epochs
    epochs: float | None = None  # if set, steps = ceil(epochs * train images / batch_size)
    warmup_steps: int = 0  # linear learning-rate warm-up from 0 (0: none)
    lr_schedule: str = "constant"  # after warm-up: "constant", or "cosine" decay to 0 at the last step
    grad_clip: float | None = None  # clip the gradient norm to this (None: no clipping)
    ema_decay: float = 0.999  # EMA of the weights (Keras example)
    ema_warmup: bool = True  # decay min(ema_decay, (1+n)/(10+n)): short runs are not stuck near the init
    label_dropout: float = 0.1  # conditional runs: share of each batch trained with the "no label" index
    init_from: str | None = None  # a finished run of the same profile whose EMA weights start this one (fine-tuning)
    precision: str = "auto"  # "auto": bf16 where native, fp16 + GradScaler on older GPUs, fp32 on CPU
    cuda_graph: bool = True  # capture the whole step in a CUDA graph on CUDA (never on the CPU)
    channels_last: bool = True  # NHWC memory layout (on CUDA; on the CPU where it measured faster)
    compile: bool = True  # torch.compile the network where supported (CUDA, compute capability >= 7.0)
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
        _check(self.warmup_steps >= 0, f"train.warmup_steps={self.warmup_steps}: must be >= 0")
        _check(self.lr_schedule in LR_SCHEDULES, f"train.lr_schedule={self.lr_schedule!r}: use one of {LR_SCHEDULES}")
        _check(0.0 <= self.ema_decay < 1.0, f"train.ema_decay={self.ema_decay}: in [0, 1)")
        _check(0.0 <= self.label_dropout < 1.0, f"train.label_dropout={self.label_dropout}: in [0, 1)")
        _check(self.precision in PRECISIONS, f"train.precision={self.precision!r}: use one of {PRECISIONS}")
        _check(self.grad_clip is None or self.grad_clip > 0, f"train.grad_clip={self.grad_clip}: must be > 0")
        _check(self.log_every >= 1 and self.checkpoint_every >= 1, "train.log_every and checkpoint_every must be >= 1")
        _check(self.keep_checkpoints >= 1, f"train.keep_checkpoints={self.keep_checkpoints}: must be >= 1")
        _check(self.wandb in WANDB_MODES, f"train.wandb={self.wandb!r}: use one of {WANDB_MODES}")

    def length(self) -> str:
        """The run's length as people say it: ``"900 steps of 64"`` or ``"200 epochs of 32"``."""
        if self.epochs is None:
            return f"{self.steps:,} steps of {self.batch_size}"
        return f"{self.epochs:g} epochs of {self.batch_size}"

    def total_steps(self, num_train_images: int) -> int:
        """Optimizer steps of the run: from ``epochs`` when set, else ``steps``."""
        if self.epochs is None:
            return self.steps
        return math.ceil(self.epochs * num_train_images / self.batch_size)


@dataclass
class SampleConfig:
    sampler: str = "ddim"  # "ddpm" (all T steps), "ddim" or "dpmpp" (DPM-Solver++)
    steps: int = study.TABLE1["ddim_steps"]  # DDIM / DPM-Solver++ steps (the study's Table 1: 5)
    eta: float = 0.0  # DDIM stochasticity, 0 = deterministic
    guidance: float = 3.0  # classifier-free guidance weight w for conditional runs (1: plain conditional)
    num_samples: int = 64  # images drawn for grids

    def __post_init__(self):
        _check(self.sampler in SAMPLERS, f"sample.sampler={self.sampler!r}: use one of {SAMPLERS}")
        _check(self.steps >= 1, f"sample.steps={self.steps}: must be >= 1")
        _check(0.0 <= self.eta <= 1.0, f"sample.eta={self.eta}: in [0, 1]")
        _check(self.guidance >= 0.0, f"sample.guidance={self.guidance}: must be >= 0")


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

    def validate(self) -> Config:
        """Check every section again (after values were changed by hand or on the command line)."""
        for section in (self.data, self.model, self.diffusion, self.train, self.sample):
            section.__post_init__()
        return self


# What makes a run what it is: a checkpoint whose config differs from the requested one in any key
# of these sections is another run (another network, another target, other data). The train section
# may change between a run and its resume: a longer train.steps extends it, lr and weight decay are
# applied anew.
IDENTITY_SECTIONS = ("data", "model", "diffusion")


def identity_differences(saved: dict | Config, requested: dict | Config) -> list[str]:
    """The ``section.key`` entries (with both values) in which two configs differ as runs
    (:data:`IDENTITY_SECTIONS`); an empty list means a checkpoint of ``saved`` may serve ``requested``."""
    saved = saved if isinstance(saved, Config) else Config.from_dict(saved)
    requested = requested if isinstance(requested, Config) else Config.from_dict(requested)
    differences = []
    for section in IDENTITY_SECTIONS:
        old, new = dataclasses.asdict(getattr(saved, section)), dataclasses.asdict(getattr(requested, section))
        differences += [f"{section}.{key}: {old[key]!r} in the run, {new[key]!r} asked for"
                        for key in new if old.get(key) != new[key]]
    return differences


def run_name(config: Config) -> str:
    """The default name of a run's folder, from every setting that changes the network or what it
    learns: ``<model>[_attention]_<schedule>_<prediction>_<loss>[_<K>species]``, e.g.
    ``small_unet_cosine_v_mse``. The command line, the notebooks and the README all use it; other
    differences (widths, data) are caught when the run is resumed (:func:`identity_differences`)."""
    model, diffusion = config.model, config.diffusion
    parts = [model.name]
    if model.attention and model.name == "small_unet":
        parts.append("attention")
    parts += [diffusion.schedule, diffusion.prediction, diffusion.loss]
    if model.num_classes is not None:
        parts.append(f"{model.num_classes}species")
    return "_".join(parts)


def _build_section(section_cls, name: str, values: dict):
    known = {f.name for f in dataclasses.fields(section_cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"bad config: unknown key(s) {sorted(unknown)} in section {name!r}; known: {sorted(known)}")
    return section_cls(**values)


# Training length (optimizer steps) of a network whose cost per image does not suit its profile's
# default: the 26.6M-parameter BaselineUNet costs ~8x the SmallUNet per image (54 vs 6.85 GFLOP).
MODEL_STEPS = {"demo": {"baseline_unet": 40}, "colab": {"baseline_unet": 4_000}}
# The sampler settings notebook 06 scores, as [sampler, steps] or [sampler, steps, eta] (steps: DDIM
# or DPM-Solver++ network calls; DDPM always takes T; eta: DDIM's noise, 0 when left out). DDPM-1000
# on 2,350 images took 35 s on an H200 (bf16, compiled); on a T4 it would take the better part of an
# hour (an estimate from the H200's time and the cards' bandwidth), so the colab and demo profiles
# leave it out. DPM-Solver++ is scored at 10 and 20 steps wherever DDIM is, and stochastic DDIM-50
# (eta 1) beside the deterministic samplers: on the demo's CPU-trained SmallUNet its fresh noise at
# every step raised the recognisable-bird rate from 54% (DPM-Solver++-20) to 81% (benchmarks/RESULTS.md).
EVAL_SAMPLERS = {
    "smoke": [["ddpm", 0], ["ddim", 5], ["ddim", 50], ["dpmpp", 10], ["dpmpp", 20], ["ddim", 5, 1.0]],
    "demo": [["ddim", 20], ["dpmpp", 10], ["dpmpp", 20], ["ddim", 50, 1.0]],
    "colab": [["ddim", 5], ["ddim", 50], ["dpmpp", 10], ["dpmpp", 20], ["ddim", 50, 1.0]],
    "full": [["ddpm", 0], ["ddim", 5], ["ddim", 50], ["dpmpp", 10], ["dpmpp", 20], ["ddim", 50, 1.0]],
}


# Training steps of the species classifier (classifier.py) that scores samples offline: seconds on a
# CPU at 32 px (a classifier with 100% test accuracy on the synthetic species), about a minute on a
# GPU at 64 px for real CUB's 200 species.
CLASSIFIER_STEPS = {"smoke": 80, "demo": 400, "colab": 3_000, "full": 6_000}


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
            config.train.log_every = min(config.train.log_every, max(1, steps // 8))  # a curve, not one point
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
        # Sized for `make demo` on 2 CPU cores (under 15 min for all seven notebooks): one SmallUNet
        # trained long enough to draw the synthetic birds (notebooks 04-06 use it, notebook 07
        # fine-tunes it into the conditional network); the comparisons beside it run shorter and say
        # so. v-prediction and a fourth level (a global receptive field at 4x4) are what turn CPU-sized
        # training into birds; a cosine learning-rate decay gives the last steps their polish. Batch 32
        # (the study's) for twice the steps of batch 64 costs the same seconds here (the step is
        # compute-bound on 2 cores) and draws better birds; the EMA decay keeps its half-life in images.
        return Config(
            profile="demo",
            data=DataConfig(source="synthetic", image_size=32, num_synthetic_images=600, num_synthetic_classes=10),
            model=ModelConfig(widths=(16, 32, 64, 96), block_depth=1, base_channels=32, channel_mults=(1, 2, 4),
                              num_res_blocks=1),
            diffusion=DiffusionConfig(schedule="cosine", num_steps=1000, prediction="v", loss="mse"),
            train=TrainConfig(batch_size=32, lr=2e-3, steps=3600, warmup_steps=50, lr_schedule="cosine",
                              ema_decay=0.9975, log_every=200, checkpoint_every=600, sample_every=1200),
            sample=SampleConfig(sampler="dpmpp", steps=20, num_samples=36),
        )
    if name == "colab":
        return Config(
            profile="colab",
            data=DataConfig(source="cub"),
            model=ModelConfig(),
            diffusion=DiffusionConfig(schedule="cosine"),
            train=TrainConfig(batch_size=64, lr=1e-3, steps=12_000, warmup_steps=500, checkpoint_every=1000),
            sample=SampleConfig(steps=50),
        )
    if name == "full":
        # The study's Table 1 (study.TABLE1): batch 32, 200 epochs, lr 3e-4, linear betas 1e-4..0.02
        # over 1000 steps, DDIM-5 (the other defaults of the dataclasses above are the study's too)
        return Config(profile="full", data=DataConfig(source="cub"),
                      train=TrainConfig(epochs=study.TABLE1["epochs"]))
    raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)} (set DDPM_PROFILE)")
