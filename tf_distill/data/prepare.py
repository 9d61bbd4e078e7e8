"""Real images for FID statistics, prepared as the reference's evaluation saw them (spec D.1).

The reference's real statistics come from rosinality's ``prepare_data`` lmdb: each image
resized with PIL's LANCZOS filter (shorter side to R) and centre-cropped, then stored as a
JPEG of quality 100. :func:`prepared_images` reads a folder or TFRecords that way, unlike the
training pipeline (TF bilinear resize, shuffled, flipped, repeated): every image once, in
order (sorted files; records in file order), unflipped, decoded with PIL, as uint8 batches.
Unreadable images are skipped, logged and counted in a :class:`DecodeStats`, as in training.
"""

import io
import itertools

import numpy as np
import tensorflow as tf
from PIL import Image

from tf_distill.data.decode import DecodeStats
from tf_distill.data.errors import EmptyDatasetError
from tf_distill.data.folder import list_image_files
from tf_distill.data.source import DataSource
from tf_distill.data.tfrecord import iter_records, list_tfrecord_files, read_record
from tf_distill.images import UnreadableImageError, read_images, read_rgb


def prepare_image(image, resolution=None, jpeg_quality=None):
    """uint8 [H, W, 3] -> uint8 [R, R, 3] as rosinality's ``prepare_data``: the shorter side resized
    to R with LANCZOS (the longer one rounded), the centre R x R cropped; an R x R image is kept as
    is. ``jpeg_quality`` (100 there) also round-trips the result through a JPEG of that quality."""
    im = Image.fromarray(np.asarray(image, np.uint8))
    if resolution is not None and im.size != (resolution, resolution):
        w, h = im.size
        s = resolution / min(w, h)
        im = im.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.LANCZOS)
        w, h = im.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        im = im.crop((left, top, left + resolution, top + resolution))
    if jpeg_quality is not None:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=jpeg_quality)
        buf.seek(0)
        im = Image.open(buf).convert("RGB")
    return np.asarray(im, np.uint8)


def prepared_images(source, batch_size=50, resolution=None, jpeg_quality=None, max_images=None, stats=None):
    """uint8 NHWC batches of the first ``max_images`` readable images of a folder or TFRecords (all by default).

    ``source``: a :class:`DataSource` or its spec (``folder:PATH``, ``tfrecord:PATH_OR_GLOB``).
    Images go through :func:`prepare_image`; without ``resolution`` they must all have the first
    image's size, and others are skipped like unreadable ones (counted in ``stats``). The last
    batch keeps the remainder. Raises ``EmptyDatasetError`` when no image is readable.
    """
    source = DataSource.parse(source)
    stats = stats if stats is not None else DecodeStats()
    if source.kind == "folder":
        files, read, where = list_image_files(source.path), read_rgb, f"image folder {source.path}"
        items = lambda: iter(files)  # noqa: E731
    elif source.kind == "tfrecord":
        files, read, where = list_tfrecord_files(source.path), read_record, f"TFRecords {source.path}"
        items = lambda: iter_records(files)  # noqa: E731
    else:
        raise ValueError(f"Prepared images are read from a folder or TFRecords, not {source} (give 'folder:PATH' "
                         "or 'tfrecord:PATH_OR_GLOB').")
    tried = itertools.count()  # images tried, for the message when none is readable

    def load(item):
        next(tried)
        return prepare_image(read(item), resolution, jpeg_quality)

    first = next(read_images(items(), stats, load), None)
    if first is None:
        raise EmptyDatasetError(f"none of the {next(tried)} image(s) of {where} can be read "
                                f"({'; '.join(stats.skipped[:3])})")
    shape = first[1].shape

    def load_same_shape(item):
        image = load(item)
        if image.shape != shape:
            raise UnreadableImageError(_name(item), f"size {image.shape[1]}x{image.shape[0]} differs from the first "
                                                    f"image's {shape[1]}x{shape[0]}; pass resolution=")
        return image

    def gen():
        for _, image in itertools.islice(read_images(items(), stats, load_same_shape), max_images):
            yield image

    ds = tf.data.Dataset.from_generator(gen, output_signature=tf.TensorSpec(shape, tf.uint8))
    return ds.batch(batch_size).prefetch(2)


def _name(item):
    """A file's path, or a :class:`tf_distill.data.tfrecord.Record`'s name."""
    return item if isinstance(item, str) else item.name
