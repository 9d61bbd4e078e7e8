"""The mapping network z -> w: PixelNorm + equalized dense layers with leaky ReLU.

The standard network is PixelNorm + ``n_mlp`` layers of width ``style_dim`` with lr_mul 0.01.
Heterogeneous students (spec C.1 ``--mlp_cfg``) use their own widths, no PixelNorm and lr_mul 1.
"""

import keras
import tensorflow as tf

from tf_distill.layers.equalized import PACKAGE, EqualDense, impl_name

PIXEL_NORM_EPS = 1e-8


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelNorm(keras.layers.Layer):
    """``x * rsqrt(mean(x^2, features) + 1e-8)``."""

    def call(self, x):
        return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + PIXEL_NORM_EPS)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MappingNetwork(keras.layers.Layer):
    """z [B, z_dim] -> w [B, widths[-1]]."""

    def __init__(self, widths, lr_mul=0.01, pixel_norm=True, impl=None, **kwargs):
        super().__init__(**kwargs)
        self.widths = [int(w) for w in widths]
        if not self.widths:
            raise ValueError("MappingNetwork needs at least one layer width.")
        self.lr_mul = float(lr_mul)
        self.pixel_norm = bool(pixel_norm)
        self.impl = impl_name(impl)
        self.norm = PixelNorm(name="pixel_norm") if self.pixel_norm else None
        self.dense_layers = [EqualDense(w, lr_mul=self.lr_mul, activation="lrelu", impl=self.impl, name=f"dense_{i}")
                             for i, w in enumerate(self.widths)]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.dense_layers:
            layer.build(shape)
            shape = shape[:-1] + (layer.units,)

    def call(self, z):
        x = self.norm(z) if self.norm is not None else z
        for layer in self.dense_layers:
            x = layer(x)
        return x

    def get_config(self):
        return {**super().get_config(), "widths": self.widths, "lr_mul": self.lr_mul, "pixel_norm": self.pixel_norm}
