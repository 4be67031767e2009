"""The species classifier: an offline yardstick that sees birds, not palettes.

K species plus a class "not a bird" (K + 1 outputs), trained on the training split and on
corruptions of it made on the fly (:mod:`ddpm_lib.evaluation.corruptions`: patch shuffles, heavy
blur, flat colours, channel permutations, background-only crops), with plain cross-entropy (no label
smoothing, which would pull every probability towards 1 - e + e / K), then calibrated by temperature
scaling on a held-out part of the training split (:mod:`ddpm_lib.evaluation.calibration`). It
measures three things no stand-in Inception can:

* **the recognisable-bird rate** at a threshold t of calibrated probability: the share of images it
  gives to one species with probability >= t (:func:`rates`; reported at several t, each row with its
  N), beside the rate of real test images (the ceiling) and of an untrained network's samples (the floor);
* **guided samples' accuracy**: the share of a conditional run's samples whose most probable species
  is the one asked for, and the share assigned to it with probability >= t;
* **a feature space for Frechet distance, KID and precision / recall**: its penultimate layer,
  registered with torch-fidelity (:func:`feature_scores`), labelled "species-classifier features",
  never "FID".

It sees the uint8 pixels (N, 3, H, W) as stored, so real and generated images take the same path. A
trained classifier is kept under ``data/processed/classifiers/`` with a manifest (``identity.py``:
the data cache's identity, the split, every training setting, the architecture, the stage version),
reused only when that identity is equal, trained under a file lock and written atomically.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddpm_lib import identity, paths
from ddpm_lib.device import resolve_device
from ddpm_lib.evaluation.calibration import expected_calibration_error, fit_temperature
from ddpm_lib.evaluation.corruptions import CORRUPTIONS, corrupt, gaussian_blur
from ddpm_lib.transforms import nhwc_to_nchw

FEATURE_EXTRACTOR = "ddpm-species-classifier"  # its name in torch-fidelity's registry
FEATURE_LABEL = "species-classifier features"
NOT_A_BIRD = "not a bird"  # the last output
ARCHITECTURE = {"network": "SpeciesClassifier", "stages": 3, "convs_per_stage": 2, "pooling": "global average",
                "outputs": "K species + not a bird", "input": "uint8 pixels / 127.5 - 1"}


@dataclass(frozen=True)
class ClassifierSettings:
    """How the classifier is trained (part of its identity)."""

    steps: int  # AdamW steps (the profile says how many: config.evaluation.classifier_steps)
    batch_size: int = 64  # clean training images per step
    lr: float = 2e-3  # peak of the one-cycle learning rate
    width: int = 16  # channels of the first stage (x2 each stage after)
    feature_dim: int = 64  # the penultimate layer: the feature space of the Frechet distance / KID
    corrupted_per_batch: float = 0.5  # corrupted images ("not a bird") per clean image in each step
    grain: float = 16.0  # pixel noise of std up to this (0-255 scale) on every training image, bird or not
    softness: float = 0.025  # a blur of sigma up to this x the side on half the training images (heavy: >= 1/16)
    held_out: float = 0.15  # share of each species' training images kept out of training, to calibrate on
    seed: int = 0


class SpeciesClassifier(nn.Module):
    """Three conv stages (conv-BN-ReLU x2, max-pool), global average pooling, a feature layer, a head of
    K + 1 logits (the last: "not a bird"), and a temperature that calibrates them.

    Call: ``model(images_uint8)`` with uint8 (B, 3, H, W) -> raw logits (B, K + 1);
    ``model.calibrated(...)`` -> logits / temperature; ``model.features(...)`` -> (B, feature_dim).
    """

    def __init__(self, num_species: int, width: int = 16, feature_dim: int = 64):
        super().__init__()
        self.num_species = num_species
        layers, channels = [], 3
        for stage in range(3):
            out = width * 2**stage
            for _ in range(2):
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
                channels = out
            layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(channels, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_species + 1)
        self.register_buffer("temperature", torch.ones(()))

    def features(self, images_uint8: torch.Tensor) -> torch.Tensor:
        x = images_uint8.float() / 127.5 - 1.0
        return self.embed(self.body(x).mean(dim=(2, 3)))

    def forward(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images_uint8))

    def calibrated(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return self(images_uint8) / self.temperature


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random left-right flips and shifts of up to 1/8 of the side (uint8 in, uint8 out)."""
    flip = torch.rand(batch.shape[0], generator=generator, device=batch.device) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    pad = batch.shape[-1] // 8
    padded = F.pad(batch, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=generator, device=batch.device).tolist()
    return padded[..., dy:dy + batch.shape[-2], dx:dx + batch.shape[-1]]


