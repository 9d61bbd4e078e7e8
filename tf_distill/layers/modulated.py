"""Modulated convolution and the blocks built on it (StyledConv, ToRGB, noise, constant input).

The reference computes a per-sample weight and runs a grouped conv. Here the mathematically
identical non-fused form is used (rosinality ``fused=False``): scale the input channels by
the style, convolve with the shared weight, scale the output channels by the demodulation
coefficient. It runs on CPU and GPU alike (grouped and grouped-transposed convs do not).

At inference (``inference()``: no gradient tape records, the form not switched off) the layers run
``call_inference``, the same function to float32 round-off in fewer passes over the activations:
for a batch of one, where the weight is smaller than the input (the high-resolution layers),
style, demodulation and activation gain are folded into the conv weight; elsewhere the
demodulation and the gain share one multiply; the bias is a BiasAdd (fused with the conv) and
the leaky ReLU one op; a StyledConv's output is widened with zero-weight channels to a multiple
of ``CHANNEL_ALIGN`` where its conv wants that (the compiled direct conv, and TensorFlow's own CPU
convs, which run pruned widths like 39 or 77 slower; not oneDNN's: ``StyledConv.inference_width``;
``channel_widening(False)`` keeps the model's widths everywhere); its 3x3 convs go through ``ops.conv3x3``,
which runs the compiled direct conv where that is faster than TensorFlow's CPU conv (from 64 px
on) and there also adds the bias and noise and applies the leaky ReLU of a folded same-size conv
as it stores its sums; ToRGB runs its per-sample matmul, bias and skip upsampling as one op
(``ops.to_rgb``, compiled on CPUs), and the last one's matmul runs inside the last conv where that is the
direct conv and only the image is wanted (``ToRGB.after_conv``). For a larger batch, the direct conv takes
one folded weight per sample, so where it runs the batch runs at once; elsewhere ``SynthesisNetwork`` runs the
folding blocks one sample at a time. ``weight_folding(False)`` keeps the conv weights constant (TFLite) and the
rest of the form. ``phase_upsampling(True)`` runs each upsampling conv as a stride-1 conv per output phase (TFLite,
whose transposed conv is slow), in any form.
Training graphs (a tape is recording) keep the unfused form above, unchanged.
"""

import contextvars
import math

import keras
import numpy as np
import tensorflow as tf

from tf_distill.layers.equalized import LRELU_ALPHA, LRELU_GAIN, PACKAGE, EqualDense, FusedLeakyReLU, impl_name
from tf_distill.layers.forms import inference, scoped
from tf_distill.ops import setup_kernel, upfirdn2d
from tf_distill.ops.conv3x3 import conv3x3, runs_direct, transposed_conv2d, wants_aligned_channels
from tf_distill.ops.epilogue import epilogue, scale_channels
from tf_distill.ops.to_rgb import to_rgb
from tf_distill.ops.upfirdn2d import filter2d_separable, upsample2d_polyphase

DEMOD_EPS = 1e-8
# The inference form widens a StyledConv's output to a multiple of this many channels with zero weights where
# its conv wants that (ops.conv3x3.wants_aligned_channels): the direct conv's vectors hold 8 channels, and
# TensorFlow's Eigen CPU convs run 1.1-1.3x faster at 40/80/160 channels than at the pruned 39/77/154.
CHANNEL_ALIGN = 8

_FOLDING = contextvars.ContextVar("tf_distill_weight_folding", default=True)
_WIDENING = contextvars.ContextVar("tf_distill_channel_widening", default=True)
_PHASES = contextvars.ContextVar("tf_distill_phase_upsampling", default=False)
_FROZEN = contextvars.ContextVar("tf_distill_frozen_weights", default=False)


def weight_folding(enabled):
    """Layers called (or traced) inside fold styles into per-sample conv weights only if ``enabled``.

    Off is for targets that want constant conv weights (e.g. TFLite's XNNPACK delegate): the rest of
    the inference form (demodulation and gain in one multiply, fused bias, one leaky ReLU op,
    polyphase skip upsampling, separable blur) stays.
    """
    return scoped(_FOLDING, enabled)


