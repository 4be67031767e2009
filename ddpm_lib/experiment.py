"""From a config to a trained run, and from a trained run to images: the calls notebooks 03-07 and
the command line share.

``run_experiment(config)`` prepares the data the config names, builds the network and the
diffusion, and trains, resuming a killed run from its newest checkpoint and reusing a finished run
instead of training again; a run folder that holds another network, diffusion or data is refused,
never silently resumed. ``load_run(run_dir)`` gives back a finished run's EMA network, and
``Run.sample`` is the one way to draw images from a run: it readies the network, sets the clip
range, picks the precision, dispatches the sampler and returns uint8 images. Training's sample
grids, ``python -m ddpm_lib sample | evaluate | demo``, ``metrics.evaluate_run`` and the notebooks
all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import checkpoints, paths
from .build import build_diffusion, build_model
from .config import Config, identity_differences, run_name
from .data.cub import load_cache
from .data.prepare import prepare_from_config
from .device import resolve_device
from .diffusion import GaussianDiffusion
from .distributed import barrier, init_from_environment
from .sampling import prepare_for_sampling, sample_many, sampler_label, standardized_range
from .train import RunMismatchError, Trainer, TrainResult
from .transforms import nhwc_to_nchw, to_uint8_hwc


@dataclass
class TrainingData:
    """The training split as a uint8 tensor (N, C, H, W), its per-channel statistics and species."""

    images: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    cache_path: Path
    species: torch.Tensor  # (N,) 0-based species indices
    species_names: list[str] = field(default_factory=list)


def load_training_data(config: Config, progress: bool = True, data_dir=None) -> TrainingData:
    """Prepare (if needed) and load the training split the config names."""
    cache_path = prepare_from_config(config.data, progress=progress, data_dir=data_dir)
    cache = load_cache(cache_path)
    split = config.data.split
    stats = cache.stats[split]  # computed on the train split only
    return TrainingData(nhwc_to_nchw(cache.train_images(split)), torch.tensor(stats["mean"]),
                        torch.tensor(stats["std"]), cache_path, torch.from_numpy(cache.train_species(split)),
                        cache.species_names)


def generate(network, diffusion: GaussianDiffusion, mean, std, num_samples: int, image_size: int, *,
             sampler: str = "ddim", steps: int = 50, eta: float = 0.0, seed: int = 0, batch_size: int | None = 256,
             labels=None, guidance: float = 1.0, device=None, compile_network: bool = False,
             precision: str = "auto", return_tensors: bool = False):
    """Draw images from a network: the code behind :meth:`Run.sample` (and training's grids).

    Readies the network (:func:`~ddpm_lib.sampling.prepare_for_sampling`), clips the predicted x0
    to the data's pixel range, samples in the device's precision from a seeded generator, in
    batches of ``batch_size`` (None: all at once), and converts to pixels.

    Returns:
        uint8 images (N, H, W, 3); with ``return_tensors`` also the float32 standardized ones
        (N, 3, H, W), on the sampling device.
    """
    device = resolve_device(device)
    network = prepare_for_sampling(network, device, compile_network=compile_network)
    low, high = standardized_range(torch.as_tensor(mean).tolist(), torch.as_tensor(std).tolist())
    generator = torch.Generator(device=device).manual_seed(seed)
    images = sample_many(network, diffusion, num_samples, (3, image_size, image_size), sampler=sampler, steps=steps,
                         eta=eta, batch_size=batch_size, precision=precision, generator=generator,
                         clip_range=(low.float().to(device), high.float().to(device)), device=device,
                         labels=labels, guidance=guidance)
    pixels = to_uint8_hwc(images, mean, std)
    return (pixels, images) if return_tensors else pixels


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
    species_names: list[str] = field(default_factory=list)
    engine: dict = field(default_factory=dict)  # how it trained: device, precision, graph, compile

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def sample(self, num_samples: int, sampler: str | None = None, steps: int | None = None, eta: float | None = None,
               seed: int = 0, batch_size: int | None = 256, species=None, guidance: float | None = None,
               compile_network: bool = False, return_tensors: bool = False):
        """Draw ``num_samples`` images from the EMA weights: uint8 (N, H, W, 3).

        Args:
            sampler, steps, eta: default to the run's ``config.sample`` (``"ddpm"``, ``"ddim"``,
                ``"dpmpp"``).
            species: for a conditional run, one species index per image (N,), or one index for all;
                None draws unconditionally.
            guidance: classifier-free guidance weight w (default ``config.sample.guidance``).
            return_tensors: also return the float32 standardized images (N, 3, H, W).
        """
        settings = self.config.sample
        labels = None
        if species is not None:
            labels = torch.as_tensor(species, dtype=torch.long)
            labels = labels.expand(num_samples) if labels.ndim == 0 else labels
        return generate(self.model, self.diffusion, self.mean, self.std, num_samples, self.config.data.image_size,
                        sampler=sampler or settings.sampler, steps=steps or settings.steps,
                        eta=settings.eta if eta is None else eta, seed=seed, batch_size=batch_size, labels=labels,
                        guidance=settings.guidance if guidance is None else guidance, device=self.device,
                        compile_network=compile_network, return_tensors=return_tensors)

    def sampler_label(self, sampler: str | None = None, steps: int | None = None, eta: float | None = None,
                      guidance: float | None = None) -> str:
        """How :meth:`sample` with these arguments is named in tables (``DDIM-50``, ...)."""
        settings = self.config.sample
        return sampler_label(sampler or settings.sampler, steps or settings.steps, self.diffusion.num_steps,
                             settings.eta if eta is None else eta, guidance)


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
    names = state.get("metadata", {}).get("species_names", [])
    return Run(config, model.to(resolve_device(device)).eval(),
               build_diffusion(config.diffusion).to(resolve_device(device)), state["mean"], state["std"], run_dir,
               state.get("history", []), int(state["step"]), names, state.get("engine", {}))


def save_sample_grid(trainer: Trainer, seed: int = 1234) -> Path | None:
    """Training's sample grid (the ``on_sample`` callback): the EMA weights' samples with the run's
    sampler settings, the same start noise every time, to ``samples/step_<step>.png``. A conditional
    run shows the species in turn, guided as ``config.sample.guidance`` says."""
    from .viz import save_image_grid

    if trainer.run_dir is None:
        return None
    config, count = trainer.config, trainer.settings.num_grid_samples
    labels = None
    if trainer.num_classes is not None:
        labels = torch.arange(count) % trainer.num_classes
    pixels = generate(trainer.ema.model, trainer.diffusion, trainer.mean, trainer.std, count,
                      trainer.images.shape[-1], sampler=config.sample.sampler, steps=config.sample.steps,
                      eta=config.sample.eta, seed=seed, labels=labels, guidance=config.sample.guidance,
                      device=trainer.device)
    folder = trainer.run_dir / "samples"
    folder.mkdir(exist_ok=True)
    return save_image_grid(nhwc_to_nchw(pixels), folder / f"step_{trainer.step:08d}.png")


def run_experiment(config: Config, name: str | None = None, resume: str | None = "latest", retrain: bool = False,
                   checkpoint_dir=None, device=None, progress: bool | str = True, data_dir=None) -> Run:
    """Train the run ``runs/<profile>/<name>`` unless it is already finished; return it.

    Args:
        config: everything about the run.
        name: the run's folder name (default :func:`~ddpm_lib.config.run_name`).
        resume: ``"latest"`` continues a killed run; None starts afresh (older checkpoints are moved
            aside, not deleted).
        retrain: train again even if a finished run exists.
        checkpoint_dir: where checkpoints go (default: the run folder; e.g. Google Drive on Colab).
        progress: ``"bar"``, ``"lines"`` (papermill, logs) or ``"none"``; True / False: bar / none.
        data_dir: a CUB archive or folder (as ``prepare --data-dir``).

    A finished run is reused when its network, diffusion and data match the config; a checkpoint
    of another run in the folder is an error naming the differing keys (``--retrain`` replaces it).
    Under ``torchrun`` every process runs this; rank 0 prepares the data first and alone writes files.
    """
    config.validate()
    name = name or run_name(config)
    context = init_from_environment(device)
    device = context.device or device
    run_dir = paths.run_dir(config.profile, name)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else run_dir / "checkpoints"
    quiet = progress in (False, "none") or not context.is_main
    if not context.is_main:
        barrier(context)  # wait until rank 0 has prepared the cache
    data = load_training_data(config, progress=not quiet, data_dir=data_dir)
    if context.is_main:
        barrier(context)
    _check_species(config, data)
    total = config.train.total_steps(data.images.shape[0])
    state, _ = checkpoints.load_latest(checkpoint_dir, warn=False)
    if state is not None and not retrain:
        differences = identity_differences(state["config"], config)
        if differences:
            raise RunMismatchError(f"{run_dir} holds another run: " + "; ".join(differences)
                                   + ". Choose another run name, or retrain (--retrain) to replace it.")
        if state["step"] >= total:
            if not quiet:
                print(f"reusing the finished run in {run_dir} ({state['step']} steps)")
            return load_run(run_dir, device, checkpoint_dir)
    if retrain:
        resume = None
    torch.manual_seed(config.train.seed)  # the network's initial weights follow the seed
    model = build_model(config.model, config.data.image_size)
    if config.train.init_from and (retrain or resume is None or state is None):
        _start_from(model, config, device)
    trainer = Trainer(model, build_diffusion(config.diffusion), data.images, data.mean, data.std, config,
                      run_dir=run_dir, checkpoint_dir=checkpoint_dir, device=device, resume=resume,
                      progress=progress if context.is_main else False, labels=data.species,
                      on_sample=save_sample_grid, metadata={"species_names": data.species_names})
    result: TrainResult = trainer.fit()
    model = result.ema.model.eval() if result.ema is not None else result.model  # the EMA lives on rank 0
    return Run(config, model, trainer.diffusion, data.mean, data.std, run_dir, result.history, result.step,
               data.species_names, trainer.engine())


def _start_from(model: nn.Module, config: Config, device) -> None:
    """Load the EMA weights of the finished run ``config.train.init_from`` into ``model``: every weight
    the two networks share (a conditional network starting from an unconditional one keeps its new,
    zero-initialised class layers, so it starts as exactly that network)."""
    source = load_run(paths.run_dir(config.profile, config.train.init_from), device="cpu")
    if identity_differences(source.config, _unconditional(config)):
        raise RunMismatchError(f"train.init_from={config.train.init_from!r} is another network: "
                               + "; ".join(identity_differences(source.config, _unconditional(config))))
    missing, unexpected = model.load_state_dict(source.model.state_dict(), strict=False)
    if unexpected or any(not (k.startswith("class_embedding") or ".film." in k) for k in missing):
        raise RunMismatchError(f"train.init_from={config.train.init_from!r}: weights do not fit "
                               f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def _unconditional(config: Config) -> Config:
    import copy

    plain = copy.deepcopy(config)
    plain.model.num_classes = None
    return plain


def _check_species(config: Config, data: TrainingData) -> None:
    classes = config.model.num_classes
    if classes is not None and classes != len(data.species_names):
        raise ValueError(f"model.num_classes={classes}, but the data have {len(data.species_names)} species; set "
                         f"--num-classes {len(data.species_names)}")


def species_index(names: list[str], query: str | int) -> int:
    """The species index of ``query``: an index, or a name (case and ``_`` / space ignored); an
    unknown name lists the closest matches."""
    import difflib

    if isinstance(query, int) or str(query).isdigit():
        index = int(query)
        if not 0 <= index < len(names):
            raise ValueError(f"species index {index} is out of range: 0..{len(names) - 1}")
        return index
    key = str(query).lower().replace("_", " ").strip()
    simple = [n.lower().replace("_", " ") for n in names]
    if key in simple:
        return simple.index(key)
    partial = [i for i, n in enumerate(simple) if key in n]
    if len(partial) == 1:
        return partial[0]
    close = difflib.get_close_matches(key, simple, n=5, cutoff=0.4)
    hint = [names[simple.index(c)] for c in close] or [names[i] for i in partial[:5]]
    raise ValueError(f"unknown species {query!r}" + (f"; did you mean: {', '.join(hint)}?" if hint else
                                                     f"; the run knows {len(names)} species, e.g. {names[:5]}"))
