"""KID and FID through the project's wrapper, with a stand-in Inception written by the test."""

import numpy as np
import pytest

from ddpm_lib import identity
from ddpm_lib.data.synthetic import render_dataset
from ddpm_lib.evaluation.metrics import (
    STANDIN_LABEL,
    InceptionWeightsError,
    is_standin,
    kid_fid,
    nearest_neighbours,
    write_standin_weights,
)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    birds, _ = render_dataset(24, 4, image_size=32, seed=0)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=birds.shape, dtype=np.uint8)  # clearly different images
    weights = write_standin_weights(tmp_path_factory.mktemp("w") / "standin.pth", birds[:12])
    return birds, noise, weights


def test_identical_sets_give_zero_and_different_sets_do_not(sets):
    birds, noise, weights = sets
    assert is_standin(weights)
    same = kid_fid(birds[:12], birds[:12], weights=weights, device="cpu")
    other = kid_fid(noise[:12], birds[:12], weights=weights, device="cpu")
    assert abs(same["FID"]) < 1e-2 * other["FID"] and abs(same["KID mean"]) < 1e-2 * other["KID mean"]
    assert other["FID"] > 0 and other["KID mean"] > 0
    assert same["weights"] == STANDIN_LABEL


def test_a_set_smaller_than_the_default_kid_subset_works(sets):
    birds, noise, weights = sets
    result = kid_fid(birds[12:], birds[:12], weights=weights, device="cpu")  # 12 images, default subset 1000
    assert result["kid_subset_size"] == 12 and "capped to 12" in result["note"]
    assert result["n_generated"] == 12 and result["n_real"] == 12


def test_missing_weights_name_the_path_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_INCEPTION_WEIGHTS", str(tmp_path / "nope.pth"))
    with pytest.raises(InceptionWeightsError, match="nope.pth not found.*download"):
        kid_fid(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.uint8), device="cpu")
    with pytest.raises(ValueError, match="uint8"):
        kid_fid(np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8, 3), np.uint8), weights=None)


