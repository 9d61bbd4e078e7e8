"""LPIPS v0.1 (net-lin, VGG16) as a frozen Keras model (spec D.5).

``LPIPS()(x0, x1)`` takes two NHWC batches in [-1, 1] and returns ``[N]`` distances
(``spatial=True``: ``[N, H, W]`` maps, the per-tap maps upsampled bilinearly to the input
size and summed, as ``lpips.LPIPS(spatial=True)``). Pipeline, as the reference:

1. scaling layer ``(x - [-.030, -.088, -.188]) / [.458, .448, .450]``;
2. torchvision ImageNet VGG16 ``features`` (3x3 convs, padding 1, ReLU; 2x2/2 max pools),
   taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (each image batch in its own pass, so a fixed target adds no backward work);
3. unit-normalise each tap over channels (see ``norm_eps`` below), squared difference;
4. 1x1 linear head (no bias) per tap, spatial mean, sum of the five.

``norm_eps``:
  ``"stylekd"`` (default) ``f / (sqrt(sum_c f^2 + 1e-10) + 1e-10)``, StyleKD's vendored
      ``lpips.PerceptualLoss`` that the paper's code calls (spec D.5). Its gradient is finite
      even where a tap is all zeros.
  ``"lpips"``  ``f / (sqrt(sum_c f^2) + 1e-10)``, the pip ``lpips`` 0.1.4 package and CAGAN.
      Same values up to ~1e-10; where a tap's channels are all 0 the gradient blows up
      (torch: NaN from sqrt'(0); here: 1/1e-10), while "stylekd" gives 1/(1e-5 + 1e-10).

The model is frozen (``trainable=False``); gradients flow to the inputs, so it can be a loss.
Weights: the cached ``lpips_vgg16`` set (fetched on first use), an ``.npz`` path of ours, or
a mapping from :func:`tf_distill.weights.lpips_from_torch_files` (torchvision
``vgg16-397923af.pth`` + LPIPS ``vgg.pth``).
"""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from tf_distill.metrics.batching import call_nonempty
from tf_distill.weights import get_weights, specs

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS_MODES = ("stylekd", "lpips")
_POOL_AFTER = ("conv1_2", "conv2_2", "conv3_3", "conv4_3")


def normalize_tensor(f: tf.Tensor, mode: str = "stylekd", eps: float = 1e-10) -> tf.Tensor:
    """Unit-normalises NHWC features over channels with the reference's eps placement."""
    sq = tf.reduce_sum(tf.square(f), axis=-1, keepdims=True)
    if mode == "stylekd":
        norm = tf.sqrt(sq + eps) + eps
    elif mode == "lpips":
        norm = tf.sqrt(sq) + eps
    else:
        raise ValueError(f"norm_eps must be one of {NORM_EPS_MODES}, got {mode!r}")
    return f / norm


def input_gradient_kernel(kernel):
    """The kernel whose 'same' convolution is the input gradient of a 3x3 'same' conv: flipped, in/out swapped."""
    return tf.transpose(tf.reverse(tf.convert_to_tensor(kernel), [0, 1]), [0, 1, 3, 2])


@tf.custom_gradient
def frozen_conv3x3(x, kernel, grad_kernel):
    """3x3 stride-1 'same' convolution with a frozen kernel (no gradient to it).

    The input gradient is a forward convolution with ``grad_kernel = input_gradient_kernel(kernel)``
    (the same sums, float32 round-off only): TensorFlow's CPU ``Conv2DBackpropInput`` takes
    1.5-7x as long (105 vs 15 ms for batch 16 at 2x2x512, VGG's last block on 32 px images),
    and LPIPS used as a loss is mostly this backward pass.
    """
    y = tf.nn.conv2d(x, kernel, 1, "SAME")

    def grad(dy):
        return tf.nn.conv2d(dy, grad_kernel, 1, "SAME"), None, None

    return y, grad


@keras.saving.register_keras_serializable(package="tf_distill")
class LPIPS(keras.Model):
    """LPIPS v0.1 VGG16 distance. ``call(x0, x1)`` -> ``[N]`` (or ``[N, H, W]`` if spatial)."""

    def __init__(self, weights=None, norm_eps: str = "stylekd", spatial: bool = False,
                 cache_dir: Optional[str] = None, name: str = "lpips_vgg16", **kwargs):
        super().__init__(name=name, **kwargs)
        if norm_eps not in NORM_EPS_MODES:
            raise ValueError(f"norm_eps must be one of {NORM_EPS_MODES}, got {norm_eps!r}")
        self.norm_eps = norm_eps
        self.spatial = bool(spatial)
        self.convs = [
            keras.layers.Conv2D(cout, 3, padding="same", activation="relu", name=name_, dtype="float32")
            for name_, _, _, cout in specs.VGG16_CONVS
        ]
        self.lins = [
            keras.layers.Conv2D(1, 1, use_bias=False, name=f"lin{k}", dtype="float32")
            for k in range(len(specs.LPIPS_TAPS))
        ]
        self._shift = tf.constant(SHIFT, tf.float32)
        self._scale = tf.constant(SCALE, tf.float32)
        self.build_weights()
        self.load_arrays(get_weights("lpips_vgg16", weights, cache_dir=cache_dir))
        self.trainable = False

    def build_weights(self):
        for conv, (_, _, cin, _) in zip(self.convs, specs.VGG16_CONVS):
            conv.build((None, None, None, cin))
        for lin, c in zip(self.lins, specs.LPIPS_CHANNELS):
            lin.build((None, None, None, c))
        self.built = True

    def load_arrays(self, arrays):
        for conv, (name, _, _, _) in zip(self.convs, specs.VGG16_CONVS):
            conv.kernel.assign(arrays[f"{name}/kernel"])
            conv.bias.assign(arrays[f"{name}/bias"])
        # Frozen weights: the input-gradient kernels are made once here, not on every backward pass.
        self._grad_kernels = [tf.constant(input_gradient_kernel(conv.kernel)) for conv in self.convs]
        for k, lin in enumerate(self.lins):
            lin.kernel.assign(arrays[f"lin{k}/kernel"].reshape(1, 1, -1, 1))

    def features(self, x):
        """The five unit-normalised taps of images ``x`` in [-1, 1] (NHWC)."""
        h = (tf.cast(x, tf.float32) - self._shift) / self._scale
        taps = []
        for conv, grad_kernel, (name, _, _, _) in zip(self.convs, self._grad_kernels, specs.VGG16_CONVS):
            h = tf.nn.relu(tf.nn.bias_add(frozen_conv3x3(h, tf.convert_to_tensor(conv.kernel), grad_kernel),
                                          conv.bias))
            if name in specs.LPIPS_TAPS:
                taps.append(normalize_tensor(h, self.norm_eps))
                if name in _POOL_AFTER:
                    h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        return taps

    def call(self, x0, x1):
        return call_nonempty(self._distance, x0, x1)

    def _distance(self, x0, x1):
        # Two passes, not one on the concatenated batch: when only one side needs a gradient (a
        # distillation loss against a fixed target), the backward pass then covers only that side.
        out = None
        for lin, f0, f1 in zip(self.lins, self.features(x0), self.features(x1)):
            d = lin(tf.square(f0 - f1))  # [N, h, w, 1]
            if self.spatial:
                d = tf.image.resize(d, tf.shape(x0)[1:3], method="bilinear", antialias=False)[..., 0]
            else:
                d = tf.reduce_mean(d, axis=[1, 2, 3])
            out = d if out is None else out + d
        return out

    def get_config(self):
        return {"name": self.name, "norm_eps": self.norm_eps, "spatial": self.spatial}

