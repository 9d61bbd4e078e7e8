"""TFRecord image datasets: the feature schema, a folder -> shards writer, and the reader.

Schema (one ``tf.train.Example`` per image):

=========  ==========  ========  ====================================================
feature    type        required  meaning
=========  ==========  ========  ====================================================
``image``  bytes       yes       the encoded image file as it was (PNG/JPEG), not re-encoded
``height`` int64       no        height in pixels of the encoded image (informational)
``width``  int64       no        width in pixels (informational)
``path``   bytes       no        the source file's path relative to the converted folder,
                                 used to name a record whose image cannot be decoded
=========  ==========  ========  ====================================================

Shards are named ``<prefix>-00000-of-00004.tfrecord`` and hold consecutive runs of the folder's
sorted file list, so reading them in order without shuffling yields the folder's order.
"""

import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf.message import DecodeError
from PIL import Image

from tf_distill.data import decode
from tf_distill.data.errors import DamagedDataError, DatasetNotFoundError, EmptyDatasetError
from tf_distill.errors import first_few, reason
from tf_distill.data.folder import list_image_files
from tf_distill.data.stream import shuffle_repeat
from tf_distill.images import UnreadableImageError, read_rgb

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "height": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "width": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "path": tf.io.FixedLenFeature([], tf.string, default_value=""),
}
SUFFIX = ".tfrecord"
AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_SHUFFLE_BUFFER = 1024


