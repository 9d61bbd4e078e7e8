"""to_rgb: StyleGAN2's ToRGB at inference, TensorFlow's ops or one compiled pass.

``y = x @ weight[b] + bias + upfirdn2d(skip, setup_kernel(skip_taps, 4), up=2, pad=skip_pad)`` for
NHWC ``x`` [n, h, w, c] and a per-sample weight [n, c, k] (the 1x1 modulated conv with its style
folded in): the layer's matmul, bias and the previous image upsampled 2x as StyleGAN2's
``Upsample(skip_taps)`` does, each part optional but the matmul.

Why a compiled kernel: in TensorFlow's ops this is a batched matmul to 3 channels (far below
TensorFlow's matmul rate), a BiasAdd, a polyphase conv with depth_to_space for the skip and an add,
five passes; the compiled kernel (``custom_ops/cc/kernels/to_rgb_kernels.cc``) reads the large
activation once and writes the image once. It takes float32 on CPUs with AVX2 in processes that
see no GPU; everything else runs the reference, whichever ``impl`` is asked for. Its gradients are
the reference's, so the op is safe under a tape, but training graphs do not use it.
"""

import functools

import numpy as np
import tensorflow as tf

from tf_distill.ops import _loader, choice
from tf_distill.ops.epilogue import optional_input
from tf_distill.ops.upfirdn2d import separable_factor, setup_kernel, upsample2d_polyphase


def to_rgb(x, weight, bias=None, skip=None, skip_taps=(1, 3, 3, 1), skip_pad=(2, 1), impl=None):
    """``x @ weight[b] + bias + upfirdn2d(skip, setup_kernel(skip_taps, 4), up=2, pad=skip_pad)`` (module
    docstring); ``bias`` [k] and ``skip`` [n, h', w', k] (upsampled to h x w) may be None."""
    if choice.resolve(impl, "to_rgb", _self_check) == "custom":
        return to_rgb_custom(x, weight, bias, skip, skip_taps, skip_pad)
    return to_rgb_ref(x, weight, bias, skip, skip_taps, skip_pad)


def to_rgb_ref(x, weight, bias=None, skip=None, skip_taps=(1, 3, 3, 1), skip_pad=(2, 1)):
    """TensorFlow's ops: a batched matmul and the polyphase upsampling of the skip, the bias added to the latter's
    conv (which Grappler fuses), not in a pass over the full-size image; or a BiasAdd without a skip."""
    x = tf.convert_to_tensor(x)
    n, height, width, c = (size if size is not None else tf.shape(x)[i] for i, size in enumerate(x.shape))
    y = tf.reshape(tf.matmul(tf.reshape(x, [n, -1, c]), weight), [n, height, width, weight.shape[-1]])
    if skip is not None:
        return y + upsample2d_polyphase(skip, setup_kernel(skip_taps, 4.0), skip_pad, bias=bias)
    return y if bias is None else tf.nn.bias_add(y, bias)


def to_rgb_custom(x, weight, bias=None, skip=None, skip_taps=(1, 3, 3, 1), skip_pad=(2, 1)):
    """The compiled kernel where it runs (see the module docstring), else the reference."""
    x, weight = tf.convert_to_tensor(x), tf.convert_to_tensor(weight)
    if x.dtype == tf.float32 and x.shape.rank == 4 and weight.shape.rank == 3 and _loader.vector_cpu_only():
        return _to_rgb_op(x, weight, bias, skip, skip_taps, skip_pad)
    return to_rgb_ref(x, weight, bias, skip, skip_taps, skip_pad)


def _to_rgb_op(x, weight, bias, skip, skip_taps, skip_pad):
    return _loader.require_library().tf_distill_to_rgb(
        x, weight, optional_input(bias), optional_input(skip),
        optional_input(None if skip is None else separable_factor(skip_taps, 4.0)), pad0=int(skip_pad[0]),
        pad1=int(skip_pad[1]))


@_loader.register_gradient("TfDistill>ToRgb")
def _to_rgb_grad(op, dy):
    """Those of ``to_rgb_ref``, through a recomputed forward (the compiled kernel is forward only); the op's
    kernel factor stands for the taps (``separable_factor``)."""
    x, weight, bias, skip, factor = op.inputs
    has_bias, has_skip = bias.shape.num_elements() != 0, skip.shape.num_elements() != 0  # empty: absent
    inputs = [x, weight, bias, skip]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = to_rgb_ref(x, weight, bias if has_bias else None, skip if has_skip else None,
                       tf.get_static_value(factor), (op.get_attr("pad0"), op.get_attr("pad1")))
    return tape.gradient(y, inputs, output_gradients=dy, unconnected_gradients="zero") + [None]


# (x shape, out channels, bias, skip): the vector path for 1-4 outputs, the plain-loop path (12
# channels, 5 outputs), without bias or skip, and a 1-pixel skip.
_SELF_CHECK_CASES = (((2, 8, 6, 16), 3, True, True), ((1, 4, 4, 40), 1, True, True), ((2, 6, 8, 8), 4, False, True),
                     ((1, 5, 7, 12), 5, True, False), ((1, 2, 2, 24), 2, False, True), ((2, 4, 6, 16), 3, True, False))


def _self_check():
    """(max relative error, worst case) of the compiled kernel against the reference (see ``choice``)."""
    rng = np.random.default_rng(0)

    def cases():
        for shape, out, bias, skip in _SELF_CHECK_CASES:
            n, h, w, c = shape
            arrays = [rng.standard_normal(shape).astype(np.float32), rng.standard_normal((n, c, out)).astype(np.float32),
                      rng.standard_normal(out).astype(np.float32) if bias else None,
                      rng.standard_normal((n, h // 2, w // 2, out)).astype(np.float32) if skip else None]

            def run(fn, *args, has=tuple(a is not None for a in arrays)):
                it = iter(args)
                x, wt, b, s = (next(it) if present else None for present in has)
                return fn(x, wt, b, s, (1, 3, 3, 1), (2, 1))

            yield (f"x {list(shape)}, {out} outputs, bias {bias}, skip {skip}", functools.partial(run, _to_rgb_op),
                   functools.partial(run, to_rgb_ref), [a for a in arrays if a is not None])

    return choice.worst_case(cases())
