"""A procedural dataset in the exact CUB_200_2011 layout: the embedded default for offline runs.

Species differ the way CUB's do: in **shape**. Each species descends from one of a dozen families
(:data:`FAMILIES`: finch, warbler, wren, jay, tern, heron, woodpecker, hummingbird, curlew,
flycatcher, parrot, duck) and differs in silhouette and proportions (body length and depth,
posture, head size, neck), beak (length, depth, curve), tail (length, fork, fan, tilt), crest,
legs and wing pattern (plain, bars, patch, dark tips, spots). **Colour does not tell species
apart**: palettes come from a pool shared between species (each palette is worn by several
species, each species wears several palettes), and every bird's colours vary around its palette.
A classifier that reads colours alone is therefore near chance; one that reads shapes is not.

Each image draws one bird at a random place, scale, facing and tilt on a varied background (sky or
foliage gradients, leaves, a branch), at CUB-like image sizes. The bounding box written to
``bounding_boxes.txt`` is the exact extent of the drawn bird (feet, tail tip, crest and beak
included). A few images are saved as grayscale and CMYK JPEGs, and one bird crosses the image
border, as in the real data. Image i of seed s is drawn from its own generator (``[s, stream, i]``),
so it is the same however many images are drawn; :func:`render_dataset` draws **fresh** birds
(another stream, never in the archive) through the very crop and resize of the cache
(``data/cub.process_image``, from the same JPEG bytes), a true sample of the same population.

Layout written (as the real archive):
``CUB_200_2011/{images/NNN.Name/*.jpg, images.txt, bounding_boxes.txt, train_test_split.txt,
image_class_labels.txt, classes.txt, README, attributes/, parts/}``.
"""

from __future__ import annotations

import colorsys
import gzip
import io
import math
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# What the renderer draws; part of what a replica is (bump it when a change moves any pixel).
RENDER_VERSION = 2  # 2: species that differ in shape, palettes shared between species
JPEG_QUALITY = 90  # the archive's JPEGs, and the fresh renders' (same bytes, same decoder)
STREAMS = {"archive": 0, "fresh": 1}  # image i of seed s comes from default_rng([s, STREAMS[stream], i])
LOOKS = ("colour", "grey", "repainted")  # render_dataset: as drawn; shape only; another species' palette

SPECIES_WORDS = (
    "Common", "Lesser", "Greater", "Northern", "Southern", "Eastern", "Western", "Mountain", "Marsh", "Forest",
    "Desert", "Island", "Little", "Great", "Pale", "Dusky", "Spotted", "Plain", "Royal", "Least",
)


@dataclass(frozen=True)
class Palette:
    """The colours one bird is painted with (RGB 0-255); ``accent`` paints wing bars, patches and spots."""

    body: tuple[int, int, int]
    belly: tuple[int, int, int]
    wing: tuple[int, int, int]
    head: tuple[int, int, int]
    accent: tuple[int, int, int]
    beak: tuple[int, int, int]
    legs: tuple[int, int, int]


@dataclass(frozen=True)
class Shape:
    """A species' silhouette and proportions, lengths in units of the body length L.

    Attributes:
        body_depth: body height / length (0.3 slim .. 0.75 round).
        posture: degrees the body axis rises towards the head (0 horizontal .. 75 upright).
        head: head radius. neck: neck length (0 for most; herons). neck_angle: its direction,
            degrees above the forward horizontal.
        beak_length, beak_depth (relative to the head radius at its base), beak_curve (degrees the
            tip bends down; a hook when large and the beak short), beak_angle (degrees below horizontal).
        tail_length, tail_width (at its end, relative to the body depth), tail_fork (0 .. 0.8 of its
            length cut out in a V), tail_fan (1: straight edge; > 1: a rounded fan), tail_tilt
            (degrees above the body axis; a wren's cocked tail).
        crest: crest height (0: none). legs: leg length below the body. wing_length: how far the
            wing tip reaches past the body's back end. pattern: the wing's pattern (:data:`PATTERNS`).
    """

    body_depth: float
    posture: float
    head: float
    neck: float
    neck_angle: float
    beak_length: float
    beak_depth: float
    beak_curve: float
    beak_angle: float
    tail_length: float
    tail_width: float
    tail_fork: float
    tail_fan: float
    tail_tilt: float
    crest: float
    legs: float
    wing_length: float
    pattern: str


