"""The species classifier: corruptions against independent implementations, temperature scaling and the ECE
against closed forms, rates at thresholds, the "not a bird" class, the kept classifier's identity."""

import json

import numpy as np
import pytest
import torch

from ddpm_lib import identity
from ddpm_lib.data.cub import PreprocessOptions, build_cache
from ddpm_lib.data.synthetic import write_synthetic_cub
from ddpm_lib.evaluation import classifier as classifier_module
from ddpm_lib.evaluation.calibration import expected_calibration_error, fit_temperature
from ddpm_lib.evaluation.classifier import (
    ClassifierSettings,
    classifier_for,
    classifier_manifest,
    held_out_mask,
    not_a_bird_share,
    probabilities,
    rate_column,
    rates,
    species_accuracy,
)
from ddpm_lib.evaluation.corruptions import (
    CORRUPTIONS,
    background_crop,
    channel_permutation,
    corrupt,
    flat_colours,
    gaussian_blur,
    patch_shuffle,
)
from ddpm_lib.evaluation.metrics import memorisation
from ddpm_lib.evaluation.validity import validity_checks, validity_sets, validity_table


def random_images(count: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)


# ----- corruptions -------------------------------------------------------------------------------------------
def test_patch_shuffle_permutes_whole_patches():
    images = random_images()
    shuffled = patch_shuffle(images, 4, torch.Generator().manual_seed(1))

    def patches(x):  # (B, 16, 3 * 4 * 4), each patch as one row
        return x.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(len(x), 16, -1)

    for before, after in zip(patches(images), patches(shuffled)):
        assert sorted(map(tuple, before.tolist())) == sorted(map(tuple, after.tolist()))
    assert not torch.equal(images, shuffled)
    with pytest.raises(ValueError, match="grid"):
        patch_shuffle(random_images(size=10), 4, torch.Generator())


def test_blur_matches_a_direct_two_dimensional_sum():
    """Against the 2-D Gaussian of radius 3 sigma summed pixel by pixel over a mirrored image (numpy)."""
    images = random_images(2, 24)
    blurred = gaussian_blur(images, 2.0).numpy().astype(np.float64)
    radius, offsets = 6, np.arange(-6, 7)
    weights = np.exp(-0.5 * (offsets[:, None] ** 2 + offsets[None, :] ** 2) / 2.0**2)
    weights /= weights.sum()
    padded = np.pad(images.numpy().astype(np.float64), ((0, 0), (0, 0), (radius, radius), (radius, radius)),
                    mode="reflect")  # mirrored without repeating the edge pixel
    expected = sum(weights[dy + radius, dx + radius] * padded[..., radius + dy:radius + dy + 24,
                                                              radius + dx:radius + dx + 24]
                   for dy in offsets for dx in offsets)
    assert np.abs(blurred - expected).max() <= 0.5 + 1e-6  # rounding to uint8


def test_flat_colours_channels_and_corners_are_what_they_say():
    images = random_images(2, 16)
    flat = flat_colours(images, 2)
    assert torch.equal(flat[:, :, 0, 0], images[:, :, :8, :8].float().mean((2, 3)).round().to(torch.uint8))
    assert len(torch.unique(flat[0, 0])) <= 4
    permuted = channel_permutation(images, torch.tensor([0, 4]))  # orders (0, 2, 1) and (2, 1, 0)
    assert torch.equal(permuted[0], images[0][[0, 2, 1]]) and torch.equal(permuted[1], images[1][[2, 1, 0]])
    constant = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    constant[..., :4, :4] = 200  # only the top-left corner is bright
    top_left = background_crop(constant, torch.tensor([0.25]), torch.tensor([0]))
    bottom_right = background_crop(constant, torch.tensor([0.25]), torch.tensor([3]))
    assert top_left.float().mean() > 150 and bottom_right.max() == 0


