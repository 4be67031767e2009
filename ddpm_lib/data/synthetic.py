"""A procedural dataset in the exact CUB_200_2011 layout: the embedded default for offline runs.

Each "species" has its own body shape and colour palette; each image draws one bird (body, head,
wing, tail, beak, eye) at a random place and scale on a varied background (sky or foliage
gradients, leaves, a branch), at CUB-like image sizes. The bounding box written to
``bounding_boxes.txt`` is the exact extent of the drawn bird. A few images are saved as grayscale
and CMYK JPEGs, and at least one bird touches the image border, as in the real data.

Layout written (as the real archive):
``CUB_200_2011/{images/NNN.Name/*.jpg, images.txt, bounding_boxes.txt, train_test_split.txt,
image_class_labels.txt, classes.txt, README, attributes/, parts/}``.
"""

from __future__ import annotations

import colorsys
import gzip
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SPECIES_WORDS = (
    "Azure", "Crimson", "Golden", "Slate", "Olive", "Rusty", "Pied", "Ivory", "Copper", "Dusky",
    "Scarlet", "Amber", "Teal", "Sooty", "Pearl", "Indigo", "Saffron", "Ashy", "Cobalt", "Mossy",
)
SPECIES_KINDS = ("Finch", "Warbler", "Tanager", "Wren", "Sparrow", "Jay", "Oriole", "Bunting", "Tern", "Flycatcher")


@dataclass(frozen=True)
class Species:
    """A synthetic species: a name and the parameters its birds are drawn with."""

    class_id: int
    name: str
    body_rgb: tuple[int, int, int]
    wing_rgb: tuple[int, int, int]
    head_rgb: tuple[int, int, int]
    beak_rgb: tuple[int, int, int]
    body_aspect: float  # body height / width
    tail_length: float  # relative to body width
    head_size: float  # relative to body height


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return int(r * 255), int(g * 255), int(b * 255)