PATTERNS = ("plain", "bars", "patch", "tips", "spots")

# Families after CUB's orders: each sets a shape; species of one family vary around it.
FAMILIES: dict[str, Shape] = {
    "Finch": Shape(0.62, 30, 0.2, 0, 0, 0.16, 0.95, 5, 5, 0.35, 0.5, 0.25, 1.0, 5, 0, 0.12, 0.1, "bars"),
    "Warbler": Shape(0.42, 25, 0.16, 0, 0, 0.17, 0.45, 0, 0, 0.45, 0.45, 0, 1.0, 0, 0, 0.14, 0.05, "plain"),
    "Wren": Shape(0.68, 15, 0.19, 0, 0, 0.22, 0.4, 20, 5, 0.35, 0.55, 0, 1.3, 70, 0, 0.14, -0.05, "bars"),
    "Jay": Shape(0.5, 25, 0.2, 0, 0, 0.2, 0.8, 10, 5, 0.75, 0.9, 0, 1.6, -5, 0.3, 0.14, 0.1, "patch"),
    "Tern": Shape(0.3, 0, 0.15, 0, 0, 0.3, 0.55, 0, 8, 0.8, 1.1, 0.75, 1.0, 5, 0, 0.05, 0.55, "tips"),
    "Heron": Shape(0.4, 20, 0.12, 0.55, 70, 0.5, 0.7, 0, 10, 0.2, 0.5, 0, 1.0, -10, 0.12, 0.75, 0.05, "plain"),
    "Woodpecker": Shape(0.4, 70, 0.2, 0, 0, 0.32, 0.7, 0, 0, 0.45, 0.35, 0.15, 1.0, -10, 0.1, 0.12, 0.05, "spots"),
    "Hummingbird": Shape(0.42, 40, 0.2, 0, 0, 0.62, 0.3, 5, 2, 0.25, 0.8, 0, 1.8, 0, 0, 0.04, 0.25, "plain"),
    "Curlew": Shape(0.45, 5, 0.15, 0.08, 40, 0.7, 0.5, 45, 10, 0.2, 0.5, 0, 1.0, 0, 0, 0.45, 0.1, "spots"),
    "Flycatcher": Shape(0.5, 45, 0.26, 0, 0, 0.2, 0.9, 0, 0, 0.55, 0.7, 0.1, 1.0, -5, 0.15, 0.12, 0.05, "tips"),
    "Parrot": Shape(0.5, 50, 0.24, 0, 0, 0.18, 1.3, 110, 20, 0.95, 0.4, 0, 1.0, -5, 0, 0.1, 0.1, "patch"),
    "Duck": Shape(0.5, 0, 0.2, 0.18, 75, 0.28, 0.5, -5, 0, 0.12, 0.6, 0, 1.0, 20, 0, 0.0, 0.0, "bars"),
}


@dataclass(frozen=True)
class Species:
    """A synthetic species: a name, a shape (after its family) and the palettes its birds wear."""

    class_id: int
    name: str
    family: str
    shape: Shape
    palettes: tuple[Palette, ...]


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return int(r * 255), int(g * 255), int(b * 255)


