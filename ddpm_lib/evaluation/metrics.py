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
computed with it test the plumbing only and are labelled as not comparable
(:func:`choose_inception_weights` decides, once, for notebooks and the command line).

Feature caches: the real set's Inception features are cached under a folder named by the resolved
weights' checksum, with a name built from the data cache's identity and the split
(:func:`real_cache_name`), so other weights or another crop never reuse stale features.

Sample size: FID is biased upwards at small N, and KID's unbiased estimate is noisy there (and can
be slightly negative for sets from one distribution). Every row therefore states its N on each
side, and the reference rows are scored at the model rows' N (``evaluation.scoring``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_lib import identity, paths
from ddpm_lib.device import resolve_device
from ddpm_lib.transforms import nhwc_to_nchw

OFFICIAL_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{OFFICIAL_WEIGHTS_NAME}"
STANDIN_LABEL = "stand-in Inception weights (random): numbers test the plumbing only, not comparable"
OFFICIAL_LABEL = "torch-fidelity Inception (official weights)"


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
            tensor = nhwc_to_nchw(tensor)
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


def choose_inception_weights(weights=None, source: str = "synthetic", calibration_images=None,
                             standin: bool = True) -> tuple[str | None, str] | None:
    """The weights to score with, and their label: the given file or ``$DDPM_INCEPTION_WEIGHTS``,
    else torch-fidelity's own (cached, or downloaded where there is internet); for synthetic data
    with neither, a calibrated stand-in written once under ``data/processed/`` (labelled as such) when
    ``standin``, else None: no Inception scores (a random network's numbers are noise, not a measurement).
    Real data never fall back to a stand-in: without weights they raise with what to do."""
    resolved = resolve_weights(weights)
    official = Path(torch.hub.get_dir()) / "checkpoints" / OFFICIAL_WEIGHTS_NAME
    if resolved is None and not official.exists() and source == "synthetic":
        if not standin:
            return None
        if calibration_images is None:
            raise ValueError("a stand-in Inception needs calibration images (a few dozen test images)")
        path = paths.PROCESSED_DIR / "standin_inception.pth"
        if not is_standin(path):
            write_standin_weights(path, calibration_images)
        resolved = str(path)
    return resolved, STANDIN_LABEL if is_standin(resolved) else OFFICIAL_LABEL


def weights_key(weights: str | Path | None) -> str:
    """A short identity of the resolved weights (their MD5), or ``"official"`` for torch-fidelity's own."""
    from ddpm_lib.data.download import verified_md5

    return verified_md5(Path(weights))[:12] if weights is not None else "official"


def features_cache_dir(weights: str | Path | None) -> Path:
    """Where the real sets' features for these weights are cached: one folder per weights file."""
    return paths.PROCESSED_DIR / "fidelity-cache" / weights_key(weights)


def real_cache_name(data_cache: str | Path, split: str, part: str = "test") -> str:
    """The feature-cache name of a real image set: the data cache's identity (its file stem, which
    hashes the source and every preprocessing option), the split, which part of it, and the version of
    the feature code (``identity.STAGE_VERSIONS["features"]``). The folder it sits in names the weights
    (:func:`features_cache_dir`), so cached features are reused only when all of these are the same."""
    return f"{Path(data_cache).stem}-{split}-{part}-features{identity.STAGE_VERSIONS['features']}"


def kid_fid(generated, real, weights: str | Path | None = None, kid_subset_size: int = 1000, kid_subsets: int = 100,
            device=None, real_cache_name: str | None = None, batch_size: int = 64) -> dict:
    """FID and KID (mean, std) between two sets of uint8 images through torch-fidelity.

    Args:
        generated, real: uint8 images, (N, H, W, 3) or (N, 3, H, W), built by the same path.
        weights: Inception weights (see :func:`resolve_weights`).
        kid_subset_size: capped to the smaller set (torch-fidelity raises otherwise).
        device: "cuda" or "cpu" (default: CUDA when available).
        real_cache_name: cache the real set's features under this name (:func:`real_cache_name`), in
            the folder of the resolved weights (:func:`features_cache_dir`).
    Returns:
        {"FID", "KID mean", "KID std", "kid_subset_size", "n_generated", "n_real", "weights", "seconds", "note"}
    """
    import torch_fidelity

    generated_set, real_set = UInt8Images(generated), UInt8Images(real)
    weights = resolve_weights(weights)
    subset = min(kid_subset_size, len(generated_set), len(real_set))
    note = f"KID subset size capped to {subset}" if subset < kid_subset_size else ""
    use_cuda = resolve_device(device).type == "cuda"
    options = dict(input1=generated_set, input2=real_set, cuda=use_cuda, fid=True, kid=True, isc=False,
                   kid_subset_size=subset, kid_subsets=kid_subsets, batch_size=batch_size, save_cpu_ram=True,
                   verbose=False, feature_extractor_weights_path=weights)
    if real_cache_name is not None:
        options.update(cache=True, cache_root=str(features_cache_dir(weights)), input2_cache_name=real_cache_name)
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
    label = STANDIN_LABEL if is_standin(weights) else OFFICIAL_LABEL
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


def memorisation(samples_uint8: np.ndarray, train_uint8: np.ndarray, fresh_uint8: np.ndarray) -> dict:
    """Does a model copy its training images? For each sample, its nearest training image against its
    nearest fresh render (a new draw of the same population, as many as the training images), in pixel
    space (L2).

    A sample drawn from the population is as likely to lie nearer a training image as nearer a fresh
    render: the share that lies nearer a training image is 50% up to sampling noise (two equal sets of
    independent draws; ties aside). A model that reproduces its training images scores near 100%.

    Returns {"nearer a training image": share, "distance ratio (median)": median of d_train / d_fresh,
    "N train", "N fresh"}.
    """
    if len(train_uint8) != len(fresh_uint8):
        raise ValueError(f"memorisation compares equal sets: {len(train_uint8)} training images against "
                         f"{len(fresh_uint8)} fresh renders; draw as many fresh renders as training images")

    def nearest(reference: np.ndarray) -> torch.Tensor:
        flat = torch.from_numpy(np.ascontiguousarray(reference).reshape(len(reference), -1)).float()
        query = torch.from_numpy(np.ascontiguousarray(samples_uint8).reshape(len(samples_uint8), -1)).float()
        return torch.cdist(query, flat).min(dim=1).values

    to_train, to_fresh = nearest(train_uint8), nearest(fresh_uint8)
    ratio = to_train / to_fresh.clamp_min(1e-9)
    return {"nearer a training image": float((to_train < to_fresh).float().mean()),
            "distance ratio (median)": float(ratio.median()), "N train": len(train_uint8), "N fresh": len(fresh_uint8)}
