"""The common builder: any :class:`DataSource` -> batched, sharded, shuffled, flipped images.

Use it directly, or per input pipeline under a ``tf.distribute`` strategy::

    stats = DecodeStats()
    ds = strategy.distribute_datasets_from_function(
        lambda ctx: make_dataset("folder:/data/ffhq", 256, global_batch, seed=0, input_context=ctx, stats=stats))

Order of operations: list (sorted) -> shard per input pipeline -> shuffle (seeded, reshuffled each
epoch) -> repeat -> read/decode (undecodable images skipped, logged and counted in ``stats``) ->
resize (antialiased bilinear) -> [-1, 1] -> batch (per-replica size) -> random horizontal flip
(per image, from stateless seeds) -> prefetch. The reference (spec C.1) never reshuffles
(DistributedSampler without ``set_epoch``); we reshuffle every epoch.
"""

import contextlib
import os

import tensorflow as tf
from absl import logging

from tf_distill.data import decode
from tf_distill.data.fashion_mnist import fashion_mnist_images
from tf_distill.data.folder import folder_images
from tf_distill.data.source import DataSource
from tf_distill.data.tfrecord import data_loss_error, tfrecord_images


def random_flip(images, seed):
    """Flips each image of a [B, H, W, C] batch left-right with probability 1/2, from a stateless [2] seed."""
    flip = tf.random.stateless_uniform(tf.shape(images)[:1], seed=seed) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


SHARDING = ("files", "data")


def make_dataset(source, resolution, batch_size, shuffle=True, flip=True, repeat=True, seed=0, input_context=None,
                 *, drop_remainder=None, shuffle_buffer=None, stats=None, skip_batches=0, sharding="files"):
    """A ``tf.data.Dataset`` of float32 [b, R, R, 3] image batches in [-1, 1].

    Args:
      source: a :class:`DataSource` or its spec string (``folder:PATH``, ``tfrecord:PATH_OR_GLOB``,
        ``fashion_mnist[:train|test[:PATH]]``).
      resolution: R, the side of the square output images.
      batch_size: the GLOBAL batch size. With ``input_context`` each pipeline yields batches of
        ``input_context.get_per_replica_batch_size(batch_size)``.
      shuffle: shuffle (seeded, reshuffled every epoch).
      flip: random horizontal flip with probability 1/2 per image.
      repeat: repeat forever (training); otherwise one pass over this pipeline's shard.
      seed: int making order and flips reproducible (with the same sharding and batch size);
        None draws a random one (and logs it).
      input_context: a ``tf.distribute.InputContext``: the data is split between its
        ``num_input_pipelines`` pipelines (see ``sharding``) and this is pipeline ``input_pipeline_id``.
      drop_remainder: drop a last partial batch; default ``repeat`` (training streams keep a static
        batch size, a single pass keeps every image).
      shuffle_buffer: shuffle buffer size; default the whole file/image list for folders and
        Fashion-MNIST, 1024 encoded records for TFRecords.
      stats: a :class:`DecodeStats` that counts skipped undecodable images (folder/TFRecord); a
        fresh one if None (skips are logged either way).
      skip_batches: start this many batches into the (repeated) stream, for resuming a run: files
        or records are skipped before they are read, and flips continue where they were. (The
        stream shifts only where undecodable images were dropped inside the skipped part.)
      sharding: with several input pipelines, ``"files"`` (default) gives each pipeline a
        disjoint, separately shuffled shard of the files; ``"data"`` (like tf.data's
        ``AutoShardPolicy.DATA``) has every pipeline read the single-pipeline stream and keep its
        rows of each global batch, so N workers train on exactly the batches one worker would
        (each decodes every image: use it for reproducibility, not throughput).
    """
    source = DataSource.parse(source)
    if resolution < 1 or batch_size < 1:
        raise ValueError(f"resolution and batch_size must be positive, got {resolution} and {batch_size}.")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") >> 1
        logging.info("make_dataset: no seed given, using seed %d.", seed)
    if sharding not in SHARDING:
        raise ValueError(f"sharding must be one of {SHARDING}, got {sharding!r}.")
    num_pipelines, pipeline_id, per_replica = 1, 0, batch_size
    if input_context is not None:
        num_pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        per_replica = input_context.get_per_replica_batch_size(batch_size)
    # The stream this pipeline reads: its own file shard, or (sharding "data") the whole one.
    keep_rows = sharding == "data" and num_pipelines > 1
    if keep_rows and batch_size % num_pipelines:
        raise ValueError(f"sharding 'data' needs the global batch {batch_size} to be divisible by the "
                         f"{num_pipelines} input pipelines.")
    num_shards, shard_index = (1, 0) if keep_rows else (num_pipelines, pipeline_id)
    skip = int(skip_batches) * per_replica * (num_pipelines if keep_rows else 1)  # images of that stream
    common = dict(num_shards=num_shards, shard_index=shard_index, shuffle=shuffle,
                  seed=(seed * 1_000_003 + shard_index) % (2 ** 31), repeat=repeat, shuffle_buffer=shuffle_buffer,
                  skip=skip)
    if source.kind == "folder":
        ds = folder_images(source.path, resolution, stats=stats, **common)
    elif source.kind == "tfrecord":
        ds = tfrecord_images(source.path, resolution, stats=stats, **common)
    else:
        ds = fashion_mnist_images(source.split, resolution, path=source.path, **common)

    if flip or keep_rows:  # the position in the stream seeds the flip and picks the rows
        ds = ds.enumerate(start=skip)
    if flip:  # per image, seeded by its position in the stream, so batching does not change the flips
        base = tf.constant([seed, shard_index], tf.int64)
        ds = ds.map(lambda i, x: (i, random_flip(x[None], tf.random.experimental.stateless_fold_in(base, i))[0]),
                    num_parallel_calls=decode.AUTOTUNE, deterministic=True)
    if keep_rows:
        rows = batch_size // num_pipelines  # pipeline p keeps rows [p * rows, (p + 1) * rows) of each global batch
        ds = ds.filter(lambda i, x: (i % batch_size) // rows == pipeline_id)
    if flip or keep_rows:
        ds = ds.map(lambda i, x: x)
    ds = ds.batch(per_replica, drop_remainder=repeat if drop_remainder is None else drop_remainder)
    ds = ds.prefetch(decode.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    if input_context is not None:  # sharded here already
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


@contextlib.contextmanager
def naming_damaged_files(source):
    """Around reading a pipeline of ``source`` (a spec or DataSource): a DataLossError from a damaged TFRecord file
    becomes a one-line DamagedDataError that names the file (TensorFlow's message names none); other errors, and
    other sources' errors, pass unchanged."""
    try:
        yield
    except tf.errors.DataLossError as err:
        source = DataSource.parse(source)
        if source.kind != "tfrecord":
            raise
        raise data_loss_error(source.path, err) from None
