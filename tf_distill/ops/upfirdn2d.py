"""upfirdn2d: upsample (zero insertion), pad/crop, FIR filter, downsample, on NHWC tensors.

Semantics follow the reference CUDA op (spec B.1): per channel, insert ``up - 1`` zeros after
every sample, pad ``pad[0]`` before and ``pad[1]`` after (negative values crop), convolve
with the kernel (a true convolution, i.e. correlation with the flipped kernel), keep every
``down``-th sample starting at 0. The same factors and pads apply to both spatial axes.
Output size: ``(H * up + pad[0] + pad[1] - kh) // down + 1``.

This module holds the public op, its plain-TF reference (the oracle) and the wrapper of the
compiled kernel with its registered gradient (NVlabs' ``upfirdn_2d.py`` layout);
``tf_distill.ops.choice`` picks between the two.

The compiled kernel covers float32 and float16 (other dtypes run the reference). Bad shapes
and arguments are rejected by the kernel itself with ``tf.errors.InvalidArgumentError`` (eager /
at run time) or ``ValueError`` (while tracing with static shapes). XLA cannot compile custom
ops: use ``impl="ref"`` inside ``jit_compile=True`` functions and for exported SavedModels.

Gradient of ``TfDistill>UpFirDn2d``: the same op on ``dy`` with the flipped kernel, ``up``/``down``
swapped and pads ``(k - p0 - 1, in*up - out*down + p0 - up + 1)`` per axis (spec B.1); its own
gradient is therefore this rule again, to any order. No gradient for the kernel.
"""

import contextlib
import contextvars
import functools

import numpy as np
import tensorflow as tf

from tf_distill.ops import _loader, choice
from tf_distill.ops.epilogue import (epilogue_grad, epilogue_op_inputs, epilogue_ref, optional_input, scale_channels,
                                     self_check_kwargs, self_check_parts)


def setup_kernel(k, gain=1.0):
    """A normalised 2-D FIR kernel: 1-D taps become their outer product; the sum becomes ``gain``."""
    k = np.asarray(k, dtype=np.float64)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.size == 0:
        raise ValueError(f"FIR kernel must be 1-D or 2-D and non-empty, got shape {k.shape}.")
    k = k / np.sum(k) * gain
    return k.astype(np.float32)


_ONE_PASS_BLUR = contextvars.ContextVar("tf_distill_one_pass_blur", default=None)


@contextlib.contextmanager
def one_pass_blur(enabled):
    """Reference blurs (``filter2d_separable``) traced inside run as one 2-D depthwise pass if ``enabled``, else as
    two 1-D passes, whichever TensorFlow's CPU convs are (the default follows them): for graphs that another
    runtime will run. TFLite's XNNPACK runs the two passes faster (the float16 student 82.7 against 87.0 ms a
    batch-1 image), so ``export.tflite.convert`` asks for them."""
    token = _ONE_PASS_BLUR.set(bool(enabled))
    try:
        yield
    finally:
        _ONE_PASS_BLUR.reset(token)


def separable_factor(taps, gain=1.0):
    """The 1-D factor f of ``setup_kernel(taps, gain)`` = outer(f, f): ``taps / sum(taps) * sqrt(gain)`` (what the
    compiled kernels take; StyleGAN2's 2x upsampling kernel, gain 4, has f = 2 taps / sum(taps))."""
    taps = np.asarray(taps, np.float64)
    return (taps / np.sum(taps) * np.sqrt(gain)).astype(np.float32)


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


def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0), impl=None):
    """upfirdn2d on an NHWC tensor; ``impl``: ``"auto"``, ``"ref"``, ``"custom"`` or None (see ``choice``).

    Statically known bad arguments raise the same ValueError whichever implementation runs.
    """
    x = tf.convert_to_tensor(x)
    _check_args(x, tf.convert_to_tensor(kernel, dtype=x.dtype), up, down, pad)
    if choice.resolve(impl, "upfirdn2d", _self_check) == "custom":
        return upfirdn2d_custom(x, kernel, up=up, down=down, pad=pad)
    return upfirdn2d_ref(x, kernel, up=up, down=down, pad=pad)


