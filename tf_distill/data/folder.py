"""Image folders: a recursive, sorted list of PNG/JPEG files, decoded into a stream of images."""

import os
from pathlib import Path

import tensorflow as tf

from tf_distill.data import decode
from tf_distill.data.errors import DatasetNotFoundError, EmptyDatasetError
from tf_distill.data.stream import shuffle_repeat

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def list_image_files(root):
    """All PNG/JPEG files under ``root`` (recursive, case-insensitive extensions), sorted by path.

    Hidden files and folders (names starting with ``.``) are left out. Raises
    :class:`DatasetNotFoundError` for a missing path or a path that is not a folder, and
    :class:`EmptyDatasetError` for a folder without images.
    """
    root = Path(root)
    expected = f"a folder holding {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} images (searched recursively)"
    if not root.exists():
        raise DatasetNotFoundError(f"Image folder {root} does not exist; expected {expected}.")
    if not root.is_dir():
        raise DatasetNotFoundError(f"Image folder {root} is not a folder; expected {expected}.")
    files, others = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            (files if name.lower().endswith(IMAGE_EXTENSIONS) else others).append(path)
    if not files:
        if others:
            examples = ", ".join(sorted(os.path.relpath(p, root) for p in others)[:3])
            raise EmptyDatasetError(f"Image folder {root} holds no images: {len(others)} file(s) but none ends in "
                                    f"{', '.join(IMAGE_EXTENSIONS)} (e.g. {examples}); expected {expected}.")
        raise EmptyDatasetError(f"Image folder {root} is empty; expected {expected}.")
    return sorted(files)


def folder_images(root, resolution, *, num_shards=1, shard_index=0, shuffle=False, seed=0, repeat=False,
                  shuffle_buffer=None, stats=None, skip=0):
    """Unbatched float32 [R, R, 3] images in [-1, 1] from the image files under ``root``.

    The sorted file list is sharded (every ``num_shards``-th file from ``shard_index``), then
    shuffled (the whole shard's file list by default, i.e. a uniform permutation, reshuffled every
    epoch), repeated, read and decoded; undecodable files are skipped and counted in ``stats``.
    """
    files = list_image_files(root)
    stats = stats if stats is not None else decode.DecodeStats()
    ds = tf.data.Dataset.from_tensor_slices(files)
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    ds = shuffle_repeat(ds, shuffle=shuffle, buffer_size=shuffle_buffer or len(files), seed=seed, repeat=repeat,
                        skip=skip)
    ds = ds.map(lambda path: (path, path))
    total = len(files[shard_index::num_shards])
    where = f"image folder {root}" + (f" (shard {shard_index} of {num_shards})" if num_shards > 1 else "")
    return decode.decode_or_skip(ds, tf.io.read_file, resolution, stats, total=total, where=where)
