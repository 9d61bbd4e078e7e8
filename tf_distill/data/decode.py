"""Decoding, resizing and scaling shared by the folder and TFRecord pipelines.

Images go ``encoded bytes -> uint8 RGB -> shorter side resized to R (bilinear, antialiased) ->
center crop R x R -> float32 in [-1, 1]``, the reference's torchvision chain
``Resize(R) -> ToTensor -> Normalize(0.5, 0.5)`` (spec C.1). The random horizontal flip, which
the reference applies before the resize, is applied by the pipeline after it: a bilinear resize
is mirror-symmetric, so the two orders give the same images (up to float rounding).

**Difference to PIL.** ``tf.image.resize(..., "bilinear", antialias=True)`` uses the same
triangle filter, widened by the downscale factor, as PIL's ``Image.BILINEAR`` resize, but computes
in float32, while PIL rounds to uint8 after each of its two separable passes. The results differ
by at most one uint8 level (2/255 after scaling to [-1, 1]), 0.26 levels on average (see
``tests/test_data.py``). JPEGs are decoded with the accurate integer IDCT, bit-identical to PIL.

An image that cannot be read or decoded is skipped: its name is logged once as an absl warning
and counted in a :class:`DecodeStats`.
"""

import threading

import tensorflow as tf
from absl import logging

from tf_distill.data.errors import EmptyDatasetError
from tf_distill.errors import first_few

AUTOTUNE = tf.data.AUTOTUNE


class DecodeStats:
    """Counts the undecodable images a pipeline met and skipped (thread-safe, readable any time).

    Each undecodable image is logged (absl warning, with its path) the first time it is met; a
    repeated dataset meets it again every epoch, which counts in ``num_skip_events`` only.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._events = {}

    @property
    def num_skipped(self):
        """How many distinct images were skipped."""
        with self._lock:
            return len(self._events)

    @property
    def num_skip_events(self):
        """How many times an image was skipped (a repeated dataset meets a bad file once per epoch)."""
        with self._lock:
            return sum(self._events.values())

    @property
    def skipped(self):
        """The names (paths) of the skipped images, sorted."""
        with self._lock:
            return sorted(self._events)

    def record(self, name):
        """Notes that ``name`` was skipped; logs it the first time."""
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        with self._lock:
            first = name not in self._events
            self._events[name] = self._events.get(name, 0) + 1
            count = len(self._events)
        if first:
            logging.warning("Skipping image that cannot be decoded: %s (%d undecodable image(s) skipped so far)",
                            name, count)

    def log_summary(self):
        """Logs how many images were skipped (a warning when there were any)."""
        n = self.num_skipped
        if n:
            logging.warning("%d undecodable image(s) were skipped: %s", n, first_few(self.skipped, 10))
        else:
            logging.info("No undecodable images were met.")

    def __repr__(self):
        return f"DecodeStats(num_skipped={self.num_skipped}, num_skip_events={self.num_skip_events})"


def decode_rgb(contents):
    """Encoded PNG/JPEG (also GIF/BMP) bytes -> uint8 [H, W, 3] (grey replicated, alpha dropped).

    JPEGs are decoded with the accurate integer IDCT, as PIL does (TF's default fast IDCT differs
    from PIL by up to ~13 levels on high-quality JPEGs).
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    return tf.cond(
        tf.io.is_jpeg(contents),
        lambda: tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.ensure_shape(tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False),
                                [None, None, 3]))


def resized_shape(height, width, resolution):
    """torchvision ``Resize(resolution)``'s output size: the shorter side becomes ``resolution``.

    Works on Python ints and on int32 tensors; the longer side is ``int(resolution * long / short)``.
    """
    if isinstance(height, int) and isinstance(width, int):
        if width <= height:
            return int(resolution * height / width), resolution
        return resolution, int(resolution * width / height)
    hf, wf = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    res = tf.constant(resolution, tf.int32)
    new_h = tf.where(width <= height, tf.cast(tf.floor(resolution * hf / wf), tf.int32), res)
    new_w = tf.where(width <= height, res, tf.cast(tf.floor(resolution * wf / hf), tf.int32))
    return new_h, new_w