# ----------------------------------------------------------------------------- reference


def _zero_insert(x, up):
    """Every sample followed by ``up - 1`` zeros along both spatial axes, with 4-D ops only.

    Width first (rows as the batch), then height (each row as one long vector): TFLite's Pad
    stops at 5-D, so this keeps exported models on builtin ops. Exact: no arithmetic.
    """
    shape = tf.shape(x)
    n, h, w, c = shape[0], shape[1], shape[2], x.shape[3]
    x = tf.reshape(x, [n * h, w, 1, c])
    x = tf.pad(x, [[0, 0], [0, 0], [0, up - 1], [0, 0]])
    x = tf.reshape(x, [n, h, 1, w * up * c])
    x = tf.pad(x, [[0, 0], [0, 0], [0, up - 1], [0, 0]])
    return tf.reshape(x, [n, h * up, w * up, c])


def upfirdn2d_ref(x, kernel, up=1, down=1, pad=(0, 0)):
    """Plain-TF upfirdn2d; autodiff gives gradients of every order (the oracle)."""
    x = tf.convert_to_tensor(x)
    kernel = tf.convert_to_tensor(kernel, dtype=x.dtype)
    up, down, p0, p1 = _check_args(x, kernel, up, down, pad)
    channels = x.shape[3]
    if channels is None:
        raise ValueError("upfirdn2d needs a static channel count.")
    if up > 1:
        x = _zero_insert(x, up)
    x = tf.pad(x, [[0, 0], [max(p0, 0), max(p1, 0)], [max(p0, 0), max(p1, 0)], [0, 0]])
    if p0 < 0 or p1 < 0:
        hp, wp = tf.shape(x)[1], tf.shape(x)[2]
        x = x[:, max(-p0, 0):hp - max(-p1, 0), max(-p0, 0):wp - max(-p1, 0), :]
    # True convolution = correlation with the flipped kernel; the stride keeps every down-th sample.
    filt = tf.reverse(kernel, axis=[0, 1])
    filt = tf.tile(filt[:, :, None, None], [1, 1, channels, 1])
    return tf.nn.depthwise_conv2d(x, filt, strides=[1, down, down, 1], padding="VALID")


# --------------------------------------------------------------------------- separable FIR filter


def filter2d_separable(x, taps, gain=1.0, pad=(0, 0), impl=None, **epilogue):
    """``epilogue_ref(upfirdn2d(x, setup_kernel(taps, gain), pad=pad, impl=impl), **epilogue)`` for 1-D ``taps``
    (an outer-product kernel) and an optional epilogue (``ops.epilogue``: scale, bias, noise, leaky ReLU). The
    scale (per sample and channel) commutes with the blur: the reference applies it to ``x``, where Grappler
    keeps the depthwise conv fused with the BiasAdd after it.

    The reference path runs it as two 1-D depthwise passes (2k instead of k^2 multiplies per
    sample, about 40% faster for the 4-tap blur with TensorFlow's own depthwise conv), or where
    TensorFlow's convs are oneDNN's as one 2-D depthwise pass (oneDNN's depthwise conv takes the 4x4
    kernel in 0.5-0.8x the time of the two passes; ``_loader.onednn_convs``; ``one_pass_blur`` overrides
    it for other runtimes); the compiled kernel runs
    the 2-D kernel, and on
    CPUs with AVX2 in processes that see no GPU it also applies the epilogue to each few rows as it
    writes them (``TfDistill>UpFirDn2dEpilogue``) instead of in up to four passes of TensorFlow's.
    Same sums to float32 round-off.
    """
    x = tf.convert_to_tensor(x)
    kernel = setup_kernel(taps, gain)
    _check_args(x, tf.convert_to_tensor(kernel, dtype=x.dtype), 1, 1, pad)
    if choice.resolve(impl, "upfirdn2d", _self_check) == "custom":
        if (epilogue and x.dtype == tf.float32 and _loader.vector_cpu_only()
                and choice.resolve(impl, "upfirdn2d_epilogue", _self_check_epilogue) == "custom"):
            return _upfirdn2d_epilogue_op(x, kernel, (int(pad[0]), int(pad[1])), **epilogue)
        return epilogue_ref(upfirdn2d_custom(x, kernel, pad=pad), **epilogue)
    scale = epilogue.pop("scale", None)
    if scale is not None:
        x = scale_channels(x, scale)
    return epilogue_ref(_filter2d_separable_ref(x, taps, gain, pad, kernel), **epilogue)


