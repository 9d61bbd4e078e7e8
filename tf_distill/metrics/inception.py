"""The FID Inception-v3 (2015-12-05 graph) as a frozen Keras model, NHWC (spec D.1).

Same network as pytorch-fid's ``InceptionV3([3], resize_input=True,
normalize_input=False, use_fid_inception=True)`` with its ``FIDInceptionA/C/E_1/E_2``
blocks: average pools in the A/C/E_1 pool branches exclude the padding
(``count_include_pad=False``; TF's ``SAME`` average pool does the same), E_2 (Mixed_7c)
uses a 3x3/1 max pool, conv + batch norm (eps 1e-3) + ReLU everywhere, global average
pool to the 2048-d features.

Input: NHWC images, any size; resized inside the graph to 299x299 with bilinear
interpolation, half-pixel centres (torch ``align_corners=False``), no antialiasing.

* float images are generator outputs in [-1, 1]. ``mode="stylekd"`` (default, the paper's
  code): fed raw, no clamp, no quantisation. ``mode="standard"`` (NVlabs): quantised to
  uint8 first as ``uint8(clip(x * 127.5 + 128, 0, 255))``, then mapped back with
  ``u / 127.5 - 1``.
* uint8 images (real data) are mapped with ``u / 127.5 - 1`` (= pytorch-fid's ToTensor
  then ``2x - 1``) in both modes.
"""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from tf_distill.metrics.batching import call_nonempty
from tf_distill.weights import get_weights, specs

MODES = ("stylekd", "standard")
INPUT_SIZE = 299


