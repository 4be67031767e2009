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
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ddpm_lib import study
from ddpm_lib.data.cub import CROPS, DEFAULT_IMAGE_SIZE, NON_RGB_POLICIES, SOURCES, SPLITS, check_image_size
from ddpm_lib.device import PRECISIONS
from ddpm_lib.identity import Manifest, manifest
from ddpm_lib.math.diffusion import LOSS_TYPES, PREDICTION_TYPES
from ddpm_lib.math.sampling import SamplerSpec
from ddpm_lib.math.schedules import SCHEDULE_NAMES
from ddpm_lib.models import MODEL_NAMES

PROFILES = ("smoke", "demo", "colab", "full")
# the runs the study compares, by role (experiment.study_configs): notebooks 03, 04, 04, 05
STUDY_RUNS = ("baseline", "small", "small_attention", "small_other_schedule")
# Inception columns (FID, KID): "auto" with real weights only (given, $DDPM_INCEPTION_WEIGHTS, torch-fidelity's
# cache, or its download for real CUB; synthetic data without them get no Inception columns), "standin" the
# same but synthetic data fall back to a labelled random stand-in (its numbers test the plumbing only), "off".
INCEPTION_MODES = ("auto", "standin", "off")
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
    # training length of the study's side runs where a profile shortens them: {"attention": steps,
    # "other_schedule": steps} (notebooks 04-06; experiment.study_configs); a missing entry: steps
    comparison_steps: dict = field(default_factory=dict)
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
        _check(set(self.comparison_steps) <= {"attention", "other_schedule"}
               and all(isinstance(v, int) and v >= 1 for v in self.comparison_steps.values()),
               f"train.comparison_steps={self.comparison_steps}: {{'attention' | 'other_schedule': steps >= 1}}")
        _check(self.keep_checkpoints >= 1, f"train.keep_checkpoints={self.keep_checkpoints}: must be >= 1")
        _check(self.wandb in WANDB_MODES, f"train.wandb={self.wandb!r}: use one of {WANDB_MODES}")

    def length(self) -> str:
        """The run's length as people say it: ``"900 steps of batch 64"`` or ``"200 epochs of batch 32"``."""
        if self.epochs is None:
            return f"{self.steps:,} steps of batch {self.batch_size}"
        return f"{self.epochs:g} epochs of batch {self.batch_size}"

    def total_steps(self, num_train_images: int) -> int:
        """Optimizer steps of the run: from ``epochs`` when set, else ``steps``."""
        if self.epochs is None:
            return self.steps
        return math.ceil(self.epochs * num_train_images / self.batch_size)


def _spec(value) -> SamplerSpec:
    """A sampler setting from a spec, its dict or its name ("DDIM-50 eta 1"), the old spelling of
    DPM-Solver++ ("dpmpp") and the old ``num_samples`` field of saved configs translated."""
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "num_samples"}
        value["sampler"] = {"dpmpp": "dpm_solver"}.get(value.get("sampler"), value.get("sampler"))
    try:
        return SamplerSpec.parse(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"bad config value: {error}") from None


