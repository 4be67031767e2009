"""KID and FID through torch-fidelity, with both image sets built the same way.

The study compared full, uncropped real images resized to 299 px with 64 px samples, and averaged a
hand-written KID per batch; its numbers measure that mismatch as much as the model. Here both sets
are 64x64 uint8 images from the same crop-and-resize path (the cache of ``data/cub.py`` for the real
ones, the sampler's output for the generated ones), handed to torch-fidelity, which resizes both to
299 inside its Inception network. KID uses torch-fidelity's subsets, with the subset size capped
to the smaller set.

Weights: torch-fidelity downloads its Inception weights from GitHub on first use. Offline, point
``DDPM_INCEPTION_WEIGHTS`` (or the ``weights`` argument) at a local copy. For tests and offline CI,
:func:`write_standin_weights` writes a randomly initialised Inception of the right shapes; numbers
computed with it test the plumbing only and are labelled as not comparable.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
STANDIN_LABEL = "stand-in Inception weights (random): numbers test the plumbing only, not comparable"
STUDY_ROW = {"network": "the study's big U-Net", "schedule": "linear", "sampler": "DDIM-5", "FID": 92.47,
             "KID mean": 0.2089, "KID std": None,
             "note": "the study's numbers: uncropped 299 px real images vs 64 px samples, per-batch KID"}


class InceptionWeightsError(RuntimeError):
    """No Inception weights could be found or downloaded."""


class UInt8Images(torch.utils.data.Dataset):
    """A dataset of uint8 images (3, H, W), what torch-fidelity expects.

    Args:
        images: uint8 (N, H, W, 3) array or (N, 3, H, W) tensor.
    """

    def __init__(self, images):
        tensor = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
        if tensor.dtype != torch.uint8:
            raise ValueError(f"KID/FID inputs must be uint8 images, got {tensor.dtype}")
        if tensor.ndim == 4 and tensor.shape[-1] == 3 and tensor.shape[1] != 3:
            tensor = tensor.permute(0, 3, 1, 2)
        self.images = tensor.contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def standin_sidecar(path: str | Path) -> Path:
    return Path(str(path) + ".standin.json")


def is_standin(path: str | Path | None) -> bool:
    """Whether ``path`` was written by :func:`write_standin_weights`."""
    return path is not None and standin_sidecar(path).exists()


def write_standin_weights(path: str | Path, calibration_images, seed: int = 0) -> Path:
    """Write a randomly initialised torch-fidelity Inception with calibrated BatchNorm statistics.

    A fresh Inception (BatchNorm weight 1, running variance 1) gives vanishing features and FID = KID
    = 0 between any sets; one forward pass in train mode with ``momentum=None`` over
    ``calibration_images`` (uint8, a few dozen) sets running statistics so features differ between
    sets as they should. Writes ``path`` and a sidecar saying it is a stand-in.
    """
    from torch_fidelity import feature_extractor_inceptionv3 as fidelity_inception

    cls = fidelity_inception.FeatureExtractorInceptionV3
    original_load, original_url = cls.load_state_dict, fidelity_inception.load_state_dict_from_url
    torch.manual_seed(seed)
    try:  # build the network without loading (or downloading) any weights
        cls.load_state_dict = lambda self, state_dict, *a, **k: None
        fidelity_inception.load_state_dict_from_url = lambda *a, **k: {}
        network = cls("inception-v3-compat", ["2048", "logits_unbiased"])
    finally:
        cls.load_state_dict, fidelity_inception.load_state_dict_from_url = original_load, original_url
    batch_norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for layer in batch_norms:
        layer.momentum = None  # cumulative average over the calibration pass
        layer.reset_running_stats()
        layer.train()
    with torch.no_grad():
        network(UInt8Images(calibration_images).images)
    network.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    standin_sidecar(path).write_text(json.dumps({"label": STANDIN_LABEL, "seed": seed}) + "\n")
    return path


def resolve_weights(weights: str | Path | None = None) -> str | None:
    """The Inception weights file to use: ``weights``, else ``$DDPM_INCEPTION_WEIGHTS``, else None
    (torch-fidelity then uses its download cache in ``$TORCH_HOME/hub/checkpoints`` or downloads)."""
    chosen = weights or os.environ.get("DDPM_INCEPTION_WEIGHTS")
    if chosen is None:
        return None
    if not Path(chosen).is_file():
        raise InceptionWeightsError(f"Inception weights {chosen} not found; fix the path (DDPM_INCEPTION_WEIGHTS or "
                                    f"the weights argument) or download {INCEPTION_URL}")
    return str(chosen)


def kid_fid(generated, real, weights: str | Path | None = None, kid_subset_size: int = 1000, kid_subsets: int = 100,
            device=None, cache_dir: str | Path | None = None, real_cache_name: str | None = None,
            batch_size: int = 64) -> dict:
    """FID and KID (mean, std) between two sets of uint8 images through torch-fidelity.

    Args:
        generated, real: uint8 images, (N, H, W, 3) or (N, 3, H, W), built by the same path.
        weights: Inception weights (see :func:`resolve_weights`).
        kid_subset_size: capped to the smaller set (torch-fidelity raises otherwise).
        device: "cuda" or "cpu" (default: CUDA when available).
        cache_dir, real_cache_name: cache the real set's features under this name (the cache key
            ignores the weights, so keep one ``cache_dir`` per weights file).
    Returns:
        {"FID", "KID mean", "KID std", "kid_subset_size", "n_generated", "n_real", "weights", "seconds", "note"}
    """
    import torch_fidelity

    generated_set, real_set = UInt8Images(generated), UInt8Images(real)
    weights = resolve_weights(weights)
    subset = min(kid_subset_size, len(generated_set), len(real_set))
    note = f"KID subset size capped to {subset}" if subset < kid_subset_size else ""
    use_cuda = (torch.device(device).type == "cuda") if device is not None else torch.cuda.is_available()
    options = dict(input1=generated_set, input2=real_set, cuda=use_cuda, fid=True, kid=True, isc=False,
                   kid_subset_size=subset, kid_subsets=kid_subsets, batch_size=batch_size, save_cpu_ram=True,
                   verbose=False, feature_extractor_weights_path=weights)
    if cache_dir is not None and real_cache_name is not None:
        options.update(cache=True, cache_root=str(cache_dir), input2_cache_name=real_cache_name)
    else:
        options.update(cache=False)
    started = time.perf_counter()
    try:
        result = torch_fidelity.calculate_metrics(**options)
    except OSError as error:  # the download failed: no internet and no local copy
        raise InceptionWeightsError(
            "KID/FID need torch-fidelity's Inception weights and they could not be downloaded "
            f"({type(error).__name__}: {error}). Download {INCEPTION_URL} on a machine with internet, copy it "
            "here and set DDPM_INCEPTION_WEIGHTS=/path/to/it (or put it in $TORCH_HOME/hub/checkpoints/).") from error
    label = STANDIN_LABEL if is_standin(weights) else "torch-fidelity Inception (official weights)"
    return {"FID": float(result["frechet_inception_distance"]),
            "KID mean": float(result["kernel_inception_distance_mean"]),
            "KID std": float(result["kernel_inception_distance_std"]),
            "kid_subset_size": subset, "n_generated": len(generated_set), "n_real": len(real_set),
            "weights": label, "seconds": round(time.perf_counter() - started, 1), "note": note}


def nearest_neighbours(samples_uint8: np.ndarray, train_uint8: np.ndarray, k: int = 3) -> np.ndarray:
    """Indices (S, k) of the k training images closest to each sample in pixel space (L2)."""
    samples = torch.from_numpy(samples_uint8.reshape(len(samples_uint8), -1)).float()
    train = torch.from_numpy(train_uint8.reshape(len(train_uint8), -1)).float()
    distances = torch.cdist(samples, train)
    return distances.topk(k, largest=False).indices.numpy()


def evaluate_run(run, real_uint8: np.ndarray, sampler: str = "ddim", steps: int = 50, eta: float = 0.0,
                 num_samples: int | None = None, weights=None, device=None, batch_size: int | None = 256,
                 compile_network: bool = False, save_dir: str | Path | None = None, cache_dir=None,
                 real_cache_name: str | None = None, seed: int = 0) -> dict:
    """Sample from a trained run's EMA network and score the samples against ``real_uint8``.

    Args:
        run: an ``experiment.Run`` (its EMA model, diffusion and data statistics).
        real_uint8: the reference set, uint8 (N, H, W, 3): the test split from the same cache.
        sampler, steps, eta: ``"ddpm"`` (all T steps) or ``"ddim"``.
        num_samples: generated images (default: as many as ``real_uint8``, the test-set size).
        batch_size: images per sampling batch (None: all at once). The default bounds the memory:
            2,350 SmallUNet images in one fp32 batch took 17.6 GB on an H200, more than a T4's 15 GB.
        save_dir: where the generated set is saved (``samples_<sampler>.npz``), so a metric can be
            recomputed without sampling again.
    Returns:
        the :func:`kid_fid` dict plus sampler, steps, eta, sampling seconds and device.
    """
    from .data.transforms import to_uint8_hwc
    from .sampling import prepare_for_sampling, sample_many, standardized_range

    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    num_samples = num_samples or len(real_uint8)
    network = prepare_for_sampling(run.model, device, compile_network=compile_network)
    low, high = standardized_range(run.mean.tolist(), run.std.tolist())
    generator = torch.Generator(device=device).manual_seed(seed)
    size = run.config.data.image_size
    started = time.perf_counter()
    images = sample_many(network, run.diffusion, num_samples, (3, size, size), sampler=sampler, steps=steps,
                         eta=eta, batch_size=batch_size, generator=generator, device=device,
                         clip_range=(low.float().to(device), high.float().to(device)))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    generated = to_uint8_hwc(images, run.mean, run.std)
    label = f"DDPM-{run.diffusion.num_steps}" if sampler == "ddpm" else f"DDIM-{steps}" + (
        f" eta {eta}" if eta else "")
    if save_dir is not None:
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(save_dir / f"samples_{label.replace(' ', '_')}.npz", images=generated)
    scores = kid_fid(generated, real_uint8, weights=weights, device=device, cache_dir=cache_dir,
                     real_cache_name=real_cache_name)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return {"sampler": label, "sampling seconds": round(seconds, 2), "device": device_name, **scores,
            "samples": generated}


def reference_rows(train_uint8: np.ndarray, test_uint8: np.ndarray, weights=None, device=None, cache_dir=None,
                   cache_name: str | None = None) -> list[dict]:
    """The rows that give the numbers meaning: the test split against itself (FID ~ 0) and the
    train split against the test split (the data floor no model can beat by much)."""
    rows = []
    for name, first in (("test split vs itself", test_uint8), ("train split vs test split", train_uint8)):
        scores = kid_fid(first, test_uint8, weights=weights, device=device, cache_dir=cache_dir,
                         real_cache_name=cache_name)
        rows.append({"network": name, "schedule": "", "sampler": "", **scores})
    return rows
