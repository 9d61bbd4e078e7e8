"""StyleGAN2 residual discriminator of the rosinality reference (spec A.5), NHWC."""

import math

import keras
import tensorflow as tf

from tf_distill.layers import EqualConv2D, EqualDense, FusedLeakyReLU
from tf_distill.layers.equalized import PACKAGE, impl_name
from tf_distill.models.generator import _BASE_CHANNELS, log2_size
from tf_distill.ops import fused_bias_act

STDDEV_EPS = 1e-8


def standard_discriminator_channels(size, channel_multiplier=2):
    """Channels per resolution, from ``size`` down to 4 (the generator's table)."""
    log_size = log2_size(size)
    return [_BASE_CHANNELS[2 ** i] * (channel_multiplier if 2 ** i >= 64 else 1) for i in range(log_size, 1, -1)]


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvLayer(keras.layers.Layer):
    """The reference's ConvLayer: [blur + stride 2] conv, then bias + lrelu (or lrelu only without bias)."""

    def __init__(self, filters, kernel_size, downsample=False, use_bias=True, activate=True,
                 blur_kernel=(1, 3, 3, 1), impl=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.downsample = bool(downsample)
        self.use_bias = bool(use_bias)
        self.activate = bool(activate)
        self.blur_kernel = tuple(int(v) for v in blur_kernel)
        self.impl = impl_name(impl)
        self.conv = EqualConv2D(filters, kernel_size, downsample=downsample, use_bias=use_bias and not activate,
                                blur_kernel=blur_kernel, impl=self.impl, name="conv")
        self.act = FusedLeakyReLU(impl=self.impl, name="activate") if activate and use_bias else None

    def build(self, input_shape):
        self.conv.build(input_shape)
        if self.act is not None:
            self.act.build((None, None, None, self.filters))

    def call(self, x):
        x = self.conv(x)
        if self.act is not None:
            return self.act(x)
        return fused_bias_act(x, impl=self.impl) if self.activate else x

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "downsample": self.downsample, "use_bias": self.use_bias, "activate": self.activate,
                "blur_kernel": list(self.blur_kernel)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResBlock(keras.layers.Layer):
    """``(conv2(conv1(x)) + skip(x)) / sqrt(2)`` with a stride-2 conv2 and a 1x1 stride-2 skip."""

    def __init__(self, filters, blur_kernel=(1, 3, 3, 1), impl=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.blur_kernel = tuple(int(v) for v in blur_kernel)
        self.impl = impl_name(impl)
        self.conv1 = None
        self.conv2 = ConvLayer(filters, 3, downsample=True, blur_kernel=blur_kernel, impl=self.impl, name="conv2")
        self.skip = ConvLayer(filters, 1, downsample=True, activate=False, use_bias=False,
                              blur_kernel=blur_kernel, impl=self.impl, name="skip")

    def build(self, input_shape):
        in_channels = int(input_shape[-1])
        self.conv1 = ConvLayer(in_channels, 3, blur_kernel=self.blur_kernel, impl=self.impl, name="conv1")
        self.conv1.build(input_shape)
        self.conv2.build(input_shape)
        self.skip.build(input_shape)

    def call(self, x):
        return (self.conv2(self.conv1(x)) + self.skip(x)) * (1.0 / math.sqrt(2.0))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "blur_kernel": list(self.blur_kernel)}


def minibatch_stddev(x, group_size=4, num_features=1, chunk=None):
    """Appends the minibatch standard deviation as extra channels (groups are strided: n = g * (B/G) + m).

    ``chunk``: apply it separately to consecutive chunks of that many samples, as the reference
    does per GPU (B = 4), so a batch of several chunks on one device equals several replicas.
    """
    if chunk:
        shape = tf.shape(x)
        chunks = tf.reshape(x, tf.concat([[shape[0] // chunk, chunk], shape[1:]], 0))
        out = tf.map_fn(lambda c: minibatch_stddev(c, group_size, num_features), chunks,
                        fn_output_signature=tf.TensorSpec([chunk, None, None, x.shape[-1] + num_features], x.dtype))
        return tf.reshape(out, tf.concat([shape[:-1], [x.shape[-1] + num_features]], 0))
    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]
    c = x.shape[-1]
    g = tf.minimum(group_size, b)
    tf.debugging.assert_equal(b % g, 0, message="Discriminator batch must be divisible by the stddev group size.")
    y = tf.reshape(x, [g, b // g, h, w, num_features, c // num_features])
    y = y - tf.reduce_mean(y, axis=0, keepdims=True)
    y = tf.sqrt(tf.reduce_mean(tf.square(y), axis=0) + STDDEV_EPS)  # [B/G, H, W, F, C/F]
    y = tf.reduce_mean(y, axis=[1, 2, 4])  # [B/G, F]
    y = tf.tile(y[:, None, None, :], [g, h, w, 1])
    return tf.concat([x, y], axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Discriminator(keras.Model):
    """Images [B, size, size, 3] in [-1, 1] -> logits [B, 1].

    ``channels`` lists the channels per resolution from ``size`` down to 4 (default: the standard
    table with ``channel_multiplier``). ``stddev_chunk`` (trainer: the reference's per-GPU batch 4)
    computes the minibatch stddev per chunk of samples, see :func:`minibatch_stddev`. ``impl``: ops
    implementation of every layer; None (default): whatever is in effect when the model is called
    or traced (``tf_distill.ops.choice``). Not saved.
    """

    def __init__(self, size, channel_multiplier=2, channels=None, stddev_group=4, stddev_features=1,
                 stddev_chunk=None, blur_kernel=(1, 3, 3, 1), impl=None, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self.log_size = log2_size(self.size)
        self.channel_multiplier = int(channel_multiplier)
        self.channels = ([int(c) for c in channels] if channels is not None
                         else standard_discriminator_channels(self.size, self.channel_multiplier))
        if len(self.channels) != self.log_size - 1:
            raise ValueError(f"Discriminator channels for size {size} must list {self.log_size - 1} "
                             f"resolutions ({size}..4), got {len(self.channels)}.")
        self.stddev_group = int(stddev_group)
        self.stddev_features = int(stddev_features)
        self.stddev_chunk = None if not stddev_chunk else int(stddev_chunk)
        self.blur_kernel = tuple(int(v) for v in blur_kernel)
        self.impl = impl_name(impl)
        ch, bk, impl = self.channels, self.blur_kernel, self.impl
        self.from_rgb = ConvLayer(ch[0], 1, blur_kernel=bk, impl=impl, name="convs_0")
        self.blocks = [ResBlock(ch[i + 1], blur_kernel=bk, impl=impl, name=f"convs_{i + 1}")
                       for i in range(len(ch) - 1)]
        self.final_conv = ConvLayer(ch[-1], 3, blur_kernel=bk, impl=impl, name="final_conv")
        self.final_linear_0 = EqualDense(ch[-1], activation="lrelu", impl=impl, name="final_linear_0")
        self.final_linear_1 = EqualDense(1, impl=impl, name="final_linear_1")

    def build(self, input_shape=None):
        res = self.size
        self.from_rgb.build((None, res, res, 3))
        prev = self.channels[0]
        for block, c in zip(self.blocks, self.channels[1:]):
            block.build((None, res, res, prev))
            res, prev = res // 2, c
        self.final_conv.build((None, 4, 4, prev + self.stddev_features))
        self.final_linear_0.build((None, prev * 16))
        self.final_linear_1.build((None, prev))
        self.built = True

    def build_from_config(self, config):
        self.build()

    def get_build_config(self):
        return {"built_from": "config"}  # non-empty so that Keras calls build_from_config on load

    def call(self, images, training=None):
        x = self.from_rgb(images)
        for block in self.blocks:
            x = block(x)
        x = minibatch_stddev(x, self.stddev_group, self.stddev_features, self.stddev_chunk)
        x = self.final_conv(x)
        x = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [tf.shape(x)[0], -1])  # NCHW flatten, as the reference
        return self.final_linear_1(self.final_linear_0(x))

    def get_config(self):
        return {**super().get_config(), "size": self.size, "channel_multiplier": self.channel_multiplier,
                "channels": self.channels, "stddev_group": self.stddev_group,
                "stddev_features": self.stddev_features, "stddev_chunk": self.stddev_chunk, "blur_kernel": list(self.blur_kernel)}
