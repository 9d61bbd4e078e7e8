"""StyleGAN2 generator of the rosinality/StyleKD reference, as Keras models (NHWC).

A generator is a mapping network (z -> w) and a synthesis network (W+ -> image) built from a
per-layer channel list ``channels`` of length ``2 * (log2(size) - 1)`` (spec A.4,
``generator_net_shape``): ``channels[0]`` is the constant input, ``channels[1]`` the output of
the 4x4 conv, then for every resolution 8..size the outputs of the up-conv and the conv.
Teachers use the standard table; students use smaller lists.
"""

import inspect
import math

import keras
import tensorflow as tf

from tf_distill.layers import ConstantInput, MappingNetwork, StyledConv, ToRGB
from tf_distill.layers.equalized import PACKAGE, impl_name
from tf_distill.layers.modulated import folding
from tf_distill.ops.conv3x3 import takes_per_sample_weights

_BASE_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


def log2_size(size):
    log_size = int(math.log2(size)) if size > 0 else 0
    if size < 8 or 2 ** log_size != size:
        raise ValueError(f"size must be a power of two >= 8, got {size}.")
    return log_size


def standard_channels(size, channel_multiplier=2):
    """The reference's channel table expanded to a per-layer list (spec A.4)."""
    log_size = log2_size(size)
    if size > 1024:
        raise ValueError(f"The standard channel table stops at 1024 px, got size {size}; pass `channels`.")

    def table(res):
        return _BASE_CHANNELS[res] * (channel_multiplier if res >= 64 else 1)

    channels = [table(4), table(4)]
    for i in range(3, log_size + 1):
        channels += [table(2 ** i), table(2 ** i)]
    return channels


