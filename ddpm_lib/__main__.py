"""Command line: ``python -m ddpm_lib prepare | train | sample | evaluate | notebooks | summary | demo |
colab-links``.

* ``prepare``: download (or find, or synthesise) CUB-200-2011, extract it safely, crop, resize and
  cache it (``ddpm_lib.data.prepare``). A second run does nothing.
* ``train``: train a network with a profile's settings (``ddpm_lib.experiment``); ``--resume
  latest`` (the default) continues a killed run, a finished run is reused.
* ``sample``: draw images from a trained run's EMA weights (PNG grid + uint8 ``.npz``), with DDPM,
  DDIM or DPM-Solver++; ``--species NAME --guidance W`` for a conditional run.
* ``evaluate``: score a trained run with the profile's sampler settings against the test split: species-classifier
  features, the recognisable-bird rate, KID / FID (``ddpm_lib.evaluation.scoring``).
* ``notebooks``: execute the notebooks in order under a profile (papermill); ``summary``: what
  such a run wrote, and where (``ddpm_lib.pipeline``).
* ``colab-links``: point the "Open in Colab" badges and each notebook's set-up cell at the repository
  (``[project.urls] Repository`` in ``pyproject.toml``, or ``--repo``), after the repository moves.
* ``demo``: the main job on the embedded synthetic data: build the synthetic CUB-format archive,
  run it through the real preprocessing, train the profile's network, sample from the EMA weights,
  and write grids, metrics and checkpoints under ``runs/<profile>/demo/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ddpm_lib import paths
from ddpm_lib.config import get_profile, run_name
from ddpm_lib.data.cub import CROPS, NON_RGB_POLICIES, SOURCES, load_cache
from ddpm_lib.data.download import CUB_MD5
from ddpm_lib.data.prepare import options_from_config, prepare
from ddpm_lib.math.sampling import SAMPLERS
from ddpm_lib.math.schedules import SCHEDULE_NAMES
from ddpm_lib.models import MODEL_NAMES


def run_prepare(args) -> int:
    config = get_profile(args.profile)
    source = args.source or ("cub" if args.data_dir else config.data.source)
    if source == "synthetic" and args.data_dir:
        raise ValueError("--data-dir points at real CUB data; drop --source synthetic to use it")
    options = options_from_config(config.data, image_size=args.image_size, crop=args.crop, non_rgb=args.non_rgb)
    extra = {"urls": args.url} if args.url else {}
    cache_path = prepare(source=source, data_dir=args.data_dir, options=options, md5=args.md5 or CUB_MD5,
                         synthetic_images=config.data.num_synthetic_images,
                         synthetic_classes=config.data.num_synthetic_classes, synthetic_seed=config.data.seed,
                         workers=args.workers, **extra)
    counts = load_cache(cache_path).manifest["counts"]
    print(f"cache: {cache_path}")
    print("counts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def parse_settings(pairs: list[str] | None) -> dict:
    """``["train.lr=1e-3", "model.attention=True"]`` -> ``{"train.lr": 0.001, "model.attention": True}``
    (values read as Python literals where they are one, else as text)."""
    import ast

    values = {}
    for pair in pairs or []:
        key, equals, text = pair.partition("=")
        if not equals:
            raise ValueError(f"--set {pair!r}: write it as section.key=value, e.g. train.lr=1e-3")
        try:
            values[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            values[key.strip()] = text.strip()
    return values


def configure(args):
    """The profile's config with the command line's changes, through ``Config.override`` (checked)."""
    if getattr(args, "runs_dir", None):
        paths.RUNS_DIR = Path(args.runs_dir).expanduser().resolve()  # train, sample and evaluate alike
    config = get_profile(args.profile, model=getattr(args, "model", None))
    changes = {}
    if getattr(args, "attention", False):
        changes["model.attention"] = True
    if getattr(args, "schedule", None):
        changes["diffusion.schedule"] = args.schedule
    if getattr(args, "num_classes", None) is not None:
        changes["model.num_classes"] = args.num_classes
    if getattr(args, "train_steps", None) is not None:
        changes.update({"train.steps": args.train_steps, "train.epochs": None})
    if getattr(args, "batch_size", None) is not None and args.command in ("train", "demo"):
        changes["train.batch_size"] = args.batch_size
    if getattr(args, "no_cuda_graph", False):
        changes["train.cuda_graph"] = False
    if getattr(args, "no_compile", False):
        changes["train.compile"] = False
    config = config.override({**changes, **parse_settings(getattr(args, "set", None))})
    if getattr(args, "data_dir", None) and config.data.source == "synthetic":
        raise ValueError(f"--data-dir {args.data_dir} is for real CUB data, but profile {config.profile!r} uses the "
                         "synthetic replica (data.source = synthetic); drop --data-dir, or use --profile colab or full")
    return config


def sampler_spec(base, args):
    """The sampler setting to use: the run's profile's (``config.sample``) with the options given. A
    sampler other than the profile's keeps only what it takes (DDPM: all T steps; eta: DDIM only)."""
    changes = {key: getattr(args, key) for key in ("sampler", "steps", "eta", "guidance")
               if getattr(args, key, None) is not None}
    if changes.get("sampler", base.sampler) != base.sampler:
        changes.setdefault("eta", 0.0)
        if changes["sampler"] == "ddpm" or base.sampler == "ddpm":
            changes.setdefault("steps", None)
    return base.replace(**changes)