@dataclass
class EvaluationConfig:
    # the sampler settings scored for every compared run (notebook 06, `evaluate`); the study: DDIM-5
    samplers: list[SamplerSpec] = field(default_factory=lambda: [_spec(name) for name in (
        "DDPM", "DDIM-5", "DDIM-50", "DPM-Solver++-10", "DPM-Solver++-20", "DDIM-50 eta 1")])
    num_samples: int | None = None  # generated images per setting (None: as many as the test split)
    inception_samples: int | None = None  # of those, how many Inception scores (None: all)
    inception_first_sampler_only: bool = False  # Inception for each run's first setting only (CPU profiles)
    # networks (model.name) or roles in the study (STUDY_RUNS) scored with the first setting only
    first_sampler_only: tuple[str, ...] = ()
    classifier_steps: int = 6_000  # AdamW steps of the species classifier (evaluation/classifier.py)
    # calibrated probabilities at which the recognisable-bird rate is reported, and the one quoted
    thresholds: tuple[float, ...] = (0.5, 0.8, 0.9)
    headline_threshold: float = 0.9
    inception: str = "auto"  # Inception columns: one of INCEPTION_MODES
    seed: int = 0  # seeds the samples and the reference subsets

    def __post_init__(self):
        self.samplers = [_spec(value) for value in self.samplers]
        self.first_sampler_only = tuple(self.first_sampler_only)
        _check(len(self.samplers) >= 1, "evaluation.samplers: name at least one sampler setting")
        _check(self.num_samples is None or self.num_samples >= 2, f"evaluation.num_samples={self.num_samples}: >= 2")
        _check(self.inception_samples is None or self.inception_samples >= 2,
               f"evaluation.inception_samples={self.inception_samples}: >= 2")
        _check(all(name in MODEL_NAMES + STUDY_RUNS for name in self.first_sampler_only),
               f"evaluation.first_sampler_only={self.first_sampler_only}: names from {MODEL_NAMES + STUDY_RUNS}")
        _check(self.classifier_steps >= 1, f"evaluation.classifier_steps={self.classifier_steps}: must be >= 1")
        self.thresholds = tuple(float(t) for t in self.thresholds)
        _check(len(self.thresholds) >= 1 and all(0.0 < t < 1.0 for t in self.thresholds)
               and list(self.thresholds) == sorted(set(self.thresholds)),
               f"evaluation.thresholds={self.thresholds}: increasing probabilities in (0, 1)")
        _check(self.headline_threshold in self.thresholds,
               f"evaluation.headline_threshold={self.headline_threshold}: one of evaluation.thresholds "
               f"{self.thresholds}")
        _check(self.inception in INCEPTION_MODES, f"evaluation.inception={self.inception!r}: use one of "
               f"{INCEPTION_MODES}")

    def samplers_for(self, model_name: str, role: str | None = None) -> list[SamplerSpec]:
        """The settings a run of ``model_name`` (in the study's ``role``, if any) is scored with: all, or the
        first (:attr:`first_sampler_only`)."""
        first_only = model_name in self.first_sampler_only or role in self.first_sampler_only
        return self.samplers[:1] if first_only else list(self.samplers)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "diffusion": DiffusionConfig, "train": TrainConfig,
            "sample": SamplerSpec, "evaluation": EvaluationConfig}


@dataclass
class Config:
    profile: str = "full"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # how this profile samples a trained run: training's grids, `sample`, the notebooks' pictures; its
    # guidance w applies to labelled draws of a conditional run (the study: DDIM-5, unconditional)
    sample: SamplerSpec = field(default_factory=lambda: SamplerSpec("ddim", steps=study.TABLE1["ddim_steps"]))
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path) -> None:
        """Write the config as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """Rebuild a config from :meth:`to_dict`'s output; unknown keys are an error."""
        kwargs = {}
        for key, value in values.items():
            if key == "profile":
                kwargs[key] = value
            elif key == "sample":
                kwargs[key] = _spec(value)
            elif key in SECTIONS:
                kwargs[key] = _build_section(SECTIONS[key], key, value)
            else:
                raise ValueError(f"bad config: unknown section {key!r}")
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | Path) -> Config:
        """Read a config written by :meth:`to_json`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def validate(self) -> Config:
        """Check every section again (after values were changed by hand)."""
        for section in (self.data, self.model, self.diffusion, self.train, self.evaluation):
            section.__post_init__()
        self.sample = _spec(self.sample)
        return self

    def override(self, values: dict | None = None) -> Config:
        """A checked copy with ``{"section.key": value}`` entries replaced: the one way the command line,
        the notebooks' parameters cells and the benchmarks change a profile.

        ``"sample"`` takes a whole sampler setting (a spec, its dict or its name, ``"DDIM-50 eta 1"``);
        ``"sample.steps"`` and the like change one field of it. An unknown section or key is an error
        that lists the known ones. Example: ``config.override({"train.lr": 1e-3, "model.attention": True})``.
        """
        data = self.to_dict()
        for key, value in (values or {}).items():
            section, _, name = str(key).partition(".")
            if section == "profile" and not name:
                data["profile"] = value
                continue
            if section not in SECTIONS:
                raise ValueError(f"bad override {key!r}: the sections are {', '.join(SECTIONS)}")
            if section == "sample" and not name:
                data["sample"] = _spec(value).to_dict()
                continue
            known = [f.name for f in dataclasses.fields(SECTIONS[section])]
            if name not in known:
                raise ValueError(f"bad override {key!r}: section {section!r} has {', '.join(known)}")
            if section == "evaluation" and name == "samplers":
                value = [_spec(v).to_dict() for v in value]
            data[section][name] = value
        return Config.from_dict(data)


# The train settings that make a run what it is, beside its data, network and diffusion (all of those):
# the recipe. The length may grow (train.steps; a decaying learning rate only with --extend, which
# records a warm restart), and how the steps run (precision, CUDA graph, compilation, logging,
# checkpoints, W&B) may change between a run and its resume; nothing else may.
RUN_RECIPE = ("batch_size", "lr", "weight_decay", "warmup_steps", "lr_schedule", "grad_clip", "ema_decay",
              "ema_warmup", "label_dropout", "init_from", "seed")


def run_settings(config: Config) -> dict:
    """Every setting in a run's identity: the data, model and diffusion sections and the train recipe."""
    return {"data": dataclasses.asdict(config.data), "model": dataclasses.asdict(config.model),
            "diffusion": dataclasses.asdict(config.diffusion),
            "train": {key: getattr(config.train, key) for key in RUN_RECIPE}}