def resize_square(image, resolution):
    """[H, W, C] uint8/float in [0, 255] -> float32 [R, R, C] in [0, 255].

    The shorter side is resized to R with an antialiased bilinear filter (torchvision ``Resize(R)``
    on a PIL image), then the center R x R is cropped (torchvision ``CenterCrop``; a no-op for square
    images). An image already R x R is passed through unchanged.
    """
    image = tf.cast(image, tf.float32)
    channels = image.shape[-1]
    shape = tf.shape(image)
    height, width = shape[0], shape[1]

    def resize():
        new_h, new_w = resized_shape(height, width, resolution)
        out = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
        top = tf.cast(tf.round(tf.cast(new_h - resolution, tf.float32) / 2.0), tf.int32)
        left = tf.cast(tf.round(tf.cast(new_w - resolution, tf.float32) / 2.0), tf.int32)
        return out[top:top + resolution, left:left + resolution]

    same = tf.logical_and(tf.equal(height, resolution), tf.equal(width, resolution))
    out = tf.cond(same, lambda: image, resize)
    return tf.ensure_shape(out, [resolution, resolution, channels])


def to_signed_unit(image):
    """[0, 255] -> [-1, 1] float32 (torchvision ``ToTensor`` then ``Normalize(0.5, 0.5)``)."""
    return tf.clip_by_value(tf.cast(image, tf.float32) / 127.5 - 1.0, -1.0, 1.0)


def preprocess(image, resolution):
    """uint8 [H, W, 3] -> float32 [R, R, 3] in [-1, 1]."""
    return to_signed_unit(resize_square(image, resolution))


def decode_or_skip(elements, load_fn, resolution, stats, total=None, where=""):
    """Maps a dataset of ``(name, payload)`` to preprocessed images, skipping undecodable ones.

    ``load_fn(payload)`` returns the encoded bytes (e.g. ``tf.io.read_file`` for paths). An element
    whose loading, decoding or resizing fails is dropped, and ``stats.record(name)`` logs and counts
    it. When ``total`` (the number of distinct images in the stream) is given and all of them
    failed, iteration stops with an error (``where`` names the dataset) instead of skipping forever.
    Order is kept (deterministic parallel interleave).

    Each image goes through its own small dataset (to catch its error), which costs about 0.25 ms
    per image on 2 CPU cores: negligible next to decoding a 1024 px PNG (~30 ms).
    """
    failed = set()

    def attempt(name, payload):
        good = tf.data.Dataset.from_tensors((name, payload)).map(
            lambda n, p: (n, preprocess(decode_rgb(load_fn(p)), resolution), tf.constant(True)))
        good = good.ignore_errors(log_warning=True)
        bad = tf.data.Dataset.from_tensors((name, tf.zeros([resolution, resolution, 3]), tf.constant(False)))
        return good.concatenate(bad).take(1)

    def report(name):
        name = name.numpy()
        stats.record(name)
        failed.add(name)
        if total is not None and len(failed) >= total:
            raise EmptyDatasetError(f"None of the {total} image(s) of {where or 'the dataset'} can be decoded "
                                    f"(e.g. {name.decode('utf-8', 'replace')}); expected PNG/JPEG images.")
        return False

    def keep(name, image, ok):
        del image
        return tf.cond(ok, lambda: tf.constant(True),
                       lambda: tf.ensure_shape(tf.py_function(report, [name], tf.bool), []))

    out = elements.interleave(attempt, cycle_length=AUTOTUNE, block_length=1, num_parallel_calls=AUTOTUNE,
                              deterministic=True)
    return out.filter(keep).map(lambda name, image, ok: image)
