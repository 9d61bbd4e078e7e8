"""conv3x3: the 3x3 convs of the generator's inference form, TensorFlow's or the compiled direct conv.

``transposed=False`` is ``tf.nn.conv2d(x, w, 1, "SAME")``; ``transposed=True`` is the stride-2
transposed conv without padding that StyleGAN2's upsampling conv runs (PyTorch
``conv_transpose2d(x, w, stride=2)``: ``out[2y + i, 2x + j] += x[y, x] w[i, j]``, output
``2H + 1``), which TensorFlow spells ``tf.nn.conv2d_transpose`` with the filter transposed.
``w`` is ``[3, 3, in, out]`` in both.

Why a compiled kernel: TensorFlow's CPU convs run the generators' high-resolution layers below
their large-conv rate (the student's 40 channels at 256 px: 63 GMAC/s where a 512-channel conv gets
80 on a 2-core AVX2 machine), and its transposed conv goes through a column buffer (80 -> 40
channels into 256 px: 28 GMAC/s). The direct conv (``custom_ops/cc/kernels/conv3x3_kernels.cc``)
runs every such layer at 85-95. On small images TensorFlow's conv is faster, and where TensorFlow runs
its convs with oneDNN (its default on CPUs with AVX-512 VNNI or BF16) so are its convs to more than
``ONEDNN_MAX_OUT_CHANNELS`` channels. So the compiled kernel takes only inputs at least
``DIRECT_MIN_WIDTH`` wide, those output widths (``direct_conv_wins``), multiples of 8, float32, CPUs
with AVX2, and processes that see no GPU (where cuDNN is the right choice); everything else runs
TensorFlow's conv, whichever ``impl`` is asked for. The op also takes StyleGAN2's epilogue
(``ops.epilogue``: bias, noise, leaky ReLU) and applies it to its sums in registers, which saves
three passes over a large activation; given a ``project`` weight (a generator's last conv followed by its
ToRGB), it multiplies each output pixel by it in registers too and stores only those few channels, so the
last, largest activation is neither written nor read back. Its gradients are TensorFlow's (conv gradients, and those of
the reference epilogue), so the op is safe under a tape, but training graphs do not use it.
"""

import functools

import numpy as np
import tensorflow as tf

from tf_distill.ops import _loader, choice
from tf_distill.ops.epilogue import epilogue_grad, epilogue_op_inputs, epilogue_ref, optional_input
from tf_distill.ops.to_rgb import to_rgb_ref

# Smallest input width (pixels) at which the direct conv beat TensorFlow's CPU conv, best of several
# runs at batch 1 on 2 AVX2 cores, for every width of the paper's teacher and student: from 64 px
# on it runs at 85-95 GMAC/s against TensorFlow's 28-88 (the transposed convs 28-68); at 32 px and
# below, where a row holds few tiles, it is mostly slower (the student's 160 channels at 32 px: 45 vs
# 77), though not always (the teacher's 512 -> 512 transposed conv from 32 px: 78 vs 63).
DIRECT_MIN_WIDTH = 64
# Most output channels at which the direct conv beat oneDNN's, in-process A/B at batch 1 on 2 AVX-512
# cores (Zen 4, oneDNN on), with the epilogue where the model has one: 40 channels at 256 px 1.24x, 80 -> 40
# transposed 1.24x, 80 channels at 128 px 1.03x, 160 -> 80 transposed 1.04x; 160 channels at 64 px
# 0.91x, and the teacher's 128-512 channel layers 0.88-1.01x. With TensorFlow's own (Eigen) convs on
# the same machine the direct conv won at every width from 64 px on but 512 (0.94x).
ONEDNN_MAX_OUT_CHANNELS = 80


def conv3x3(x, w, transposed=False, impl=None, project=None, **epilogue):
    """The 3x3 conv (``transposed``: the stride-2 transposed conv) of NHWC ``x`` with ``w`` [3, 3, in, out], or
    of each sample with its own weight (``w`` [n, 3, 3, in, out]: a modulated conv's folded weights), followed
    by ``epilogue_ref(…, **epilogue)`` (bias, noise, activation), which the compiled kernel applies as it
    stores its sums. ``x`` may carry more channels than ``w`` takes (``in``): the conv reads the first ``in``,
    which the compiled kernel does in place (a widened layer's zero channels need no zero weights).
    ``project`` [n, out, m]: the result is then each sample's output times its own ``project`` (a 1x1 conv to
    m channels), which the compiled kernel computes before storing anything."""
    if choice.resolve(impl, "conv3x3", _self_check) == "custom":
        return conv3x3_custom(x, w, transposed, project, **epilogue)
    return conv3x3_ref(x, w, transposed, project, **epilogue)


