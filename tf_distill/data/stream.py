"""The element order shared by every source: seeded shuffle (reshuffled each epoch), repeat, resume skip."""

import tensorflow as tf


def shuffle_repeat(ds: tf.data.Dataset, *, shuffle, buffer_size, seed, repeat, skip=0) -> tf.data.Dataset:
    """Applied to file names / records / in-memory images, i.e. before any decoding, so a resumed
    run skips what it already consumed without reading it."""
    if shuffle:
        ds = ds.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
        if skip:
            ds = ds.skip(skip)
    return ds
