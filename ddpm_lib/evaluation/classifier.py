"""A small species classifier: a meaningful yardstick offline, for conditional and unconditional samples.

Trained on the same (profile-size) training split as the diffusion models, it measures three things
no stand-in Inception can:

* **guided samples' accuracy**: the share of a conditional run's samples that it assigns to the
  species they were asked for (notebook 07's guidance sweep), against its own test-split accuracy
  (the ceiling);
* **the recognisable-bird rate**: the share of samples it assigns to *some* species with
  probability >= 0.9 (:func:`confident_share`), beside the same share for real test images (the
  ceiling) and for samples at the start of training (the floor);
* **a feature space for Frechet distance, KID and precision / recall**: its penultimate layer,
  registered with torch-fidelity (:func:`feature_scores`), labelled "species-classifier features",
  never "FID".

It sees the uint8 pixels (N, 3, H, W) as stored, so real and generated images go through exactly
the same path. A trained classifier is kept under ``data/processed/classifiers/``, keyed on the
data cache's identity, the split and its settings, and reused only when all three match.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddpm_lib import paths
from ddpm_lib.device import resolve_device
from ddpm_lib.transforms import nhwc_to_nchw

FEATURE_EXTRACTOR = "ddpm-species-classifier"  # its name in torch-fidelity's registry
FEATURE_LABEL = "species-classifier features"
CONFIDENT = 0.9  # the probability that makes a sample "recognisably" one species


@dataclass(frozen=True)
class ClassifierSettings:
    """How the classifier is trained (part of its cache key)."""

    steps: int  # AdamW steps (the profile says how many: config.evaluation.classifier_steps)
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 16  # channels of the first stage (x2 each stage after)
    feature_dim: int = 64  # the penultimate layer: the feature space of the Frechet distance / KID
    label_smoothing: float = 0.1  # keeps probabilities honest, so "p >= 0.9" means something
    seed: int = 0


class SpeciesClassifier(nn.Module):
    """Three conv stages (conv-BN-ReLU x2, max-pool), global average pooling, a feature layer, a head.

    Call: ``model(images_uint8)`` with uint8 (B, 3, H, W) -> logits (B, K); ``model.features(...)``
    -> (B, feature_dim).
    """

    def __init__(self, num_classes: int, width: int = 16, feature_dim: int = 64):
        super().__init__()
        self.num_classes = num_classes
        layers, channels = [], 3
        for stage in range(3):
            out = width * 2**stage
            for _ in range(2):
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
                channels = out
            layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(channels, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, images_uint8: torch.Tensor) -> torch.Tensor:
        x = images_uint8.float() / 127.5 - 1.0
        return self.embed(self.body(x).mean(dim=(2, 3)))

    def forward(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images_uint8))


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random left-right flips and shifts of up to 1/8 of the side (uint8 in, uint8 out)."""
    flip = torch.rand(batch.shape[0], generator=generator, device=batch.device) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    pad = batch.shape[-1] // 8
    padded = F.pad(batch, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=generator, device=batch.device).tolist()
    return padded[..., dy:dy + batch.shape[-2], dx:dx + batch.shape[-1]]