def channel_widening(enabled):
    """StyledConvs called (or traced) inside widen their inference-form output to ``aligned(filters)``
    channels only if ``enabled``.

    Off is for runtimes whose convs take any width at full speed (TFLite's XNNPACK: widening costs it
    the extra multiply-accumulates); TensorFlow's CPU convs want it on.
    """
    return scoped(_WIDENING, enabled)


def frozen_weights(enabled):
    """Modulated convs traced inside take what depends on their weight alone (the demodulation's sums of
    squared weights over the kernel taps) as a constant computed while tracing, instead of recomputing it
    on every call, only if ``enabled``.

    For graphs whose weights do not change after tracing: an exported SavedModel (served student 1.07x at
    batch 1, 1.06x at batch 8). A function traced inside keeps the sums of the weights it was traced with;
    retrace it after changing them.
    """
    return scoped(_FROZEN, enabled)


def phase_upsampling(enabled):
    """Upsampling convs called (or traced) inside run as one stride-1 conv per output phase, concatenated and
    interleaved by depth_to_space, instead of a transposed conv, only if ``enabled`` (any form, any batch).

    The same function to float32 round-off and the same k^2 multiply-accumulates per input pixel, plus a
    pass over the output (the concat). For runtimes whose transposed conv is far slower than their conv:
    TFLite's TRANSPOSE_CONV runs at about a quarter of its CONV_2D's rate, so TFLite wants it on;
    TensorFlow's CPU transposed conv does not, so it is off by default.
    """
    return scoped(_PHASES, enabled)


def transposed_conv_as_phases(x, w):
    """The VALID stride-2 transposed conv of ``x`` with ``w`` [k, k, in, out] (rows 0 .. 2H+k-3), followed by
    ``phase_extra_rows(k)`` all-zero rows and columns: over ``x`` padded by j - 1 = (k+1)//2 - 1, output
    phase (a, b) is one stride-1 VALID conv with the taps of that phase (``phase_taps``), the four are
    concatenated in the order depth_to_space(…, 2) interleaves, and depth_to_space interleaves them.

    A phase whose taps start at window row r0 (column c0) convolves the padded x from that row (column) on,
    so every phase has H + j - 1 rows and columns and no zero taps (k = 3: 2x2, 2x1, 1x2 and 1x1 kernels,
    9 taps in all where one conv to the four phases would take 16). Each phase pads x itself (less at the
    start where it starts later) rather than slicing one shared pad: TFLite's XNNPACK folds a PAD into the
    conv that reads it, while a slice is a copy of the input.
    """
    k = int(w.shape[0])
    j = (k + 1) // 2
    phases = []
    for a in (0, 1):
        for b in (0, 1):
            rows, cols = phase_taps(k, a), phase_taps(k, b)
            if not rows or not cols:  # no tap lands on this phase (k = 1): zeros, of the first phase's shape
                phases.append(tf.zeros_like(phases[0]))
                continue
            kernel = tf.stack([tf.stack([w[ty, tx] for _, tx in cols]) for _, ty in rows])
            r0, c0 = rows[0][0], cols[0][0]
            # x padded by j - 1 and cut from (r0, c0), as one pad
            padded = tf.pad(x, [[0, 0], [j - 1 - r0, j - 1], [j - 1 - c0, j - 1], [0, 0]])
            phases.append(tf.nn.conv2d(padded, kernel, strides=1, padding="VALID"))
    return tf.nn.depth_to_space(tf.concat(phases, axis=-1), 2)