def takes_per_sample_weights(impl=None):
    """Whether ``conv3x3`` runs the compiled direct conv in this process with this ``impl`` (for the shapes
    ``direct_conv_wins``), which convolves each sample with its own weight in one op: then a folded batch
    needs no per-sample loop (models/generator.py). In-process A/B, batch 4, 2 AVX-512 cores: the student
    1.05x against the loop, the teacher (none of whose layers the direct conv runs with oneDNN) unchanged."""
    return choice.resolve(impl, "conv3x3", _self_check) == "custom" and _loader.vector_cpu_only()


def runs_direct(width, out_channels, impl=None):
    """Whether ``conv3x3`` runs the compiled direct conv for inputs ``width`` pixels wide to ``out_channels``
    outputs with this ``impl`` (static; float32 inputs)."""
    return takes_per_sample_weights(impl) and direct_conv_wins(width, out_channels)


def conv3x3_ref(x, w, transposed=False, project=None, **epilogue):
    """TensorFlow's conv (one per sample for per-sample weights), ``epilogue_ref`` and the ``project`` matmul:
    the reference."""
    def conv(t, kernel):
        return transposed_conv2d(t, kernel) if transposed else tf.nn.conv2d(t, kernel, strides=1, padding="SAME")

    x, w = tf.convert_to_tensor(x), tf.convert_to_tensor(w)
    if x.shape[-1] is not None and w.shape[-2] is not None and w.shape[-2] < x.shape[-1]:
        x = x[..., :w.shape[-2]]  # the channels the weight takes
    if w.shape.rank == 5:
        y = tf.map_fn(lambda a: conv(a[0][None], a[1])[0], (x, w),
                      fn_output_signature=tf.TensorSpec(None, w.dtype))
    else:
        y = conv(x, w)
    y = epilogue_ref(y, **epilogue)
    return y if project is None else to_rgb_ref(y, project)  # its per-sample matmul


def transposed_conv2d(x, w):
    """The stride-2 transposed conv without padding of NHWC ``x`` with ``w`` [k, k, in, out] (any k), in
    TensorFlow's ops: output ``2H + k - 2``."""
    shape = [d if d is not None else tf.shape(x)[i] for i, d in enumerate(x.shape)]  # static where known
    k = int(w.shape[0])
    out_shape = tf.stack([shape[0], shape[1] * 2 + k - 2, shape[2] * 2 + k - 2, w.shape[-1]])
    # PyTorch conv_transpose2d scatters out[2y+ky, 2x+kx] += x[y, x] * W[ky, kx] (no flip), and so does
    # tf.nn.conv2d_transpose with the filter laid out [k, k, out, in].
    return tf.nn.conv2d_transpose(x, tf.transpose(w, [0, 1, 3, 2]), out_shape, strides=2, padding="VALID")


def conv3x3_custom(x, w, transposed=False, project=None, **epilogue):
    """The compiled direct conv where it is the faster one (see the module docstring), else the reference."""
    x, w = tf.convert_to_tensor(x), tf.convert_to_tensor(w)
    if x.dtype == tf.float32 and x.shape.rank == 4 and w.shape.rank in (4, 5) and direct_conv_wins(x.shape[2],
                                                                                                   w.shape[-1]):
        return _conv3x3_op(x, w, transposed, project, **epilogue)
    return conv3x3_ref(x, w, transposed, project, **epilogue)


def direct_conv_wins(width, out_channels):
    """Whether the compiled kernel is the faster conv for inputs ``width`` pixels wide (static; None: unknown)
    and ``out_channels`` outputs on this process's devices."""
    if width is None or out_channels is None or out_channels % 8:
        return False
    if _loader.onednn_convs() and out_channels > ONEDNN_MAX_OUT_CHANNELS:
        return False
    return width >= DIRECT_MIN_WIDTH and _loader.vector_cpu_only()


def wants_aligned_channels(width, out_channels, impl=None):
    """Whether the 3x3 conv that ``conv3x3`` runs for inputs ``width`` pixels wide to ``out_channels`` outputs (a
    multiple of 8) is faster with the layer's pruned widths padded to multiples of 8 (zero-weight channels).

    The compiled direct conv needs them. TensorFlow's own (Eigen) CPU convs ran 1.1-1.3x faster at 40/80/160
    channels than at the student's 39/77/154 on 2 AVX2 cores; oneDNN's run the pruned widths at the same
    rate (2 AVX-512 cores, Zen 4, batch 1, the student's 3x3 and transposed convs from 16 to 256 px: the
    widened ones took 0.99-1.09x as long, 1.04x on average), so there the extra channels are only extra
    work. GPUs keep them.
    """
    return runs_direct(width, out_channels, impl) or not _loader.onednn_convs() or not _loader.vector_cpu_only()


