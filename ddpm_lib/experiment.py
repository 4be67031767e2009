"""From a config to a trained run, and from a trained run to images: the calls notebooks 03-07 and
the command line share.

``run_experiment(config)`` prepares the data the config names, builds the network and the
diffusion, and trains, resuming a killed run from its newest checkpoint and reusing a finished run
instead of training again; a run folder that holds another network, diffusion or data is refused,
never silently resumed. ``load_run(run_dir)`` gives back a finished run's EMA network, and
``Run.sample(n, spec, seed=...)`` is the one way to draw images from a run: it readies the network,
builds the :class:`~ddpm_lib.math.sampling.Denoiser` (labels, guidance, x0 clipped to the data's
pixel range, the device's precision), draws each image's noise from its own seed and runs the
sampler the :class:`~ddpm_lib.math.sampling.SamplerSpec` names. Training's sample grids,
``python -m ddpm_lib sample | evaluate | demo``, the evaluation and the notebooks all go through it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddpm_lib import paths
from ddpm_lib.build import build_diffusion, build_model
from ddpm_lib.config import Config, get_profile, run_manifest, run_name
from ddpm_lib.data.cub import data_identity, load_cache
from ddpm_lib.data.prepare import prepare_from_config
from ddpm_lib.device import choose_precision, compile_supported, resolve_device
from ddpm_lib.engine import checkpoints
from ddpm_lib.engine.distributed import barrier, init_from_environment
from ddpm_lib.engine.train import RunMismatchError, Trainer, TrainResult
from ddpm_lib.evaluation.classifier import ClassifierSettings, TrainedClassifier, classifier_for
from ddpm_lib.evaluation.metrics import choose_inception_weights, real_cache_name
from ddpm_lib.evaluation.scoring import Inception, ReferenceSet
from ddpm_lib.identity import SET_ASIDE, IdentityMismatch, Manifest, move_aside, read_manifest, require_same
from ddpm_lib.math.diffusion import GaussianDiffusion
from ddpm_lib.math.graphed import SamplingGraphs, default_backend
from ddpm_lib.math.sampling import (
    Denoiser,
    ImageGenerators,
    SamplerSpec,
    Trajectory,
    image_seed,
    sample,
    standardized_range,
)
from ddpm_lib.transforms import nhwc_to_nchw, to_uint8_hwc


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


# Images per sampling batch: bounds the memory (2,350 SmallUNet images in one fp32 batch took 17.6 GB
# on an H200, more than a T4's 15 GB) and keeps batches large enough to fill a GPU.
SAMPLING_BATCH_SIZE = 256


@dataclass
class Samples:
    """Images drawn by :meth:`Run.sample`, and what drew them.

    Attributes:
        images: uint8 (N, H, W, 3), ready to show, save or score.
        latents: the sampler's output, float32 (N, 3, H, W) in the standardized data space, on the CPU.
        spec: the sampler setting that drew them (DDPM's steps resolved to T; guidance 1 for unlabelled draws).
        seed: the draw's seed; image i's start noise and per-step noise come from ``image_seed(seed, i)``.
        labels: the species of each image (N,), or None (unconditional).
        trajectory: x_t and the predicted x0 every ``trajectory_every`` steps, or None.
        seconds: the wall time of the draw.
    """

    images: np.ndarray
    latents: torch.Tensor
    spec: SamplerSpec
    seed: int
    labels: torch.Tensor | None = None
    trajectory: Trajectory | None = None
    seconds: float = 0.0


@dataclass
class Run:
    """A trained run: the EMA network (eval mode), its diffusion, data statistics and folder."""

    config: Config
    model: nn.Module
    diffusion: GaussianDiffusion
    mean: torch.Tensor
    std: torch.Tensor
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    step: int = 0
    species_names: list[str] = field(default_factory=list)
    engine: dict = field(default_factory=dict)  # how it trained: device, precision, graph, compile
    manifest: Manifest | None = None  # what made it: its data, network, diffusion, recipe (identity.py)
    _compiled: nn.Module | None = field(default=None, repr=False, compare=False)
    _graphs: SamplingGraphs | None = field(default=None, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> int:
        return self.config.data.image_size

    @property
    def identity(self) -> str | None:
        """The run's identity (its manifest's), None for a network that was never a recorded run."""
        return self.manifest.identity if self.manifest is not None else None

    @property
    def data_identity(self) -> str | None:
        """The identity of the data cache the run learned from (None where unrecorded)."""
        data = self.manifest.inputs.get("data") if self.manifest is not None else None
        return None if data in (None, "unrecorded") else data

    def sample(self, num_samples: int, spec: SamplerSpec | str | None = None, *, seed: int = 0,
               batch_size: int | None = SAMPLING_BATCH_SIZE, labels=None, noise: torch.Tensor | None = None,
               trajectory_every: int | None = None, compile_network: bool = False,
               cuda_graph: bool | None = None) -> Samples:
        """Draw ``num_samples`` images from the EMA weights: the one way to sample a trained run.

        Args:
            spec: the sampler setting (a :class:`SamplerSpec` or its name, ``"DDIM-50 eta 1"``); None: the
                run's profile's (``config.sample``).
            seed: image i's start noise and per-step noise come from its own generator, seeded by
                ``image_seed(seed, i)``: the same whatever ``batch_size`` or ``num_samples``.
            batch_size: images per sampling batch (None: all at once); :data:`SAMPLING_BATCH_SIZE` by default.
            labels: a conditional run's species, one per image (N,) or one index for all; None draws
                unconditionally (the "no label" index), and ``spec.guidance`` then does not apply.
            noise: start noise x_T (N, 3, H, W) to use instead of the seeded draw (interpolations,
                the same noise under several samplers).
            trajectory_every: also record x_t and the predicted x0 every this many sampler steps.
            compile_network: ``torch.compile`` the network once (where the card supports it) and keep it.
            cuda_graph: replay each batch's whole sampling loop from a CUDA graph recorded once per (batch,
                setting) and kept on the run (``math/graphed.py``; on CUDA, deterministic settings, no
                trajectory); None: as ``compile_network``.
        """
        started = time.perf_counter()
        spec = SamplerSpec.parse(spec) if spec is not None else self.config.sample
        labels = self._labels(labels, num_samples)
        self._check_unconditional_use(labels, spec)
        spec = (spec if labels is not None else spec.replace(guidance=1.0)).for_diffusion(self.diffusion.num_steps)
        device, size = self.device, self.image_size
        network = self._network(compile_network)
        graphs = self._sampling_graphs(compile_network if cuda_graph is None else cuda_graph)
        draw = graphs.sample if graphs is not None else sample
        if noise is not None and tuple(noise.shape) != (num_samples, 3, size, size):
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {(num_samples, 3, size, size)}")
        batch_size = min(batch_size or num_samples, num_samples)
        # a compiled network and a recorded loop see one batch shape: pad the last batch
        padded = network is self._compiled or (graphs is not None and graphs.wants(spec, trajectory_every))
        latents, trajectories = [], []
        for start in range(0, num_samples, batch_size):
            count = batch_size if padded else min(batch_size, num_samples - start)
            index = range(start, start + count)
            generators = ImageGenerators([image_seed(seed, i) for i in index], device)
            x_T = generators.randn((count, 3, size, size))
            if noise is not None:
                given = noise[start:start + count].to(device, torch.float32)
                x_T[: len(given)] = given
            batch_labels = None if labels is None else labels[[min(i, num_samples - 1) for i in index]]
            denoiser = self.denoiser(batch_labels, spec.guidance, network)
            out = draw(denoiser, self.diffusion, x_T, spec, generators, trajectory_every=trajectory_every)
            kept = min(count, num_samples - start)
            latents.append(out.images[:kept].float().cpu())
            if out.trajectory is not None:
                trajectories.append(out.trajectory)
        latents = torch.cat(latents)
        trajectory = None
        if trajectories:
            kept = [min(batch_size, num_samples - s) for s in range(0, num_samples, batch_size)]
            trajectory = Trajectory(trajectories[0].timesteps,
                                    torch.cat([t.x_t[:, :k] for t, k in zip(trajectories, kept)], dim=1),
                                    torch.cat([t.pred_x0[:, :k] for t, k in zip(trajectories, kept)], dim=1))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return Samples(to_uint8_hwc(latents, self.mean, self.std), latents, spec, seed, labels, trajectory,
                       time.perf_counter() - started)

    def denoiser(self, labels=None, guidance: float | None = None, network: nn.Module | None = None) -> Denoiser:
        """The network as the samplers see it, ``(x_t, t) -> (eps, x0)``: x0 clipped to the data's pixel
        range, the network in the device's precision, ``labels`` and ``guidance`` for a conditional run."""
        low, high = standardized_range(torch.as_tensor(self.mean).tolist(), torch.as_tensor(self.std).tolist())
        clip = (low.float().to(self.device), high.float().to(self.device))
        return Denoiser(network if network is not None else self.model.eval(), self.diffusion, labels, guidance, clip,
                        choose_precision(self.device))

    def _check_unconditional_use(self, labels, spec: SamplerSpec) -> None:
        """A conditional run trained without label dropout never learned its "no label" prediction, which
        unlabelled draws and guidance (w != 1) use: refuse them instead of drawing from an untrained embedding."""
        if self.config.model.num_classes is None or self.config.train.label_dropout > 0:
            return
        if labels is None or spec.guidance != 1.0:
            what = "unlabelled draws" if labels is None else f"guidance w = {spec.guidance:g}"
            raise ValueError(f"{self.run_dir.name} was trained with train.label_dropout = 0, so it never learned the "
                             f"unconditional prediction that {what} need; draw with species labels and guidance 1, "
                             "or train with label dropout")

    def _labels(self, labels, num_samples: int) -> torch.Tensor | None:
        if labels is None:
            return None
        if self.config.model.num_classes is None:
            raise ValueError(f"species labels need a conditional run; {self.run_dir.name} was trained without "
                             "model.num_classes")
        labels = torch.as_tensor(labels, dtype=torch.long)
        return labels.expand(num_samples).clone() if labels.ndim == 0 else labels

    @property
    def sampling_graphs(self) -> SamplingGraphs | None:
        """The sampling loops recorded so far (``Run.sample(cuda_graph=True)``), or None."""
        return self._graphs

    def _sampling_graphs(self, wanted: bool) -> SamplingGraphs | None:
        """The run's recorded sampling loops when ``wanted`` and the device has graphs, else None."""
        if wanted and self._graphs is None:
            backend = default_backend(self.device)
            self._graphs = SamplingGraphs(backend) if backend is not None else None
        return self._graphs if wanted else None

    def _network(self, compile_network: bool) -> nn.Module:
        """The network ready to sample: eval mode, channels_last on CUDA, and compiled once when asked
        (where the card supports it), with static shapes, kept for later calls."""
        model = self.model.eval()
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        if not (compile_network and compile_supported(self.device)):
            return model
        if self._compiled is None:
            self._compiled = torch.compile(model, dynamic=False)
        return self._compiled