def _filter2d_separable_ref(x, taps, gain, pad, kernel):
    """The reference of ``filter2d_separable`` without the epilogue: two 1-D depthwise passes, or one 2-D pass
    where TensorFlow's convs are oneDNN's (see there)."""
    p0, p1 = int(pad[0]), int(pad[1])
    if min(p0, p1) < 0:
        return upfirdn2d_ref(x, kernel, pad=pad)
    channels = x.shape[3]
    x = tf.pad(x, [[0, 0], [p0, p1], [p0, p1], [0, 0]])
    one_pass = _ONE_PASS_BLUR.get()
    if _loader.onednn_convs() if one_pass is None else one_pass:
        flipped = np.asarray(kernel, np.float32)[::-1, ::-1]  # flipped: a true convolution
        return tf.nn.depthwise_conv2d(x, tf.constant(np.tile(flipped[:, :, None, None], [1, 1, channels, 1]), x.dtype),
                                      strides=[1, 1, 1, 1], padding="VALID")
    taps = separable_factor(taps, gain)[::-1]  # flipped: a true convolution
    column = tf.constant(np.tile(taps[:, None, None, None], [1, 1, channels, 1]), x.dtype)
    x = tf.nn.depthwise_conv2d(x, column, strides=[1, 1, 1, 1], padding="VALID")
    return tf.nn.depthwise_conv2d(x, tf.transpose(column, [1, 0, 2, 3]), strides=[1, 1, 1, 1], padding="VALID")


# ------------------------------------------------------------------------- polyphase 2x upsampling