def palette_pool(size: int, seed: int = 0) -> list[Palette]:
    """``size`` palettes with hues spread around the circle, drawn from ``seed``."""
    rng = np.random.default_rng([seed, 7])
    pool = []
    for index in range(size):
        hue = (index / size + rng.uniform(-0.04, 0.04)) % 1.0
        pool.append(Palette(
            body=_rgb(hue, rng.uniform(0.45, 0.9), rng.uniform(0.45, 0.85)),
            belly=_rgb(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.1, 0.45), rng.uniform(0.75, 0.98)),
            wing=_rgb(hue + rng.uniform(-0.1, 0.1), rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.5)),
            head=_rgb(hue + rng.choice([0.0, 0.08, 0.5]), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.9)),
            accent=_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.3), rng.uniform(0.88, 1.0)),  # pale: bars, spots
            beak=_rgb(rng.uniform(0.05, 0.15), rng.uniform(0.2, 0.9), rng.uniform(0.15, 0.85)),
            legs=_rgb(rng.uniform(0.0, 0.1), rng.uniform(0.1, 0.7), rng.uniform(0.2, 0.6)),
        ))
    return pool


def make_species(num_classes: int, seed: int = 0) -> list[Species]:
    """``num_classes`` species drawn from ``seed``: species i of family ``FAMILIES[i % 12]``, its shape
    varied around the family's (by more for later members of a family), wearing ``min(3, P)`` of a
    pool of P = max(2, ceil(K / 2)) palettes, the first of which is palette i mod P, so every palette
    is worn by at least two species (whenever K >= 2). Names like ``Lesser_Wren``."""
    rng = np.random.default_rng(seed)
    families = list(FAMILIES)
    pool = palette_pool(max(2, math.ceil(num_classes / 2)), seed)
    species = []
    for index in range(num_classes):
        family = families[index % len(families)]
        member = index // len(families)  # 0: the family's own shape; later members drift further
        shape = _vary_shape(FAMILIES[family], rng, spread=0.1 + 0.05 * min(member, 4))
        own = index % len(pool)
        others = [p for p in rng.permutation(len(pool)).tolist() if p != own][: min(3, len(pool)) - 1]
        word = SPECIES_WORDS[member % len(SPECIES_WORDS)]
        suffix = f"_{member // len(SPECIES_WORDS) + 1}" if member >= len(SPECIES_WORDS) else ""
        species.append(Species(index + 1, f"{word}_{family}{suffix}", family, shape,
                               tuple(pool[p] for p in [own, *others])))
    return species


def _vary_shape(shape: Shape, rng: np.random.Generator, spread: float) -> Shape:
    """``shape`` with every length scaled by up to +-``spread`` and every angle moved by up to 40x it."""
    def scale(value: float) -> float:
        return float(value * rng.uniform(1 - spread, 1 + spread))

    def turn(value: float) -> float:
        return float(value + rng.uniform(-40, 40) * spread)

    return Shape(scale(shape.body_depth), turn(shape.posture), scale(shape.head), scale(shape.neck),
                 turn(shape.neck_angle), scale(shape.beak_length), scale(shape.beak_depth), turn(shape.beak_curve),
                 turn(shape.beak_angle), scale(shape.tail_length), scale(shape.tail_width),
                 min(scale(shape.tail_fork), 0.85), max(scale(shape.tail_fan), 1.0), turn(shape.tail_tilt),
                 scale(shape.crest), scale(shape.legs), shape.wing_length + rng.uniform(-1, 1) * spread * 0.5,
                 shape.pattern)