def run_train(args) -> int:
    """Train one run; under ``torchrun --nproc_per_node=N`` the N processes share the work (DDP)."""
    from ddpm_lib.engine.distributed import init_from_environment
    from ddpm_lib.experiment import run_experiment

    config = configure(args)
    context = init_from_environment(args.device)
    try:
        resume = None if args.resume == "none" else "latest"
        run = run_experiment(config, args.run_name or run_name(config), resume=resume,
                             retrain=args.retrain,
                             device=context.device or args.device, progress="bar" if context.is_main else False,
                             data_dir=args.data_dir, extend=args.extend)
    finally:
        if context.enabled:
            torch.distributed.destroy_process_group()
    if context.is_main:
        print(f"run: {run.run_dir} ({run.step} steps)")
    return 0


def _load_run(args):
    """The trained run the command line names: ``--run-name``, else the name the network flags give."""
    from ddpm_lib.experiment import load_run

    config = configure(args)
    name = args.run_name or run_name(config)
    folder = paths.run_dir(config.profile, name)
    if not folder.exists():
        raise FileNotFoundError(f"no run {name!r} in {folder.parent}; train it first (python -m ddpm_lib train "
                                f"--profile {config.profile} ...) or pass --run-name")
    return load_run(folder, device=args.device)


def _species(run, args):
    """The species labels ``--species`` asks for (a name or an index), or None."""
    from ddpm_lib.experiment import species_index

    if args.species is None:
        return None
    if run.config.model.num_classes is None:
        raise ValueError(f"--species needs a conditional run; {run.run_dir.name} was trained without --num-classes")
    return species_index(run.species_names or [str(i) for i in range(run.config.model.num_classes)], args.species)


def run_sample(args) -> int:
    import numpy as np

    from ddpm_lib.show.viz import save_image_grid
    from ddpm_lib.transforms import nhwc_to_nchw

    run = _load_run(args)
    species = _species(run, args)
    batching = {"batch_size": args.batch_size} if args.batch_size else {}
    drawn = run.sample(args.num_samples, sampler_spec(run.config.sample, args), seed=args.seed, labels=species,
                       compile_network=args.compile, **batching)
    label = drawn.spec.name.replace(" ", "_").replace("=", "")
    if run.config.model.num_classes is not None:
        label += f"_species{species}" if species is not None else "_unconditional"
    out = run.run_dir / "samples" / f"{label}_n{args.num_samples}_seed{args.seed}"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out.with_suffix(".npz"), images=drawn.images)
    save_image_grid(nhwc_to_nchw(drawn.images[:64]), out.with_suffix(".png"))
    shown = f" of {run.species_names[species]}" if species is not None and run.species_names else ""
    print(f"{args.num_samples} samples{shown} with {drawn.spec.name} in {drawn.seconds:.1f} s -> "
          f"{out.with_suffix('.npz')}, {out.with_suffix('.png')}")
    return 0


def run_evaluate(args) -> int:
    import json

    from ddpm_lib.evaluation.scoring import evaluate
    from ddpm_lib.experiment import yardstick
    from ddpm_lib.identity import move_aside
    from ddpm_lib.show.reporting import text_table

    run = _load_run(args)
    settings = run.config.evaluation
    given = any(getattr(args, key) is not None for key in ("sampler", "steps", "eta", "guidance"))
    specs = [sampler_spec(run.config.sample, args)] if given else settings.samplers_for(run.config.model.name)
    stick = yardstick(run.config, weights=args.weights, data_dir=args.data_dir, device=args.device, progress=False)
    stick.check(run)  # a run is scored on its own data's test split only
    count = args.num_samples or settings.num_samples or len(stick.reference.test)
    name, labels = run.run_dir.name, None
    if args.species is not None and run.config.model.num_classes is None:
        _species(run, args)  # refused: an unconditional run has no species
    if run.config.model.num_classes is not None:  # a conditional run: say what was drawn
        if args.species == "all":
            labels, name = torch.arange(count) % run.config.model.num_classes, f"{name} (all species in turn)"
        elif args.species is not None:
            labels = _species(run, args)
            name = f"{name} (species {run.species_names[labels] if run.species_names else labels})"
        else:
            name = f"{name} (unconditional)"
    result = evaluate({name: run}, specs, stick.reference, stick.classifier, count, settings.seed,
                      labels=labels, inception=stick.inception, compile_network=args.compile,
                      save_dir=run.run_dir / "evaluation")
    log = run.run_dir / "evaluation" / "results.jsonl"
    stamp = {"profile": run.config.profile, "run identity": run.identity}  # model rows carry it too (evaluate)
    if log.exists() and any(json.loads(line).get("run identity") != run.identity
                            for line in log.read_text().splitlines() if line.strip()):
        print(f"{log} holds rows of another training; moved it aside to {move_aside(log)}")
    with open(log, "a") as handle:  # one file, one training: every row says which
        for row in result.rows + result.references:
            handle.write(json.dumps({**stamp, **row}) + "\n")
    print(text_table(result.table()))
    inception = stick.inception.label if stick.inception is not None else "none (no real weights here)"
    print(f"Inception: {inception}; rows appended to {log}")
    return 0


