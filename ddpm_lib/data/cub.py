"""CUB-200-2011: metadata parsing, bounding-box crop, resize, splits, and the uint8 cache.

This module works on an extracted ``CUB_200_2011`` folder: it parses the five metadata files, crops
every image to its bird's box (the study's stated method; a square crop with a margin as an
option), resizes to 64x64 with antialiasing, converts to RGB, and saves one ``.npz`` cache (images,
labels, ids, both splits, per-channel stats of each train split) with a JSON manifest
(:func:`build_cache`). The cache's identity (``identity.py``) is the hash of the source's identity,
every option and the stage's code version, and its file is named by it: the same identity is reused,
anything changed makes another cache beside it. Finding, downloading and extracting the data is ``prepare.py``'s job.

Policies, stated once:
* Non-RGB JPEGs (CUB has a few grayscale ones; the synthetic replica adds CMYK): ``"convert"`` to
  RGB (default), or ``"drop"`` them as the study appears to have done (11,788 - 8 = 9,430 + 2,350).
* Unreadable images (missing, truncated, corrupt) are skipped with a warning and listed in the
  manifest. Malformed metadata and disagreeing ids are errors naming the file and line.
* A box partly outside its image is clipped to the image (counted in the manifest); a box with no
  area inside the image is an error, since the crop would not hold the bird.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ddpm_lib.identity import Manifest, file_lock, manifest, temporary_path, write_manifest

METADATA_FILES = ("images.txt", "bounding_boxes.txt", "train_test_split.txt", "image_class_labels.txt")
# The choices of the data pipeline, named once (the config and the command line import them).
SOURCES = ("synthetic", "cub")  # the embedded procedural replica, or the real CUB-200-2011
CROPS = ("bbox", "square")  # the bird's box (the study's stated method), or a box-centred square + margin
NON_RGB_POLICIES = ("convert", "drop")  # grayscale/CMYK JPEGs: converted to RGB, or dropped (as the study did)
SPLITS = ("random", "official")  # seeded 80/20 stratified by species (the study's style), or CUB's own
DEFAULT_IMAGE_SIZE = 64  # the study's resolution


def check_image_size(size: int) -> int:
    """``size`` if it is a usable image side: a multiple of 8 of at least 8 (every U-Net level halves it)."""
    if not isinstance(size, int) or size < 8 or size % 8:
        raise ValueError(f"image size {size!r}: use a multiple of 8 of at least 8 (the study: {DEFAULT_IMAGE_SIZE})")
    return size


class CubFormatError(ValueError):
    """A metadata file is malformed or disagrees with another; the message names file and line."""


@dataclass
class CubMetadata:
    """The parsed metadata, one row per image, sorted by image id."""

    root: Path
    image_ids: np.ndarray  # int64 (N,)
    paths: list[str]  # relative to root/images
    class_ids: np.ndarray  # int64 (N,), 1..200
    boxes: np.ndarray  # float64 (N, 4): x, y, width, height in pixels
    official_train: np.ndarray  # bool (N,): the official split, True = train
    class_names: dict[int, str]  # class id -> "001.Black_footed_Albatross"

    def __len__(self) -> int:
        return len(self.image_ids)


def _parse(path: Path, fields: int, kinds: tuple, description: str) -> dict[int, tuple]:
    """Rows of ``id value...`` keyed by id; every malformed line is an error naming file and line."""
    if not path.exists():
        raise CubFormatError(f"{path}: missing; a CUB_200_2011 folder needs {', '.join(METADATA_FILES)}")
    rows: dict[int, tuple] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != fields + 1:
                raise ValueError
            key = int(parts[0])
            values = tuple(kind(p) for kind, p in zip(kinds, parts[1:]))
        except ValueError:
            raise CubFormatError(f"{path.name}, line {number}: expected '{description}', got {line!r}") from None
        if key in rows:
            raise CubFormatError(f"{path.name}, line {number}: image id {key} appears twice")
        rows[key] = values
    if not rows:
        raise CubFormatError(f"{path}: empty")
    return rows


def read_metadata(root: str | Path) -> CubMetadata:
    """Parse ``images.txt``, ``bounding_boxes.txt``, ``train_test_split.txt``,
    ``image_class_labels.txt`` and ``classes.txt`` of a ``CUB_200_2011`` folder.

    Raises :class:`CubFormatError` on a malformed line, a duplicate id, or files whose ids differ
    (so an image, its label and its box can never be silently mismatched).
    """
    root = Path(root)
    images = _parse(root / "images.txt", 1, (str,), "id relative/path.jpg")
    boxes = _parse(root / "bounding_boxes.txt", 4, (float,) * 4, "id x y width height")
    split = _parse(root / "train_test_split.txt", 1, (int,), "id 1|0")
    labels = _parse(root / "image_class_labels.txt", 1, (int,), "id class_id")
    classes = _parse(root / "classes.txt", 1, (str,), "class_id NNN.Class_Name")
    ids = set(images)
    for name, rows in (("bounding_boxes.txt", boxes), ("train_test_split.txt", split),
                       ("image_class_labels.txt", labels)):
        if set(rows) != ids:
            missing, extra = sorted(ids - set(rows))[:5], sorted(set(rows) - ids)[:5]
            raise CubFormatError(
                f"{name} and images.txt list different image ids (missing from {name}: {missing}, "
                f"not in images.txt: {extra}); the metadata files do not belong together"
            )
    for key, (value,) in split.items():
        if value not in (0, 1):
            raise CubFormatError(f"train_test_split.txt: image {key} has split {value}, expected 1 or 0")
    for key, (class_id,) in labels.items():
        if class_id not in classes:
            raise CubFormatError(f"image_class_labels.txt: image {key} has class {class_id}, not in classes.txt")
    for key, (_x, _y, w, h) in boxes.items():
        if w <= 0 or h <= 0:
            raise CubFormatError(f"bounding_boxes.txt: image {key} has an empty box ({w} x {h})")
    order = sorted(ids)
    return CubMetadata(
        root=root,
        image_ids=np.array(order, dtype=np.int64),
        paths=[images[i][0] for i in order],
        class_ids=np.array([labels[i][0] for i in order], dtype=np.int64),
        boxes=np.array([boxes[i] for i in order], dtype=np.float64),
        official_train=np.array([split[i][0] == 1 for i in order]),
        class_names={k: v[0] for k, v in classes.items()},
    )


@dataclass(frozen=True)
class PreprocessOptions:
    """How images become training data (part of the cache key)."""

    image_size: int = DEFAULT_IMAGE_SIZE  # output side in pixels
    crop: str = CROPS[0]  # "bbox" (the study's stated method) or "square" (box-centred square)
    margin: float = 0.25  # extra side length around the box for crop="square" (clear-diffusion-keras: 25%)
    non_rgb: str = NON_RGB_POLICIES[0]  # "convert" grayscale/CMYK to RGB, or "drop" them
    test_fraction: float = 0.2  # the random split's test share (the study: ~80/20)
    split_seed: int = 0  # seed of the random split

    def __post_init__(self):
        if self.crop not in CROPS:
            raise ValueError(f"crop={self.crop!r}: use one of {CROPS}")
        if self.non_rgb not in NON_RGB_POLICIES:
            raise ValueError(f"non_rgb={self.non_rgb!r}: use one of {NON_RGB_POLICIES}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction={self.test_fraction}: must lie in (0, 1)")
        if self.margin < 0:
            raise ValueError(f"margin={self.margin}: must be >= 0")
        check_image_size(self.image_size)


def crop_region(box, image_width: int, image_height: int, crop: str, margin: float) -> tuple[tuple, bool]:
    """The (left, top, right, bottom) region to crop, inside the image, and whether the box was clipped.

    ``"bbox"``: the box itself. ``"square"``: a square of side ``max(w, h) * (1 + margin)`` centred
    on the box, shifted (and if need be shrunk) to lie inside the image.
    """
    x, y, w, h = box
    left, top, right, bottom = x, y, x + w, y + h
    clipped = left < 0 or top < 0 or right > image_width or bottom > image_height
    left, top = max(left, 0.0), max(top, 0.0)
    right, bottom = min(right, float(image_width)), min(bottom, float(image_height))
    if right - left < 1 or bottom - top < 1:
        raise ValueError(f"box {tuple(box)} lies outside the {image_width}x{image_height} image")
    if crop == "square":
        side = min(max(right - left, bottom - top) * (1 + margin), image_width, image_height)
        cx, cy = (left + right) / 2, (top + bottom) / 2
        left = min(max(cx - side / 2, 0.0), image_width - side)
        top = min(max(cy - side / 2, 0.0), image_height - side)
        right, bottom = left + side, top + side
    return (left, top, right, bottom), clipped


def process_image(path: Path, box, options: PreprocessOptions) -> dict:
    """Open, crop and resize one image. Returns a dict with ``image`` (uint8 HxWx3) or ``error``,
    plus ``mode`` (the JPEG's colour mode) and ``clipped``."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode != "RGB" and options.non_rgb == "drop":
                return {"image": None, "mode": mode, "clipped": False, "error": None, "dropped": True}
            width, height = image.size
            region, clipped = crop_region(box, width, height, options.crop, options.margin)
            # Let the JPEG decoder downscale by a power of two while decoding, keeping the crop
            # at least twice the output size so the final resize still antialiases.
            crop_short = min(region[2] - region[0], region[3] - region[1])
            scale = max(crop_short / (2 * options.image_size), 1.0)
            image.draft("RGB", (int(width / scale), int(height / scale)))
            ratio_x, ratio_y = image.size[0] / width, image.size[1] / height
            image = image.convert("RGB")  # grayscale and CMYK -> RGB
            scaled = (region[0] * ratio_x, region[1] * ratio_y, region[2] * ratio_x, region[3] * ratio_y)
            size = (options.image_size, options.image_size)
            result = image.resize(size, Image.Resampling.BICUBIC, box=scaled, reducing_gap=None)
            return {"image": np.asarray(result, dtype=np.uint8), "mode": mode, "clipped": clipped,
                    "error": None, "dropped": False}
    except ValueError as error:
        if "lies outside" in str(error):
            raise CubFormatError(f"bounding_boxes.txt: {path.name}: {error}") from None
        return {"image": None, "mode": None, "clipped": False, "error": f"{type(error).__name__}: {error}",
                "dropped": False}
    except (OSError, SyntaxError) as error:  # missing, truncated or corrupt files
        return {"image": None, "mode": None, "clipped": False, "error": f"{type(error).__name__}: {error}",
                "dropped": False}


def _process_chunk(args) -> list[dict]:
    root, paths, boxes, options = args
    return [process_image(root / "images" / p, b, options) for p, b in zip(paths, boxes)]


def random_split(image_ids: np.ndarray, class_ids: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """A seeded random train/test split, stratified by species: bool (N,), True = train.

    Made over every image *listed* in the metadata, before unreadable or dropped images are
    filtered out, so losing one image moves no other image across the split. Within each species,
    round(n * test_fraction) of its images go to the test split, chosen by a generator seeded with
    (``seed``, species id): each species' test share is test_fraction to within one image, and a
    species' draw does not depend on the others'.
    """
    train = np.ones(len(image_ids), dtype=bool)
    for class_id in np.unique(class_ids):
        members = np.flatnonzero(class_ids == class_id)
        members = members[np.argsort(image_ids[members], kind="stable")]
        test_count = int(round(len(members) * test_fraction))
        order = np.random.default_rng([seed, int(class_id)]).permutation(len(members))
        train[members[order[:test_count]]] = False
    return train


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, H, W, 3) scaled to [0, 1]."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return pixels.mean(0).tolist(), pixels.std(0).tolist()


def folder_checksum(root: Path) -> str:
    """An MD5 that identifies an extracted folder when there is no archive: the metadata files, and
    the size and modification time of every image ``images.txt`` lists (a missing one counts too).

    So a cache built from a half-copied folder is not reused once the copy is complete. Reading the
    sizes of CUB's 11,788 files takes well under a second; their contents are not read.
    """
    root = Path(root)
    digest = hashlib.md5()
    for name in (*METADATA_FILES, "classes.txt"):
        digest.update((root / name).read_bytes())
    for line in (root / "images.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue  # read_metadata names malformed lines
        try:
            stat = (root / "images" / parts[1]).stat()
            digest.update(f"{parts[1]} {stat.st_size} {stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{parts[1]} missing\n".encode())
    return digest.hexdigest()


@dataclass
class PreprocessReport:
    """What preprocessing did, for the manifest."""

    total_listed: int = 0
    kept: int = 0
    non_rgb: dict = field(default_factory=dict)  # mode -> count
    non_rgb_policy: str = "convert"
    dropped_non_rgb: list = field(default_factory=list)
    clipped_boxes: int = 0
    skipped: list = field(default_factory=list)  # {"image_id", "path", "reason"}


def preprocess(
    root: str | Path, options: PreprocessOptions, workers: int | None = None
) -> tuple[dict[str, np.ndarray], PreprocessReport]:
    """Crop, resize and split every image of a ``CUB_200_2011`` folder, on all cores.

    Returns:
        arrays (``images`` uint8 (N, S, S, 3), ``labels``, ``image_ids``, ``train_random``,
        ``train_official``) and a :class:`PreprocessReport`.
    """
    metadata = read_metadata(root)
    workers = workers or os.cpu_count() or 1
    n = len(metadata)
    chunk = max(16, n // (workers * 8) + 1)
    jobs = [(metadata.root, metadata.paths[i:i + chunk], metadata.boxes[i:i + chunk].tolist(), options)
            for i in range(0, n, chunk)]
    if workers > 1 and n > chunk:
        with ProcessPoolExecutor(workers) as pool:
            results = [r for part in pool.map(_process_chunk, jobs) for r in part]
    else:
        results = [r for job in jobs for r in _process_chunk(job)]

    report = PreprocessReport(total_listed=n, non_rgb_policy=options.non_rgb)
    keep = []
    for index, result in enumerate(results):
        image_id, path = int(metadata.image_ids[index]), metadata.paths[index]
        if result["mode"] not in (None, "RGB"):
            report.non_rgb[result["mode"]] = report.non_rgb.get(result["mode"], 0) + 1
        if result["error"] is not None:
            warnings.warn(f"skipping image {image_id} ({path}, listed in images.txt): {result['error']}",
                          stacklevel=2)
            report.skipped.append({"image_id": image_id, "path": path, "reason": result["error"]})
        elif result["dropped"]:
            report.dropped_non_rgb.append(image_id)
        else:
            report.clipped_boxes += int(result["clipped"])
            keep.append(index)
    report.kept = len(keep)
    if not keep:
        raise CubFormatError(f"{root}: no image could be read; see the warnings above")
    images = np.stack([results[i]["image"] for i in keep])
    arrays = {
        "images": images,
        "labels": metadata.class_ids[keep],
        "image_ids": metadata.image_ids[keep],
        "train_official": metadata.official_train[keep],
        "train_random": random_split(metadata.image_ids, metadata.class_ids, options.test_fraction,
                                     options.split_seed)[keep],
    }
    return arrays, report


@dataclass
class CubCache:
    """The preprocessed dataset, loaded from its cache file."""

    images: np.ndarray  # uint8 (N, S, S, 3)
    labels: np.ndarray  # int64 (N,)
    image_ids: np.ndarray  # int64 (N,)
    train_random: np.ndarray  # bool (N,)
    train_official: np.ndarray  # bool (N,)
    stats: dict  # split name -> {"mean": [3], "std": [3]} of that split's train images
    manifest: dict

    @property
    def options(self) -> dict:
        """The preprocessing options that made the cache (its manifest's settings)."""
        return self.manifest["settings"]["options"]

    def split(self, which: str = "random") -> np.ndarray:
        """The train mask of ``"random"`` (the study's 80/20 style) or ``"official"``."""
        if which not in SPLITS:
            raise ValueError(f"split={which!r}: use one of {SPLITS}")
        return self.train_random if which == "random" else self.train_official

    def train_images(self, which: str = "random") -> np.ndarray:
        return self.images[self.split(which)]

    def test_images(self, which: str = "random") -> np.ndarray:
        return self.images[~self.split(which)]

    @property
    def species_names(self) -> list[str]:
        """Species names in species-index order, from ``classes.txt`` (``"Black_footed_Albatross"``)."""
        return [entry["name"].split(".", 1)[-1] for entry in self.manifest["classes"]]

    def species_indices(self, labels: np.ndarray | None = None) -> np.ndarray:
        """0-based species indices (what a class-conditional network is trained on) of CUB class ids."""
        class_ids = np.array([entry["id"] for entry in self.manifest["classes"]])
        labels = self.labels if labels is None else np.asarray(labels)
        index = np.searchsorted(class_ids, labels)
        if (index >= len(class_ids)).any() or not np.array_equal(class_ids[np.minimum(index, len(class_ids) - 1)],
                                                                  labels):
            raise ValueError("labels not listed in classes.txt; the cache does not belong to its manifest")
        return index

    def train_species(self, which: str = "random") -> np.ndarray:
        return self.species_indices()[self.split(which)]

    def test_species(self, which: str = "random") -> np.ndarray:
        return self.species_indices()[~self.split(which)]


def cache_manifest(source_checksum: str, options: PreprocessOptions, source: str) -> Manifest:
    """What makes a cache: the source's identity (the archive's MD5, or an extracted folder's
    :func:`folder_checksum`), every preprocessing option and the cache stage's code version."""
    return manifest("data_cache", {"source": source_checksum}, {"source": source, "options": asdict(options)})


def cache_path(cache_dir: str | Path, options: PreprocessOptions, source_checksum: str, source: str) -> Path:
    """``cache_dir/cub_<source>_<size>px_<identity>.npz``: the cache of these data and options. The
    identity (:func:`cache_manifest`) is what runs, classifiers and feature caches record as their data."""
    identity = cache_manifest(source_checksum, options, source).identity
    return Path(cache_dir) / f"cub_{source}_{options.image_size}px_{identity}.npz"


def data_identity(path: str | Path) -> str:
    """The identity of the cache at ``path`` (recorded in its manifest; its file name carries it too)."""
    recorded = json.loads(Path(path).with_suffix(".json").read_text()).get("identity")
    if recorded is None:
        raise FileNotFoundError(f"{path} was made before caches recorded their identity; run prepare again")
    return recorded


def build_cache(root: str | Path, cache_dir: str | Path, options: PreprocessOptions, source_checksum: str,
                source: str, workers: int | None = None) -> Path:
    """Preprocess ``root`` into :func:`cache_path` (+ a ``.json`` manifest) unless a cache with the
    same identity exists. Returns the cache's path.

    One process builds at a time (a file lock); a second one waits and then finds the cache. Both files
    are written under names unique to the process and renamed into place, the manifest last, so a cache
    is either whole or absent."""
    cache_dir = Path(cache_dir)
    path = cache_path(cache_dir, options, source_checksum, source)
    manifest_path = path.with_suffix(".json")
    with file_lock(cache_dir / ".cache.lock", "the data cache"):
        if path.exists() and manifest_path.exists():
            return path
        arrays, report = preprocess(root, options, workers)
        class_names = read_metadata(root).class_names
        stats = {}
        for name in SPLITS:
            mean, std = channel_stats(arrays["images"][arrays[f"train_{name}"]])
            stats[name] = {"mean": mean, "std": std}
        record = cache_manifest(source_checksum, options, source)
        facts = {
            "source_checksum": source_checksum,
            "counts": {
                "listed": report.total_listed, "kept": report.kept, "skipped": len(report.skipped),
                "dropped_non_rgb": len(report.dropped_non_rgb), "clipped_boxes": report.clipped_boxes,
                "train_random": int(arrays["train_random"].sum()),
                "test_random": int((~arrays["train_random"]).sum()),
                "train_official": int(arrays["train_official"].sum()),
                "test_official": int((~arrays["train_official"]).sum()),
            },
            "non_rgb": report.non_rgb,
            "non_rgb_policy": report.non_rgb_policy,
            "dropped_non_rgb_ids": report.dropped_non_rgb,
            "skipped": report.skipped,
            "stats": stats,
            "classes": [{"id": key, "name": class_names[key]} for key in sorted(class_names)],
        }
        cache_dir.mkdir(parents=True, exist_ok=True)
        temporary = temporary_path(path)
        with open(temporary, "wb") as handle:  # a file object: np.savez adds no suffix
            np.savez(handle, **arrays)
        os.replace(temporary, path)
        write_manifest(manifest_path, record, **facts)
    return path


def load_cache(path: str | Path) -> CubCache:
    """Load a cache written by :func:`build_cache`."""
    path = Path(path)
    manifest_path = path.with_suffix(".json")
    if not path.exists() or not manifest_path.exists():
        raise FileNotFoundError(f"{path}: no such cache; run `python -m ddpm_lib prepare` first")
    facts = json.loads(manifest_path.read_text())
    with np.load(path) as data:
        return CubCache(
            images=data["images"], labels=data["labels"], image_ids=data["image_ids"],
            train_random=data["train_random"], train_official=data["train_official"],
            stats=facts["stats"], manifest=facts,
        )
