"""The synthetic CUB-format dataset: layout, exact boxes, colour modes, border cases; species that differ in
shape, not colour; fresh renders through the cache's own crop."""

import numpy as np
import pytest
from PIL import Image

from ddpm_lib.data.cub import PreprocessOptions, build_cache, load_cache, read_metadata
from ddpm_lib.data.synthetic import (
    _background,
    make_species,
    render_bird,
    render_dataset,
    write_synthetic_cub,
)


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


def test_the_seed_decides_everything(tmp_path):
    a = write_synthetic_cub(tmp_path / "a", num_images=6, num_classes=3, seed=7, image_size=(120, 90))
    b = write_synthetic_cub(tmp_path / "b", num_images=6, num_classes=3, seed=7, image_size=(120, 90))
    assert (a / "bounding_boxes.txt").read_text() == (b / "bounding_boxes.txt").read_text()
    with pytest.raises(ValueError, match="num_images"):
        write_synthetic_cub(tmp_path / "c", num_images=2, num_classes=3)


def test_palettes_are_shared_between_species_and_shapes_are_not():
    species = make_species(10, seed=0)
    wearers = {}
    for bird in species:
        assert len(bird.palettes) >= 2  # variation within a species
        for palette in bird.palettes:
            wearers.setdefault(palette, set()).add(bird.name)
    assert all(len(names) >= 2 for names in wearers.values())  # no palette names a species
    assert len({bird.shape for bird in species}) == 10 and len({bird.family for bird in species}) == 10


def colour_histograms(images: np.ndarray, bins: int = 4) -> np.ndarray:
    """(N, bins^3) normalised RGB histograms: everything colour says about an image, nothing of its shape."""
    quantised = (images.astype(np.int64) * bins // 256).reshape(len(images), -1, 3)
    codes = quantised[..., 0] * bins * bins + quantised[..., 1] * bins + quantised[..., 2]
    return np.stack([np.bincount(c, minlength=bins**3) for c in codes]) / codes.shape[1]


def test_colour_alone_cannot_tell_the_species_apart():
    """A nearest-centroid classifier on colour histograms (an independent, shape-blind reader) stays
    near chance on fresh renders; the first replica (one palette per species) let it read the species."""
    images, labels = render_dataset(300, 10, image_size=32, seed=0)
    features = colour_histograms(images)
    train, test = slice(0, 200), slice(200, 300)
    centroids = np.stack([features[train][labels[train] == k].mean(0) for k in range(1, 11)])
    predicted = np.argmin(((features[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1) + 1
    assert np.mean(predicted == labels[test]) < 0.3  # chance: 0.1


def test_image_i_is_the_same_whatever_the_batch_and_fresh_renders_are_new():
    six, labels = render_dataset(6, 3, image_size=16, seed=2)
    later, later_labels = render_dataset(3, 3, image_size=16, seed=2, first=3)
    assert np.array_equal(six[3:], later) and np.array_equal(labels[3:], later_labels)
    archive, _ = render_dataset(6, 3, image_size=16, seed=2, stream="archive")
    assert not any(np.array_equal(a, f) for a in archive for f in six)
    grey, _ = render_dataset(3, 3, image_size=16, seed=2, look="grey")
    assert np.array_equal(grey[..., 0], grey[..., 2]) and not np.array_equal(six[:3, ..., 0], six[:3, ..., 2])
    with pytest.raises(ValueError, match="look"):
        render_dataset(1, 1, look="sepia")


def test_fresh_renders_take_the_caches_own_path_bit_for_bit(tmp_path):
    """The archive's own stream rendered in memory equals the cache built from the archive's JPEG files."""
    root = write_synthetic_cub(tmp_path / "raw", num_images=12, num_classes=3, seed=4, num_grayscale=0, num_cmyk=0)
    options = PreprocessOptions(image_size=32)
    cache = load_cache(build_cache(root, tmp_path / "cache", options, "test", "synthetic", workers=1))
    drawn, labels = render_dataset(12, 3, image_size=32, seed=4, stream="archive")
    border = int(np.random.default_rng(4).permutation(12)[0])  # the one bird drawn across the image border
    order = np.argsort(cache.image_ids)
    same = [np.array_equal(cache.images[order][i], drawn[i]) for i in range(12)]
    assert same == [i != border for i in range(12)]
    assert np.array_equal(cache.labels[order], labels)