def load_run(run_dir: str | Path, device=None) -> Run:
    """Load the newest checkpoint of ``run_dir`` (EMA weights) for sampling and evaluation."""
    run_dir = Path(run_dir)
    state, path = checkpoints.load_latest(run_dir / "checkpoints", map_location="cpu")
    if state is None:
        raise FileNotFoundError(f"{run_dir}: no readable checkpoint; train the run first")
    config = Config.from_dict(state["config"])
    model = build_model(config.model, config.data.image_size)
    model.load_state_dict(state["ema"]["model"])
    names = state.get("metadata", {}).get("species_names", [])
    recorded = Manifest.from_dict(state["manifest"]) if state.get("manifest") else None
    return Run(config, model.to(resolve_device(device)).eval(),
               build_diffusion(config.diffusion).to(resolve_device(device)), state["mean"], state["std"], run_dir,
               state.get("history", []), int(state["step"]), names, state.get("engine", {}), recorded)


def untrained_like(run: Run) -> Run:
    """The network ``run`` started from (its seed's initial weights), as a run: the floor of every score."""
    torch.manual_seed(run.config.train.seed)
    model = build_model(run.config.model, run.config.data.image_size).to(run.device).eval()
    return Run(run.config, model, run.diffusion, run.mean, run.std, run.run_dir, [], 0, run.species_names)