def test_corrupt_uses_every_kind_and_is_seeded():
    images = random_images(10, 16)
    kinds = torch.arange(10) % len(CORRUPTIONS)
    a = corrupt(images, torch.Generator().manual_seed(3), assigned=kinds)
    b = corrupt(images, torch.Generator().manual_seed(3), assigned=kinds)
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == images.shape
    assert all(not torch.equal(a[i], images[i]) for i in range(10))
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(images, torch.Generator(), kinds=("sepia",))


# ----- calibration --------------------------------------------------------------------------------------------
def test_temperature_scaling_recovers_a_known_temperature_and_calibrates():
    """Labels drawn from softmax(z / 2.5): the fitted temperature is 2.5, and the raw logits' over-confidence
    (ECE well above 0.05) is gone after scaling (ECE <= 0.05)."""
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(20_000, 5, generator=generator)
    labels = torch.multinomial(torch.softmax(logits / 2.5, 1), 1, generator=generator).squeeze(1)
    temperature = fit_temperature(logits, labels)
    assert abs(temperature - 2.5) < 0.1
    assert expected_calibration_error(torch.softmax(logits, 1).numpy(), labels.numpy()) > 0.15
    assert expected_calibration_error(torch.softmax(logits / temperature, 1).numpy(), labels.numpy()) <= 0.05


def test_ece_closed_forms():
    sure = np.array([[1.0, 0.0]] * 4)
    assert expected_calibration_error(sure, np.array([0, 0, 1, 1])) == pytest.approx(0.5)  # sure, half right
    eighty = np.array([[0.8, 0.2]] * 10)
    assert expected_calibration_error(eighty, np.array([0] * 8 + [1] * 2)) == pytest.approx(0.0, abs=1e-12)


# ----- reading probabilities ----------------------------------------------------------------------------------
def test_rates_leave_not_a_bird_out_and_assigned_needs_the_species_asked_for():
    probs = np.array([[0.95, 0.03, 0.02],  # species 0, sure
                      [0.60, 0.30, 0.10],  # species 0, unsure
                      [0.05, 0.05, 0.90]])  # not a bird, sure
    assert rates(probs, [0.5, 0.9]) == {0.5: pytest.approx(2 / 3), 0.9: pytest.approx(1 / 3)}
    assert rates(probs, [0.5], species=[1, 0, 0]) == {0.5: pytest.approx(1 / 3)}
    assert species_accuracy(probs, [0, 0, 1]) == pytest.approx(2 / 3)  # the third's best species is 0 or 1
    assert not_a_bird_share(probs) == pytest.approx(1 / 3)
    assert rate_column(0.9) == "rate p>=0.9" and rate_column(0.8, species=True) == "assigned p>=0.8"


def test_held_out_part_is_stratified_and_seeded():
    species = np.repeat(np.arange(4), [10, 10, 7, 1])
    mask = held_out_mask(species, 0.2, seed=1)
    assert [int(mask[species == k].sum()) for k in range(4)] == [2, 2, 1, 0]
    assert np.array_equal(mask, held_out_mask(species, 0.2, seed=1))
    assert not np.array_equal(mask, held_out_mask(species, 0.2, seed=2))


# ----- the memorisation check -----------------------------------------------------------------------------------
def test_memorisation_is_one_for_copies_zero_for_the_fresh_set_and_a_half_for_new_draws():
    rng = np.random.default_rng(0)
    train, fresh, new = (rng.integers(0, 256, (400, 8, 8, 3), dtype=np.uint8) for _ in range(3))
    assert memorisation(train[:50], train, fresh)["nearer a training image"] == 1.0
    assert memorisation(fresh[:50], train, fresh)["nearer a training image"] == 0.0
    assert memorisation(new, train, fresh)["nearer a training image"] == pytest.approx(0.5, abs=0.08)
    with pytest.raises(ValueError, match="equal sets"):
        memorisation(new, train, fresh[:10])