def _jitter_palette(palette: Palette, rng: np.random.Generator) -> Palette:
    """One bird's colours: each of the palette's moved a little in hue, saturation and value."""
    def move(colour: tuple[int, int, int]) -> tuple[int, int, int]:
        h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in colour))
        return _rgb(h + rng.uniform(-0.03, 0.03), s + rng.uniform(-0.1, 0.1), v + rng.uniform(-0.1, 0.1))

    return Palette(*(move(getattr(palette, name)) for name in Palette.__dataclass_fields__))


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A sky or foliage gradient with out-of-focus leaves (soft blobs, as a photo's bokeh) and sometimes
    a branch."""
    top = np.array(_rgb(rng.uniform(0.15, 0.65), rng.uniform(0.1, 0.6), rng.uniform(0.5, 0.95)), dtype=np.float32)
    bottom = np.array(_rgb(rng.uniform(0.1, 0.4), rng.uniform(0.2, 0.7), rng.uniform(0.2, 0.7)), dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    pixels = top * (1 - ramp) + bottom * ramp
    pixels = pixels + rng.normal(0, 6, size=(height, width, 1)).astype(np.float32)  # film grain
    image = Image.fromarray(np.clip(np.broadcast_to(pixels, (height, width, 3)), 0, 255).astype(np.uint8))
    leaves = Image.new("RGB", (width, height))
    leaves.paste(image)
    draw = ImageDraw.Draw(leaves)
    for _ in range(int(rng.integers(2, 8))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.2) * min(width, height)
        colour = _rgb(rng.uniform(0.2, 0.4), rng.uniform(0.3, 0.8), rng.uniform(0.2, 0.7))
        draw.ellipse([cx - r, cy - r * 0.7, cx + r, cy + r * 0.7], fill=colour)
    # the leaves far behind the bird are out of focus: blurred by a tenth to a fifth of their size
    image = leaves.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.025, 0.05) * min(width, height))))
    if rng.random() < 0.7:
        draw = ImageDraw.Draw(image)
        y0, y1 = rng.uniform(0.55, 0.95) * height, rng.uniform(0.55, 0.95) * height
        draw.line([(0, y0), (width, y1)], fill=_rgb(0.08, 0.5, rng.uniform(0.2, 0.45)),
                  width=int(rng.integers(6, 18)))
    return image


# ----- the bird, part by part, in units of the body length (x forward, y up) ------------------------------
def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    angle = math.radians(degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return points @ rotation.T


def _ellipse(centre, a: float, b: float, count: int = 28, start: float = 0.0, stop: float = 360.0) -> np.ndarray:
    angles = np.radians(np.linspace(start, stop, count, endpoint=stop - start < 360))
    return np.stack([centre[0] + a * np.cos(angles), centre[1] + b * np.sin(angles)], axis=1)


def _direction(degrees: float) -> np.ndarray:
    return np.array([math.cos(math.radians(degrees)), math.sin(math.radians(degrees))])


def _bird_parts(shape: Shape, tilt: float) -> list[tuple[str, np.ndarray, str]]:
    """The bird as (name, polygon (P, 2), colour name) in drawing order, in body lengths, facing +x,
    y up, the body centred at 0. ``tilt``: this bird's extra posture (degrees)."""
    posture = shape.posture + tilt
    depth = shape.body_depth

    def body_frame(points) -> np.ndarray:  # parts that turn with the body
        return _rotate(np.asarray(points, dtype=float), posture)

    parts = []
    # Tail: from the back end of the body, along the body axis lifted by its tilt.
    base_width = depth * 0.45
    end_width = max(shape.tail_width * depth, base_width * 0.3)
    length = shape.tail_length
    if shape.tail_fan > 1.0:  # a rounded fan: the end is an arc
        spread = math.degrees(math.atan2(end_width / 2, length)) * shape.tail_fan
        arc = _ellipse((0, 0), length, length, 9, -spread, spread)
        tail = np.concatenate([[(0, -base_width / 2)], arc, [(0, base_width / 2)]])
    else:
        fork = shape.tail_fork * length
        tail = np.array([(0, -base_width / 2), (length, -end_width / 2), (length - fork, 0),
                         (length, end_width / 2), (0, base_width / 2)])
    tail = _rotate(tail, 180 - shape.tail_tilt) + np.array([-0.42, 0.05 * depth])
    parts.append(("tail", body_frame(tail), "wing"))
    # Legs: straight down from under the body, in the world's vertical, with a short foot forward.
    hips = body_frame([(0.06, -0.4 * depth), (-0.06, -0.4 * depth)])
    leg_width = 0.025
    for hip in hips:
        foot = hip + np.array([0.0, -shape.legs - 0.05])
        parts.append(("leg", np.array([hip + (-leg_width, 0), hip + (leg_width, 0), foot + (leg_width, 0),
                                       foot + (0.09, 0), foot + (0.09, -leg_width * 1.5),
                                       foot + (-leg_width, -leg_width * 1.5)]), "legs"))
    # Body and belly (the lower half of the body ellipse).
    parts.append(("body", body_frame(_ellipse((0, 0), 0.5, depth / 2)), "body"))
    parts.append(("belly", body_frame(_ellipse((0.03, -0.04 * depth), 0.44, depth * 0.42, 14, 195, 345)), "belly"))
    # Neck and head.
    anchor = body_frame([(0.36, 0.22 * depth)])[0]
    head_centre = anchor + shape.neck * _direction(shape.neck_angle)
    if shape.neck > 0.02:
        across = _direction(shape.neck_angle + 90) * shape.head * 0.55
        parts.append(("neck", np.array([anchor - across * 1.4, head_centre - across, head_centre + across,
                                        anchor + across * 1.4]), "body"))
    head = _ellipse(head_centre, shape.head, shape.head * 0.92)
    if shape.crest > 0.01:  # a crest: a spike rising backwards from the crown
        crown = head_centre + shape.head * _direction(100)
        back = head_centre + shape.head * _direction(150)
        tip = head_centre + (shape.head + shape.crest) * _direction(128)
        parts.append(("crest", np.array([crown, tip, back, head_centre]), "head"))
    parts.append(("head", head, "head"))
    # Beak: from the front of the head, bending down by its curve towards the tip.
    steps = np.linspace(0.0, 1.0, 9)
    base = head_centre + shape.head * 0.8 * _direction(-shape.beak_angle)
    angles = -shape.beak_angle - shape.beak_curve * steps**1.5
    segment = shape.beak_length / (len(steps) - 1)
    centre = base + np.concatenate([[(0, 0)], np.cumsum([segment * _direction(a) for a in angles[1:]], axis=0)])
    half = shape.beak_depth * shape.head * 0.5 * (1 - steps) ** 0.9 + 0.004
    normal = np.stack([_direction(a + 90) for a in angles])
    beak = np.concatenate([centre + normal * half[:, None], (centre - normal * half[:, None])[::-1]])
    parts.append(("beak", beak, "beak"))
    # Wing: a teardrop from the shoulder to past the body's back end, along the body; its pattern lies
    # on it (bands between two positions along the wing, spots inside its outline).
    shoulder, tip = np.array([0.28, 0.1 * depth]), np.array([-0.48 - shape.wing_length, 0.02 * depth])

    def edges(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        middle = shoulder[None] + s[:, None] * (tip - shoulder)[None]
        width = depth * 0.38 * np.sin(np.pi * np.clip(s, 0, 1) ** 0.55) + 0.005
        return middle + np.outer(width * 0.8, (0, 1)), middle - np.outer(width * 1.2, (0, 1)), width

    def band(s0: float, s1: float) -> np.ndarray:
        upper, lower, _ = edges(np.linspace(s0, s1, 6))
        return np.concatenate([upper, lower[::-1]])

    parts.append(("wing", body_frame(band(0.0, 1.0)), "wing"))
    if shape.pattern == "bars":
        parts += [("bars", body_frame(band(0.3, 0.37)), "accent"), ("bars", body_frame(band(0.5, 0.57)), "accent")]
    elif shape.pattern == "patch":
        parts.append(("patch", body_frame(band(0.06, 0.36)), "accent"))
    elif shape.pattern == "tips":
        parts.append(("tips", body_frame(band(0.66, 1.0)), "dark"))
    elif shape.pattern == "spots":
        for s, across in ((0.25, 0.1), (0.38, -0.5), (0.52, 0.2), (0.66, -0.4), (0.45, -0.05)):
            upper, lower, width = edges(np.array([s]))
            centre = (upper[0] + lower[0]) / 2 + np.array([0, across * width[0]])
            parts.append(("spots", body_frame(_ellipse(centre, width[0] * 0.35, width[0] * 0.35, 8)), "accent"))
    # The eye, inside the head.
    eye = head_centre + shape.head * np.array([0.35, 0.2])
    parts.append(("eye", _ellipse(eye, shape.head * 0.2, shape.head * 0.2, 10), "dark"))
    return parts


def _vary_bird(shape: Shape, rng: np.random.Generator) -> Shape:
    """This bird's shape: its species' with every length within +-8% and every angle within +-6 degrees."""
    return _vary_shape(shape, rng, spread=0.08)


def render_bird(
    rng: np.random.Generator, species: Species, width: int, height: int, touch_border: bool = False,
    palette: Palette | None = None,
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Draw one bird of ``species`` on a background (drawn first, from the same ``rng``).

    Args:
        palette: paint the bird in this palette instead of one of its species' (a repainted bird).
    Returns:
        the RGB image and the bird's exact bounding box (x, y, w, h) in pixels, with x + w <= width
        and y + h <= height.
    """
    image = _background(rng, width, height)
    shape = _vary_bird(species.shape, rng)
    chosen = palette if palette is not None else species.palettes[int(rng.integers(len(species.palettes)))]
    colours = {**{name: getattr(_jitter_palette(chosen, rng), name) for name in Palette.__dataclass_fields__},
               "dark": (18, 18, 18)}
    facing = 1 if touch_border or rng.random() < 0.5 else -1
    parts = _bird_parts(shape, tilt=float(rng.uniform(-8, 8)))
    points = np.concatenate([p for _, p, _ in parts])
    extent = points.max(0) - points.min(0)  # in body lengths
    scale = rng.uniform(0.3, 0.75) * min(width / extent[0], height / extent[1])  # pixels per body length

    def to_pixels(polygon: np.ndarray) -> list[tuple[float, float]]:
        xy = (polygon - points.min(0)) * scale
        return [(float(facing * (x - extent[0] * scale / 2) + extent[0] * scale / 2), float(extent[1] * scale - y))
                for x, y in xy]

    size = extent * scale
    if touch_border:  # the tail crosses the left edge: the box starts at x = 0, as CUB's clipped ones
        left = -0.12 * size[0]
    else:
        left = rng.uniform(2, max(3, width - size[0] - 2))
    top = rng.uniform(2, max(3, height - size[1] - 2))
    mask = Image.new("L", (width, height), 0)
    draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _, polygon, colour in parts:
        corners = [(x + left, y + top) for x, y in to_pixels(polygon)]
        draw.polygon(corners, fill=colours[colour])
        draw_mask.polygon(corners, fill=255)
    x0, y0, x1, y1 = mask.getbbox()  # exact extent of the drawn bird
    return image, (x0, y0, x1 - x0, y1 - y0)


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    """A CUB-like image size: mostly 500 px on the long side, landscape more often than portrait."""
    long_side = int(rng.choice([500, 500, 500, 480, 400, 333]))
    short_side = int(long_side * rng.uniform(0.6, 0.9))
    return (long_side, short_side) if rng.random() < 0.75 else (short_side, long_side)


def image_generator(seed: int, index: int, stream: str = "archive") -> np.random.Generator:
    """The generator image ``index`` of ``seed`` is drawn from: its own, so it never depends on the others."""
    if stream not in STREAMS:
        raise ValueError(f"stream={stream!r}: use one of {tuple(STREAMS)}")
    return np.random.default_rng([seed, STREAMS[stream], index])


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
        seed: everything drawn is a function of the seed (image i of its own generator, :func:`image_generator`).
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
        own = image_generator(seed, index)
        width, height = image_size or _image_size(own)
        image, (x, y, w, h) = render_bird(own, bird, width, height, touch_border=(index == border))
        relative = f"{folders[bird.class_id]}/{bird.name}_{image_id:04d}_{int(own.integers(1e5, 1e6))}.jpg"
        path = base / "images" / relative
        path.parent.mkdir(exist_ok=True)
        if index in grayscale:
            image = image.convert("L")
        elif index in cmyk:
            image = image.convert("CMYK")
        image.save(path, quality=JPEG_QUALITY)
        images.append(f"{image_id} {relative}")
        boxes.append(f"{image_id} {float(x)} {float(y)} {float(w)} {float(h)}")
        splits.append(f"{image_id} {int(own.random() < 0.5)}")
        labels.append(f"{image_id} {bird.class_id}")

    def write(name: str, lines: list[str]) -> None:
        (base / name).write_text("\n".join(lines) + "\n")

    write("images.txt", images)
    write("bounding_boxes.txt", boxes)
    write("train_test_split.txt", splits)
    write("image_class_labels.txt", labels)
    write("classes.txt", [f"{s.class_id} {folders[s.class_id]}" for s in species])
    write("README", ["A synthetic, procedurally drawn replica of the CUB_200_2011 layout, made by ddpm_lib.",
                     f"seed={seed} images={num_images} classes={num_classes} renderer={RENDER_VERSION}. "
                     "Not real birds."])
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
    num_images: int, num_classes: int, image_size: int = 64, seed: int = 0, *, stream: str = "fresh",
    first: int = 0, look: str = "colour", crop: str = "bbox", margin: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic birds drawn in memory and cropped exactly as the cache crops the archive's: no files.

    Each bird is drawn (species ``i mod num_classes``, from :func:`image_generator`), saved to JPEG
    bytes at the archive's quality and cropped and resized by ``data.cub.process_image``, so a fresh
    render is a new draw from the population the cache holds, through the same path.

    Args:
        seed: the replica's seed (its species and palettes); ``stream="fresh"`` (default) draws birds
            the archive of that seed never holds, ``"archive"`` the archive's own images ``first..``.
        first: the index of the first image (a later slice of the same stream).
        look: ``"colour"`` as drawn; ``"grey"`` a grayscale JPEG (shape only, as CUB's grayscale
            images); ``"repainted"`` each bird in a palette its species never wears (where one exists).
        crop, margin: as ``data.cub.PreprocessOptions`` (the cache's own options).
    Returns:
        images, uint8 (N, image_size, image_size, 3); labels, int64 (N,) class ids from 1.
    """
    from ddpm_lib.data.cub import PreprocessOptions, process_image

    if look not in LOOKS:
        raise ValueError(f"look={look!r}: use one of {LOOKS}")
    species = make_species(num_classes, seed)
    pool = palette_pool(max(2, math.ceil(num_classes / 2)), seed)
    options = PreprocessOptions(image_size=image_size, crop=crop, margin=margin)
    images = np.empty((num_images, image_size, image_size, 3), dtype=np.uint8)
    labels = np.empty(num_images, dtype=np.int64)
    for offset in range(num_images):
        index = first + offset
        bird = species[index % num_classes]
        own = image_generator(seed, index, stream)
        width, height = _image_size(own)
        palette = None
        if look == "repainted":
            foreign = [p for p in pool if p not in bird.palettes] or [p for p in pool if p != bird.palettes[0]]
            palette = foreign[index % len(foreign)]
        image, box = render_bird(own, bird, width, height, palette=palette)
        encoded = io.BytesIO()
        (image.convert("L") if look == "grey" else image).save(encoded, format="JPEG", quality=JPEG_QUALITY)
        encoded.seek(0)
        images[offset] = process_image(encoded, box, options)["image"]
        labels[offset] = bird.class_id
    return images, labels
