"""The evaluation method (``evaluation.scoring.evaluate``): every row says what it scored, at which N, with the
rate at every threshold, and (where there is a population) the scores against fresh renders and the
memorisation check."""

import numpy as np
import pytest
import torch

from ddpm_lib.build import build_diffusion, build_model
from ddpm_lib.config import get_profile
from ddpm_lib.data.synthetic import render_dataset
from ddpm_lib.evaluation.classifier import ClassifierSettings, TrainedClassifier, train_classifier
from ddpm_lib.evaluation.metrics import STANDIN_LABEL, write_standin_weights
from ddpm_lib.evaluation.scoring import Inception, ReferenceSet, evaluate
from ddpm_lib.experiment import Run, untrained_like


@pytest.fixture(scope="module")
def yardstick(tmp_path_factory):
    folder = tmp_path_factory.mktemp("yardstick")
    images, species = render_dataset(40, 4, image_size=32, seed=0)
    model = train_classifier(images[:24], species[:24] - 1, 4, ClassifierSettings(steps=10))
    path = folder / "classifier.pt"
    torch.save({"model": model.state_dict(), "num_species": 4, "width": 16, "feature_dim": 64}, path)
    weights = write_standin_weights(folder / "standin.pth", images[:12])
    classifier = TrainedClassifier(model, path, (0.5, 0.9), 0.9, 0.0, {0.5: 0.0, 0.9: 0.0})
    return ReferenceSet(images[:24], images[24:]), classifier, weights


def smoke_run(seed: int) -> Run:
    config = get_profile("smoke").override({"train.seed": seed})
    torch.manual_seed(seed)
    return Run(config, build_model(config.model, 32).eval(), build_diffusion(config.diffusion), torch.full((3,), 0.5),
               torch.full((3,), 0.25), run_dir=None, step=7)


def test_every_row_names_its_run_setting_and_the_n_of_each_block(yardstick):
    reference, classifier, weights = yardstick
    runs = {"a": smoke_run(0), "b": smoke_run(1)}
    inception = Inception(str(weights), STANDIN_LABEL, samples=6, first_setting_only=True)
    result = evaluate(runs, ["DDIM-2", "DPM-Solver++-2"], reference, classifier, num_samples=10, seed=3,
                      inception=inception, start=untrained_like(runs["a"]))
    assert [(row["run"], row["sampler"]) for row in result.rows] == [
        ("a", "DDIM-2"), ("a", "DPM-Solver++-2"), ("b", "DDIM-2"), ("b", "DPM-Solver++-2")]
    for row in result.rows:
        assert (row["N generated"], row["N real"], row["steps trained"], row["seed"]) == (10, 16, 7, 3)
    assert result.rows[0]["N generated (Inception)"] == 6 and result.rows[0]["N real (Inception)"] == 16
    assert "FID" not in result.rows[1]  # Inception for each run's first setting only
    floor, halves, start = result.references
    assert "data floor" in floor["run"] and (floor["N generated"], floor["N real"]) == (10, 16)
    assert (floor["N generated (Inception)"], floor["N real (Inception)"]) == (6, 16)  # Inception's own N
    assert "noise floor" in halves["run"] and (halves["N generated"], halves["N real"]) == (8, 8)
    assert start["run"].startswith("untrained") and start["sampler"] == "DDIM-2" and start["N generated"] == 10
    assert np.array_equal(result.samples[("a", "DDIM-2")], runs["a"].sample(10, "DDIM-2", seed=3).images)
    for row in result.rows + result.references:  # a rate per threshold, each over the row's N generated
        assert 0.0 <= row["rate p>=0.9"] <= row["rate p>=0.5"] <= 1.0 and 0.0 <= row["not a bird (top-1)"] <= 1.0
        assert "N fresh" not in row  # no population given: no population columns
    table = result.table()
    assert len(table) == 7 and all(set(row) == set(table[0]) for row in table)
    assert {"rate p>=0.5", "rate p>=0.9", "FID"} <= set(table[0]) and "seed" not in table[0]


def test_a_population_adds_fresh_scores_and_the_memorisation_check(yardstick):
    reference, classifier, _ = yardstick
    fresh, _ = render_dataset(24 + 10, 4, image_size=32, seed=0, first=100)
    population = ReferenceSet(reference.train, reference.test, population=fresh[:24], fresh_draw=fresh[24:])
    result = evaluate({"a": smoke_run(0)}, ["DDIM-2"], population, classifier, num_samples=10, seed=1)
    row, (floor, _, fresh_row) = result.rows[0], result.references
    assert (row["N fresh"], row["N train"]) == (24, 24) and "Frechet vs fresh" in row
    assert floor["nearer a training image"] == 1.0  # training images are copies of themselves
    assert "fresh renders" in fresh_row["run"] and fresh_row["N generated"] == 10
    assert fresh_row["nearer a training image"] < 1.0


def test_per_run_settings_and_labelled_draws_add_the_species_columns(yardstick):
    reference, classifier, _ = yardstick
    config = get_profile("smoke").override({"model.num_classes": 4})
    torch.manual_seed(0)
    run = Run(config, build_model(config.model, 32).eval(), build_diffusion(config.diffusion), torch.full((3,), 0.5),
              torch.full((3,), 0.25), run_dir=None)
    labels = torch.arange(8) % 4
    result = evaluate({"c": run}, {"c": ["DDIM-2 w=3", "DDIM-2"]}, reference, classifier, num_samples=8,
                      labels=labels)
    assert [row["sampler"] for row in result.rows] == ["DDIM-2 w=3", "DDIM-2"]
    assert all(0.0 <= row["accuracy"] <= 1.0 and {"assigned p>=0.5", "assigned p>=0.9"} <= set(row)
               for row in result.rows)
