"""ddpm_lib: DDPM and DDIM on Caltech-UCSD Birds at 64x64, the helper package of the course notebooks.

Seven parts, one folder or module each (``shared/DESIGN.md``; ``tests/test_layout.py`` keeps the
imports between them one-way):

* the bottom, used by all: ``paths``, ``device`` (device, precision, compile), ``transforms`` (pixels),
  ``study`` (the study's numbers);
* ``math/``: ``schedules`` (betas), ``diffusion`` (q(x_t | x_0), eps / x0 / v, the loss), ``sampling``
  (``SamplerSpec``, ``Denoiser``, DDPM, DDIM, DPM-Solver++);
* ``models/``: ``BaselineUNet``, ``SmallUNet``;
* ``data/``: download, CUB metadata and cache, the synthetic replica;
* ``config``: the typed settings and the profiles;
* ``engine/``: the training loop, EMA, checkpoints, torchrun, metrics logging;
* ``evaluation/``: KID / FID, the species classifier, :func:`evaluate`; ``show/``: figures, tables, sliders;
* the wiring on top: ``build`` (config -> network), ``experiment`` (config -> trained ``Run``;
  ``Run.sample``), ``pipeline`` (the notebooks), ``colab``, and the command line (``__main__``).

The names below are the public API: notebooks import them from here (``from ddpm_lib import Run,
SamplerSpec``), so a module can move without breaking them. They load on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_PUBLIC = {
    "ddpm_lib.config": ("Config", "get_profile", "run_name"),
    "ddpm_lib.experiment": ("Run", "Samples", "Yardstick", "load_run", "load_study_runs", "load_training_data",
                            "run_experiment", "species_index", "study_configs", "study_samplers", "untrained_like",
                            "yardstick"),
    "ddpm_lib.build": ("build_diffusion", "build_model"),
    "ddpm_lib.math.schedules": ("NoiseSchedule", "get_named_schedule"),
    "ddpm_lib.math.diffusion": ("GaussianDiffusion",),
    "ddpm_lib.math.sampling": ("Denoiser", "ImageGenerators", "SamplerSpec", "ddim_sample", "ddpm_sample",
                               "dpm_solver_sample", "image_seed", "sample", "sampling_timesteps", "slerp",
                               "standardized_range"),
    "ddpm_lib.models": ("BaselineUNet", "SmallUNet", "count_parameters"),
    "ddpm_lib.models.blocks": ("noise_variance_embedding", "timestep_embedding"),
    "ddpm_lib.engine.ema": ("EMA",),
    "ddpm_lib.engine.train": ("Trainer",),
    "ddpm_lib.evaluation.scoring": ("Evaluation", "Inception", "ReferenceSet", "evaluate"),
    "ddpm_lib.evaluation.classifier": ("accuracy", "confident_share", "feature_scores", "probabilities", "rate_column",
                                     "rates"),
    "ddpm_lib.evaluation.metrics": ("kid_fid", "nearest_neighbours"),
    "ddpm_lib.engine.tracking": ("gpu_power_watts",),
    "ddpm_lib.data.cub": ("PreprocessOptions", "crop_region", "load_cache", "process_image", "read_metadata"),
    "ddpm_lib.data.prepare": ("options_from_config", "prepare_from_config", "raw_root_from_config"),
    "ddpm_lib.data.synthetic": ("render_dataset",),
    "ddpm_lib.device": ("choose_precision", "default_device", "describe", "device_name"),
    "ddpm_lib.transforms": ("destandardize", "nhwc_to_nchw", "standardize", "to_model_space", "to_uint8_hwc"),
    "ddpm_lib.show.reporting": ("save_figure", "save_table", "stamp", "text_table", "write_report_inputs",
                                "written_files"),
    "ddpm_lib.show.viz": ("BackwardExplorer", "ForwardExplorer", "GuidanceExplorer", "SDEditExplorer", "image_grid",
                          "label_points", "process_strip", "save_image_grid"),
}
_HOME = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'ddpm_lib' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
