"""The machine's 3x3-conv throughput: the yardstick for the generators' MACs/s, measured in the same run.

A 512-channel 3x3 conv (the teacher's widest layers) at 32 x 32, batch 4: 9.66 G multiply-accumulates,
large enough that TensorFlow's CPU conv runs at its best. Benches time it interleaved with their
models so that machine load hits both alike, and report MACs/s as a fraction of it.
"""

import time

CHANNELS = 512
SIZE = 32
BATCH = 4
MACS = BATCH * SIZE * SIZE * CHANNELS * CHANNELS * 9


def peak_conv():
    """A function that runs the peak conv once and waits for it; returns (fn, MACs per call)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    x = tf.random.stateless_normal([BATCH, SIZE, SIZE, CHANNELS], seed=[0, 1])
    w = tf.random.stateless_normal([3, 3, CHANNELS, CHANNELS], seed=[0, 2])
    conv = tf.function(lambda x, w: tf.nn.conv2d(x, w, strides=1, padding="SAME"))
    conv(x, w).numpy()  # trace and warm up
    return (lambda: conv(x, w).numpy()), MACS


def seconds(fn):
    """Wall seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
