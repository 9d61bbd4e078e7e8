"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (gzipped IDX files).

``apt-get install dataset-fashion-mnist`` puts the four files in ``/usr/share/datasets/fashion-mnist``
(the default location here); another folder can be given as ``path`` or in the environment
variable ``TF_DISTILL_FASHION_MNIST_DIR``. Files may be gzipped (``*.gz``) or not.

For the GAN pipeline, the 28x28 grey images are padded with 2 px of background (0) on each side
to 32x32, replicated to RGB, and scaled to [-1, 1] (background -> -1).
"""

import functools
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from tf_distill.data import decode
from tf_distill.data.errors import DatasetNotFoundError
from tf_distill.data.idx import IdxError, read_idx
from tf_distill.data.stream import shuffle_repeat

APT_PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "TF_DISTILL_FASHION_MNIST_DIR"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SIZES = {"train": 60000, "test": 10000}
IMAGE_SIZE = 28
PADDED_SIZE = 32
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def fashion_mnist_dir(path=None):
    """The folder to read: ``path``, else ``$TF_DISTILL_FASHION_MNIST_DIR``, else the Debian package's folder."""
    return Path(path or os.environ.get(ENV_VAR) or DEFAULT_DIR)


def _find(folder, stem):
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    hint = (f"Install Debian's package with `apt-get install {APT_PACKAGE}` (it puts the files in {DEFAULT_DIR}), "
            f"or pass the folder that holds them as path=... or in ${ENV_VAR}.")
    raise DatasetNotFoundError(f"Fashion-MNIST file {folder / (stem + '.gz')} (or {stem}) not found. {hint}")


def load_fashion_mnist(split="train", path=None):
    """(images uint8 [N, 28, 28], labels uint8 [N]) of the ``train`` (60k) or ``test`` (10k) split.

    Arrays are cached per (split, folder) and read-only. Raises :class:`DatasetNotFoundError` when
    the files are missing and :class:`IdxError` when they are corrupt or inconsistent.
    """
    if split not in FILES:
        raise ValueError(f"Fashion-MNIST split must be one of {sorted(FILES)}, got {split!r}.")
    return _load(split, str(fashion_mnist_dir(path).resolve()))


@functools.lru_cache(maxsize=4)
def _load(split, folder):
    folder = Path(folder)
    image_file, label_file = (_find(folder, stem) for stem in FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise IdxError(f"{image_file}: expected uint8 images [N, {IMAGE_SIZE}, {IMAGE_SIZE}], got "
                       f"{images.dtype} {list(images.shape)}.")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise IdxError(f"{label_file}: expected uint8 labels [N], got {labels.dtype} {list(labels.shape)}.")
    if len(images) != len(labels):
        raise IdxError(f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels.")
    if len(images) == 0:
        raise IdxError(f"{image_file} holds no images.")
    if labels.max() >= len(CLASSES):
        raise IdxError(f"{label_file}: label {labels.max()} out of range 0..{len(CLASSES) - 1}.")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def pad_images(images, size=PADDED_SIZE, value=0):
    """[N, h, w] -> [N, size, size], centred, padded with ``value`` (28 -> 32: 2 px on each side)."""
    images = np.asarray(images)
    h, w = images.shape[-2:]
    if h > size or w > size:
        raise ValueError(f"Cannot pad {h}x{w} images to {size}x{size}.")
    top, left = (size - h) // 2, (size - w) // 2
    pad = [(0, 0)] * (images.ndim - 2) + [(top, size - h - top), (left, size - w - left)]
    return np.pad(images, pad, constant_values=value)


def fashion_mnist_images(split, resolution, *, path=None, num_shards=1, shard_index=0, shuffle=False, seed=0,
                         repeat=False, shuffle_buffer=None, skip=0):
    """Unbatched float32 [R, R, 3] images in [-1, 1]: padded to 32x32, RGB, resized if R != 32.

    Sharding takes every ``num_shards``-th image from ``shard_index``; shuffling is a full
    permutation of the shard (unless ``shuffle_buffer``), reshuffled each epoch.
    """
    images, _ = load_fashion_mnist(split, path)
    ds = tf.data.Dataset.from_tensor_slices(pad_images(images))
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    ds = shuffle_repeat(ds, shuffle=shuffle, buffer_size=shuffle_buffer or len(images), seed=seed, repeat=repeat,
                        skip=skip)

    def convert(image):
        rgb = tf.tile(image[:, :, None], [1, 1, 3])
        if resolution != PADDED_SIZE:
            return decode.preprocess(rgb, resolution)
        return decode.to_signed_unit(rgb)

    return ds.map(convert, num_parallel_calls=decode.AUTOTUNE, deterministic=True)
