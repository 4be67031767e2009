"""The synthetic CUB-format dataset: layout, exact boxes, colour modes, border cases."""

import numpy as np
import pytest
from PIL import Image

from ddpm_lib.data.cub import read_metadata
from ddpm_lib.data.synthetic import _background, make_species, render_bird, write_synthetic_cub


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return write_synthetic_cub(tmp_path_factory.mktemp("syn"), num_images=30, num_classes=5, seed=3,
                               num_grayscale=2, num_cmyk=1)


def test_layout_matches_cub(synthetic_root):
    for name in ("images.txt", "bounding_boxes.txt", "train_test_split.txt", "image_class_labels.txt",
                 "classes.txt", "README"):
        assert (synthetic_root / name).is_file()
    assert (synthetic_root / "attributes").is_dir() and (synthetic_root / "parts").is_dir()
    first = (synthetic_root / "images.txt").read_text().splitlines()[0].split()
    assert first[0] == "1" and first[1].startswith("001.") and first[1].endswith(".jpg")
    box = (synthetic_root / "bounding_boxes.txt").read_text().splitlines()[0].split()
    assert len(box) == 5 and all("." in value for value in box[1:])  # float pixels, as in CUB
    metadata = read_metadata(synthetic_root)
    assert len(metadata) == 30 and len(metadata.class_names) == 5
    assert sorted(set(metadata.class_ids.tolist())) == [1, 2, 3, 4, 5]


def test_colour_modes_and_a_box_on_the_border(synthetic_root):
    metadata = read_metadata(synthetic_root)
    modes, touches = [], 0
    for path, (x, y, w, h) in zip(metadata.paths, metadata.boxes):
        with Image.open(synthetic_root / "images" / path) as image:
            modes.append(image.mode)
            width, height = image.size
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
        touches += x == 0 or y == 0 or x + w == width or y + h == height
    assert modes.count("L") == 2 and modes.count("CMYK") == 1
    assert touches >= 1


def test_boxes_are_the_exact_extent_of_the_bird():
    species = make_species(3, seed=1)[2]
    for seed in range(5):
        image, (x, y, w, h) = render_bird(np.random.default_rng(seed), species, 320, 240)
        background = _background(np.random.default_rng(seed), 320, 240)  # drawn first from the same stream
        changed = np.any(np.asarray(image) != np.asarray(background), axis=2)
        rows, cols = np.nonzero(changed)
        assert (cols.min(), rows.min(), cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()) == (x, y, w, h)


def test_species_differ_and_the_seed_decides_everything(tmp_path):
    a = write_synthetic_cub(tmp_path / "a", num_images=6, num_classes=3, seed=7, image_size=(120, 90))
    b = write_synthetic_cub(tmp_path / "b", num_images=6, num_classes=3, seed=7, image_size=(120, 90))
    assert (a / "bounding_boxes.txt").read_text() == (b / "bounding_boxes.txt").read_text()
    palettes = {s.body_rgb for s in make_species(10)}
    assert len(palettes) == 10
    with pytest.raises(ValueError, match="num_images"):
        write_synthetic_cub(tmp_path / "c", num_images=2, num_classes=3)