def save_sample_grid(trainer: Trainer, seed: int = 1234) -> Path | None:
    """Training's sample grid (the ``on_sample`` callback): the EMA weights' samples with the run's
    sampler setting (``config.sample``), the same start noise every time, to
    ``samples/step_<step>.png``. A conditional run shows the species in turn, guided as the setting says."""
    from ddpm_lib.show.viz import save_image_grid

    if trainer.run_dir is None:
        return None
    count = trainer.settings.num_grid_samples
    labels = torch.arange(count) % trainer.num_classes if trainer.num_classes is not None else None
    run = Run(trainer.config, trainer.ema.model, trainer.diffusion, trainer.mean, trainer.std, trainer.run_dir,
              step=trainer.step)
    spec = trainer.config.sample
    if trainer.settings.label_dropout == 0:  # no unconditional prediction learned: no guidance
        spec = spec.replace(guidance=1.0)
    pixels = run.sample(count, spec, seed=seed, labels=labels).images
    folder = trainer.run_dir / "samples"
    folder.mkdir(exist_ok=True)
    return save_image_grid(nhwc_to_nchw(pixels), folder / f"step_{trainer.step:08d}.png")




def study_configs(profile: str | None = None, overrides: dict | None = None) -> dict[str, Config]:
    """The runs the study compares, by role (``config.STUDY_RUNS``): the BaselineUNet (notebook 03), the
    SmallUNet (04), the SmallUNet with attention (04) and the SmallUNet on the other schedule (05),
    each side run as long as the profile's ``train.comparison_steps`` says. ``overrides`` change the
    SmallUNet before its side runs are derived (``Config.override``). Notebooks 03-06 train and score
    exactly these. ``profile`` None: ``$DDPM_PROFILE``, else demo (``config.get_profile``)."""
    small = get_profile(profile, model="small_unet").override(overrides)
    other = "cosine" if small.diffusion.schedule == "linear" else "linear"

    def side(kind: str, changes: dict) -> Config:
        steps = small.train.comparison_steps.get(kind)
        return small.override({**changes, **({"train.steps": steps, "train.epochs": None} if steps else {})})

    return {"baseline": get_profile(profile, model="baseline_unet"), "small": small,
            "small_attention": side("attention", {"model.attention": True}),
            "small_other_schedule": side("other_schedule", {"diffusion.schedule": other})}