def run_pipeline(args) -> int:
    from ddpm_lib.pipeline import run_notebooks

    run_notebooks(get_profile(args.profile).profile, args.only)
    return 0


def run_summary(args) -> int:
    from ddpm_lib.pipeline import summary

    config = get_profile(args.profile)
    print(summary(config.profile, config.data.source))
    return 0


def run_demo(args) -> int:
    from ddpm_lib.experiment import load_training_data, run_experiment
    from ddpm_lib.models import count_parameters
    from ddpm_lib.show.viz import save_image_grid
    from ddpm_lib.transforms import nhwc_to_nchw

    config = configure(args)
    if config.data.source != "synthetic":
        print(f"profile {config.profile!r} uses real CUB; the demo runs on synthetic data (use demo or smoke)")
        return 2
    started = time.perf_counter()
    print(f"[1/3] preparing {config.data.num_synthetic_images} synthetic birds at {config.data.image_size}px ...")
    data = load_training_data(config)
    run_dir = paths.run_dir(config.profile, "demo")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_image_grid(data.images[:32], run_dir / "data.png", columns=8)
    print(f"[2/3] training {config.model.name} for {config.train.total_steps(len(data.images))} steps ...")
    run = run_experiment(config, "demo", retrain=True, device=args.device)
    print(f"      {count_parameters(run.model):,} parameters")
    count = config.train.num_grid_samples
    print(f"[3/3] sampling {count} images with {config.sample.name} from the EMA weights ...")
    pixels = run.sample(count, seed=config.train.seed).images
    save_image_grid(nhwc_to_nchw(pixels), run_dir / "samples.png")
    print(f"done in {time.perf_counter() - started:.0f} s. Wrote to {run_dir}:")
    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and "wandb" not in path.parts and "set-aside" not in path.parts:
            print(f"  {path.relative_to(run_dir)}")
    return 0


