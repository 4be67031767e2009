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
