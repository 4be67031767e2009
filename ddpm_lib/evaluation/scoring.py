"""Scoring trained runs: every run with every sampler setting, beside the rows that give them a scale.

:func:`evaluate` is the evaluation method of the repository, in one place: notebook 06 (the study's
runs with the profile's sampler settings), notebook 07 (one conditional run across guidance weights)
and ``python -m ddpm_lib evaluate`` all call it. For each (run, setting) it draws N images with the
run's own sampling (``run.sample(n, spec, seed=..., labels=...)``: any object with that method and a
``config`` and ``step`` serves, so this module needs no training code) and scores them:

* against the **test split**, in the species classifier's features (:mod:`ddpm_lib.evaluation.classifier`):
  Frechet distance, KID, precision and recall; and the recognisable-bird rate at each threshold of
  calibrated probability, with the share it calls "not a bird" (for labelled draws, the accuracy and the
  share assigned to the species asked for);
* against the **population**, where the data can be drawn anew (the synthetic replica): as many fresh
  renders as the training split, in the same features, and the memorisation check (is each sample
  nearer a training image than a fresh render? ``metrics.memorisation``: 50% for new draws);
* optionally in Inception features (FID, KID; :mod:`ddpm_lib.evaluation.metrics`), on the first
  ``inception.samples`` images, only with real Inception weights in the demo's tables.

The reference rows are scored the same way at the same N: N training images against the test split
(the data floor; it also shows the memorisation check failing on copies), two disjoint halves of the
test split (the noise floor at that size), N fresh renders (the population's own row, where there is
one) and the network the run started from (the floor of the rate). Every row names the run, the
sampler setting, and for each block of columns the N on each side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ddpm_lib import study
from ddpm_lib.evaluation.classifier import (
    feature_scores,
    not_a_bird_share,
    probabilities,
    rate_column,
    rates,
    species_accuracy,
)
from ddpm_lib.evaluation.metrics import kid_fid, memorisation
from ddpm_lib.math.sampling import SamplerSpec

RUN_COLUMNS = ("run", "schedule", "sampler", "steps trained")
INCEPTION_COLUMNS = ("N generated (Inception)", "N real (Inception)", "FID", "KID")
POPULATION_COLUMNS = ("N generated", "N fresh", "Frechet vs fresh", "KID vs fresh", "precision vs fresh",
                      "recall vs fresh", "N train", "nearer a training image")
# The study's Table 2 as a row of these columns: its own preprocessing (uncropped 299 px real images
# against 64 px samples, a per-batch KID), so it cannot be compared with the rows above it.
STUDY_ROW = {"run": "the study (its own preprocessing; not comparable)", "schedule": study.RESULT["schedule"],
             "sampler": study.RESULT["sampler"], "steps trained": study.RESULT["steps"], "FID": study.RESULT["FID"],
             "KID": study.RESULT["KID mean"]}


def species_columns(thresholds: Sequence[float]) -> tuple[str, ...]:
    """The columns of a row scored against the test split, with a rate column per threshold."""
    return ("N generated", "N real", "Frechet (species features)", "KID (species features)", "precision", "recall",
            *(rate_column(t) for t in thresholds), "not a bird (top-1)")


@dataclass
class ReferenceSet:
    """The real images samples are scored against.

    Attributes:
        train, test: the training and test splits of one data cache, uint8 (N, H, W, 3).
        feature_cache_name: names the test set's cached features (``metrics.real_cache_name``), or None.
        population: fresh renders of the replica, as many as ``train`` (the true population, and the
            other side of the memorisation check), or None where the data cannot be drawn anew (real CUB).
        fresh_draw: more fresh renders, scored as a reference row like a model's samples, or None.
        population_cache_name: names the population's cached features, or None.
    """

    train: np.ndarray
    test: np.ndarray
    feature_cache_name: str | None = None
    population: np.ndarray | None = None
    fresh_draw: np.ndarray | None = None
    population_cache_name: str | None = None


@dataclass
class Inception:
    """Inception scoring (FID, KID): the weights, their label, and how much of each set to score.

    Attributes:
        weights: a weights file (``metrics.choose_inception_weights``), or None for torch-fidelity's own.
        label: what the weights are (a stand-in's numbers test the plumbing only).
        samples: score the first this many images of each set (None: all).
        first_setting_only: score only each run's first sampler setting (the CPU profiles).
    """

    weights: str | None
    label: str
    samples: int | None = None
    first_setting_only: bool = False


@dataclass
class Evaluation:
    """What :func:`evaluate` returns: the model rows, the reference rows, and the images it scored."""

    rows: list[dict]
    references: list[dict]
    samples: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def table(self, columns: Sequence[str] | None = None, study_row: bool = False) -> list[dict]:
        """Model rows, reference rows and (``study_row``) the study's, with ``columns`` ("" where a row
        has no such entry); None: the run columns, then every column some row has, in the order first seen."""
        rows = self.rows + self.references + ([STUDY_ROW] if study_row else [])
        if columns is None:
            columns, unshown = list(RUN_COLUMNS), ("seed", "sampling seconds", "run identity")
            for row in self.rows + self.references:
                columns += [key for key in row if key not in columns and key not in unshown]
            if study_row:
                columns += [key for key in STUDY_ROW if key not in columns]
        return [{c: row.get(c, "") for c in columns} for row in rows]

    def best(self, key: str = "Frechet (species features)") -> dict:
        """The model row with the lowest ``key``."""
        return min(self.rows, key=lambda row: row[key])


def _species_block(images: np.ndarray, real: np.ndarray, classifier, cache_name: str | None, labels=None) -> dict:
    scores = feature_scores(images, real, classifier.path, real_cache_name=cache_name)
    probs = probabilities(classifier.model, images)
    block = {"N generated": scores.pop("n_generated"), "N real": scores.pop("n_real"), **scores,
             **{rate_column(t): share for t, share in rates(probs, classifier.thresholds).items()},
             "not a bird (top-1)": not_a_bird_share(probs)}
    if labels is not None:
        wanted = np.asarray(labels)
        block["accuracy"] = species_accuracy(probs, wanted)
        block.update({rate_column(t, species=True): share
                      for t, share in rates(probs, classifier.thresholds, wanted).items()})
    return block


def _population_block(images: np.ndarray, reference: ReferenceSet, classifier) -> dict:
    """Scores against fresh renders (the true population) and the memorisation check."""
    if reference.population is None:
        return {}
    scores = feature_scores(images, reference.population, classifier.path,
                            real_cache_name=reference.population_cache_name)
    copied = memorisation(images, reference.train, reference.population)
    return {"N fresh": scores["n_real"], "Frechet vs fresh": scores["Frechet (species features)"],
            "KID vs fresh": scores["KID (species features)"], "precision vs fresh": scores["precision"],
            "recall vs fresh": scores["recall"], "N train": copied["N train"],
            "nearer a training image": copied["nearer a training image"]}


def _inception_block(images: np.ndarray, real: np.ndarray, inception: Inception, cache_name: str | None) -> dict:
    scores = kid_fid(images[: inception.samples], real, weights=inception.weights, real_cache_name=cache_name)
    return {"N generated (Inception)": scores["n_generated"], "N real (Inception)": scores["n_real"],
            "FID": scores["FID"], "KID": scores["KID mean"]}


def evaluate(runs: Mapping[str, object], specs: Sequence | Mapping[str, Sequence], reference: ReferenceSet,
             classifier, num_samples: int | None = None, seed: int = 0, *, labels=None,
             inception: Inception | None = None, start=None, batch_size: int | None = None,
             compile_network: bool = False, save_dir: str | Path | None = None) -> Evaluation:
    """Score every run with every sampler setting against ``reference.test``, with the reference rows.

    Args:
        runs: name -> a trained run (``experiment.Run``, or anything with ``sample``, ``config``, ``step``).
        specs: the sampler settings (specs or names, ``"DDIM-50 eta 1"``) for every run, or name -> settings.
        reference: the training and test splits the runs' data cache holds.
        classifier: a trained species classifier (``classifier.classifier_for``: ``.model``, ``.path``).
        num_samples: images per (run, setting); None: as many as the test split.
        seed: seeds the samples (image i of every row comes from the same seed) and the reference subsets.
        labels: for conditional runs, the species of each image (N,): adds accuracy and the assigned share.
        inception: score FID / KID too (:class:`Inception`), or None.
        start: the network the runs started from (``experiment.untrained_like``): a reference row with the
            first run's first setting, the floor of the recognisable-bird rate.
        batch_size: images per sampling batch (None: the run's default).
        save_dir: where each row's images go as ``<run>_<setting>.npz`` (``images``), to recompute metrics.
    Returns:
        an :class:`Evaluation`.
    """
    num_samples = num_samples or len(reference.test)
    evaluation = Evaluation([], reference_rows(reference, classifier, num_samples, seed, inception))

    def score(name: str, run, spec, first: bool) -> dict:
        batching = {"batch_size": batch_size} if batch_size is not None else {}
        drawn = run.sample(num_samples, SamplerSpec.parse(spec), seed=seed, labels=labels,
                           compile_network=compile_network, **batching)
        evaluation.samples[(name, drawn.spec.name)] = drawn.images
        row = {"run": name, "run identity": getattr(run, "identity", None),
               "schedule": run.config.diffusion.schedule, "sampler": drawn.spec.name, "steps trained": run.step,
               "seed": seed, "sampling seconds": round(drawn.seconds, 2),
               **_species_block(drawn.images, reference.test, classifier, reference.feature_cache_name, labels),
               **_population_block(drawn.images, reference, classifier)}
        if inception is not None and (first or not inception.first_setting_only):
            row.update(_inception_block(drawn.images, reference.test, inception, reference.feature_cache_name))
        if save_dir is not None:
            Path(save_dir).mkdir(parents=True, exist_ok=True)
            np.savez_compressed(Path(save_dir) / f"{name}_{drawn.spec.name.replace(' ', '_')}.npz",
                                images=drawn.images)
        return row

    settings = {name: specs[name] if isinstance(specs, Mapping) else specs for name in runs}
    for name, run in runs.items():
        evaluation.rows += [score(name, run, spec, index == 0) for index, spec in enumerate(settings[name])]
    if start is not None:
        evaluation.references.append(score("untrained network (start of training)", start,
                                           settings[next(iter(runs))][0], first=False))
    return evaluation


def reference_rows(reference: ReferenceSet, classifier, num_samples: int, seed: int = 0,
                   inception: Inception | None = None) -> list[dict]:
    """The rows of real images that give the model rows a scale, at their N (each block at its own N):

    * ``train split vs test split (data floor)``: N training images (a seeded subset) against the
      test split, as a model row's N samples are: what real images of the same distribution score;
      in the memorisation column it scores 100%, the check failing on copies, as it should;
    * ``test split, half vs half (noise floor)``: two disjoint halves of the test split, each of
      N_test / 2 images: how much the numbers move from sampling alone at that size;
    * ``fresh renders (new draws of the population)``, where there are some: N birds the training never
      saw, scored as a model's samples are (about 50% nearer a training image).
    """
    rng = np.random.default_rng(seed)
    floor = reference.train[rng.choice(len(reference.train), min(num_samples, len(reference.train)), replace=False)]
    order = rng.permutation(len(reference.test))
    half = len(reference.test) // 2
    halves = (reference.test[order[:half]], reference.test[order[half:2 * half]])
    rows = [{"run": "train split vs test split (data floor)",
             **_species_block(floor, reference.test, classifier, reference.feature_cache_name),
             **_population_block(floor, reference, classifier)},
            {"run": "test split, half vs half (noise floor)", **_species_block(*halves, classifier, None)}]
    if reference.fresh_draw is not None:
        fresh = reference.fresh_draw[:num_samples]
        rows.append({"run": "fresh renders (new draws of the population)",
                     **_species_block(fresh, reference.test, classifier, reference.feature_cache_name),
                     **_population_block(fresh, reference, classifier)})
    if inception is not None:
        rows[0].update(_inception_block(floor, reference.test, inception, reference.feature_cache_name))
        rows[1].update(_inception_block(halves[0], halves[1], inception, None))
    return rows