def run_colab_links(args) -> int:
    from ddpm_lib.colab import project_url, update_links

    url = args.repo or project_url()
    changed = update_links(url, branch=args.branch)
    print(f"Colab links point at {url} (branch {args.branch}); changed: "
          + (", ".join(str(p.relative_to(paths.REPO_ROOT)) for p in changed) or "nothing"))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m ddpm_lib", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="download / extract / preprocess CUB (or the synthetic replica)")
    prep.add_argument("--profile", default=None, help="profile whose data settings to use (default: $DDPM_PROFILE)")
    prep.add_argument("--source", choices=SOURCES, default=None, help="real CUB or the replica")
    prep.add_argument("--data-dir", default=None, help="an archive or CUB_200_2011 folder you already have "
                                                       "(remembered for later commands)")
    prep.add_argument("--url", action="append", help="download URL (repeat for fallbacks)")
    prep.add_argument("--md5", default=None, help="expected archive MD5 (default: the real CUB archive's)")
    prep.add_argument("--image-size", type=int, default=None, help="output side in pixels")
    prep.add_argument("--crop", choices=CROPS, default=None)
    prep.add_argument("--non-rgb", choices=NON_RGB_POLICIES, default=None)
    prep.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")

    def network_options(sub, what: str, data: bool = True) -> None:
        sub.add_argument("--profile", default=None, help="smoke, demo, colab or full (default: $DDPM_PROFILE or demo)")
        sub.add_argument("--model", choices=MODEL_NAMES, default=None, help=f"the network {what}")
        sub.add_argument("--attention", action="store_true", help="SmallUNet with self-attention")
        sub.add_argument("--schedule", choices=SCHEDULE_NAMES, default=None)
        sub.add_argument("--num-classes", type=int, default=None, help="species to condition on (CUB: 200)")
        sub.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
        if data:
            sub.add_argument("--data-dir", default=None, help="a CUB archive or folder (as for prepare)")
        sub.add_argument("--runs-dir", default=None, help="the folder holding one folder per run, e.g. on Google "
                                                          "Drive (default: runs/ in the repository, or $DDPM_RUNS_DIR)")
        sub.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                         help="change any config value, e.g. --set train.lr=1e-3 (repeatable)")

    for name, help_text in (("train", "train a network"), ("demo", "the main job on the synthetic data")):
        sub = commands.add_parser(name, help=help_text)
        network_options(sub, "to train")
        sub.add_argument("--steps", dest="train_steps", type=int, default=None,
                         help="override the profile's training length")
        sub.add_argument("--batch-size", type=int, default=None)
        sub.add_argument("--no-cuda-graph", action="store_true", help="plain eager steps on CUDA")
        sub.add_argument("--no-compile", action="store_true", help="do not torch.compile the network")
        if name == "train":
            sub.add_argument("--run-name", default=None, help="folder under runs/<profile>/ (default: from the "
                                                             "network, schedule, prediction and loss)")
            sub.add_argument("--resume", choices=("latest", "none"), default="latest",
                             help="none: train afresh (the old run's files are moved aside, not deleted)")
            sub.add_argument("--retrain", action="store_true", help="train afresh even if the run is finished "
                                                                    "(the old run's files are moved aside)")
            sub.add_argument("--extend", action="store_true", help="train a finished run with a decaying learning "
                                                                   "rate on to a longer --steps (a warm restart)")
    for name, help_text in (("sample", "draw images from a trained run's EMA weights"),
                            ("evaluate", "score a trained run against the test split (species features, KID, FID)")):
        sub = commands.add_parser(name, help=help_text)
        network_options(sub, "of the run (to find its default name)", data=name == "evaluate")
        sub.add_argument("--run-name", default=None, help="folder under runs/<profile>/ (default: as train names it)")
        defaults = "default: the profile's sample setting" if name == "sample" else "default: the profile's settings"
        sub.add_argument("--sampler", choices=SAMPLERS, default=None, help=f"ddpm, ddim or dpm_solver ({defaults})")
        sub.add_argument("--steps", type=int, default=None, help="DDIM / DPM-Solver++ network calls")
        sub.add_argument("--eta", type=float, default=None, help="DDIM's noise: 0 deterministic, 1 as DDPM")
        sub.add_argument("--guidance", type=float, default=None, help="classifier-free guidance weight w "
                                                                      "(labelled draws of a conditional run)")
        sub.add_argument("--compile", action="store_true", help="compile the network (CUDA)")
        if name == "sample":
            sub.add_argument("-n", "--num-samples", type=int, default=64)
            sub.add_argument("--seed", type=int, default=0, help="image i comes from image_seed(seed, i)")
            sub.add_argument("--batch-size", type=int, default=None, help="images per sampling batch (default: 256)")
            sub.add_argument("--species", default=None, help="a conditional run's species: a name or an index")
        else:
            sub.add_argument("--num-samples", type=int, default=None, help="default: the profile's (the test-set "
                                                                          "size)")
            sub.add_argument("--species", default=None, help="a conditional run's species: a name, an index, or "
                                                             "'all' (each in turn); default: unconditional draws")
            sub.add_argument("--weights", default=None, help="Inception weights file (or $DDPM_INCEPTION_WEIGHTS)")
    notebooks = commands.add_parser("notebooks", help="execute the notebooks in order under a profile (papermill)")
    notebooks.add_argument("--profile", default=None)
    notebooks.add_argument("--only", nargs="*", default=None, help="names such as 03_baseline_unet")
    summary = commands.add_parser("summary", help="what a run of the notebooks wrote, and where")
    summary.add_argument("--profile", default=None)
    links = commands.add_parser("colab-links", help="point the README's and notebooks' Colab badges and set-up "
                                                    "cells at a repository")
    links.add_argument("--repo", default=None, help="https://github.com/<org>/<repo> (default: pyproject.toml's)")
    links.add_argument("--branch", default="main")
    args = parser.parse_args(argv)
    commands_map = {"prepare": run_prepare, "train": run_train, "sample": run_sample, "evaluate": run_evaluate,
                    "demo": run_demo,
                    "notebooks": run_pipeline, "summary": run_summary, "colab-links": run_colab_links}
    from ddpm_lib.engine.checkpoints import CheckpointReadError
    from ddpm_lib.engine.train import TrainingStopped

    try:
        return commands_map[args.command](args)
    except TrainingStopped as stopped:  # SIGINT / SIGTERM: a checkpoint of the step reached was written
        print(stopped, file=sys.stderr)
        return stopped.code
    except (ValueError, FileNotFoundError, RuntimeError, CheckpointReadError) as error:  # one clear line
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
