"""Image conversions and PNG grids: generator outputs in [-1, 1] NHWC -> uint8 -> files people look at."""

from pathlib import Path

import numpy as np
from PIL import Image


def to_uint8(images):
    """[-1, 1] float -> uint8, rounding as torchvision's ``save_image`` (``x * 127.5 + 128`` floored, clipped)."""
    images = np.asarray(images, np.float32)
    return np.clip(np.floor((images + 1.0) * 127.5 + 0.5), 0, 255).astype(np.uint8)


def make_grid(images, ncol=None, padding=2, pad_value=255):
    """Tiles [N, H, W, C] uint8 images row-major into one image with ``ncol`` columns."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"make_grid expects [N, H, W, C] images, got shape {images.shape}.")
    n, h, w, c = images.shape
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    grid = np.full((padding + nrow * (h + padding), padding + ncol * (w + padding), c), pad_value, images.dtype)
    for i in range(n):
        r, q = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[y:y + h, x:x + w] = images[i]
    return grid


def save_grid(images, path, ncol=None):
    """Writes generator outputs ([-1, 1], NHWC) as a PNG grid; returns the path."""
    grid = make_grid(to_uint8(images), ncol=ncol)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid).save(path)
    return path
