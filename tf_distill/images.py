"""Image files in and out: reading user images (skipping unreadable ones), generator outputs in
[-1, 1] NHWC -> uint8 -> PNG grids, and writing output files atomically.

Users' folders hold the odd corrupt, truncated or mislabelled file; one of them must not abort a
long run, so :func:`read_images` skips it with a warning and counts it. Outputs are written to a
temporary sibling and renamed into place (``outputs.atomic_path``), so an interrupted run never
leaves a half-written file under the final name.
"""

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tf_distill.errors import UserError
from tf_distill.outputs import atomic_path

#: PIL modes whose values are 8-bit and convert to RGB faithfully (16-bit and float modes would be clipped).
RGB_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "La", "CMYK", "YCbCr")
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, zlib.error, Image.DecompressionBombError)


class UnreadableImageError(UserError):
    """An image file that cannot be read, decoded or converted to 8-bit RGB."""

    def __init__(self, path, reason):
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot read image {path}: {reason} (expected an 8-bit PNG or JPEG image)")


def read_rgb(path):
    """uint8 [H, W, 3] of an image file; :class:`UnreadableImageError` says which file and why not."""
    try:
        with Image.open(path) as image:
            if image.mode not in RGB_MODES:
                raise ValueError(f"mode {image.mode} is not an 8-bit image")
            image.load()
            return np.asarray(image.convert("RGB"), np.uint8)
    except _DECODE_ERRORS as err:
        raise UnreadableImageError(path, " ".join(str(err).split()) or type(err).__name__) from None


def read_images(paths, stats, read=read_rgb):
    """Yields ``(path, read(path))`` for each readable file; an unreadable one is recorded in ``stats``.

    ``stats`` is a :class:`tf_distill.data.DecodeStats` (it logs a warning naming each skipped file
    and counts them).
    """
    for path in paths:
        try:
            image = read(path)
        except UnreadableImageError as err:
            stats.record(f"{err.path} ({err.reason})")
            continue
        yield path, image


def save_png(image, path):
    """Writes a uint8 [H, W, C] array as a PNG, atomically; returns the path."""
    image = np.asarray(image)
    with atomic_path(path) as tmp:
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(tmp, format="PNG")
    return Path(path)


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
    return save_png(make_grid(to_uint8(images), ncol=ncol), path)
