"""upfirdn2d: upsample (zero insertion), pad/crop, FIR filter, downsample, on NHWC tensors.

Semantics follow the reference CUDA op (spec B.1): per channel, insert ``up - 1`` zeros after
every sample, pad ``pad[0]`` before and ``pad[1]`` after (negative values crop), convolve
with the kernel (a true convolution, i.e. correlation with the flipped kernel), keep every
``down``-th sample starting at 0. The same factors and pads apply to both spatial axes.
Output size: ``(H * up + pad[0] + pad[1] - kh) // down + 1``.
"""

import numpy as np
import tensorflow as tf

from tf_distill.ops._impl import resolve_impl


def setup_kernel(k, gain=1.0):
    """A normalised 2-D FIR kernel: 1-D taps become their outer product; the sum becomes ``gain``."""
    k = np.asarray(k, dtype=np.float64)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.size == 0:
        raise ValueError(f"FIR kernel must be 1-D or 2-D and non-empty, got shape {k.shape}.")
    k = k / np.sum(k) * gain
    return k.astype(np.float32)


def _check_args(x, kernel, up, down, pad):
    if x.shape.rank is not None and x.shape.rank != 4:
        raise ValueError(f"upfirdn2d expects an NHWC tensor of rank 4, got shape {x.shape}.")
    if kernel.shape.rank != 2:
        raise ValueError(f"upfirdn2d expects a 2-D kernel, got shape {kernel.shape}.")
    up, down = int(up), int(down)
    if up < 1 or down < 1:
        raise ValueError(f"upfirdn2d needs up >= 1 and down >= 1, got up={up}, down={down}.")
    if len(pad) != 2:
        raise ValueError(f"pad must be (before, after), got {pad!r}.")
    p0, p1 = int(pad[0]), int(pad[1])
    kh, kw = kernel.shape
    for axis, size in (("height", x.shape[1]), ("width", x.shape[2])):
        if size is not None:
            out = (size * up + p0 + p1 - (kh if axis == "height" else kw)) // down + 1
            if out < 1:
                raise ValueError(
                    f"upfirdn2d output {axis} would be {out} (input {size}, up {up}, pad {(p0, p1)}, "
                    f"kernel {kernel.shape}, down {down}); enlarge the input or the padding.")
    return up, down, p0, p1


def upfirdn2d_ref(x, kernel, up=1, down=1, pad=(0, 0)):
    """Plain-TF upfirdn2d; autodiff gives gradients of every order (the oracle)."""
    x = tf.convert_to_tensor(x)
    kernel = tf.convert_to_tensor(kernel, dtype=x.dtype)
    up, down, p0, p1 = _check_args(x, kernel, up, down, pad)
    kh, kw = kernel.shape
    channels = x.shape[3]
    if channels is None:
        raise ValueError("upfirdn2d needs a static channel count.")
    shape = tf.shape(x)
    n, h, w = shape[0], shape[1], shape[2]
    if up > 1:  # zero insertion: every sample followed by up-1 zeros
        x = tf.reshape(x, [n, h, 1, w, 1, channels])
        x = tf.pad(x, [[0, 0], [0, 0], [0, up - 1], [0, 0], [0, up - 1], [0, 0]])
        x = tf.reshape(x, [n, h * up, w * up, channels])
    x = tf.pad(x, [[0, 0], [max(p0, 0), max(p1, 0)], [max(p0, 0), max(p1, 0)], [0, 0]])
    if p0 < 0 or p1 < 0:
        hp, wp = tf.shape(x)[1], tf.shape(x)[2]
        x = x[:, max(-p0, 0):hp - max(-p1, 0), max(-p0, 0):wp - max(-p1, 0), :]
    # True convolution = correlation with the flipped kernel; the stride keeps every down-th sample.
    filt = tf.reverse(kernel, axis=[0, 1])
    filt = tf.tile(filt[:, :, None, None], [1, 1, channels, 1])
    return tf.nn.depthwise_conv2d(x, filt, strides=[1, down, down, 1], padding="VALID")


def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0), impl=None):
    """upfirdn2d on an NHWC tensor; ``impl`` is ``"auto"``, ``"ref"`` or ``"custom"`` (None: global default).

    Statically known bad arguments raise the same ValueError whichever implementation runs.
    """
    x = tf.convert_to_tensor(x)
    _check_args(x, tf.convert_to_tensor(kernel, dtype=x.dtype), up, down, pad)
    if resolve_impl(impl) == "custom":
        from tf_distill.ops import _custom  # pylint: disable=import-outside-toplevel

        return _custom.upfirdn2d(x, kernel, up=up, down=down, pad=pad)
    return upfirdn2d_ref(x, kernel, up=up, down=down, pad=pad)