def _grain(batch: torch.Tensor, grain: float, softness: float, generator: torch.Generator) -> torch.Tensor:
    """What a generated image may have and a bird may keep: a mild blur (sigma up to ``softness`` x the side,
    on a random half of the batch) and pixel noise (std up to ``grain``, per image), uint8 in and out.
    Applied to birds and non-birds alike, so neither tells one from the other."""
    if softness > 0:
        half = torch.rand(batch.shape[0], generator=generator, device=batch.device) < 0.5
        sigma = float(torch.rand(1, generator=generator, device=batch.device)) * softness * batch.shape[-1]
        if half.any() and sigma > 0.2:
            batch = batch.clone()
            batch[half] = gaussian_blur(batch[half], sigma)
    if grain > 0:
        std = torch.rand(batch.shape[0], 1, 1, 1, generator=generator, device=batch.device) * grain
        noise = torch.randn(batch.shape, generator=generator, device=batch.device) * std
        batch = (batch.float() + noise).round().clamp(0, 255).to(torch.uint8)
    return batch


def held_out_mask(species: np.ndarray, share: float, seed: int) -> np.ndarray:
    """bool (N,), True for the images kept out of training: round(n * share) of each species' n, at
    least one where a species has two or more, chosen by a generator seeded with (seed, species)."""
    species = np.asarray(species)
    mask = np.zeros(len(species), dtype=bool)
    for value in np.unique(species):
        members = np.flatnonzero(species == value)
        count = max(int(round(len(members) * share)), 1 if len(members) >= 2 and share > 0 else 0)
        mask[members[np.random.default_rng([seed, int(value)]).permutation(len(members))[:count]]] = True
    return mask


