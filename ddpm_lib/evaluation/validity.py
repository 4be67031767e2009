"""Is the yardstick valid? The classifier's rate and species accuracy on images whose answer is known.

A metric is trusted only after it has been shown to fail on what it should reject. :func:`validity_sets`
builds the sets, :func:`validity_table` scores them, one row each:

* birds it must recognise: the real **test** images, and the same with pixel noise (generated images
  are grainy: a yardstick that called grain "not a bird" would measure grain); **fresh renders** of
  the replica it never saw (a new draw of the population, through the cache's own crop); **grey
  renders** (the same birds as grayscale JPEGs: shape only, so species accuracy far above chance
  means it reads shapes); birds **repainted** in a palette their species never wears (species
  accuracy: the shape's species);
* non-birds it must reject, made from the test images with fixed strengths (:mod:`corruptions`):
  patch-shuffled on a 4x4 grid, blurred (sigma H/12), flat colours (2x2 blocks), channels permuted,
  background corners; and uniform **noise**, a kind of non-bird it never trained on.

Each row gives its N, the species accuracy (the most probable species, "not a bird" left out), the
share whose most probable class is "not a bird", and the rate at every threshold of calibrated
probability. :func:`validity_checks` states what the table must show (the demo asserts it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ddpm_lib.evaluation.classifier import (
    not_a_bird_share,
    probabilities,
    rate_column,
    rates,
    species_accuracy,
)
from ddpm_lib.evaluation.corruptions import (
    background_crop,
    channel_permutation,
    flat_colours,
    gaussian_blur,
    noise_images,
    patch_shuffle,
)
from ddpm_lib.transforms import nhwc_to_nchw


@dataclass
class ImageSet:
    """A named set of uint8 images (N, H, W, 3) or (N, 3, H, W), its species (0-based; None for non-birds)."""

    name: str
    images: np.ndarray | torch.Tensor
    species: np.ndarray | None
    bird: bool


def corrupted_sets(test_images, test_species, seed: int = 0) -> list[ImageSet]:
    """The non-bird rows, made from the test images (N, H, W, 3) with fixed strengths, and uniform noise."""
    x = nhwc_to_nchw(test_images)
    n, size = len(x), x.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    grid = 4 if size % 4 == 0 else 1
    return [
        ImageSet("patch-shuffled (4x4 grid)", patch_shuffle(x, grid, generator), test_species, False),
        ImageSet("blurred (sigma H/12)", gaussian_blur(x, size / 12), test_species, False),
        ImageSet("flat colours (2x2 blocks)", flat_colours(x, 2), test_species, False),
        ImageSet("channels permuted", channel_permutation(x, torch.randint(0, 5, (n,), generator=generator)),
                 test_species, False),
        ImageSet("background corners", background_crop(x, torch.full((n,), 0.27),
                                                       torch.randint(0, 4, (n,), generator=generator)),
                 test_species, False),
        ImageSet("uniform noise (never trained on)", noise_images(n, size, generator), None, False),
    ]


def grainy(images_uint8, std: float, seed: int = 0) -> np.ndarray:
    """uint8 images (N, H, W, 3) with Gaussian pixel noise of std ``std`` (0-255 scale) added."""
    noise = np.random.default_rng(seed).normal(0.0, std, np.shape(images_uint8))
    return np.clip(np.asarray(images_uint8, dtype=np.float64) + noise, 0, 255).round().astype(np.uint8)


def validity_sets(test_images, test_species, fresh=None, grey=None, repainted=None, seed: int = 0) -> list[ImageSet]:
    """Every row of the validity table: the birds (the test split, the same with pixel noise, and where the
    data can be drawn anew ``fresh``, ``grey`` and ``repainted`` renders as (images, 0-based species)) and
    the non-birds."""
    sets = [ImageSet("real test images", test_images, test_species, True),
            ImageSet("real test images + noise (std 12)", grainy(test_images, 12.0, seed), test_species, True)]
    for name, given in (("fresh renders (never seen)", fresh), ("grey renders (shape only)", grey),
                        ("repainted renders (another species' palette)", repainted)):
        if given is not None:
            sets.append(ImageSet(name, given[0], given[1], True))
    return sets + corrupted_sets(test_images, test_species, seed)


def validity_table(classifier, sets: list[ImageSet]) -> list[dict]:
    """One row per set: its name, whether it is a bird, N, species accuracy, the "not a bird" share and the
    rate at each of ``classifier.thresholds`` (calibrated probability)."""
    rows = []
    for item in sets:
        probs = probabilities(classifier.model, item.images)
        row = {"images": item.name, "bird": "yes" if item.bird else "no", "N": len(probs),
               "species accuracy": species_accuracy(probs, item.species) if item.species is not None else None,
               "not a bird (top-1)": not_a_bird_share(probs)}
        row.update({rate_column(t): share for t, share in rates(probs, classifier.thresholds).items()})
        rows.append(row)
    return rows


def validity_checks(rows: list[dict], headline: float, num_species: int) -> dict[str, tuple[float, float, bool]]:
    """What the table must show, each as (measured, bound, met): non-birds at most 5% at the headline
    threshold (the worst non-bird row), real test images at least 95%, grey renders' species accuracy at
    least 3x chance (where grey renders were scored)."""
    column = rate_column(headline)
    by_name = {row["images"]: row for row in rows}
    worst = max(row[column] for row in rows if row["bird"] == "no")
    checks = {"non-birds (worst row)": (worst, 0.05, worst <= 0.05),
              "real test images": (by_name["real test images"][column], 0.95,
                                   by_name["real test images"][column] >= 0.95)}
    grey = by_name.get("grey renders (shape only)")
    if grey is not None:
        checks["grey renders, species accuracy"] = (grey["species accuracy"], 3 / num_species,
                                                    grey["species accuracy"] >= 3 / num_species)
    return checks