def make_species(num_classes: int, seed: int = 0) -> list[Species]:
    """``num_classes`` distinct species, drawn from ``seed``; names like ``Azure_Finch``."""
    rng = np.random.default_rng(seed)
    species = []
    for index in range(num_classes):
        hue = (index / max(num_classes, 1) + rng.uniform(-0.03, 0.03)) % 1.0
        word = SPECIES_WORDS[index % len(SPECIES_WORDS)]
        kind = SPECIES_KINDS[(index // len(SPECIES_WORDS) + index) % len(SPECIES_KINDS)]
        suffix = f"_{index // (len(SPECIES_WORDS) * len(SPECIES_KINDS)) + 1}" if index >= 200 else ""
        species.append(Species(
            class_id=index + 1,
            name=f"{word}_{kind}{suffix}",
            body_rgb=_rgb(hue, rng.uniform(0.5, 0.95), rng.uniform(0.55, 0.95)),
            wing_rgb=_rgb(hue + rng.uniform(-0.15, 0.15), rng.uniform(0.3, 0.9), rng.uniform(0.25, 0.7)),
            head_rgb=_rgb(hue + rng.choice([0.0, 0.5, 0.33]), rng.uniform(0.2, 0.9), rng.uniform(0.3, 1.0)),
            beak_rgb=_rgb(rng.uniform(0.05, 0.15), rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.9)),
            body_aspect=float(rng.uniform(0.5, 0.85)),
            tail_length=float(rng.uniform(0.25, 0.7)),
            head_size=float(rng.uniform(0.45, 0.7)),
        ))
    return species


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A sky or foliage gradient with blurred leaves and sometimes a branch."""
    top = np.array(_rgb(rng.uniform(0.15, 0.65), rng.uniform(0.1, 0.6), rng.uniform(0.5, 0.95)), dtype=np.float32)
    bottom = np.array(_rgb(rng.uniform(0.1, 0.4), rng.uniform(0.2, 0.7), rng.uniform(0.2, 0.7)), dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    pixels = top * (1 - ramp) + bottom * ramp
    pixels = pixels + rng.normal(0, 6, size=(height, width, 1)).astype(np.float32)  # film grain
    image = Image.fromarray(np.clip(np.broadcast_to(pixels, (height, width, 3)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 12))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.03, 0.15) * min(width, height)
        colour = _rgb(rng.uniform(0.2, 0.4), rng.uniform(0.3, 0.8), rng.uniform(0.2, 0.7))
        draw.ellipse([cx - r, cy - r * 0.6, cx + r, cy + r * 0.6], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(1.0, 4.0))))
    if rng.random() < 0.7:
        draw = ImageDraw.Draw(image)
        y0, y1 = rng.uniform(0.55, 0.95) * height, rng.uniform(0.55, 0.95) * height
        draw.line([(0, y0), (width, y1)], fill=_rgb(0.08, 0.5, rng.uniform(0.2, 0.45)),
                  width=int(rng.integers(6, 18)))
    return image


def render_bird(
    rng: np.random.Generator, species: Species, width: int, height: int, touch_border: bool = False
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Draw one bird of ``species`` on a background.

    Returns:
        the RGB image and the bird's exact bounding box (x, y, w, h) in pixels, with x + w <= width
        and y + h <= height.
    """
    image = _background(rng, width, height)
    mask = Image.new("L", (width, height), 0)
    layers = [ImageDraw.Draw(image), ImageDraw.Draw(mask)]

    body_w = rng.uniform(0.25, 0.55) * width
    body_h = body_w * species.body_aspect
    facing = 1 if rng.random() < 0.5 else -1
    if touch_border:
        cx = body_w * 0.5 + body_w * species.tail_length * 0.2  # the tail crosses the left edge
        facing = 1
    else:
        margin = body_w * (0.5 + species.tail_length) + 4
        cx = rng.uniform(margin, max(margin + 1, width - margin))
    cy = rng.uniform(body_h * 1.2, max(body_h * 1.2 + 1, height - body_h * 0.8))
    head_r = body_h * species.head_size * 0.6
    head = (cx + facing * body_w * 0.42, cy - body_h * 0.45)
    tail_tip = (cx - facing * body_w * (0.5 + species.tail_length), cy - body_h * rng.uniform(-0.1, 0.4))

    def shape(kind: str, coords, colour) -> None:
        for index, layer in enumerate(layers):
            fill = colour if index == 0 else 255
            getattr(layer, kind)(coords, fill=fill)

    shape("polygon", [(cx - facing * body_w * 0.3, cy - body_h * 0.2), tail_tip,
                      (cx - facing * body_w * 0.3, cy + body_h * 0.15)], species.wing_rgb)
    shape("ellipse", [cx - body_w / 2, cy - body_h / 2, cx + body_w / 2, cy + body_h / 2], species.body_rgb)
    wing = [(cx - facing * body_w * 0.35, cy - body_h * 0.15), (cx + facing * body_w * 0.2, cy - body_h * 0.3),
            (cx + facing * body_w * 0.05, cy + body_h * 0.25)]
    shape("polygon", wing, species.wing_rgb)
    shape("ellipse", [head[0] - head_r, head[1] - head_r, head[0] + head_r, head[1] + head_r], species.head_rgb)
    beak = [(head[0] + facing * head_r * 0.8, head[1] - head_r * 0.25),
            (head[0] + facing * head_r * 1.8, head[1] + head_r * 0.05),
            (head[0] + facing * head_r * 0.8, head[1] + head_r * 0.3)]
    shape("polygon", beak, species.beak_rgb)
    eye_r = max(head_r * 0.15, 1.0)
    eye = (head[0] + facing * head_r * 0.35, head[1] - head_r * 0.2)
    layers[0].ellipse([eye[0] - eye_r, eye[1] - eye_r, eye[0] + eye_r, eye[1] + eye_r], fill=(15, 15, 15))

    left, top, right, bottom = mask.getbbox()  # exact extent of the drawn bird
    return image, (left, top, right - left, bottom - top)


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    """A CUB-like image size: mostly 500 px on the long side, landscape more often than portrait."""
    long_side = int(rng.choice([500, 500, 500, 480, 400, 333]))
    short_side = int(long_side * rng.uniform(0.6, 0.9))
    return (long_side, short_side) if rng.random() < 0.75 else (short_side, long_side)


def write_synthetic_cub(
    root: str | Path,
    num_images: int = 600,
    num_classes: int = 10,
    seed: int = 0,
    num_grayscale: int = 2,
    num_cmyk: int = 1,
    image_size: tuple[int, int] | None = None,
) -> Path:
    """Write a synthetic dataset in the ``CUB_200_2011`` layout under ``root``.

    Args:
        root: the folder that will hold ``CUB_200_2011/``.
        num_images: number of images (real CUB: 11,788).
        num_classes: number of species (real CUB: 200).
        seed: everything drawn is a function of the seed.
        num_grayscale, num_cmyk: how many images are saved as grayscale / CMYK JPEGs.
        image_size: a fixed (width, height) for every image; CUB-like random sizes when None.
    Returns:
        the path of the ``CUB_200_2011`` folder.
    """
    if num_images < num_classes or num_classes < 1:
        raise ValueError(f"need num_images >= num_classes >= 1, got {num_images}, {num_classes}")
    rng = np.random.default_rng(seed)
    base = Path(root) / "CUB_200_2011"
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "attributes").mkdir(exist_ok=True)
    (base / "parts").mkdir(exist_ok=True)
    species = make_species(num_classes, seed)
    folders = {s.class_id: f"{s.class_id:03d}.{s.name}" for s in species}
    special = rng.permutation(num_images)
    grayscale = set(special[:num_grayscale].tolist())
    cmyk = set(special[num_grayscale:num_grayscale + num_cmyk].tolist())
    border = int(special[num_grayscale + num_cmyk]) if num_images > num_grayscale + num_cmyk else 0

    images, boxes, splits, labels = [], [], [], []
    for index in range(num_images):
        image_id = index + 1
        bird = species[index % num_classes]  # balanced classes, like CUB's ~60 per class
        width, height = image_size or _image_size(rng)
        image, (x, y, w, h) = render_bird(rng, bird, width, height, touch_border=(index == border))
        relative = f"{folders[bird.class_id]}/{bird.name}_{image_id:04d}_{int(rng.integers(1e5, 1e6))}.jpg"
        path = base / "images" / relative
        path.parent.mkdir(exist_ok=True)
        if index in grayscale:
            image = image.convert("L")
        elif index in cmyk:
            image = image.convert("CMYK")
        image.save(path, quality=90)
        images.append(f"{image_id} {relative}")
        boxes.append(f"{image_id} {float(x)} {float(y)} {float(w)} {float(h)}")
        splits.append(f"{image_id} {int(rng.random() < 0.5)}")
        labels.append(f"{image_id} {bird.class_id}")

    def write(name: str, lines: list[str]) -> None:
        (base / name).write_text("\n".join(lines) + "\n")

    write("images.txt", images)
    write("bounding_boxes.txt", boxes)
    write("train_test_split.txt", splits)
    write("image_class_labels.txt", labels)
    write("classes.txt", [f"{s.class_id} {folders[s.class_id]}" for s in species])
    write("README", ["A synthetic, procedurally drawn replica of the CUB_200_2011 layout, made by ddpm_lib.",
                     f"seed={seed} images={num_images} classes={num_classes}. Not real birds."])
    write("attributes/attributes.txt", ["1 has_synthetic_shape::yes"])
    write("parts/parts.txt", ["1 beak"])
    return base