def to_inception_input(images, mode: str = "stylekd") -> tf.Tensor:
    """Maps images to the float [-1, 1] range the network expects (before resizing)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 127.5 - 1.0
    x = tf.cast(images, tf.float32)
    if mode == "standard":
        u = tf.floor(tf.clip_by_value(x * 127.5 + 128.0, 0.0, 255.0))
        x = u / 127.5 - 1.0
    return x


def resize_for_inception(x: tf.Tensor) -> tf.Tensor:
    """Bilinear (half-pixel, no antialias) resize to 299x299, skipped when already 299."""
    if x.shape[1] == INPUT_SIZE and x.shape[2] == INPUT_SIZE:
        return x
    return tf.image.resize(x, [INPUT_SIZE, INPUT_SIZE], method="bilinear", antialias=False)


class ConvBN(keras.layers.Layer):
    """Conv (no bias, torch-style symmetric padding) + inference batch norm + ReLU."""

    def __init__(self, spec: specs.ConvSpec, **kwargs):
        super().__init__(name=spec.name.replace(".", "_"), dtype="float32", **kwargs)
        self.spec = spec
        kh, kw = spec.kernel
        ph, pw = spec.padding
        if ph == 0 and pw == 0:
            self._padding = "VALID"
        elif spec.stride == 1 and (kh - 1) == 2 * ph and (kw - 1) == 2 * pw:
            self._padding = "SAME"  # identical to symmetric (k-1)/2 padding at stride 1
        else:
            self._padding = [[0, 0], [ph, ph], [pw, pw], [0, 0]]

    def build(self, input_shape=None):
        s = self.spec
        self.kernel = self.add_weight(name="kernel", shape=(*s.kernel, s.cin, s.cout), trainable=False,
                                      initializer="zeros")
        for p in ("gamma", "beta", "mean", "var"):
            setattr(self, p, self.add_weight(name=p, shape=(s.cout,), trainable=False,
                                             initializer="ones" if p in ("gamma", "var") else "zeros"))
        self.built = True

    def call(self, x):
        y = tf.nn.conv2d(x, self.kernel, strides=self.spec.stride, padding=self._padding)
        scale = self.gamma * tf.math.rsqrt(self.var + specs.BN_EPS)
        return tf.nn.relu(y * scale + (self.beta - self.mean * scale))


def _max_pool_3x3_s2(x):
    return tf.nn.max_pool2d(x, 3, 2, "VALID")


def _avg_pool_3x3_same(x):  # count_include_pad=False
    return tf.nn.avg_pool2d(x, 3, 1, "SAME")


def _max_pool_3x3_same(x):
    return tf.nn.max_pool2d(x, 3, 1, "SAME")


@keras.saving.register_keras_serializable(package="tf_distill")
class FIDInceptionV3(keras.Model):
    """``call(images)`` -> ``[N, 2048]`` float32 pool features (see module docstring)."""

    def __init__(self, weights=None, mode: str = "stylekd", resize: bool = True,
                 cache_dir: Optional[str] = None, name: str = "fid_inception_v3", **kwargs):
        super().__init__(name=name, **kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.resize = bool(resize)
        self.layers_by_name = {}
        for _, _, convs in specs.INCEPTION_BLOCKS:
            for c in convs:
                layer = ConvBN(c)
                layer.build()
                self.layers_by_name[c.name] = layer
        self._convs = list(self.layers_by_name.values())  # tracked by Keras
        self.built = True
        self.load_arrays(get_weights("fid_inception", weights, cache_dir=cache_dir))
        self.trainable = False

    def load_arrays(self, arrays):
        for name, layer in self.layers_by_name.items():
            for p in ("kernel", "gamma", "beta", "mean", "var"):
                getattr(layer, p).assign(arrays[f"{name}/{p}"])

    def _c(self, name, x):
        return self.layers_by_name[name](x)

    def _block(self, p, kind, x):
        c = lambda n, h: self._c(f"{p}.{n}", h)  # noqa: E731
        if kind == "A":
            return tf.concat([
                c("branch1x1", x),
                c("branch5x5_2", c("branch5x5_1", x)),
                c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x))),
                c("branch_pool", _avg_pool_3x3_same(x)),
            ], axis=-1)
        if kind == "B":
            return tf.concat([
                c("branch3x3", x),
                c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x))),
                _max_pool_3x3_s2(x),
            ], axis=-1)
        if kind == "C":
            b7 = c("branch7x7_3", c("branch7x7_2", c("branch7x7_1", x)))
            bd = c("branch7x7dbl_1", x)
            for i in range(2, 6):
                bd = c(f"branch7x7dbl_{i}", bd)
            return tf.concat([c("branch1x1", x), b7, bd, c("branch_pool", _avg_pool_3x3_same(x))], axis=-1)
        if kind == "D":
            b3 = c("branch3x3_2", c("branch3x3_1", x))
            b7 = c("branch7x7x3_1", x)
            for i in range(2, 5):
                b7 = c(f"branch7x7x3_{i}", b7)
            return tf.concat([b3, b7, _max_pool_3x3_s2(x)], axis=-1)
        if kind in ("E_1", "E_2"):
            b3 = c("branch3x3_1", x)
            bd = c("branch3x3dbl_2", c("branch3x3dbl_1", x))
            pool = _avg_pool_3x3_same(x) if kind == "E_1" else _max_pool_3x3_same(x)
            return tf.concat([
                c("branch1x1", x),
                c("branch3x3_2a", b3), c("branch3x3_2b", b3),
                c("branch3x3dbl_3a", bd), c("branch3x3dbl_3b", bd),
                c("branch_pool", pool),
            ], axis=-1)
        raise ValueError(kind)

    def call(self, images):
        return call_nonempty(self._features, images)

    def _features(self, images):
        x = to_inception_input(images, self.mode)
        if self.resize:
            x = resize_for_inception(x)
        x = self._c("Conv2d_1a_3x3", x)
        x = self._c("Conv2d_2a_3x3", x)
        x = self._c("Conv2d_2b_3x3", x)
        x = _max_pool_3x3_s2(x)
        x = self._c("Conv2d_3b_1x1", x)
        x = self._c("Conv2d_4a_3x3", x)
        x = _max_pool_3x3_s2(x)
        for name, kind, _ in specs.INCEPTION_BLOCKS[1:]:
            x = self._block(name, kind, x)
        return tf.reduce_mean(x, axis=[1, 2])

    def get_config(self):
        return {"name": self.name, "mode": self.mode, "resize": self.resize}