# ----- a trained classifier, kept with its manifest -----------------------------------------------------------
SETTINGS = ClassifierSettings(steps=150, batch_size=32, lr=3e-3, width=8, feature_dim=32, held_out=0.3)


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """A cache of 3 species at 16 px and its classifier, kept in a temporary processed folder."""
    folder = tmp_path_factory.mktemp("classifier")
    root = write_synthetic_cub(folder / "raw", num_images=240, num_classes=3, seed=1, image_size=(160, 120))
    cache = build_cache(root, folder / "processed", PreprocessOptions(image_size=16), "test", "synthetic", workers=1)
    patch = pytest.MonkeyPatch()
    patch.setattr(classifier_module.paths, "PROCESSED_DIR", folder / "processed")
    torch.manual_seed(0)
    trained = classifier_for(cache, "random", SETTINGS, (0.5, 0.9), 0.9, device="cpu", progress=False)
    yield cache, trained, folder
    patch.undo()


def test_the_classifier_is_calibrated_on_its_held_out_part_and_rejects_corruptions(kept):
    cache, trained, _ = kept
    assert trained.model.head.out_features == 4  # 3 species + not a bird
    assert trained.calibration["ECE"] <= 0.05 and trained.calibration["N"] >= 100
    assert trained.test_accuracy > 0.9 and trained.test_rate > 0.8
    from ddpm_lib.data.cub import load_cache

    data = load_cache(cache)
    rows = validity_table(trained, validity_sets(data.test_images(), data.test_species()))
    checks = validity_checks(rows, 0.9, 3)
    assert checks["non-birds (worst row)"][2], rows


def test_probabilities_are_sharper_than_label_smoothing_allows(kept):
    """Without label smoothing the raw (T = 1) probabilities of clean training images reach near 1; label
    smoothing e = 0.1 trains them towards 1 - e + e / 4 = 0.925 (the same training with it: median 0.95)."""
    cache, trained, _ = kept
    from ddpm_lib.data.cub import load_cache

    data = load_cache(cache)
    logits = classifier_module._logits(trained.model, data.train_images(), calibrated=False)
    assert np.median(torch.softmax(logits, 1).max(1).values.numpy()) > 0.98


def test_the_kept_classifier_is_reused_only_on_an_equal_identity(kept, capsys, monkeypatch):
    cache, trained, folder = kept
    monkeypatch.setattr(classifier_module.paths, "PROCESSED_DIR", folder / "processed")
    manifest = json.loads(trained.path.with_suffix(".json").read_text())
    wanted = classifier_manifest(cache, "random", SETTINGS)
    assert manifest["kind"] == "classifier" and manifest["inputs"] == {"data": cache.stem}
    assert manifest["settings"]["training"]["steps"] == SETTINGS.steps and "architecture" in manifest["settings"]
    assert manifest["version"] == identity.STAGE_VERSIONS["classifier"] and manifest["identity"] == wanted.identity
    assert wanted.identity in trained.path.name
    written = trained.path.stat().st_mtime_ns
    again = classifier_for(cache, "random", SETTINGS, (0.5, 0.9), 0.9, device="cpu", progress=True)
    assert "training" not in capsys.readouterr().out and trained.path.stat().st_mtime_ns == written
    assert float(again.model.temperature) == float(trained.model.temperature) != 1.0
    probs = probabilities(again.model, np.zeros((2, 16, 16, 3), np.uint8))
    assert probs.shape == (2, 4) and np.allclose(probs.sum(1), 1)
    # another stage version at the same path: not reused, trained again
    stale = {**manifest, "version": manifest["version"] - 1}
    trained.path.with_suffix(".json").write_text(json.dumps(stale))
    classifier_for(cache, "random", SETTINGS, (0.5, 0.9), 0.9, device="cpu", progress=True)
    assert "training the species classifier" in capsys.readouterr().out
    other = classifier_module.classifier_path(cache, "random", ClassifierSettings(steps=151))
    assert other != trained.path
    with pytest.raises(ValueError, match="headline"):
        classifier_for(cache, "random", SETTINGS, (0.5, 0.8), 0.9)
