"""Metadata parsing, crop and resize, splits, stats, the cache, and every bad-input case."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from ddpm_lib.data import cub
from ddpm_lib.data.cub import (
    CubFormatError,
    PreprocessOptions,
    build_cache,
    crop_region,
    load_cache,
    process_image,
    read_metadata,
)
from ddpm_lib.data.synthetic import write_synthetic_cub


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_synthetic_cub(tmp_path_factory.mktemp("pristine"), num_images=40, num_classes=4, seed=5,
                               image_size=(200, 150))


@pytest.fixture
def root(pristine, tmp_path):
    """A private copy that a test may damage."""
    return shutil.copytree(pristine, tmp_path / "CUB_200_2011")


def edit_line(path, number, new_text):
    lines = path.read_text().splitlines()
    lines[number - 1] = new_text
    path.write_text("\n".join(lines) + "\n")


def test_crop_region_closed_forms():
    assert crop_region((10, 20, 30, 40), 100, 100, "bbox", 0.0) == ((10, 20, 40, 60), False)
    # square: side max(30, 40) * 1.25 = 50 centred on (25, 40)
    assert crop_region((10, 20, 30, 40), 100, 100, "square", 0.25) == ((0.0, 15.0, 50.0, 65.0), False)
    region, clipped = crop_region((-5, 90, 30, 40), 100, 100, "bbox", 0.0)
    assert clipped and region == (0.0, 90, 25, 100.0)
    with pytest.raises(ValueError, match="outside"):
        crop_region((150, 10, 20, 20), 100, 100, "bbox", 0.0)


def test_the_crop_holds_the_box_and_nothing_else(tmp_path):
    """A red box on blue: the 64x64 output is red, also when the decoder downscales (draft)."""
    canvas = np.zeros((900, 1200, 3), dtype=np.uint8)
    canvas[..., 2] = 255
    canvas[300:700, 400:900] = (255, 0, 0)
    Image.fromarray(canvas).save(tmp_path / "box.jpg", quality=95)
    out = process_image(tmp_path / "box.jpg", (400, 300, 500, 400), PreprocessOptions())["image"]
    assert out.shape == (64, 64, 3)
    assert out[..., 0].min() > 200 and out[..., 2].max() < 60
    square = process_image(tmp_path / "box.jpg", (400, 300, 500, 400), PreprocessOptions(crop="square"))["image"]
    assert square[32, 0, 2] > 200 and square[32, 32, 0] > 200  # blue margin left, red centre


def test_metadata_is_parsed_in_id_order(root):
    metadata = read_metadata(root)
    assert metadata.image_ids.tolist() == list(range(1, 41))
    assert metadata.paths[0].startswith("001.")
    line = (root / "bounding_boxes.txt").read_text().splitlines()[6].split()
    assert metadata.boxes[6].tolist() == [float(v) for v in line[1:]]


def test_a_malformed_metadata_line_names_file_and_line(root):
    edit_line(root / "bounding_boxes.txt", 7, "7 12.0 oops 40.0 30.0")
    with pytest.raises(CubFormatError, match=r"bounding_boxes.txt, line 7: expected 'id x y width height'"):
        read_metadata(root)


def test_metadata_files_whose_ids_disagree(root):
    edit_line(root / "image_class_labels.txt", 3, "99 1")
    with pytest.raises(CubFormatError, match=r"image_class_labels.txt and images.txt list different image ids"
                                              r".*missing from image_class_labels.txt: \[3\].*\[99\]"):
        read_metadata(root)


def test_duplicate_ids_and_unknown_classes(root):
    edit_line(root / "train_test_split.txt", 4, "3 1")
    with pytest.raises(CubFormatError, match="line 4: image id 3 appears twice"):
        read_metadata(root)


def test_missing_and_corrupt_images_are_skipped_and_counted(root, tmp_path):
    metadata = read_metadata(root)
    (root / "images" / metadata.paths[4]).unlink()  # listed in images.txt but missing
    truncated = root / "images" / metadata.paths[9]
    truncated.write_bytes(truncated.read_bytes()[:400])  # a truncated JPEG
    (root / "images" / metadata.paths[14]).write_bytes(b"not a jpeg at all" * 20)  # corrupt
    with pytest.warns(UserWarning, match=r"skipping image 5 \(.*listed in images.txt\)"):
        path = build_cache(root, tmp_path / "cache", PreprocessOptions(image_size=32), "x", "test", workers=1)
    cache = load_cache(path)
    skipped = {entry["image_id"] for entry in cache.manifest["skipped"]}
    assert skipped == {5, 10, 15}
    assert cache.manifest["counts"]["kept"] == 37 and len(cache.images) == 37
    assert 5 not in cache.image_ids.tolist()
    # image, label and id stay aligned after the skips
    labels = dict(zip(metadata.image_ids.tolist(), metadata.class_ids.tolist()))
    assert all(labels[i] == label for i, label in zip(cache.image_ids.tolist(), cache.labels.tolist()))


def test_a_box_partly_outside_is_clipped_and_one_fully_outside_is_an_error(root, tmp_path):
    edit_line(root / "bounding_boxes.txt", 2, "2 -20.0 -10.0 100.0 90.0")
    path = build_cache(root, tmp_path / "cache", PreprocessOptions(image_size=16), "a", "test", workers=1)
    assert load_cache(path).manifest["counts"]["clipped_boxes"] >= 1
    edit_line(root / "bounding_boxes.txt", 2, "2 500.0 400.0 10.0 10.0")
    with pytest.raises(CubFormatError, match="bounding_boxes.txt: .*lies outside"):
        build_cache(root, tmp_path / "cache2", PreprocessOptions(image_size=16), "b", "test", workers=1)


def test_non_rgb_policies(tmp_path):
    root = write_synthetic_cub(tmp_path, num_images=12, num_classes=3, seed=2, num_grayscale=2, num_cmyk=1,
                               image_size=(120, 90))
    kept = load_cache(build_cache(root, tmp_path / "c1", PreprocessOptions(image_size=16), "s", "t", workers=1))
    assert kept.manifest["non_rgb"] == {"L": 2, "CMYK": 1} and len(kept.images) == 12
    dropped = load_cache(build_cache(root, tmp_path / "c2", PreprocessOptions(image_size=16, non_rgb="drop"),
                                     "s", "t", workers=1))
    assert len(dropped.images) == 9 and len(dropped.manifest["dropped_non_rgb_ids"]) == 3


def test_splits_stats_and_cache_reuse(pristine, tmp_path, monkeypatch):
    options = PreprocessOptions(image_size=16, test_fraction=0.2, split_seed=1)
    path = build_cache(pristine, tmp_path, options, "abc", "test", workers=2)  # two worker processes
    cache = load_cache(path)
    assert int((~cache.train_random).sum()) == 8  # round(40 * 0.2)
    official = read_metadata(pristine).official_train
    assert np.array_equal(cache.train_official, official)
    train = cache.train_images("random").reshape(-1, 3) / 255.0
    assert np.allclose(cache.stats["random"]["mean"], train.mean(0)) and np.allclose(
        cache.stats["random"]["std"], train.std(0))
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["source_checksum"] == "abc" and manifest["settings"]["options"]["split_seed"] == 1
    assert manifest["identity"] in path.stem and manifest["inputs"] == {"source": "abc"}

    def fail(*args, **kwargs):
        raise AssertionError("preprocessing ran again")

    monkeypatch.setattr(cub, "preprocess", fail)
    assert build_cache(pristine, tmp_path, options, "abc", "test") == path  # same options: reused
    with pytest.raises(AssertionError, match="ran again"):  # changed options: rebuilt
        build_cache(pristine, tmp_path, PreprocessOptions(image_size=16, split_seed=2), "abc", "test")


def test_bad_options_name_themselves():
    with pytest.raises(ValueError, match="crop='circle'"):
        PreprocessOptions(crop="circle")
    with pytest.raises(ValueError, match="test_fraction=1.5"):
        PreprocessOptions(test_fraction=1.5)