def phase_extra_rows(k):
    """How many all-zero rows and columns end ``transposed_conv_as_phases``' output for a k x k kernel
    (1 if k is odd)."""
    return 2 * ((k + 1) // 2) - k


def phase_taps(k, a):
    """[(window row r, kernel tap)] of output phase ``a`` of a stride-2 transposed conv with a k-tap kernel.

    VALID transposed conv writes out[2m + a] from x[m - i] through tap a + 2i. Over ``x`` padded by j - 1,
    window row r is x[m - (j-1-r)], so phase a takes tap a + 2(j-1-r) there, for the rows where that tap
    exists: a suffix of the window (r ascending).
    """
    j = (k + 1) // 2
    return [(r, a + 2 * (j - 1 - r)) for r in range(j) if a + 2 * (j - 1 - r) < k]


def folding():
    """True when the inference form also folds styles into per-sample weights (and synthesis runs per sample)."""
    return inference() and _FOLDING.get()


def aligned(channels):
    """``channels`` rounded up to a multiple of ``CHANNEL_ALIGN`` (the inference form's activation width)."""
    return -(-int(channels) // CHANNEL_ALIGN) * CHANNEL_ALIGN


def _pad_last(t, size):
    """``t`` with its last axis padded with zeros to ``size`` (``t`` itself when already that size)."""
    extra = size - t.shape[-1]
    if extra == 0:
        return t
    return tf.pad(t, [[0, 0]] * (t.shape.rank - 1) + [[0, extra]])


def _single(x):
    """True when ``x`` has a static batch of one (the folded form needs one weight per call)."""
    return x.shape.rank is not None and x.shape[0] == 1


@keras.saving.register_keras_serializable(package=PACKAGE)
class ModulatedConv2D(keras.layers.Layer):
    """Style-modulated conv; ``upsample`` = transposed conv stride 2 + blur, ``downsample`` = blur + stride 2.

    Weight layout ``[k, k, in, out]`` (reference ``[1, out, in, k, k]``); the modulation is an
    EqualDense(style_dim -> in) with bias init 1.
    """

    def __init__(self, filters, kernel_size, demodulate=True, upsample=False, downsample=False,
                 blur_kernel=(1, 3, 3, 1), impl=None, **kwargs):
        super().__init__(**kwargs)
        if upsample and downsample:
            raise ValueError("ModulatedConv2D cannot both upsample and downsample.")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.demodulate = bool(demodulate)
        self.upsample = bool(upsample)
        self.downsample = bool(downsample)
        self.blur_kernel = tuple(int(v) for v in blur_kernel)
        self.impl = impl_name(impl)
        self.modulation = None

    def build(self, x_shape, style_shape):
        in_channels = int(x_shape[-1])
        k = self.kernel_size
        self.in_channels = in_channels
        self.scale = 1.0 / math.sqrt(in_channels * k * k)
        self.weight = self.add_weight(name="weight", shape=(k, k, in_channels, self.filters),
                                      initializer=keras.initializers.RandomNormal(stddev=1.0))
        self.modulation = EqualDense(in_channels, bias_init=1.0, impl=self.impl, name="modulation")
        self.modulation.build(style_shape)
        n_taps = len(self.blur_kernel)
        if self.upsample:  # transposed conv gives 2H + k - 2; the blur brings it back to 2H
            p = (n_taps - 2) - (k - 1)
            self._blur_pad = ((p + 1) // 2 + 1, p // 2 + 1)
            self._blur = setup_kernel(self.blur_kernel, gain=4.0)
        elif self.downsample:
            p = (n_taps - 2) + (k - 1)
            self._blur_pad = ((p + 1) // 2, p // 2)
            self._blur = setup_kernel(self.blur_kernel)

    @staticmethod
    def _demod(s, w_sq):
        """Demodulation coefficient [B, out]: rsqrt of the sum over (in, kh, kw) of (w * s)^2, as s^2 @ w_sq, where
        w_sq [in, out] is the sum of w^2 over the kernel taps (``tap_squares``)."""
        return tf.math.rsqrt(tf.matmul(tf.square(s), w_sq) + DEMOD_EPS)

    @staticmethod
    def tap_squares(w):
        """The sum of ``w``^2 [k, k, in, out] over the kernel taps: [in, out]."""
        return tf.reduce_sum(tf.square(w), axis=[0, 1])

    def _weight_tap_squares(self):
        """``tap_squares(self.weight)``: under ``frozen_weights``, a constant computed from the weight's value now."""
        if not _FROZEN.get():
            return self.tap_squares(self.weight)
        with tf.init_scope():  # eager, also while a tf.function traces
            value = np.asarray(self.weight.numpy(), np.float64)
        return tf.constant(np.sum(np.square(value), axis=(0, 1)).astype(np.float32))

    def _upsample_blur_pad(self):
        """The upsampling blur's pad for ``_conv``'s output: the phase form's extra zero rows at the end
        (``phase_extra_rows``) are taken off the end pad (a crop where that goes below zero)."""
        p0, p1 = self._blur_pad
        return (p0, p1 - phase_extra_rows(self.kernel_size)) if _PHASES.get() else (p0, p1)

    def _conv(self, x, w, direct=False):
        """The conv (transposed, strided or same-size) of ``x`` with ``w`` [k, k, in, out], before any blur.

        ``direct`` (the inference form) lets a 3x3 conv run the compiled direct conv where that is faster
        (``ops.conv3x3``). Under ``phase_upsampling`` the transposed conv's output may end in extra all-zero
        rows and columns, which ``_upsample_blur_pad`` accounts for.
        """
        k = self.kernel_size
        if self.upsample and _PHASES.get():
            return transposed_conv_as_phases(x, w)
        if self.downsample:
            x = upfirdn2d(x, self._blur, pad=self._blur_pad, impl=self.impl)
            return tf.nn.conv2d(x, w, strides=2, padding="VALID")
        if direct and k == 3:
            return conv3x3(x, w, transposed=self.upsample, impl=self.impl)
        if self.upsample:
            return transposed_conv2d(x, w)
        return tf.nn.conv2d(x, w, strides=1, padding=[[0, 0], [k // 2, k // 2], [k // 2, k // 2], [0, 0]])

    def call(self, x, style):
        s = self.modulation(style)  # [B, in]
        w = self.weight * self.scale
        y = self._conv(scale_channels(x, s), w)
        if self.demodulate:
            y = scale_channels(y, self._demod(s, self.tap_squares(w)))
        if self.upsample:
            y = upfirdn2d(y, self._blur, pad=self._upsample_blur_pad(), impl=self.impl)
        return y

    def folds(self, in_size):
        """Whether folding the style into the weight is cheaper than scaling the activations, per sample:
        k*k*in*out weight elements to write against in_size^2*in input elements to rescale."""
        return self.kernel_size ** 2 * self.filters < in_size ** 2

    def _folds_for(self, x, out_width):
        """Whether ``call_inference`` folds the style into the conv weight for input ``x``: where the layer
        ``folds``, for a batch of one, or for any batch whose conv is the compiled direct conv (which takes one
        weight per sample, ``ops.conv3x3.runs_direct``)."""
        if x.shape.rank != 4 or x.shape[1] is None or not self.folds(x.shape[1]):
            return False
        return _single(x) or (self.kernel_size == 3 and not self.downsample
                              and runs_direct(x.shape[2], out_width, self.impl))

    def _folds_direct(self, x, out_width):
        """Whether ``call_inference`` folds the style into a 3x3 conv that the compiled direct conv runs."""
        return (folding() and self.kernel_size == 3 and not self.downsample and self._folds_for(x, out_width)
                and runs_direct(x.shape[2], out_width, self.impl))

    def _widened(self, in_width, style, out_width, bias=None):
        """(w [k, k, in_width, out_width], s [B, in_width], d [B, out_width] or [B, 1], bias [out_width] or None):
        the weight, the style times the equalized-lr scale (``w * s`` is the scaled weight times the style, with
        the scale on the [B, in] style instead of a pass over the weight per call) and the demodulation, with
        zero weights for extra input and output channels (a widened previous layer, ``out_channels``), so the
        real channels are unchanged."""
        s = self.modulation(style) * self.scale  # [B, in]
        w = self.weight
        # [B, out], or [B, 1] without demodulation
        d = self._demod(s, self._weight_tap_squares()) if self.demodulate else tf.ones_like(s[:, :1])
        if (in_width, out_width) != (self.in_channels, self.filters):
            w = tf.pad(w, [[0, 0], [0, 0], [0, in_width - self.in_channels], [0, out_width - self.filters]])
            s = _pad_last(s, in_width)
            d = _pad_last(d, out_width) if self.demodulate else d
            bias = None if bias is None else _pad_last(bias, out_width)
        return w, s, d, bias

    @staticmethod
    def _pointwise(w, s, d, gain=1.0):
        """The per-sample weights [B, in, out] of a 1x1 conv: ``w * s * d * gain``."""
        return w[0, 0] * (s[:, :, None] * (d * gain)[:, None, :])

    def folded_pointwise(self, in_width, style):
        """The per-sample [B, in_width, out] weights of this 1x1 conv for inputs of ``in_width`` channels (extra
        ones zero-weighted): what ``call_inference`` multiplies its input by when ``folding()``."""
        w, s, d, _ = self._widened(in_width, style, self.filters)
        return self._pointwise(w, s, d)

    def projects(self, x, out_width):
        """Whether ``call_inference`` can take a ``project`` weight for input ``x``: a same-size 3x3 conv that folds
        its style and runs the compiled direct conv, which applies the projection before storing anything."""
        return self._projects_when(self._folds_direct(x, out_width))

    def _projects_when(self, folds_direct):
        """``projects``, given ``_folds_direct``: only a same-size conv (an upsampling one is followed by a blur)."""
        return folds_direct and not self.upsample

    def call_inference(self, x, style, gain=1.0, bias=None, out_channels=None, noise=None, noise_strength=None,
                       activation="linear", project=None):
        """``act(call(x, style) * gain + bias + noise * noise_strength)`` (``ops.epilogue.epilogue_ref``; act:
        "linear" or a leaky ReLU of slope LRELU_ALPHA), the same function to float32 round-off, in fewer passes.

        When ``folding()``, a 1x1 conv (ToRGB) is a per-sample matmul (``ops.to_rgb``) with weights
        ``w * s * d * gain``, and where the layer ``folds`` a batch of one, or any batch the compiled direct
        conv runs (one weight per sample), convolves with that weight (no pass over the activations);
        otherwise the input is scaled by s around a conv with the constant weight, and the output by ``d * gain``
        in the epilogue (``ops.epilogue.epilogue``: with the compiled ops one pass for scale, bias, noise and
        activation, or the blur's own epilogue; with TensorFlow's, a multiply, a BiasAdd fused with the conv by
        Grappler when no blur follows, the noise add and one LeakyRelu). Where a folded 3x3 conv runs the
        compiled direct conv, bias, noise and activation are applied as it stores its sums.
        ``x`` may carry extra zero-weighted channels (a widened previous layer), and ``out_channels``
        widens the output the same way: the extra weights are zero, so the real channels are unchanged.
        ``project`` [B, out_channels, m] (only where ``projects``): the result is then that 1x1 conv of it.
        """
        out_width = out_channels or self.filters
        # The compiled direct conv reads the channels its weight takes: a widened input's zero channels need no
        # zero weights there (5% fewer multiply-adds for 77 of 80 channels); every other conv gets them.
        direct = self._folds_direct(x, out_width)
        in_width = self.in_channels if direct else x.shape[-1]
        if project is not None and not self._projects_when(direct):
            raise ValueError(f"{self.name} cannot project its output here (see ModulatedConv2D.projects).")
        w, s, d, bias = self._widened(in_width, style, out_width, bias)
        parts = dict(bias=bias, noise=noise, noise_strength=noise_strength, activation=activation, alpha=LRELU_ALPHA)
        if folding() and self.kernel_size == 1 and not (self.upsample or self.downsample):
            # A 1x1 conv is a matmul: any batch takes its own [in, out] weight, no pass over x.
            y = to_rgb(x, self._pointwise(w, s, d, gain), impl=self.impl)
        elif folding() and self._folds_for(x, out_width):
            if _single(x):
                folded = w * (tf.reshape(s, [1, 1, -1, 1]) * (d[0] * gain))
            else:  # one weight per sample, which the compiled direct conv takes: no per-sample loop
                folded = w[None] * (s[:, None, None, :, None] * (d * gain)[:, None, None, None, :])
            if self.kernel_size == 3 and not (self.upsample or self.downsample):
                return conv3x3(x, folded, impl=self.impl, project=project, **parts)
            y = self._conv(x, folded, direct=True)
        else:
            y = self._conv(scale_channels(x, s), w, direct=True)
            if self.demodulate:
                parts["scale"] = d * gain  # [B, out]: applied by the epilogue
            elif gain != 1.0:
                y = y * gain
        if self.upsample:  # self._blur is setup_kernel(blur_kernel, 4): the same filter, with the epilogue
            return filter2d_separable(y, self.blur_kernel, gain=4.0, pad=self._upsample_blur_pad(), impl=self.impl,
                                      **parts)
        return epilogue(y, impl=self.impl, **parts)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "demodulate": self.demodulate, "upsample": self.upsample, "downsample": self.downsample,
                "blur_kernel": list(self.blur_kernel)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class NoiseInjection(keras.layers.Layer):
    """``x + strength * noise``; strength is a scalar initialised to 0, noise is [B or 1, H, W, 1]."""

    def build(self, x_shape, noise_shape=None):
        self.weight = self.add_weight(name="weight", shape=(1,), initializer="zeros")

    def call(self, x, noise):
        return x + self.weight * noise


@keras.saving.register_keras_serializable(package=PACKAGE)
class StyledConv(keras.layers.Layer):
    """ModulatedConv2D -> noise -> bias + leaky ReLU (noise is added before the bias, as the reference)."""

    def __init__(self, filters, kernel_size, upsample=False, blur_kernel=(1, 3, 3, 1), impl=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.upsample = bool(upsample)
        self.blur_kernel = tuple(int(v) for v in blur_kernel)
        self.impl = impl_name(impl)
        self.conv = ModulatedConv2D(filters, kernel_size, upsample=upsample, blur_kernel=blur_kernel, impl=self.impl,
                                    name="conv")
        self.noise = NoiseInjection(name="noise")
        self.activate = FusedLeakyReLU(impl=self.impl, name="activate")

    def build(self, x_shape, style_shape, noise_shape=None):
        self.conv.build(x_shape, style_shape)
        h = None if x_shape[1] is None else x_shape[1] * (2 if self.upsample else 1)
        out_shape = (x_shape[0], h, h, self.filters)
        self.noise.build(out_shape)
        self.activate.build(out_shape)

    def call(self, x, style, noise):
        if inference():
            return self.call_inference(x, style, noise)
        return self.activate(self.noise(self.conv(x, style), noise))

    def call_inference(self, x, style, noise, project=None):
        """``call`` in the inference form; with ``project`` [B, inference width, m] (only where ``projects``), that
        1x1 conv of it, which the compiled direct conv applies before storing anything."""
        # lrelu(v) * g == lrelu(v * g) for g > 0: the gain goes into the conv's scaling.
        # The output may be widened to aligned(filters) channels; the next layers give the extra ones zero weight.
        return self.conv.call_inference(x, style, gain=LRELU_GAIN, bias=self.activate.bias * LRELU_GAIN,
                                        out_channels=self.inference_width(x),
                                        noise=noise, noise_strength=self.noise.weight * LRELU_GAIN,
                                        activation="lrelu", project=project)

    def projects(self, x):
        """Whether ``call_inference`` can take a ``project`` weight for input ``x`` (ModulatedConv2D.projects)."""
        return inference() and self.conv.projects(x, self.inference_width(x) or self.filters)

    def inference_width(self, x):
        """The inference form's output width for input ``x``: ``aligned(filters)`` where the conv that runs wants
        its channels aligned (``ops.conv3x3.wants_aligned_channels``: the direct conv, TensorFlow's non-oneDNN
        convs) and ``channel_widening`` is on; else None (the model's own width)."""
        width = aligned(self.filters)
        if not _WIDENING.get() or width == self.filters:
            return None
        conv_width = x.shape[2] if self.kernel_size == 3 else None  # conv3x3's compiled kernel: 3x3 only
        return width if wants_aligned_channels(conv_width, width, impl=self.impl) else None

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "upsample": self.upsample, "blur_kernel": list(self.blur_kernel)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ToRGB(keras.layers.Layer):
    """1x1 modulated conv to RGB without demodulation, + bias, + the upsampled previous skip image."""

    def __init__(self, blur_kernel=(1, 3, 3, 1), impl=None, **kwargs):
        super().__init__(**kwargs)
        self.blur_kernel = tuple(int(v) for v in blur_kernel)
        self.impl = impl_name(impl)
        self.conv = ModulatedConv2D(3, 1, demodulate=False, impl=self.impl, name="conv")
        p = len(self.blur_kernel) - 2  # Upsample(factor 2): pad ((p+1)//2 + 1, p//2)
        self._up_pad = ((p + 1) // 2 + 1, p // 2)
        self._up_kernel = setup_kernel(self.blur_kernel, gain=4.0)

    def build(self, x_shape, style_shape, skip_shape=None):
        self.conv.build(x_shape, style_shape)
        self.bias = self.add_weight(name="bias", shape=(3,), initializer="zeros")

    def call(self, x, style, skip=None):
        if inference():  # a matmul per sample (when folding), and the skip upsampled without zero insertion
            if folding():  # one op: the per-sample matmul, the bias and the upsampled skip
                return to_rgb(x, self.conv.folded_pointwise(x.shape[-1], style), bias=self.bias, skip=skip,
                              skip_taps=self.blur_kernel, skip_pad=self._up_pad, impl=self.impl)
            out = self.conv.call_inference(x, style, bias=self.bias)
            if skip is not None:
                out = out + upsample2d_polyphase(skip, self._up_kernel, self._up_pad)
            return out
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + upfirdn2d(skip, self._up_kernel, up=2, pad=self._up_pad, impl=self.impl)
        return out

    def after_conv(self, conv, x, conv_style, noise, style, skip=None):
        """``self(conv(x, conv_style, noise), style, skip)`` at inference with the StyledConv ``conv`` projecting its
        output through this layer's 1x1 conv as its compiled direct conv stores its sums (``StyledConv.projects``),
        so that the activation, the largest of a generator's last block, is never written nor read back; then one
        pass adds the bias and the upsampled skip (``to_rgb`` with identity weights). None where ``conv`` cannot.
        """
        if not (folding() and conv.projects(x)):
            return None
        with tf.name_scope(self.name):  # each layer's ops under its name, as when called (profiles group by it)
            project = self.conv.folded_pointwise(conv.inference_width(x) or conv.filters, style)
        with tf.name_scope(conv.name):
            rgb = conv.call_inference(x, conv_style, noise, project=project)
        with tf.name_scope(self.name):
            identity = tf.eye(3, batch_shape=tf.shape(rgb)[:1], dtype=rgb.dtype)
            return to_rgb(rgb, identity, bias=self.bias, skip=skip, skip_taps=self.blur_kernel,
                          skip_pad=self._up_pad, impl=self.impl)

    def get_config(self):
        return {**super().get_config(), "blur_kernel": list(self.blur_kernel)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConstantInput(keras.layers.Layer):
    """The learned 4x4 input of the synthesis network, tiled over the batch."""

    def __init__(self, channels, size=4, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.size = int(size)

    def build(self, input_shape=None):
        self.input_const = self.add_weight(name="input", shape=(1, self.size, self.size, self.channels),
                                           initializer=keras.initializers.RandomNormal(stddev=1.0))

    def call(self, batch_size):
        return tf.tile(self.input_const, [batch_size, 1, 1, 1])

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "size": self.size}