def _conv3x3_op(x, w, transposed, project=None, **epilogue):
    inputs, attrs = epilogue_op_inputs(**epilogue)
    return _loader.require_library().tf_distill_conv3x3(x, w, optional_input(project), *inputs,
                                                        transposed=bool(transposed), **attrs)


@_loader.register_gradient("TfDistill>Conv3x3")
def _conv3x3_grad(op, dy):
    """TensorFlow's conv gradients (the direct conv is a forward kernel only); with an epilogue, a projection,
    per-sample weights or channels of x the weight does not take, those of ``conv3x3_ref``, through a
    recomputed forward."""
    x, w, project, bias, noise, _ = op.inputs
    transposed, activation = op.get_attr("transposed"), op.get_attr("activation").decode()
    if (bias.shape.num_elements() != 0 or noise.shape.num_elements() != 0 or activation != "linear"
            or project.shape.num_elements() != 0 or w.shape.rank == 5 or x.shape[-1] != w.shape[-2]):
        def forward(a, b, p, **e):
            return conv3x3_ref(a, b, transposed, None if p.shape.num_elements() == 0 else p, **e)
        return epilogue_grad(op, dy, forward, 3)
    if not transposed:
        dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=w, out_backprop=dy,
                                            strides=[1, 1, 1, 1], padding="SAME")
        dw = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(w), out_backprop=dy,
                                             strides=[1, 1, 1, 1], padding="SAME")
        return [dx, dw, None, None, None, None]
    # y is the input gradient of a VALID stride-2 conv with filter w^T [3, 3, out, in], taken at x.
    w_t = tf.transpose(w, [0, 1, 3, 2])
    dx = tf.nn.conv2d(dy, w_t, strides=2, padding="VALID")
    dw_t = tf.raw_ops.Conv2DBackpropFilter(input=dy, filter_sizes=tf.shape(w_t), out_backprop=x,
                                           strides=[1, 2, 2, 1], padding="VALID")
    return [dx, tf.transpose(dw_t, [0, 1, 3, 2]), None, None, None, None]


# (x shape, weight input channels, out channels, transposed, epilogue, projected channels): vector chunks of 3, 2
# and 1 x 8 channels with their pixel tails, the plain-loop path (12 channels), 1-pixel images, inputs wider than
# the weight, the epilogue (bias, noise shared by the batch or per sample, leaky ReLU), and the projection (one
# chunk of channels, several, the plain loops).
_SELF_CHECK_CASES = (((2, 7, 9, 5), 5, 48, False, False, 0), ((1, 6, 11, 40), 40, 40, True, False, 0),
                     ((2, 5, 4, 3), 3, 8, True, False, 0), ((1, 1, 1, 16), 16, 16, False, False, 0),
                     ((1, 4, 5, 7), 7, 12, True, False, 0), ((2, 6, 7, 16), 16, 40, False, True, 0),
                     ((1, 3, 4, 5), 5, 12, True, True, 0), ((2, 5, 6, 12), 9, 16, False, True, 0),
                     ((2, 6, 7, 16), 16, 40, False, True, 3), ((2, 5, 6, 12), 9, 64, False, True, 3),
                     ((1, 4, 5, 7), 7, 12, True, False, 2))


def _self_check():
    """(max relative error, worst case) of the compiled kernel against the reference (see ``choice``)."""
    rng = np.random.default_rng(0)

    def cases():
        for shape, w_in, out, transposed, epilogue, m in _SELF_CHECK_CASES:
            x = rng.standard_normal(shape).astype(np.float32)
            w = rng.standard_normal((3, 3, w_in, out)).astype(np.float32)
            size = [2 * d + 1 for d in shape[1:3]] if transposed else list(shape[1:3])
            extra = ([rng.standard_normal(out).astype(np.float32),
                      rng.standard_normal([shape[0] if transposed else 1] + size + [1]).astype(np.float32),
                      np.float32([0.7])] if epilogue else [])
            project = [rng.standard_normal((shape[0], out, m)).astype(np.float32)] if m else []

            def run(conv, a, b, *args, t=transposed, m=m):
                p, args = (args[0], args[1:]) if m else (None, args)
                if not args:
                    return conv(a, b, t, p)
                bias, noise, strength = args
                return conv(a, b, t, p, bias=bias, noise=noise, noise_strength=strength, activation="lrelu",
                            alpha=0.2)

            yield (f"x {list(shape)}, weight {list(w.shape)}, transposed {transposed}, epilogue {epilogue}, "
                   f"projected to {m}", functools.partial(run, _conv3x3_op), functools.partial(run, conv3x3_ref),
                   [x, w] + project + extra)

    return choice.worst_case(cases())
