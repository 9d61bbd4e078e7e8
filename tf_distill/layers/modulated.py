"""Modulated convolution and the blocks built on it (StyledConv, ToRGB, noise, constant input).

The reference computes a per-sample weight and runs a grouped conv. Here the mathematically
identical non-fused form is used (rosinality ``fused=False``): scale the input channels by
the style, convolve with the shared weight, scale the output channels by the demodulation
coefficient. It runs on CPU and GPU alike (grouped and grouped-transposed convs do not).
"""

import math

import keras
import tensorflow as tf

from tf_distill.layers.equalized import PACKAGE, EqualDense, FusedLeakyReLU, impl_name
from tf_distill.ops import setup_kernel, upfirdn2d

DEMOD_EPS = 1e-8


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

    def call(self, x, style):
        s = self.modulation(style)  # [B, in]
        w = self.weight * self.scale
        x = x * s[:, None, None, :]
        if self.upsample:
            shape = tf.shape(x)
            k = self.kernel_size
            out_shape = tf.stack([shape[0], shape[1] * 2 + k - 2, shape[2] * 2 + k - 2, self.filters])
            # PyTorch conv_transpose2d scatters out[2y+ky, 2x+kx] += x[y, x] * W[ky, kx] (no flip), and so
            # does tf.nn.conv2d_transpose with the filter laid out [k, k, out, in].
            y = tf.nn.conv2d_transpose(x, tf.transpose(w, [0, 1, 3, 2]), out_shape, strides=2, padding="VALID")
        elif self.downsample:
            x = upfirdn2d(x, self._blur, pad=self._blur_pad, impl=self.impl)
            y = tf.nn.conv2d(x, w, strides=2, padding="VALID")
        else:
            p = self.kernel_size // 2
            y = tf.nn.conv2d(x, w, strides=1, padding=[[0, 0], [p, p], [p, p], [0, 0]])
        if self.demodulate:
            # sum over (in, kh, kw) of (w * s)^2, computed as s^2 @ sum_{kh,kw} w^2.
            w_sq = tf.reduce_sum(tf.square(w), axis=[0, 1])  # [in, out]
            dcoef = tf.math.rsqrt(tf.matmul(tf.square(s), w_sq) + DEMOD_EPS)  # [B, out]
            y = y * dcoef[:, None, None, :]
        if self.upsample:
            y = upfirdn2d(y, self._blur, pad=self._blur_pad, impl=self.impl)
        return y

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
        return self.activate(self.noise(self.conv(x, style), noise))

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
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + upfirdn2d(skip, self._up_kernel, up=2, pad=self._up_pad, impl=self.impl)
        return out

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