def make_synthetic_archive(out_dir: str | Path, name: str = "CUB_200_2011.tgz", **kwargs) -> Path:
    """Write the synthetic dataset and pack it as a ``.tgz`` shaped like the real archive.

    Keyword arguments go to :func:`write_synthetic_cub`. Returns the archive's path. The archive is the
    same byte for byte for the same arguments (members in sorted order, no times or owners recorded),
    so its MD5, and every cache made from it, is a function of the seed alone.
    """
    out_dir = Path(out_dir)
    staging = out_dir / "synthetic_staging"
    folder = write_synthetic_cub(staging, **kwargs)
    archive = out_dir / name
    partial = archive.with_suffix(".tgz.partial")

    def plain(member: tarfile.TarInfo) -> tarfile.TarInfo:
        member.mtime, member.uid, member.gid, member.uname, member.gname = 0, 0, 0, "", ""
        return member

    try:
        with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                       compresslevel=1) as packed:  # JPEGs barely compress
            with tarfile.open(fileobj=packed, mode="w") as tar:
                tar.add(folder, arcname="CUB_200_2011", filter=plain)
        partial.replace(archive)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return archive


def render_dataset(
    num_images: int, num_classes: int, image_size: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic birds drawn in memory, cropped to their boxes and resized: no files written.

    Returns:
        images, uint8 (N, image_size, image_size, 3); labels, int64 (N,) class ids from 1.
    """
    rng = np.random.default_rng(seed)
    species = make_species(num_classes, seed)
    images = np.empty((num_images, image_size, image_size, 3), dtype=np.uint8)
    labels = np.empty(num_images, dtype=np.int64)
    for index in range(num_images):
        bird = species[index % num_classes]
        image, (x, y, w, h) = render_bird(rng, bird, *_image_size(rng))
        crop = image.crop((x, y, x + w, y + h)).resize((image_size, image_size), Image.Resampling.LANCZOS)
        images[index] = np.asarray(crop)
        labels[index] = bird.class_id
    return images, labels