def test_no_weights_and_no_internet_says_how_to_get_them(tmp_path, monkeypatch):
    import urllib.error

    from torch_fidelity import feature_extractor_inceptionv3

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.delenv("DDPM_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(feature_extractor_inceptionv3, "load_state_dict_from_url", offline)
    images = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(InceptionWeightsError, match="could not be downloaded.*DDPM_INCEPTION_WEIGHTS"):
        kid_fid(images, images, device="cpu")


def test_nearest_neighbours_find_the_copy():
    train = np.random.default_rng(1).integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    samples = train[[3, 17]].copy()
    samples[0, 0, 0, 0] ^= 1  # almost a copy
    assert nearest_neighbours(samples, train, k=2)[:, 0].tolist() == [3, 17]


def test_evaluate_command_scores_a_trained_run(sets, tmp_path, monkeypatch, capsys):
    import json

    from ddpm_lib.__main__ import main

    _, _, weights = sets
    for name, folder in (("RUNS_DIR", "runs"), ("RAW_DIR", "raw"), ("PROCESSED_DIR", "processed")):
        monkeypatch.setattr(f"ddpm_lib.paths.{name}", tmp_path / folder)
    assert main(["train", "--profile", "smoke", "--steps", "4", "--run-name", "tiny"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--profile", "smoke", "--run-name", "tiny", "--steps", "5", "--weights", str(weights),
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "DDIM-5" in out and "data floor" in out and STANDIN_LABEL in out
    from ddpm_lib.data.cub import load_cache

    test_size = load_cache(next((tmp_path / "processed").glob("*.npz"))).manifest["counts"]["test_random"]
    evaluation = tmp_path / "runs" / "smoke" / "tiny" / "evaluation"
    rows = [json.loads(line) for line in (evaluation / "results.jsonl").read_text().splitlines()]
    model, floor, halves = rows[:3]
    from ddpm_lib.experiment import load_run

    identity_of_run = load_run(tmp_path / "runs" / "smoke" / "tiny", device="cpu").identity
    assert identity_of_run and all(row["run identity"] == identity_of_run for row in rows)  # which training
    assert model["seed"] == 0 and model["steps trained"] == 4  # and which checkpoint, which draw
    assert model["sampler"] == "DDIM-5" and model["N generated"] == model["N real"] == test_size  # the test split
    assert model["N generated (Inception)"] == test_size and model["FID"] > 0
    assert floor["N generated"] == test_size and halves["N generated"] == halves["N real"] == test_size // 2
    saved = np.load(evaluation / "tiny_DDIM-5.npz")["images"]
    assert saved.shape == (test_size, 32, 32, 3) and saved.dtype == np.uint8  # kept for recomputing metrics


def test_feature_caches_follow_the_data_cache_and_the_resolved_weights(sets, tmp_path, monkeypatch):
    """Another crop, or other weights through $DDPM_INCEPTION_WEIGHTS, never reuse stale features."""
    from ddpm_lib.data.cub import PreprocessOptions, cache_path
    from ddpm_lib.evaluation.metrics import features_cache_dir, real_cache_name

    birds, noise, weights_a = sets
    monkeypatch.setattr("ddpm_lib.paths.PROCESSED_DIR", tmp_path)
    bbox = cache_path(tmp_path, PreprocessOptions(crop="bbox"), "abc", "cub")
    square = cache_path(tmp_path, PreprocessOptions(crop="square"), "abc", "cub")
    assert real_cache_name(bbox, "random") != real_cache_name(square, "random")
    assert real_cache_name(bbox, "random") != real_cache_name(bbox, "official")
    before = real_cache_name(bbox, "random")  # a new version of the feature code: a new name
    with monkeypatch.context() as bumped:
        bumped.setitem(identity.STAGE_VERSIONS, "features", identity.STAGE_VERSIONS["features"] + 1)
        assert real_cache_name(bbox, "random") != before
    # the real set's features under one name, then "another crop": other images, so another name
    first = kid_fid(noise[:12], birds[:12], weights=weights_a, device="cpu",
                    real_cache_name=real_cache_name(bbox, "random"))
    changed = kid_fid(noise[:12], birds[12:], weights=weights_a, device="cpu",
                      real_cache_name=real_cache_name(square, "random"))
    fresh = kid_fid(noise[:12], birds[12:], weights=weights_a, device="cpu")
    assert changed["FID"] == pytest.approx(fresh["FID"]) and changed["FID"] != pytest.approx(first["FID"])
    # other weights given through the environment: their own cache folder, their own numbers
    weights_b = write_standin_weights(tmp_path / "b.pth", birds[12:], seed=1)
    monkeypatch.setenv("DDPM_INCEPTION_WEIGHTS", str(weights_b))
    cached_b = kid_fid(noise[:12], birds[:12], device="cpu", real_cache_name=real_cache_name(bbox, "random"))
    plain_b = kid_fid(noise[:12], birds[:12], device="cpu")
    assert cached_b["FID"] == pytest.approx(plain_b["FID"]) and cached_b["FID"] != pytest.approx(first["FID"])
    assert features_cache_dir(str(weights_a)) != features_cache_dir(str(weights_b)) != features_cache_dir(None)


def test_synthetic_data_get_no_inception_unless_a_stand_in_is_asked_for(sets, tmp_path, monkeypatch):
    """Without real weights, the synthetic profiles' tables get no Inception columns (a random network's
    FID is noise: 2,440 and 45 for one row in two demo runs); a labelled stand-in only when asked for."""
    from ddpm_lib import paths
    from ddpm_lib.evaluation.metrics import OFFICIAL_LABEL, choose_inception_weights

    birds, _, _ = sets
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached official weights
    monkeypatch.setattr(paths, "PROCESSED_DIR", tmp_path / "processed")
    assert choose_inception_weights(None, "synthetic", birds[:8], standin=False) is None
    path, label = choose_inception_weights(None, "synthetic", birds[:8], standin=True)
    assert is_standin(path) and label == STANDIN_LABEL
    assert choose_inception_weights(None, "cub", standin=False) == (None, OFFICIAL_LABEL)  # torch-fidelity's own