def _phase_taps(ksize, p0):
    """{phase r: [(offset into x, tap of the flipped kernel)]} of ``up=2``: output 2m + r reads x[m + offset]."""
    return {r: [((r + t - p0) // 2, t) for t in range(ksize) if (r + t - p0) % 2 == 0] for r in (0, 1)}


def upsample2d_polyphase(x, kernel, pad, bias=None):
    """``upfirdn2d(x, kernel, up=2, pad=pad)`` without zero insertion, for few channels (the RGB skip), plus
    ``bias`` [C] if given (on the phases' conv, before they are interleaved: no pass of its own).

    Output pixel (2m + ry, 2n + rx) only reads the kernel taps that land on input samples, so the
    four phases are one dense conv on the low-resolution x (a [span, span, C, 4C] filter holding
    each phase's taps of each channel) and depth_to_space interleaves them: a quarter of the
    positions, no zero-inserted image. The same sums as the reference (float32 round-off).
    Needs a square kernel, pads >= 0 and an even output size (the generator's Upsample).
    """
    x = tf.convert_to_tensor(x)
    kernel = np.asarray(kernel, np.float32)
    p0, p1 = int(pad[0]), int(pad[1])
    ksize, channels, size = kernel.shape[0], x.shape[3], x.shape[1]
    if kernel.shape != (ksize, ksize) or min(p0, p1) < 0 or (p0 + p1 - ksize + 1) % 2 or channels is None:
        raise ValueError(f"upsample2d_polyphase needs a square kernel, pads >= 0, an even output and static "
                         f"channels; got kernel {kernel.shape}, pad {pad}, x {x.shape} (use upfirdn2d).")
    flipped = kernel[::-1, ::-1]
    taps = _phase_taps(ksize, p0)
    low = min(o for r in taps for o, _ in taps[r])
    span = max(o for r in taps for o, _ in taps[r]) - low + 1
    filt = np.zeros([span, span, channels, 4 * channels], np.float32)
    eye = np.eye(channels, dtype=np.float32)
    for ry in (0, 1):
        for rx in (0, 1):
            phase = slice((2 * ry + rx) * channels, (2 * ry + rx + 1) * channels)
            for oy, ty in taps[ry]:
                for ox, tx in taps[rx]:
                    filt[oy - low, ox - low, :, phase] += flipped[ty, tx] * eye
    # Output 2M with M = H + (p0 + p1 - k + 1) / 2 per phase; x is read at m + offset, m < M.
    half = (p0 + p1 - ksize + 1) // 2
    before, after = -low, low + span - 1 + half  # pads of x; before >= 0 as p0 >= 0, after < 0 crops
    x = tf.pad(x, [[0, 0], [before, max(after, 0)], [before, max(after, 0)], [0, 0]])
    if after < 0:
        end = (tf.shape(x)[1] if size is None else size + before) + after
        x = x[:, :end, :end, :]
    y = tf.nn.conv2d(x, tf.constant(filt, x.dtype), strides=1, padding="VALID")
    if bias is not None:
        # The four phases' channels. (tf.tile's gradient ran an int32 op that oneDNN logs a line about.)
        y = tf.nn.bias_add(y, tf.concat([tf.convert_to_tensor(bias, x.dtype)] * 4, 0))
    return tf.nn.depth_to_space(y, 2)


# ------------------------------------------------------------------------- custom kernel


def _upfirdn2d_op(x, kernel, up, down, pad_y, pad_x):
    return _loader.require_library().tf_distill_up_fir_dn2d(
        x, kernel, up=up, down=down, pad_y0=pad_y[0], pad_y1=pad_y[1], pad_x0=pad_x[0], pad_x1=pad_x[1])


def upfirdn2d_custom(x, kernel, up=1, down=1, pad=(0, 0)):
    """upfirdn2d with the compiled kernel (same contract as ``upfirdn2d_ref``, which runs for other dtypes)."""
    x = tf.convert_to_tensor(x)
    if x.dtype.name not in _loader.KERNEL_DTYPES:
        return upfirdn2d_ref(x, kernel, up=up, down=down, pad=pad)
    kernel = tf.convert_to_tensor(kernel, dtype=x.dtype)
    if len(pad) != 2:
        raise ValueError(f"pad must be (before, after), got {pad!r}.")
    p0, p1 = int(pad[0]), int(pad[1])
    return _upfirdn2d_op(x, kernel, int(up), int(down), (p0, p1), (p0, p1))


def _grad_pads(in_size, ksize, up, down, p0, p1):
    """Pads of the gradient along one axis, and whether the result must be cropped to in_size.

    With a static input size these are the exact pads of spec B.1. Without one, the largest
    possible trailing pad is used (the remainder of the forward floor division is unknown) and
    the result, at least ``in_size`` long, is cropped to the input size at run time.
    """
    if in_size is not None:
        out_size = (in_size * up + p0 + p1 - ksize) // down + 1
        return (ksize - p0 - 1, in_size * up - out_size * down + p0 - up + 1), False
    return (ksize - p0 - 1, ksize - p1 - up), True


@_loader.register_gradient("TfDistill>UpFirDn2d")
def _upfirdn2d_grad(op, dy):
    x, kernel = op.inputs
    up, down = op.get_attr("up"), op.get_attr("down")
    kh, kw = kernel.shape
    if kh is None or kw is None:
        raise ValueError("the gradient of the custom upfirdn2d needs a kernel with a static shape.")
    pad_y, crop_y = _grad_pads(x.shape[1], kh, up, down, op.get_attr("pad_y0"), op.get_attr("pad_y1"))
    pad_x, crop_x = _grad_pads(x.shape[2], kw, up, down, op.get_attr("pad_x0"), op.get_attr("pad_x1"))
    dx = _upfirdn2d_op(dy, tf.reverse(kernel, axis=[0, 1]), down, up, pad_y, pad_x)
    if crop_y or crop_x:
        shape = tf.shape(x)
        dx = dx[:, :shape[1], :shape[2], :]
    return [dx, None]


# (x shape, kernel: "fir" (the StyleGAN blur, gain up^2) or a random kernel shape, up, down, pad):
# the generator's 2x upsample and the discriminator's 2x downsample, a 2-D kernel with a crop,
# up 3 / down 2 with a negative pad. 70 channels reach the kernels' vector blocks and scalar tail.
_SELF_CHECK_CASES = (((2, 6, 6, 70), "fir", 2, 1, (2, 1)), ((2, 9, 9, 70), "fir", 1, 2, (1, 1)),
                     ((1, 7, 6, 3), (3, 4), 1, 1, (2, -1)), ((2, 5, 7, 5), (4, 4), 3, 2, (-2, 3)))


def _self_check():
    """(max relative error, worst case) of the compiled kernel against the reference (see ``choice``)."""
    rng = np.random.default_rng(0)

    def cases():
        for shape, kshape, up, down, pad in _SELF_CHECK_CASES:
            x = rng.standard_normal(shape).astype(np.float32)
            k = (setup_kernel([1, 3, 3, 1], gain=up * up) if kshape == "fir"
                 else rng.standard_normal(kshape).astype(np.float32))
            yield (f"x {list(shape)}, kernel {list(k.shape)}, up {up}, down {down}, pad {pad}",
                   lambda t, k=k, u=up, d=down, p=pad: upfirdn2d_custom(t, k, u, d, p),
                   lambda t, k=k, u=up, d=down, p=pad: upfirdn2d_ref(t, k, u, d, p), [x])

    return choice.worst_case(cases())


# ------------------------------------------------------------------------- with StyleGAN2's epilogue


def _upfirdn2d_epilogue_op(x, kernel, pad, scale=None, **epilogue):
    inputs, attrs = epilogue_op_inputs(**epilogue)
    return _loader.require_library().tf_distill_up_fir_dn2d_epilogue(
        x, kernel, *inputs, optional_input(scale), pad_y0=pad[0], pad_y1=pad[1], pad_x0=pad[0], pad_x1=pad[1],
        **attrs)


def _upfirdn2d_epilogue_ref(x, kernel, pad, **epilogue):
    return epilogue_ref(upfirdn2d_ref(x, kernel, pad=pad), **epilogue)


@_loader.register_gradient("TfDistill>UpFirDn2dEpilogue")
def _upfirdn2d_epilogue_grad(op, dy):
    """Those of ``upfirdn2d_ref`` and ``epilogue_ref``, through a recomputed forward (up = down = 1, as
    ``filter2d_separable`` calls it); none for the FIR kernel, a constant (as the upfirdn2d op's)."""
    pad = (op.get_attr("pad_y0"), op.get_attr("pad_y1"))
    return epilogue_grad(op, dy, lambda x, k, **e: _upfirdn2d_epilogue_ref(x, k, pad, **e), 2, constant=(1,))


# (x shape, pad, scale, bias, noise batch or None, activation): the student's blur pad (1, 1) over 8-, 16- and
# 12-channel rows (vector, 16-lane and tail paths), noise shared or per sample, each part alone.
_SELF_CHECK_EPILOGUE_CASES = (((2, 9, 7, 8), (1, 1), True, True, 1, "lrelu"),
                              ((1, 6, 5, 16), (1, 1), False, True, None, "linear"),
                              ((2, 5, 6, 12), (2, 1), True, False, 2, "lrelu"),
                              ((1, 7, 7, 8), (1, 1), False, False, None, "lrelu"))


def _self_check_epilogue():
    """(max relative error, worst case) of the blur with the compiled epilogue against the reference."""
    rng = np.random.default_rng(1)
    kernel = setup_kernel([1, 3, 3, 1], gain=4.0)

    def cases():
        for shape, pad, scale, bias, noise_n, activation in _SELF_CHECK_EPILOGUE_CASES:
            n, h, w, c = shape
            out = [d + pad[0] + pad[1] - 3 for d in (h, w)]
            arrays = [rng.standard_normal(shape).astype(np.float32)] + self_check_parts(rng, n, c, out, scale, bias,
                                                                                         noise_n)

            def run(fn, x, *extra, p=pad, case=(scale, bias, noise_n, activation)):
                return fn(x, kernel, p, **self_check_kwargs(extra, *case))

            yield (f"x {list(shape)}, pad {pad}, scale {scale}, bias {bias}, noise {noise_n}, {activation}",
                   functools.partial(run, _upfirdn2d_epilogue_op), functools.partial(run, _upfirdn2d_epilogue_ref),
                   arrays)

    return choice.worst_case(cases())
