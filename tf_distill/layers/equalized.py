"""Equalized-learning-rate dense and conv layers and the fused bias + leaky ReLU.

Parameters are stored raw, exactly as the reference stores them (weights ~ N(0, 1/lr_mul^2),
biases unscaled) and scaled at run time, so optimizers see the same gradients and the
rosinality state_dict maps onto them one to one (transposed to TF layouts).

Every layer that runs an op (here and in the other layer modules) takes ``impl`` ("auto", "ref",
"custom" or None, see ``tf_distill.ops.choice``) and passes it to its ops and sublayers. None
means whatever is in effect when the layer is called. It is not part of ``get_config``: a saved
model must not pin the implementation chosen on the machine that saved it.
"""

import math

import keras
import tensorflow as tf

from tf_distill.layers.forms import inference
from tf_distill.ops import choice, fused_bias_act, setup_kernel, upfirdn2d

PACKAGE = "tf_distill"
LRELU_ALPHA = 0.2
LRELU_GAIN = math.sqrt(2.0)


def impl_name(impl):
    """A layer's ``impl`` argument, checked: None (whatever is in effect when called) or an ops implementation."""
    return None if impl is None else choice.check_name(impl)


@keras.saving.register_keras_serializable(package=PACKAGE)
class EqualDense(keras.layers.Layer):
    """Dense layer with equalized lr: ``y = x @ (w * lr_mul / sqrt(in)) + b * lr_mul`` (opt. fused lrelu)."""

    def __init__(self, units, lr_mul=1.0, bias_init=0.0, activation=None, use_bias=True, impl=None, **kwargs):
        super().__init__(**kwargs)
        if activation not in (None, "lrelu"):
            raise ValueError(f"EqualDense activation must be None or 'lrelu', got {activation!r}.")
        self.units = int(units)
        self.lr_mul = float(lr_mul)
        self.bias_init = float(bias_init)
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.impl = impl_name(impl)

    def build(self, input_shape):
        in_features = int(input_shape[-1])
        self.scale = self.lr_mul / math.sqrt(in_features)
        self.weight = self.add_weight(
            name="weight", shape=(in_features, self.units),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / self.lr_mul))
        self.bias = (self.add_weight(name="bias", shape=(self.units,),
                                     initializer=keras.initializers.Constant(self.bias_init))
                     if self.use_bias else None)

    def call(self, x):
        if inference():
            # The scale multiplies the [batch, units] product instead of the [in, units] weight: the same
            # function to float32 round-off, without a pass over the weight per call (the student's mapping
            # and modulations: about 3M weights). With lrelu: lrelu(v) * g == lrelu(v * g) for g > 0, so the
            # gain goes into that scale and the bias, and the activation is one LeakyRelu op (TFLite's
            # LEAKY_RELU, which XNNPACK runs; the reference's select form is kept for training, see
            # ops/fused_bias_act.py).
            gain = LRELU_GAIN if self.activation == "lrelu" else 1.0
            y = tf.matmul(x, self.weight) * (self.scale * gain)
            y = y if self.bias is None else y + self.bias * (self.lr_mul * gain)
            return tf.nn.leaky_relu(y, LRELU_ALPHA) if self.activation == "lrelu" else y
        y = tf.matmul(x, self.weight * self.scale)
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation == "lrelu":
            return fused_bias_act(y, bias, impl=self.impl)
        return y if bias is None else y + bias

    def get_config(self):
        return {**super().get_config(), "units": self.units, "lr_mul": self.lr_mul, "bias_init": self.bias_init,
                "activation": self.activation, "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedLeakyReLU(keras.layers.Layer):
    """Per-channel bias + leaky ReLU (0.2) * sqrt(2); the reference's ``activate`` module."""

    def __init__(self, impl=None, **kwargs):
        super().__init__(**kwargs)
        self.impl = impl_name(impl)

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(int(input_shape[-1]),), initializer="zeros")

    def call(self, x):
        return fused_bias_act(x, self.bias, impl=self.impl)


@keras.saving.register_keras_serializable(package=PACKAGE)
class EqualConv2D(keras.layers.Layer):
    """Conv with equalized lr (``w / sqrt(in * k^2)``), optional stride-2 downsampling after a blur.

    ``downsample=True`` blurs with the FIR kernel (pad ``((p+1)//2, p//2)``, ``p = 2 + k - 1``) and
    convolves with stride 2 and no padding, as the reference's ``ConvLayer(downsample=True)``.
    """

    def __init__(self, filters, kernel_size, downsample=False, use_bias=True, blur_kernel=(1, 3, 3, 1), impl=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.downsample = bool(downsample)
        self.use_bias = bool(use_bias)
        self.blur_kernel = tuple(int(v) for v in blur_kernel)
        self.impl = impl_name(impl)

    def build(self, input_shape):
        in_channels = int(input_shape[-1])
        k = self.kernel_size
        self.scale = 1.0 / math.sqrt(in_channels * k * k)
        self.weight = self.add_weight(name="weight", shape=(k, k, in_channels, self.filters),
                                      initializer=keras.initializers.RandomNormal(stddev=1.0))
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None
        if self.downsample:
            p = (len(self.blur_kernel) - 2) + (k - 1)
            self._blur_pad = ((p + 1) // 2, p // 2)
            self._blur = setup_kernel(self.blur_kernel)

    def call(self, x):
        w = self.weight * self.scale
        if self.downsample:
            x = upfirdn2d(x, self._blur, pad=self._blur_pad, impl=self.impl)
            y = tf.nn.conv2d(x, w, strides=2, padding="VALID")
        else:
            p = self.kernel_size // 2
            y = tf.nn.conv2d(x, w, strides=1, padding=[[0, 0], [p, p], [p, p], [0, 0]])
        return y + self.bias if self.bias is not None else y

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "downsample": self.downsample, "use_bias": self.use_bias, "blur_kernel": list(self.blur_kernel)}