def study_samplers(runs: dict[str, Run], settings, profile: str) -> dict[str, list]:
    """The sampler settings each of the study's ``runs`` (name -> run) is scored with: ``settings``
    (an ``EvaluationConfig``) decides by the run's network and its role in the study (:func:`study_configs`)."""
    roles = {run_name(config): role for role, config in study_configs(profile).items()}
    return {name: settings.samplers_for(run.config.model.name, roles.get(name)) for name, run in runs.items()}


def load_study_runs(profile: str, device=None) -> dict[str, Run]:
    """The study's runs (:func:`study_configs`) that are trained, loaded; the missing ones are named."""
    runs = {}
    for config in study_configs(profile).values():
        name = run_name(config)
        folder = paths.run_dir(config.profile, name)
        if (folder / "checkpoints").is_dir():
            runs[name] = load_run(folder, device=device)
        else:
            print(f"{name}: not trained yet ({folder}; notebooks 03-05 train it); skipped")
    return runs


@dataclass
class Yardstick:
    """What samples are scored against: the test split (and the training split, for the floors), where
    the data can be drawn anew the population (fresh renders), the calibrated species classifier trained
    on the same split, its validity table, and the Inception weights with their label (None: no
    Inception columns)."""

    reference: ReferenceSet
    classifier: TrainedClassifier
    inception: Inception | None
    cache_path: Path
    species_names: list[str] = field(default_factory=list)
    test_species: np.ndarray | None = None  # 0-based species of each test image
    validity: list[dict] = field(default_factory=list)  # evaluation.validity.validity_table's rows
    checks: dict = field(default_factory=dict)  # evaluation.validity.validity_checks of those rows

    @property
    def data_identity(self) -> str:
        """The identity of the data cache whose splits this yardstick holds."""
        return data_identity(self.cache_path)

    def inputs(self, runs: dict | None = None) -> dict:
        """The identities of what a table or figure scored with this yardstick shows, for its manifest
        (``save_table(..., inputs=stick.inputs(runs))``): the data, the classifier and each run."""
        made = {"data": self.data_identity, "classifier": self.classifier.identity}
        made.update({f"run {name}": run.identity for name, run in (runs or {}).items()})
        return made

    def check(self, runs) -> None:
        """Refuse to score a run on data other than its own: every run (a ``Run`` or a dict of them)
        must have learned from this yardstick's data cache, whose test split it would be scored on."""
        for run in runs.values() if isinstance(runs, dict) else [runs]:
            if run.data_identity is None:
                raise IdentityMismatch(f"{run.run_dir} does not record the data it learned from (made before runs "
                                       "recorded their data); retrain it (--retrain) to score it")
            if run.data_identity != self.data_identity:
                raise IdentityMismatch(
                    f"{run.run_dir} learned from data {run.data_identity}, but this test split belongs to data "
                    f"{self.data_identity} ({self.cache_path.name}); score it with the data it was trained on "
                    "(the same profile and data location), or retrain it on these data")


