"""Plots: image grids with titles and boxes. Draws what it is given; computes nothing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
    columns: int = 6,
    size: float = 2.0,
):
    """A matplotlib figure of images in a grid.

    Args:
        images: each (H, W, 3) or (H, W) uint8, sizes may differ.
        titles: one per image (e.g. species names), optional.
        boxes: one (x, y, width, height) per image, drawn as a red rectangle, optional.
        columns: images per row; size: inches per image.
    Returns:
        the figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = max(1, (len(images) + columns - 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= len(images):
            continue
        image = images[index]
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None)
        if titles is not None:
            axis.set_title(titles[index].replace("_", " "), fontsize=7)
        if boxes is not None:
            x, y, w, h = boxes[index]
            axis.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="red", linewidth=1.2))
    fig.tight_layout()
    return fig


def save_image_grid(images_uint8, path, columns: int | None = None):
    """Save uint8 images (B, C, H, W) (a tensor or array) as one PNG grid; returns the path."""
    from pathlib import Path

    from PIL import Image

    images = np.asarray(images_uint8.cpu() if hasattr(images_uint8, "cpu") else images_uint8)
    b, c, h, w = images.shape
    columns = columns or int(np.ceil(np.sqrt(b)))
    rows = (b + columns - 1) // columns
    grid = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for index, image in enumerate(images.transpose(0, 2, 3, 1)):
        row, column = divmod(index, columns)
        grid[row * h:(row + 1) * h, column * w:(column + 1) * w] = image
    Image.fromarray(grid.squeeze(-1) if c == 1 else grid).save(path)
    return Path(path)