def train_classifier(images_uint8, species, num_classes: int, settings: ClassifierSettings,
                     device=None) -> SpeciesClassifier:
    """Train a :class:`SpeciesClassifier` on uint8 images (N, H, W, 3) and 0-based species (N,)."""
    device = resolve_device(device)
    torch.manual_seed(settings.seed)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    images = nhwc_to_nchw(images_uint8).to(device)
    labels = torch.as_tensor(np.asarray(species), dtype=torch.long, device=device)
    model = SpeciesClassifier(num_classes, settings.width, settings.feature_dim).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=max(settings.steps, 1))
    for _ in range(settings.steps):
        index = torch.randint(0, len(images), (settings.batch_size,), generator=generator, device=device)
        loss = F.cross_entropy(model(_augment(images[index], generator)), labels[index],
                               label_smoothing=settings.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def probabilities(model: SpeciesClassifier, images_uint8, batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities (N, K) of uint8 images (N, H, W, 3) or (N, 3, H, W)."""
    images = torch.as_tensor(np.asarray(images_uint8))
    images = nhwc_to_nchw(images) if images.shape[-1] == 3 and images.shape[1] != 3 else images
    device = next(model.parameters()).device
    out = [torch.softmax(model(images[i:i + batch_size].to(device)).float(), dim=1).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def accuracy(model: SpeciesClassifier, images_uint8, species) -> float:
    """The share of images whose most probable species is ``species`` (one per image, or one for all)."""
    predicted = probabilities(model, images_uint8).argmax(1)
    return float(np.mean(predicted == np.broadcast_to(np.asarray(species), predicted.shape)))


def confident_share(model: SpeciesClassifier, images_uint8, species=None, threshold: float = CONFIDENT) -> float:
    """The share of images the classifier gives to one species with probability >= ``threshold``:
    to any species (the recognisable-bird rate), or to the requested ``species`` when given."""
    probs = probabilities(model, images_uint8)
    if species is None:
        return float(np.mean(probs.max(1) >= threshold))
    wanted = np.broadcast_to(np.asarray(species), (len(probs),))
    return float(np.mean(probs[np.arange(len(probs)), wanted] >= threshold))


# ----- kept on disk, keyed on what shaped it ---------------------------------------------------------
def classifier_path(data_cache: str | Path, split: str, settings: ClassifierSettings) -> Path:
    """``data/processed/classifiers/<data cache stem>-<split>-<settings hash>.pt``."""
    key = hashlib.sha1(json.dumps(asdict(settings), sort_keys=True).encode()).hexdigest()[:8]
    return paths.PROCESSED_DIR / "classifiers" / f"{Path(data_cache).stem}-{split}-{key}.pt"


def load_classifier(path: str | Path, device=None) -> SpeciesClassifier:
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = SpeciesClassifier(state["num_classes"], state["width"], state["feature_dim"])
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval()


@dataclass
class TrainedClassifier:
    """A classifier, where it is kept, and how well it does on the test split (the ceiling)."""

    model: SpeciesClassifier
    path: Path
    test_accuracy: float
    test_confident_share: float
    seconds: float


def classifier_for(data_cache: str | Path, split: str, settings: ClassifierSettings,
                   device=None, progress: bool = True) -> TrainedClassifier:
    """The species classifier of a data cache's training split: loaded when one with the same data
    and settings exists, else trained (seconds on a CPU at 32 px) and saved."""
    from ddpm_lib.data.cub import load_cache

    cache = load_cache(data_cache)
    path = classifier_path(data_cache, split, settings)
    started = time.perf_counter()
    if path.exists():
        model = load_classifier(path, device)
    else:
        if progress:
            print(f"training the species classifier ({settings.steps} steps) -> {path}")
        model = train_classifier(cache.train_images(split), cache.train_species(split), len(cache.species_names),
                                 settings, device)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        torch.save({"model": model.state_dict(), "num_classes": model.num_classes, "width": settings.width,
                    "feature_dim": settings.feature_dim, "settings": asdict(settings)}, temporary)
        temporary.replace(path)
    test, species = cache.test_images(split), cache.test_species(split)
    return TrainedClassifier(model, path, accuracy(model, test, species), confident_share(model, test),
                             round(time.perf_counter() - started, 1))


# ----- torch-fidelity: the classifier's penultimate layer as a feature space --------------------------
def _feature_extractor_class():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class SpeciesFeatures(FeatureExtractorBase):
        """torch-fidelity's view of a saved :class:`SpeciesClassifier` (``feature_extractor_weights_path``)."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            if feature_extractor_weights_path is None:
                raise ValueError("the species-classifier features need feature_extractor_weights_path")
            self.classifier = load_classifier(feature_extractor_weights_path, "cpu")

        @staticmethod
        def get_provided_features_list():
            return ("features",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "features"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

        def forward(self, images):
            return (self.classifier.features(images).double(),)

    return SpeciesFeatures


def register_feature_extractor() -> str:
    """Register the classifier with torch-fidelity (once per process); returns its registry name."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    from torch_fidelity.registry import register_feature_extractor as register

    if FEATURE_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        register(FEATURE_EXTRACTOR, _feature_extractor_class())
    return FEATURE_EXTRACTOR


def feature_scores(generated, real, classifier: str | Path, device=None, real_cache_name: str | None = None,
                   kid_subset_size: int = 1000) -> dict:
    """Frechet distance, KID and precision / recall (torch-fidelity's ``prc``, k = 3) between two
    uint8 image sets in the classifier's feature space (``classifier``: its saved file).

    Returns {"Frechet (species features)", "KID (species features)", "KID std (species features)",
    "precision", "recall", "n_generated", "n_real"}.
    """
    import torch_fidelity

    from ddpm_lib.evaluation.metrics import UInt8Images, features_cache_dir

    name = register_feature_extractor()
    generated_set, real_set = UInt8Images(generated), UInt8Images(real)
    subset = min(kid_subset_size, len(generated_set), len(real_set))
    options = dict(input1=generated_set, input2=real_set, cuda=resolve_device(device).type == "cuda", fid=True,
                   kid=True, prc=True, isc=False, feature_extractor=name,
                   feature_extractor_weights_path=str(classifier),
                   kid_subset_size=subset, save_cpu_ram=True, verbose=False,
                   prc_neighborhood=min(3, len(generated_set) - 1, len(real_set) - 1))
    if real_cache_name is not None:  # one folder per classifier file: its checksum names it
        options.update(cache=True, cache_root=str(features_cache_dir(classifier)), input2_cache_name=real_cache_name)
    else:
        options.update(cache=False)
    result = torch_fidelity.calculate_metrics(**options)
    return {"Frechet (species features)": float(result["frechet_inception_distance"]),
            "KID (species features)": float(result["kernel_inception_distance_mean"]),
            "KID std (species features)": float(result["kernel_inception_distance_std"]),
            "precision": float(result["precision"]), "recall": float(result["recall"]),
            "n_generated": len(generated_set), "n_real": len(real_set)}