def yardstick(config: Config, *, inception: bool = True, weights=None, data_dir=None, device=None,
              progress: bool = True, population: bool = True) -> Yardstick:
    """The yardstick of ``config``'s data: its cache's splits; its species classifier (K + 1 outputs,
    calibrated; trained once, ``config.evaluation.classifier_steps`` steps, then reused), read at
    ``config.evaluation.thresholds``; for the synthetic replica and ``population``, fresh renders (as
    many as the training split, and N more scored as a reference row) and the validity table's grey and
    repainted renders; and, when ``inception``, Inception weights as ``config.evaluation.inception`` says
    (``metrics.choose_inception_weights``)."""
    from ddpm_lib.data.synthetic import RENDER_VERSION, render_dataset
    from ddpm_lib.evaluation.validity import validity_checks, validity_sets, validity_table

    settings = config.evaluation
    cache_path = prepare_from_config(config.data, progress=False, data_dir=data_dir)
    cache, split = load_cache(cache_path), config.data.split
    train, test, test_species = cache.train_images(split), cache.test_images(split), cache.test_species(split)
    reference = ReferenceSet(train, test, real_cache_name(cache_path, split))
    classifier = classifier_for(cache_path, split, ClassifierSettings(settings.classifier_steps), settings.thresholds,
                                settings.headline_threshold, device=resolve_device(device), progress=progress)
    fresh = grey = repainted = None
    if population and config.data.source == "synthetic":
        options = cache.options  # the cache's own crop: fresh renders go through the same

        def render(count: int, first: int = 0, look: str = "colour") -> tuple[np.ndarray, np.ndarray]:
            images, labels = render_dataset(count, len(cache.species_names), options["image_size"], config.data.seed,
                                            first=first, look=look, crop=options["crop"], margin=options["margin"])
            return images, labels - 1

        num_samples = settings.num_samples or len(test)
        fresh = render(len(train))
        reference.population, reference.fresh_draw = fresh[0], render(num_samples, first=len(train))[0]
        reference.population_cache_name = real_cache_name(cache_path, split,
                                                          f"fresh{len(train)}-renderer{RENDER_VERSION}")
        grey, repainted = render(len(test), look="grey"), render(len(test), look="repainted")
    validity = validity_table(classifier, validity_sets(test, test_species, fresh, grey, repainted, settings.seed))
    scorer = None
    if inception and settings.inception != "off":
        chosen = choose_inception_weights(weights, config.data.source, test[:32],
                                          standin=settings.inception == "standin")
        if chosen is not None:
            scorer = Inception(*chosen, settings.inception_samples, settings.inception_first_sampler_only)
    return Yardstick(reference, classifier, scorer, cache_path, cache.species_names, test_species, validity,
                     validity_checks(validity, settings.headline_threshold, len(cache.species_names)))


