"""Images that are not birds, made from birds: what the classifier's "not a bird" class learns from.

Each corruption keeps some statistic of a real crop (its colours, its patches, its background) and
destroys the bird: a classifier that scores them as birds reads palettes or textures, not birds
(the demo's first classifier passed 24% of patch-shuffled real images at p >= 0.9). They are made on
the fly from uint8 batches (B, 3, H, W) with a ``torch.Generator``, so a seed gives the same
corruptions on every run, on any device.

* ``shuffle``: the image cut into a 2x2, 4x4 or 8x8 grid of patches, the patches permuted;
* ``blur``: a Gaussian blur with sigma of H/16 to H/8 (2-4 px at 32 px): only the silhouette's mass;
* ``flat``: the image averaged over 1x1, 2x2 or 4x4 blocks: flat patches of its own colours;
* ``channels``: R, G and B permuted (one of the five non-identity orders): a bird in impossible colours;
* ``background``: a corner of the crop (a fifth to a third of its side) enlarged: background only.

:func:`noise_images` (uniform noise) is never trained on: the validity table's unseen non-bird.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CORRUPTIONS = ("shuffle", "blur", "flat", "channels", "background")
# How often training draws each kind: blur, flat colours and background corners are learnt within a few
# hundred steps (none passed in the validity table); a bird in permuted colours is the hardest to tell
# from a bird in another palette, so it is drawn most.
CORRUPTION_WEIGHTS = (0.2, 0.1, 0.1, 0.4, 0.2)
_PERMUTATIONS = torch.tensor([[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])


def _uniform(count: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, device=device)


def _choice(count: int, options: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.randint(0, options, (count,), generator=generator, device=device)


def patch_shuffle(images: torch.Tensor, grid: int, generator: torch.Generator) -> torch.Tensor:
    """Cut each image (B, C, H, W) into ``grid`` x ``grid`` patches and permute them (each image its own
    order). H and W must be multiples of ``grid``."""
    b, c, h, w = images.shape
    if h % grid or w % grid:
        raise ValueError(f"patch_shuffle: {h}x{w} images do not split into a {grid}x{grid} grid")
    ph, pw = h // grid, w // grid
    patches = images.reshape(b, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, ph, pw)
    order = torch.argsort(torch.rand(b, grid * grid, generator=generator, device=images.device), dim=1)
    patches = patches[torch.arange(b, device=images.device)[:, None], order]
    return patches.reshape(b, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur uint8 images (B, C, H, W) with a Gaussian of std ``sigma`` pixels (separable, reflected
    borders); uint8 out."""
    b, c, h, w = images.shape
    radius = max(1, min(int(math.ceil(3 * sigma)), h - 1, w - 1))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = images.float().reshape(b * c, 1, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return x.reshape(b, c, h, w).round().clamp(0, 255).to(torch.uint8)


def flat_colours(images: torch.Tensor, blocks: int) -> torch.Tensor:
    """Each image averaged over ``blocks`` x ``blocks`` equal blocks: flat patches of its own colours."""
    h, w = images.shape[-2:]
    means = F.adaptive_avg_pool2d(images.float(), blocks)
    return F.interpolate(means, size=(h, w), mode="nearest").round().to(torch.uint8)


def channel_permutation(images: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Each image with its colour channels in one of the five non-identity orders (``which``: (B,) in 0..4)."""
    order = _PERMUTATIONS.to(images.device)[which]  # (B, 3)
    return torch.gather(images, 1, order[:, :, None, None].expand_as(images))


def background_crop(images: torch.Tensor, side: torch.Tensor, corner: torch.Tensor) -> torch.Tensor:
    """A corner of each image enlarged to the full size (bilinear): ``side`` (B,) the corner's side as a
    fraction of the image's, ``corner`` (B,) in 0..3 (top-left, top-right, bottom-left, bottom-right)."""
    b = images.shape[0]
    sx = torch.where(corner % 2 == 0, -1.0, 1.0).to(images.device)
    sy = torch.where(corner < 2, -1.0, 1.0).to(images.device)
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 1, 1] = side, side
    theta[:, 0, 2], theta[:, 1, 2] = sx * (1 - side), sy * (1 - side)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def corrupt(images: torch.Tensor, generator: torch.Generator, kinds: tuple[str, ...] = CORRUPTIONS,
            assigned: torch.Tensor | None = None) -> torch.Tensor:
    """Turn each uint8 image (B, 3, H, W) into a non-bird by one of ``kinds``, drawn at random per image
    (with :data:`CORRUPTION_WEIGHTS` when ``kinds`` are all of them, else uniformly; or given: ``assigned``
    (B,) indices into ``kinds``), its strength drawn from the ranges above (one grid, blur and block size
    per call, corner sizes and channel orders per image)."""
    b, device = images.shape[0], images.device
    unknown = set(kinds) - set(CORRUPTIONS)
    if unknown:
        raise ValueError(f"unknown corruption(s) {sorted(unknown)}; use {CORRUPTIONS}")
    if assigned is None:
        weights = torch.tensor(CORRUPTION_WEIGHTS if tuple(kinds) == CORRUPTIONS else [1.0] * len(kinds),
                               device=device)
        assigned = torch.multinomial(weights, b, replacement=True, generator=generator)
    assigned = assigned.to(device)
    out = images.clone()
    h = images.shape[-1]
    for index, kind in enumerate(kinds):
        chosen = torch.nonzero(assigned == index).flatten()
        if len(chosen) == 0:
            continue
        part, n = images[chosen], len(chosen)
        if kind == "shuffle":
            grids = [g for g in (2, 4, 8) if h % g == 0 and h // g >= 1]
            grid = grids[int(_choice(1, len(grids), generator, device))]
            part = patch_shuffle(part, grid, generator)
        elif kind == "blur":
            part = gaussian_blur(part, float(_uniform(1, h / 16, h / 8, generator, device)))
        elif kind == "flat":
            part = flat_colours(part, (1, 2, 4)[int(_choice(1, 3, generator, device))])
        elif kind == "channels":
            part = channel_permutation(part, _choice(n, len(_PERMUTATIONS), generator, device))
        else:
            part = background_crop(part, _uniform(n, 0.2, 0.34, generator, device), _choice(n, 4, generator, device))
        out[chosen] = part
    return out


def noise_images(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform noise, uint8 (count, 3, size, size): a non-bird the classifier never trains on."""
    return torch.randint(0, 256, (count, 3, size, size), generator=generator, dtype=torch.uint8)