def run_manifest(config: Config, data: str | None, start: str | None = None) -> Manifest:
    """The manifest of a run (``identity.py``): its data (the identity of the data cache it trains on),
    the run it starts from (``train.init_from``'s identity) and :func:`run_settings`."""
    inputs = {"data": data or "unrecorded"}
    if start is not None:
        inputs["init_from"] = start
    return manifest("run", inputs, run_settings(config))


def run_name(config: Config) -> str:
    """The default name of a run's folder: ``<model>[_attention]_<schedule>_<prediction>_<loss>[_<K>species]``,
    e.g. ``small_unet_cosine_v_mse``, and when any other setting of the run's identity (a width, the
    data options, the recipe: :func:`run_settings`) differs from its profile's, ``-<6 hex digits>`` of
    those settings, so a changed recipe trains a run of its own instead of meeting the profile's run.
    The command line, the notebooks and the README all use it."""
    model, diffusion = config.model, config.diffusion
    parts = [model.name]
    if model.attention and model.name == "small_unet":
        parts.append("attention")
    parts += [diffusion.schedule, diffusion.prediction, diffusion.loss]
    if model.num_classes is not None:
        parts.append(f"{model.num_classes}species")
    named = {"model.attention": model.attention, "diffusion.schedule": diffusion.schedule,
             "diffusion.prediction": diffusion.prediction, "diffusion.loss": diffusion.loss,
             "model.num_classes": model.num_classes}
    try:
        reference = get_profile(config.profile, model=model.name).override(named)
    except ValueError:  # not a profile's name: nothing to compare with
        reference = None
    settings = run_settings(config)
    if reference is None or run_settings(reference) != settings:
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:6]
        return "_".join(parts) + f"-{digest}"
    return "_".join(parts)