def run_experiment(config: Config, name: str | None = None, resume: str | None = "latest", retrain: bool = False,
                   device=None, progress: bool | str = True, data_dir=None,
                   extend: bool = False) -> Run:
    """Train the run ``<runs>/<profile>/<name>`` (``paths.run_dir``) unless it is already finished; return it.

    Args:
        config: everything about the run.
        name: the run's folder name (default :func:`~ddpm_lib.config.run_name`).
        resume: ``"latest"`` continues a killed run of the same identity; None trains afresh.
        retrain: train afresh even if the run is finished. Afresh (``retrain`` or ``resume=None``): the
            old run's files, all of them (checkpoints, grids, metrics, evaluation rows, W&B), are moved
            aside to ``<run>/set-aside/<time>/``, never deleted, and the new run gets a new W&B id.
        progress: ``"bar"``, ``"lines"`` (papermill, logs) or ``"none"``; True / False: bar / none.
        data_dir: a CUB archive or folder (as ``prepare --data-dir``).
        extend: let a finished run with a decaying learning rate train on to a longer ``train.steps``
            (a warm restart, recorded in the run).

    Identity (``identity.py``): the run's manifest holds the identity of the data cache it trains on,
    its network, diffusion and recipe (``config.run_manifest``), and the identity of the run it starts
    from. A run in the folder is reused or resumed only when its identity is the same; otherwise the
    refusal names every differing entry. Under ``torchrun`` every process runs this; rank 0 prepares the
    data first and alone writes files.
    """
    config.validate()
    name = name or run_name(config)
    context = init_from_environment(device)
    device = context.device or device
    run_dir = paths.run_dir(config.profile, name)
    checkpoint_dir = run_dir / "checkpoints"
    quiet = progress in (False, "none") or not context.is_main
    if not context.is_main:
        barrier(context)  # wait until rank 0 has prepared the cache
    data = load_training_data(config, progress=not quiet, data_dir=data_dir)
    if context.is_main:
        barrier(context)
    _check_species(config, data)
    start = _start_identity(config)
    wanted = run_manifest(config, data_identity(data.cache_path), start)
    total = config.train.total_steps(data.images.shape[0])
    state, _ = checkpoints.load_latest(checkpoint_dir, warn=False)
    afresh = retrain or resume is None
    if state is not None and not afresh:
        require_same(state.get("manifest"), wanted, f"the run in {run_dir}",
                     "Choose another run name, or --retrain to set the old run aside and train afresh.")
        if state["step"] >= total:
            if not quiet:
                print(f"reusing the finished run in {run_dir} ({state['step']} steps)")
            return load_run(run_dir, device)
    if afresh and context.is_main and run_dir.exists():
        moved = set_aside_run(run_dir)
        if moved is not None and not quiet:
            print(f"moved the earlier run's files aside to {moved}")
    torch.manual_seed(config.train.seed)  # the network's initial weights follow the seed
    model = build_model(config.model, config.data.image_size)
    if config.train.init_from and (afresh or state is None):
        _start_from(model, config, device)
    trainer = Trainer(model, build_diffusion(config.diffusion), data.images, data.mean, data.std, config,
                      run_dir=run_dir, checkpoint_dir=checkpoint_dir, device=device,
                      resume=None if afresh else "latest", progress=progress if context.is_main else False,
                      labels=data.species, on_sample=save_sample_grid,
                      metadata={"species_names": data.species_names}, manifest=wanted, extend=extend)
    result: TrainResult = trainer.fit()
    model = result.ema.model.eval() if result.ema is not None else result.model  # the EMA lives on rank 0
    return Run(config, model, trainer.diffusion, data.mean, data.std, run_dir, result.history, result.step,
               data.species_names, trainer.engine(), wanted)


def set_aside_run(run_dir: Path) -> Path | None:
    """Move everything of a run folder (but earlier set-aside runs) into ``<run>/set-aside/<time>/``."""
    entries = [p for p in run_dir.iterdir() if p.name != SET_ASIDE]
    if not entries:
        return None
    target = None
    for entry in entries:
        target = move_aside(entry, into=run_dir).parent
    return target


def _start_identity(config: Config) -> str | None:
    """The identity of the run ``train.init_from`` names (None when the run starts from scratch)."""
    if not config.train.init_from:
        return None
    source = paths.run_dir(config.profile, config.train.init_from)
    recorded = read_manifest(source / "manifest.json")
    if recorded is None:
        raise FileNotFoundError(f"train.init_from={config.train.init_from!r}: {source} holds no finished run with "
                                "a recorded identity; train it first")
    return recorded.identity


def _start_from(model: nn.Module, config: Config, device) -> None:
    """Load the EMA weights of the finished run ``config.train.init_from`` into ``model``: every weight
    the two networks share (a conditional network starting from an unconditional one keeps its new,
    zero-initialised class layers, so it starts as exactly that network)."""
    source = load_run(paths.run_dir(config.profile, config.train.init_from), device="cpu")
    plain = _unconditional(config)
    differences = {section: (getattr(source.config, section), getattr(plain, section))
                   for section in ("model", "diffusion", "data")
                   if getattr(source.config, section) != getattr(plain, section)}
    if differences:
        raise RunMismatchError(f"train.init_from={config.train.init_from!r} is another network: "
                               + "; ".join(f"{k}: {a} in it, {b} asked for" for k, (a, b) in differences.items()))
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