def with_corruptions(images_uint8, species, num_species: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) and species (N,) followed by one corrupted copy of each (the kinds in turn),
    labelled "not a bird" (index ``num_species``): a held-out set for calibration and its check."""
    images = torch.as_tensor(np.asarray(images_uint8))
    images = nhwc_to_nchw(images) if images.shape[-1] == 3 and images.shape[1] != 3 else images
    generator = torch.Generator().manual_seed(seed)
    kinds = torch.arange(len(images)) % len(CORRUPTIONS)
    corrupted = corrupt(images, generator, assigned=kinds)
    labels = torch.cat([torch.as_tensor(np.asarray(species), dtype=torch.long),
                        torch.full((len(images),), num_species, dtype=torch.long)])
    return torch.cat([images, corrupted]), labels


def train_classifier(images_uint8, species, num_species: int, settings: ClassifierSettings,
                     device=None) -> SpeciesClassifier:
    """Train a :class:`SpeciesClassifier` on uint8 images (N, H, W, 3) and 0-based species (N,), with
    ``corrupted_per_batch`` corrupted images labelled "not a bird" per clean one (temperature 1)."""
    device = resolve_device(device)
    torch.manual_seed(settings.seed)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    images = nhwc_to_nchw(images_uint8).to(device)
    labels = torch.as_tensor(np.asarray(species), dtype=torch.long, device=device)
    model = SpeciesClassifier(num_species, settings.width, settings.feature_dim).to(device).train()
    model = model.to(memory_format=torch.channels_last)  # 30% faster on 2 CPU cores here
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=max(settings.steps, 1))
    bad_count = int(round(settings.batch_size * settings.corrupted_per_batch))
    not_a_bird = torch.full((bad_count,), num_species, dtype=torch.long, device=device)
    for _ in range(settings.steps):
        index = torch.randint(0, len(images), (settings.batch_size,), generator=generator, device=device)
        other = torch.randint(0, len(images), (bad_count,), generator=generator, device=device)
        corrupted = corrupt(_augment(images[other], generator), generator)
        batch = _grain(torch.cat([_augment(images[index], generator), corrupted]), settings.grain, settings.softness,
                       generator).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(batch), torch.cat([labels[index], not_a_bird]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def _logits(model: SpeciesClassifier, images_uint8, calibrated: bool = True, batch_size: int = 256) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(images_uint8)) if not torch.is_tensor(images_uint8) else images_uint8
    images = nhwc_to_nchw(images) if images.shape[-1] == 3 and images.shape[1] != 3 else images
    device = next(model.parameters()).device
    call = model.calibrated if calibrated else model
    return torch.cat([call(images[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(images), batch_size)])


def calibrate(model: SpeciesClassifier, images_uint8, species, seed: int = 0) -> dict:
    """Fit the model's temperature on held-out images (N, H, W, 3) of ``species`` (N,) and as many corrupted
    copies (:func:`with_corruptions`); returns {"temperature", "ECE before", "ECE", "N"} on that set."""
    images, labels = with_corruptions(images_uint8, species, model.num_species, seed)
    logits = _logits(model, images, calibrated=False)
    before = expected_calibration_error(torch.softmax(logits, 1).numpy(), labels.numpy())
    temperature = fit_temperature(logits, labels)
    model.temperature.fill_(temperature)
    after = expected_calibration_error(torch.softmax(logits / temperature, 1).numpy(), labels.numpy())
    return {"temperature": temperature, "ECE before": before, "ECE": after, "N": len(labels)}


def probabilities(model: SpeciesClassifier, images_uint8, batch_size: int = 256) -> np.ndarray:
    """Calibrated probabilities (N, K + 1) of uint8 images (N, H, W, 3) or (N, 3, H, W); column K: not a bird."""
    return torch.softmax(_logits(model, images_uint8, batch_size=batch_size), dim=1).numpy()


def species_confidence(probs: np.ndarray) -> np.ndarray:
    """The probability of the most probable *species* (N,), the "not a bird" column left out."""
    return probs[:, :-1].max(1)


def rates(probs: np.ndarray, thresholds, species=None) -> dict[float, float]:
    """For each threshold t: the share of images given to one species with calibrated probability >= t (the
    recognisable-bird rate), or, with ``species`` (one per image, or one for all), to that species."""
    if species is None:
        confidence = species_confidence(probs)
    else:
        wanted = np.broadcast_to(np.asarray(species), (len(probs),))
        confidence = probs[np.arange(len(probs)), wanted]
    return {float(t): float(np.mean(confidence >= t)) for t in thresholds}


def species_accuracy(probs: np.ndarray, species) -> float:
    """The share of images whose most probable species (not-a-bird left out) is ``species``."""
    predicted = probs[:, :-1].argmax(1)
    return float(np.mean(predicted == np.broadcast_to(np.asarray(species), predicted.shape)))


def not_a_bird_share(probs: np.ndarray) -> float:
    """The share of images whose most probable class is "not a bird"."""
    return float(np.mean(probs.argmax(1) == probs.shape[1] - 1))


def accuracy(model: SpeciesClassifier, images_uint8, species) -> float:
    """:func:`species_accuracy` of uint8 images."""
    return species_accuracy(probabilities(model, images_uint8), species)


def confident_share(model: SpeciesClassifier, images_uint8, threshold: float, species=None) -> float:
    """:func:`rates` of uint8 images at one ``threshold``."""
    return rates(probabilities(model, images_uint8), [threshold], species)[float(threshold)]


def rate_column(threshold: float, species: bool = False) -> str:
    """A table column's name: ``"rate p>=0.9"`` (any species), ``"assigned p>=0.9"`` (the species asked for)."""
    return f"{'assigned' if species else 'rate'} p>={threshold:g}"


# ----- kept on disk, with a manifest of what made it ------------------------------------------------------
def classifier_manifest(data_cache: str | Path, split: str, settings: ClassifierSettings) -> identity.Manifest:
    """What makes a classifier: the data cache's identity (its file stem), the split, every training
    setting and the architecture, and the classifier stage's version."""
    return identity.manifest("classifier", inputs={"data": Path(data_cache).stem},
                             settings={"split": split, "training": asdict(settings), "architecture": ARCHITECTURE})