def image_example(encoded, height=None, width=None, path=None):
    """A ``tf.train.Example`` of the schema above from encoded image bytes."""
    feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes(encoded)]))}
    if height is not None:
        feature["height"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(height)]))
    if width is not None:
        feature["width"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(width)]))
    if path is not None:
        feature["path"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(path).encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def shard_name(prefix, index, num_shards):
    return f"{prefix}-{index:05d}-of-{num_shards:05d}{SUFFIX}"


@dataclasses.dataclass
class WriteResult:
    """What :func:`write_tfrecords` wrote: shard files, image count, and skipped (undecodable) files."""
    files: list
    num_images: int
    skipped: list


def _probe(path, verify):
    """(height, width) of an image file, or None when it cannot be read (or, with verify, decoded by TF)."""
    try:
        with Image.open(path) as img:
            width, height = img.size
        if verify:
            shape = decode.decode_rgb(tf.io.read_file(path)).shape
            height, width = int(shape[0]), int(shape[1])
        return height, width
    except (OSError, SyntaxError, ValueError, tf.errors.OpError):
        return None


def write_tfrecords(image_dir, output_prefix, num_shards=1, verify=True, progress=None):
    """Converts the PNG/JPEG files under ``image_dir`` (see :func:`list_image_files`) to TFRecord shards.

    Every file is checked first: those that cannot be opened (and, with ``verify``, decoded by
    TensorFlow) are skipped with a warning and listed in the result, and the readable ones are split
    into at most ``num_shards`` consecutive runs of the sorted list, so no shard is empty. The shards
    are written to temporary names and renamed once all are complete; when no image can be read,
    nothing is written (existing shards of the prefix stay) and an :class:`EmptyDatasetError` names
    the skipped files. ``progress(total, label)``, if given, returns a callable told of each file
    done (``tf_distill.progress.Progress``): checking decodes every image, which takes a while.
    """
    files = list_image_files(image_dir)
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}.")
    readable, skipped = [], []
    checked = progress(len(files), "checking images") if progress else None
    for path in files:
        size = _probe(path, verify)
        if size is None:
            logging.warning("Skipping image that cannot be decoded: %s", path)
            skipped.append(path)
        else:
            readable.append((path, size))
        if checked:
            checked(1)
    if not readable:
        names = first_few((os.path.relpath(p, image_dir) for p in skipped), 3)
        raise EmptyDatasetError(f"none of the {len(files)} image file(s) in {image_dir} can be decoded ({names}); "
                                "nothing was written (give 8-bit PNG or JPEG images)")
    num_shards = min(num_shards, len(readable))
    output_prefix = str(output_prefix)
    Path(output_prefix).parent.mkdir(parents=True, exist_ok=True)
    shards = [shard_name(output_prefix, i, num_shards) for i in range(num_shards)]
    written = progress(len(readable), "writing shards") if progress else None
    try:
        for index, name in enumerate(shards):
            chunk = readable[index * len(readable) // num_shards:(index + 1) * len(readable) // num_shards]
            with tf.io.TFRecordWriter(name + ".tmp") as writer:
                for path, size in chunk:
                    with open(path, "rb") as f:
                        encoded = f.read()
                    rel = os.path.relpath(path, image_dir)
                    writer.write(image_example(encoded, *size, path=rel).SerializeToString())
                    if written:
                        written(1)
        for name in shards:
            os.replace(name + ".tmp", name)
    finally:
        for name in shards:
            if os.path.exists(name + ".tmp"):
                os.remove(name + ".tmp")
    logging.info("Wrote %d images to %d shard(s) %s-*-of-%05d%s (%d skipped).", len(readable), num_shards,
                 output_prefix, num_shards, SUFFIX, len(skipped))
    return WriteResult(files=shards, num_images=len(readable), skipped=skipped)


def damaged_files(files, limit=3):
    """[(file, reason)] of the first ``limit`` TFRecord ``files`` whose records do not read back to the end: what
    TensorFlow's DataLossError ("truncated record at N", "corrupted record at N") does not say. Reads only the
    records' framing and checksums, in graph (GB/s): for after such an error, not before every run."""
    found = []
    for file in files:
        try:
            tf.data.TFRecordDataset(file).reduce(np.int64(0), lambda n, _: n + 1).numpy()
        except tf.errors.DataLossError as err:
            found.append((file, reason(err).replace("' failed with ", ": ")))  # TensorFlow's stray quote
            if len(found) == limit:
                break
    return found


def data_loss_error(pattern, err):
    """A :class:`DamagedDataError` for ``err``, a DataLossError met reading the TFRecords of ``pattern``, naming the
    damaged file(s)."""
    damaged = damaged_files(list_tfrecord_files(pattern))
    if not damaged:
        return DamagedDataError(f"reading the TFRecords {pattern} failed: {reason(err)} (check the files; "
                                "re-create them with tf-distill-make-tfrecords)")
    file, why = damaged[0]
    more = f"; so {'is' if len(damaged) == 2 else 'are'} {first_few((f for f, _ in damaged[1:]), 2)}" \
        if len(damaged) > 1 else ""
    return DamagedDataError(f"TFRecord file {file} is damaged: {why}{more} (re-create the shards with "
                            "tf-distill-make-tfrecords, or leave the damaged files out of the pattern)")


def list_tfrecord_files(pattern):
    """Sorted TFRecord files from a file, a folder (its ``*.tfrecord*`` files) or a glob pattern."""
    pattern = str(pattern)
    expected = f"TFRecord files (*{SUFFIX}, one tf.train.Example per image with an `image` bytes feature)"
    if any(c in pattern for c in "*?["):
        files = sorted(tf.io.gfile.glob(pattern))
        if not files:
            raise DatasetNotFoundError(f"No files match {pattern}; expected {expected}.")
        return files
    if not tf.io.gfile.exists(pattern):
        raise DatasetNotFoundError(f"TFRecord path {pattern} does not exist; expected a file or a folder of {expected}.")
    if tf.io.gfile.isdir(pattern):
        files = sorted(f for f in tf.io.gfile.glob(os.path.join(pattern, f"*{SUFFIX}*")) if not f.endswith(".tmp"))
        if not files:
            raise EmptyDatasetError(f"TFRecord folder {pattern} holds no *{SUFFIX} files; expected {expected}.")
        return files
    return [pattern]


def parse_record(serialized):
    """A serialized ``tf.train.Example`` -> dict of the schema's features (missing optional ones defaulted)."""
    return tf.io.parse_single_example(serialized, FEATURES)


def tfrecord_images(pattern, resolution, *, num_shards=1, shard_index=0, shuffle=False, seed=0, repeat=False,
                    shuffle_buffer=None, stats=None, skip=0):
    """Unbatched float32 [R, R, 3] images in [-1, 1] from TFRecord files.

    Sharding is by file when there are at least ``num_shards`` files (write at least as many shards
    as input pipelines, ideally a multiple), otherwise by record (every pipeline reads every file
    and keeps every ``num_shards``-th record). Shuffling permutes the files, interleaves up to 16 of
    them, and shuffles records in a buffer of ``shuffle_buffer`` (default 1024) encoded images;
    without shuffling files are read one after another, in sorted order. Undecodable images are
    skipped and counted in ``stats`` under their ``path`` feature (or ``<file>#<record index>``).
    """
    files = list_tfrecord_files(pattern)
    stats = stats if stats is not None else decode.DecodeStats()
    ds = tf.data.Dataset.from_tensor_slices(files)
    by_file = num_shards > 1 and len(files) >= num_shards
    if by_file:
        ds = ds.shard(num_shards, shard_index)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

    def records(file):
        return tf.data.TFRecordDataset(file).enumerate().map(lambda i, r: (file, i, r))

    cycle = min(len(files), 16) if shuffle else 1
    if cycle > 1:
        ds = ds.interleave(records, cycle_length=cycle, block_length=1, num_parallel_calls=AUTOTUNE,
                           deterministic=True)
    else:
        ds = ds.flat_map(records)
    if num_shards > 1 and not by_file:
        ds = ds.shard(num_shards, shard_index)
    ds = shuffle_repeat(ds, shuffle=shuffle, buffer_size=shuffle_buffer or DEFAULT_SHUFFLE_BUFFER, seed=seed,
                        repeat=repeat, skip=skip)

    def name_and_bytes(file, index, serialized):
        example = parse_record(serialized)
        fallback = tf.strings.join([file, "#", tf.strings.as_string(index)])
        name = tf.where(tf.equal(example["path"], ""), fallback, example["path"])
        return name, example["image"]

    ds = ds.map(name_and_bytes, num_parallel_calls=AUTOTUNE, deterministic=True)
    return decode.decode_or_skip(ds, lambda b: b, resolution, stats)


@dataclasses.dataclass(frozen=True)
class Record:
    """One record read in Python: its name (its ``path`` feature, else ``<file>#<index>``) and its
    ``tf.train.Example`` (None when the bytes do not parse as one)."""
    name: str
    example: object


def iter_records(files):
    """Every record of ``files`` (e.g. :func:`list_tfrecord_files`), in file order, as :class:`Record`."""
    for file in files:
        for index, serialized in enumerate(tf.data.TFRecordDataset(file).as_numpy_iterator()):
            name = f"{file}#{index}"
            try:
                example = tf.train.Example.FromString(serialized)
            except DecodeError:
                yield Record(name, None)
                continue
            path = example.features.feature["path"].bytes_list.value if "path" in example.features.feature else []
            yield Record(path[0].decode("utf-8", "replace") if path and path[0] else name, example)


def read_record(record):
    """uint8 [H, W, 3] of a :class:`Record`: the schema's encoded ``image``, decoded with PIL as image
    files are (``tf_distill.images.read_rgb``), or NVlabs dataset_tool's raw ``shape`` (CHW) + ``data``
    bytes (grey replicated to RGB). Raises ``UnreadableImageError`` naming the record."""
    feature = record.example.features.feature if record.example is not None else {}
    if "image" in feature and feature["image"].bytes_list.value:
        try:
            return read_rgb(io.BytesIO(feature["image"].bytes_list.value[0]))
        except UnreadableImageError as err:
            raise UnreadableImageError(record.name, err.reason) from None
    if "shape" in feature and "data" in feature and feature["data"].bytes_list.value:
        shape, data = list(feature["shape"].int64_list.value), feature["data"].bytes_list.value[0]
        if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1 or int(np.prod(shape)) != len(data):
            raise UnreadableImageError(record.name, f"raw shape {shape} does not fit its {len(data)} data bytes")
        image = np.frombuffer(data, np.uint8).reshape(shape).transpose(1, 2, 0)
        return np.ascontiguousarray(np.repeat(image, 3, axis=2) if shape[0] == 1 else image)
    what = "not a tf.train.Example" if record.example is None else "neither an `image` feature nor `shape` + `data`"
    raise UnreadableImageError(record.name, f"the record holds {what}")