@keras.saving.register_keras_serializable(package=PACKAGE)
class SynthesisNetwork(keras.layers.Layer):
    """W+ [N, n_latent, style_dim] and per-layer noise -> image, per-block RGB skips and features."""

    def __init__(self, size, style_dim, channels, kernel_size=3, blur_kernel=(1, 3, 3, 1), impl=None, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self.log_size = log2_size(self.size)
        self.style_dim = int(style_dim)
        self.channels = [int(c) for c in channels]
        self.kernel_size = int(kernel_size)
        self.blur_kernel = tuple(int(v) for v in blur_kernel)
        if len(self.channels) != 2 * (self.log_size - 1):
            raise ValueError(f"channels for size {size} must have {2 * (self.log_size - 1)} entries "
                             f"(2 per resolution 4..{size}), got {len(self.channels)}.")
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.impl = impl_name(impl)
        ch, bk, impl = self.channels, self.blur_kernel, self.impl
        self.input_layer = ConstantInput(ch[0], name="input")
        self.conv1 = StyledConv(ch[1], 3, blur_kernel=bk, impl=impl, name="conv1")
        self.to_rgb1 = ToRGB(blur_kernel=bk, impl=impl, name="to_rgb1")
        self.convs, self.to_rgbs = [], []
        for i in range(1, len(ch) // 2):
            self.convs.append(StyledConv(ch[2 * i], 3, upsample=True, blur_kernel=bk, impl=impl,
                                         name=f"convs_{2 * i - 2}"))
            self.convs.append(StyledConv(ch[2 * i + 1], self.kernel_size, blur_kernel=bk, impl=impl,
                                         name=f"convs_{2 * i - 1}"))
            self.to_rgbs.append(ToRGB(blur_kernel=bk, impl=impl, name=f"to_rgbs_{i - 1}"))

    def noise_shapes(self):
        """Spatial size of the noise map of every conv layer: 4, 8, 8, 16, 16, ..., size, size."""
        return [2 ** ((j + 5) // 2) for j in range(self.num_layers)]

    def build(self, input_shape=None):
        style = (None, self.style_dim)
        self.input_layer.build()
        self.noises = [self.add_weight(name=f"noise_{j}", shape=(1, r, r, 1), trainable=False,
                                       initializer=keras.initializers.RandomNormal(stddev=1.0))
                       for j, r in enumerate(self.noise_shapes())]
        ch = self.channels
        self.conv1.build((None, 4, 4, ch[0]), style)
        self.to_rgb1.build((None, 4, 4, ch[1]), style)
        for k, to_rgb in enumerate(self.to_rgbs):
            res = 2 ** (k + 3)
            self.convs[2 * k].build((None, res // 2, res // 2, ch[2 * k + 1]), style)
            self.convs[2 * k + 1].build((None, res, res, ch[2 * k + 2]), style)
            to_rgb.build((None, res, res, ch[2 * k + 3]), style)

    def resolve_noise(self, batch, noise=None, randomize_noise=True):
        """Per-layer noise maps: given explicitly, fresh N(0, 1) per sample, or the stored constant maps."""
        if noise is not None:
            noise = list(noise)
            if len(noise) != self.num_layers:
                raise ValueError(f"noise must be a list of {self.num_layers} maps [N, H, W, 1], got {len(noise)}.")
            return [self.noises[j] if n is None else tf.convert_to_tensor(n, self.compute_dtype)
                    for j, n in enumerate(noise)]
        if randomize_noise:
            return [tf.random.normal([batch, r, r, 1], dtype=self.compute_dtype) for r in self.noise_shapes()]
        return list(self.noises)

    def call(self, latent, noise=None, randomize_noise=True, rgb_rows=None, image_only=False):
        """Returns (image, rgb_list, features). ``rgb_rows`` keeps only the first rows of each skip image.

        ``image_only``: the lists may come back empty (the caller needs only the image). At inference
        (``layers.modulated.folding()``) the blocks from ``per_sample_from()`` on run one sample at a
        time, so that their convs fold the style into the weight (see layers/modulated.py), unless the
        compiled direct conv runs in this process: it takes one folded weight per sample, so the whole
        batch runs at once (the layers it does not run scale their activations instead).
        """
        batch = tf.shape(latent)[0]
        noise = self.resolve_noise(batch, noise, randomize_noise)
        rows = (lambda t: t) if rgb_rows is None else (lambda t: t[:rgb_rows])
        per_sample = folding() and latent.shape[0] != 1 and not takes_per_sample_weights(self.impl)
        first = self.per_sample_from() if per_sample else len(self.to_rgbs) + 1
        out, skip, rgb_list, features = self._blocks(latent, noise, 0, first, fuse_last_rgb=image_only)
        if first <= len(self.to_rgbs):
            skip, more_rgb, more_features = self._per_sample(latent, noise, first, out, skip, image_only)
            rgb_list, features = rgb_list + more_rgb, features + more_features
        return skip, [rows(t) for t in rgb_list], features

    def per_sample_from(self):
        """The first block (1 = 8 px) whose same-resolution conv folds its style into the weight."""
        for k in range(1, len(self.to_rgbs) + 1):
            if self.convs[2 * k - 1].conv.folds(4 * 2 ** k):
                return k
        return len(self.to_rgbs) + 1

    def _blocks(self, latent, noise, first, last, out=None, skip=None, fuse_last_rgb=False):
        """Blocks ``first`` to ``last - 1`` (0: the 4 px input, conv1 and to_rgb1; k: the 4 * 2^k px block),
        from the block input ``out`` and skip image ``skip``. Returns (out, skip, rgb_list, features).

        ``fuse_last_rgb`` (the caller wants only the image): where the network's last conv can hand its output
        straight to the last ToRGB (``ToRGB.after_conv``), it does, and the last block's out and features are
        left out (out None)."""
        rgb_list, features = [], []
        for k in range(first, last):
            if k == 0:
                # A static batch stays static (a constant), so that the layers see a batch of one and fold.
                batch = tf.constant(latent.shape[0]) if latent.shape[0] is not None else tf.shape(latent)[0]
                out = self.conv1(self.input_layer(batch), latent[:, 0], noise[0])
                skip = self.to_rgb1(out, latent[:, 1])
            else:
                i = 2 * k - 1
                out = self.convs[2 * k - 2](out, latent[:, i], noise[i])
                if fuse_last_rgb and k == len(self.to_rgbs):
                    image = self.to_rgbs[k - 1].after_conv(self.convs[2 * k - 1], out, latent[:, i + 1],
                                                           noise[i + 1], latent[:, i + 2], skip)
                    if image is not None:
                        return None, image, rgb_list + [image], features
                out = self.convs[2 * k - 1](out, latent[:, i + 1], noise[i + 1])
                width = self.channels[2 * k + 1]
                features.append(out if out.shape[-1] == width else out[..., :width])  # drop inference widening
                skip = self.to_rgbs[k - 1](out, latent[:, i + 2], skip)
            rgb_list.append(skip)
        return out, skip, rgb_list, features

    def _per_sample(self, latent, noise, first, out, skip, image_only):
        """Blocks ``first``.. one sample at a time (tf.map_fn); returns (image, rgb_list, features) stacked."""
        batch = tf.shape(latent)[0]
        noise = [tf.ensure_shape(tf.broadcast_to(n, tf.concat([[batch], tf.shape(n)[1:]], 0)), [None, r, r, 1])
                 for n, r in zip(noise, self.noise_shapes())]
        res = [4 * 2 ** k for k in range(first, len(self.to_rgbs) + 1)]
        dtype = self.compute_dtype
        spec = (tf.TensorSpec([self.size, self.size, 3], dtype),
                [] if image_only else [tf.TensorSpec([r, r, 3], dtype) for r in res],
                [] if image_only else [tf.TensorSpec([r, r, self.channels[2 * k + 1]], dtype)
                                       for k, r in zip(range(first, len(self.to_rgbs) + 1), res)])

        def one(args):
            lat, maps, x, sk = args
            _, image, rgb_list, features = self._blocks(lat[None], [n[None] for n in maps], first,
                                                        len(self.to_rgbs) + 1, x[None], sk[None])
            if image_only:
                return image[0], [], []
            return image[0], [t[0] for t in rgb_list], [t[0] for t in features]

        return tf.map_fn(one, (latent, noise, out, skip), fn_output_signature=spec, parallel_iterations=1)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "style_dim": self.style_dim, "channels": self.channels,
                "kernel_size": self.kernel_size, "blur_kernel": list(self.blur_kernel)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Generator(keras.Model):
    """StyleGAN2 generator: mapping network + synthesis network.

    Args:
      size: output resolution (power of two).
      style_dim: width of z and w.
      n_mlp: mapping layers (standard mapping).
      channel_multiplier: for the standard channel table when ``channels`` is None.
      lr_mlp: lr multiplier of the standard mapping (0.01 in the reference).
      channels: explicit per-layer channel list (students), see module docstring.
      kernel_size: kernel of the non-upsampling convs of each block.
      mapping_widths: heterogeneous mapping widths (last must equal style_dim); with it the
        mapping has no PixelNorm and lr_mul ``mapping_lr_mul`` (1, as the reference's ``mlp_cfg``).
      impl: ops implementation of every layer ("auto", "ref", "custom"); None (default): whatever
        is in effect when the model is called or traced (``tf_distill.ops.choice``). Not saved.
    """

    def __init__(self, size, style_dim=512, n_mlp=8, channel_multiplier=2, lr_mlp=0.01, channels=None,
                 kernel_size=3, mapping_widths=None, mapping_lr_mul=1.0, blur_kernel=(1, 3, 3, 1), impl=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self.style_dim = int(style_dim)
        self.n_mlp = int(n_mlp)
        self.channel_multiplier = int(channel_multiplier)
        self.lr_mlp = float(lr_mlp)
        self.channels = ([int(c) for c in channels] if channels is not None
                         else standard_channels(self.size, self.channel_multiplier))
        self.kernel_size = int(kernel_size)
        self.mapping_widths = None if mapping_widths is None else [int(w) for w in mapping_widths]
        self.mapping_lr_mul = float(mapping_lr_mul)
        self.blur_kernel = tuple(int(v) for v in blur_kernel)
        self.impl = impl_name(impl)
        if self.mapping_widths is None:
            self.mapping = MappingNetwork([self.style_dim] * self.n_mlp, lr_mul=self.lr_mlp, pixel_norm=True,
                                          impl=self.impl, name="style")
        else:
            if self.mapping_widths[-1] != self.style_dim:
                raise ValueError(f"The last mapping width must equal style_dim={self.style_dim}, "
                                 f"got mapping_widths={self.mapping_widths}.")
            self.mapping = MappingNetwork(self.mapping_widths, lr_mul=self.mapping_lr_mul, pixel_norm=False,
                                          impl=self.impl, name="style")
        self.synthesis = SynthesisNetwork(self.size, self.style_dim, self.channels, self.kernel_size,
                                          self.blur_kernel, impl=self.impl, name="synthesis")
        self.n_latent = self.synthesis.n_latent
        self.num_layers = self.synthesis.num_layers

    def build(self, input_shape=None):
        self.mapping.build((None, self.style_dim))
        self.synthesis.build()
        self.built = True

    def build_from_config(self, config):
        self.build()

    def get_build_config(self):
        return {"built_from": "config"}  # non-empty so that Keras calls build_from_config on load

    def mean_latent(self, n_samples=4096, seed=0):
        """Mean of w over ``n_samples`` random z (the reference's ``mean_latent``), shape [1, style_dim]."""
        z = tf.random.stateless_normal([n_samples, self.style_dim], seed=[seed, 0])
        return tf.reduce_mean(self.mapping(z), axis=0, keepdims=True)

    def _wplus(self, styles, inject_index):
        """Expands one or two styles to W+ [B, n_latent, style_dim] (rows < inject_index take the first)."""
        if len(styles) == 1:
            s = styles[0]
            return s if s.shape.rank == 3 else tf.tile(s[:, None, :], [1, self.n_latent, 1])
        if len(styles) != 2:
            raise ValueError(f"Generator takes one or two styles (style mixing), got {len(styles)}.")
        if inject_index is None:
            inject_index = tf.random.uniform([], 1, self.n_latent, dtype=tf.int32)  # [1, n_latent - 1]
        inject_index = tf.cast(inject_index, tf.int32)
        if inject_index.shape.rank == 1:  # one index per sample
            inject_index = inject_index[:, None, None]
        first = tf.range(self.n_latent)[None, :, None] < inject_index
        s0, s1 = (s if s.shape.rank == 3 else s[:, None, :] for s in styles)
        return tf.where(first, s0, s1)  # broadcasts to [B, n_latent, style_dim]

    def call(self, inputs, input_is_latent=False, inject_index=None, truncation=1.0, truncation_latent=None,
             noise=None, randomize_noise=True, offsets=None, return_rgb_list=False, return_features=False,
             return_latents=False, training=None):
        """Generates images.

        Args:
          inputs: z [B, style_dim], or a list of one or two z (two: style mixing). With
            ``input_is_latent``: w [B, style_dim] or W+ [B, n_latent, style_dim] (or a list of them).
          inject_index: mixing row (rows < index use the first style), a scalar or one per sample [B];
            None draws one from [1, n_latent-1]; ``n_latent`` means no mixing.
          truncation, truncation_latent: ``w_avg + psi (w - w_avg)``; w_avg defaults to ``mean_latent()``.
          noise: list of ``num_layers`` maps [N, H, W, 1] (None entries: stored map); None with
            ``randomize_noise`` draws fresh noise per sample, without it uses the stored maps.
          offsets: [B, 1, style_dim] latent offsets; the batch doubles (normal rows first, offset rows second).
          return_*: return a dict with ``image`` plus ``rgb_list`` (per-block skip images, first B rows),
            ``features`` (block outputs, all rows) and/or ``latents`` (W+ actually used, all rows).
        """
        styles = [tf.convert_to_tensor(s) for s in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
        if not input_is_latent:
            for s in styles:
                if s.shape.rank != 2 or (s.shape[-1] is not None and s.shape[-1] != self.style_dim):
                    raise ValueError(f"z must have shape [B, {self.style_dim}], got {s.shape}.")
            styles = [self.mapping(s) for s in styles]
        if not (isinstance(truncation, (int, float)) and truncation == 1):
            if truncation_latent is None:
                truncation_latent = self.mean_latent()
            t_lat = tf.convert_to_tensor(truncation_latent, styles[0].dtype)
            psi = tf.cast(truncation, styles[0].dtype)
            styles = [t_lat + psi * (s - t_lat) for s in styles]
        latent = self._wplus(styles, inject_index)
        batch = tf.shape(latent)[0]
        rgb_rows = None
        if offsets is not None:
            latent = tf.concat([latent, latent + tf.convert_to_tensor(offsets, latent.dtype)], axis=0)
            rgb_rows = batch
        image, rgb_list, features = self.synthesis(latent, noise=noise, randomize_noise=randomize_noise,
                                                   rgb_rows=rgb_rows,
                                                   image_only=not (return_rgb_list or return_features))
        if not (return_rgb_list or return_features or return_latents):
            return image
        result = {"image": image}
        if return_rgb_list:
            result["rgb_list"] = rgb_list
        if return_features:
            result["features"] = features
        if return_latents:
            result["latents"] = latent
        return result

    def get_config(self):
        return {**super().get_config(), "size": self.size, "style_dim": self.style_dim, "n_mlp": self.n_mlp,
                "channel_multiplier": self.channel_multiplier, "lr_mlp": self.lr_mlp, "channels": self.channels,
                "kernel_size": self.kernel_size, "mapping_widths": self.mapping_widths,
                "mapping_lr_mul": self.mapping_lr_mul, "blur_kernel": list(self.blur_kernel)}


def generator_defaults():
    """The architecture defaults of :class:`Generator` (its constructor's, the one place they are written:
    rosinality's StyleGAN2, style_dim 512, an 8-layer mapping at lr x0.01, 3x3 convolutions)."""
    params = inspect.signature(Generator.__init__).parameters
    return {name: p.default for name, p in params.items()
            if p.default is not p.empty and p.kind is p.POSITIONAL_OR_KEYWORD and name != "impl"}
