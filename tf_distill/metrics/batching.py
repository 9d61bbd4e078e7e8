"""Networks on batches that may be empty (a replica's share of a small last batch).

TensorFlow 2.21's oneDNN Conv2D on CPU returns its input unchanged for an empty batch on some
machines (seen on AVX-512 CPUs: ``conv2d(zeros([0, 299, 299, 3]), k)`` has shape
``[0, 299, 299, 3]``), and the next op fails on the shape. An empty batch is therefore padded
with one zero row whose result is dropped.
"""

import tensorflow as tf


def call_nonempty(fn, *tensors):
    """``fn(*tensors)`` with batch axis 0, computed on at least one row; outputs keep the real rows."""
    tensors = [tf.convert_to_tensor(t) for t in tensors]
    n = tf.shape(tensors[0])[0]
    pad = tf.maximum(1 - n, 0)
    # concat, not tf.pad: grappler fuses a Pad feeding a Conv2D into oneDNN's _MklPadWithConv2D,
    # which drops the batch padding again.
    padded = [tf.concat([t, tf.zeros(tf.concat([[pad], tf.shape(t)[1:]], axis=0), t.dtype)], axis=0)
              for t in tensors]
    return tf.nest.map_structure(lambda out: out[:n], fn(*padded))