def classifier_path(data_cache: str | Path, split: str, settings: ClassifierSettings) -> Path:
    """``data/processed/classifiers/<data cache stem>-<split>-<identity>.pt`` (its manifest: ``.json``)."""
    record = classifier_manifest(data_cache, split, settings)
    return paths.PROCESSED_DIR / "classifiers" / f"{Path(data_cache).stem}-{split}-{record.identity}.pt"


def load_classifier(path: str | Path, device=None) -> SpeciesClassifier:
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = SpeciesClassifier(state["num_species"], state["width"], state["feature_dim"])
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval()


@dataclass
class TrainedClassifier:
    """A calibrated classifier, where it is kept, what made it, and how it reads the test split.

    Attributes:
        thresholds: the calibrated probabilities rates are reported at; ``headline``: the one quoted.
        test_accuracy: species accuracy on the test split; ``test_rates``: its rate at each threshold.
        calibration: temperature and ECE on the held-out part of the training split (and its corrupted
            copies), and the ECE of the test split with its corrupted copies.
    """

    model: SpeciesClassifier
    path: Path
    thresholds: tuple[float, ...]
    headline: float
    test_accuracy: float
    test_rates: dict[float, float]
    calibration: dict = field(default_factory=dict)
    seconds: float = 0.0
    identity: str = ""  # its manifest's identity (classifier_manifest)

    @property
    def test_rate(self) -> float:
        """The real test images' rate at the headline threshold (the ceiling of every model's)."""
        return self.test_rates[self.headline]


def classifier_for(data_cache: str | Path, split: str, settings: ClassifierSettings, thresholds, headline: float,
                   device=None, progress: bool = True) -> TrainedClassifier:
    """The calibrated species classifier of a data cache's training split: loaded when one of equal
    identity exists, else trained (under a file lock: a second process waits, then loads it) and
    written atomically, with its manifest."""
    from ddpm_lib.data.cub import load_cache

    if headline not in thresholds:
        raise ValueError(f"the headline threshold {headline} is not among the thresholds {tuple(thresholds)}")
    cache = load_cache(data_cache)
    path = classifier_path(data_cache, split, settings)
    wanted = classifier_manifest(data_cache, split, settings)
    manifest_path = path.with_suffix(".json")
    started = time.perf_counter()
    with identity.file_lock(path.with_suffix(".lock"), "the species classifier"):
        if not (path.exists() and not identity.reuse_differences(identity.read_manifest(manifest_path), wanted)):
            if progress:
                print(f"training the species classifier ({settings.steps} steps, K + 1 outputs) -> {path}")
            images, species = cache.train_images(split), cache.train_species(split)
            held = held_out_mask(species, settings.held_out, settings.seed)
            model = train_classifier(images[~held], species[~held], len(cache.species_names), settings, device)
            calibration = calibrate(model, images[held], species[held], settings.seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = identity.temporary_path(path)
            torch.save({"model": model.state_dict(), "num_species": model.num_species, "width": settings.width,
                        "feature_dim": settings.feature_dim, "manifest": wanted.to_dict()}, temporary)
            os.replace(temporary, path)
            identity.write_manifest(manifest_path, wanted, calibration=calibration,
                                    trained_on=int((~held).sum()), held_out=int(held.sum()),
                                    seconds=round(time.perf_counter() - started, 1))
    model = load_classifier(path, device)
    facts = _read_extra(manifest_path)
    test, test_species = cache.test_images(split), cache.test_species(split)
    test_set, test_labels = with_corruptions(test, test_species, model.num_species, settings.seed + 1)
    test_probs = probabilities(model, test_set)
    real = test_probs[: len(test)]
    calibration = {**facts.get("calibration", {}),
                   "ECE test": expected_calibration_error(test_probs, test_labels.numpy()), "N test": len(test_labels)}
    return TrainedClassifier(model, path, tuple(float(t) for t in thresholds), float(headline),
                             species_accuracy(real, test_species), rates(real, thresholds), calibration,
                             round(time.perf_counter() - started, 1), wanted.identity)


def _read_extra(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


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