def _build_section(section_cls, name: str, values: dict):
    known = {f.name for f in dataclasses.fields(section_cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"bad config: unknown key(s) {sorted(unknown)} in section {name!r}; known: {sorted(known)}")
    return section_cls(**values)


def get_profile(name: str | None = None, model: str | None = None) -> Config:
    """The named profile's config; ``name`` defaults to ``$DDPM_PROFILE``, else ``"demo"``.

    ``model`` ("small_unet" or "baseline_unet") picks the network, with the training length the
    profile gives that network (the BaselineUNet costs ~8x the SmallUNet per image: 54 against 6.85
    GFLOP, so the CPU and T4 profiles train it for fewer steps).
    """
    name = name or os.environ.get("DDPM_PROFILE") or "demo"
    if model is not None:
        _check(model in MODEL_NAMES, f"model={model!r}: use one of {MODEL_NAMES}")
    return _profile(name, model or ModelConfig.name)


def _profile(name: str, model: str) -> Config:
    baseline = model == "baseline_unet"
    if name == "smoke":
        return Config(
            profile="smoke",
            data=DataConfig(source="synthetic", image_size=32, num_synthetic_images=48, num_synthetic_classes=4),
            model=ModelConfig(name=model, widths=(8, 16, 24), block_depth=1, base_channels=16, channel_mults=(1, 2, 2),
                              num_res_blocks=1),
            diffusion=DiffusionConfig(num_steps=100),
            train=TrainConfig(batch_size=16, lr=1e-3, steps=20, log_every=5, checkpoint_every=10, sample_every=20,
                              num_grid_samples=8, wandb="disabled"),
            sample=SamplerSpec("ddim", steps=5, guidance=3.0),
            evaluation=EvaluationConfig(samplers=["DDPM", "DDIM-5", "DDIM-50", "DPM-Solver++-10", "DPM-Solver++-20",
                                                  "DDIM-5 eta 1"], classifier_steps=80, inception="standin"),
        )
    if name == "demo":
        # Sized for `make demo` on 2 CPU cores (under 15 min for all eight notebooks): one SmallUNet
        # trained long enough to draw the synthetic birds (notebooks 04-06 use it, notebook 07
        # fine-tunes it into the conditional network); the comparisons beside it run shorter and say
        # so. v-prediction and a fourth level (a global receptive field at 4x4) are what turn CPU-sized
        # training into birds; a cosine learning-rate decay gives the last steps their polish. Batch 32
        # (the study's) for twice the steps of batch 64 costs the same seconds here (the step is
        # compute-bound on 2 cores) and draws better birds; the EMA decay keeps its half-life in images.
        # The BaselineUNet gets 40 steps: enough to show its loss falling, at ten times the SmallUNet's
        # cost per step; it draws noise, so it is scored with the first sampler setting only.
        # DDIM-20 beside DPM-Solver++-20 (first against second order at the same steps), and DDIM-50 with
        # eta 0 beside eta 1: the same 50 steps, with and without fresh noise at each; the short side
        # runs, whose samples are noise at their length, with the first setting only
        # (benchmarks/RESULTS.md has what each scored). The
        # species classifier trains 800 steps (about 40 s): at 400 the channel-permuted non-birds passed
        # 5.8% of the time, over the validity bound of 5%; at 800 3.3% (benchmarks/RESULTS.md).
        return Config(
            profile="demo",
            data=DataConfig(source="synthetic", image_size=32, num_synthetic_images=600, num_synthetic_classes=10),
            model=ModelConfig(name=model, widths=(16, 32, 64, 96), block_depth=1, base_channels=32,
                              channel_mults=(1, 2, 4), num_res_blocks=1),
            diffusion=DiffusionConfig(schedule="cosine", num_steps=1000, prediction="v", loss="mse"),
            train=TrainConfig(batch_size=32, lr=2e-3, steps=40 if baseline else 3600, warmup_steps=50,
                              lr_schedule="cosine", ema_decay=0.9975, log_every=5 if baseline else 200,
                              checkpoint_every=600, sample_every=1200,
                              comparison_steps={"attention": 200, "other_schedule": 600}),
            sample=SamplerSpec("dpm_solver", steps=20, guidance=3.0),
            evaluation=EvaluationConfig(samplers=["DDIM-20", "DPM-Solver++-20", "DDIM-50", "DDIM-50 eta 1"],
                                        inception_samples=40, inception_first_sampler_only=True,
                                        first_sampler_only=("baseline_unet", "small_attention",
                                                            "small_other_schedule"), classifier_steps=800),
        )
    if name == "colab":
        # DDPM-1000 on 2,350 images took 35 s on an H200 (bf16, compiled); on a T4 it would take the
        # better part of an hour (an estimate from the cards' bandwidth), so colab does not score it.
        return Config(
            profile="colab",
            data=DataConfig(source="cub"),
            model=ModelConfig(name=model),
            diffusion=DiffusionConfig(schedule="cosine"),
            train=TrainConfig(batch_size=64, lr=1e-3, steps=4_000 if baseline else 12_000, warmup_steps=500,
                              checkpoint_every=1000),
            sample=SamplerSpec("ddim", steps=50, guidance=3.0),
            evaluation=EvaluationConfig(samplers=["DDIM-5", "DDIM-50", "DPM-Solver++-10", "DPM-Solver++-20",
                                                  "DDIM-50 eta 1"], classifier_steps=3_000),
        )
    if name == "full":
        # The study's Table 1 (study.TABLE1): batch 32, 200 epochs, lr 3e-4, linear betas 1e-4..0.02
        # over 1000 steps, DDIM-5 (the other defaults of the dataclasses above are the study's too)
        return Config(profile="full", data=DataConfig(source="cub"), model=ModelConfig(name=model),
                      train=TrainConfig(epochs=study.TABLE1["epochs"]),
                      sample=SamplerSpec("ddim", steps=study.TABLE1["ddim_steps"], guidance=3.0))
    raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)} (set DDPM_PROFILE)")
