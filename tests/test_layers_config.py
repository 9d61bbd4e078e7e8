"""get_config/from_config round trips and .keras save/load for layers, generator and discriminator."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_distill.layers import (ConstantInput, EqualConv2D, EqualDense, MappingNetwork, ModulatedConv2D, StyledConv,
                               ToRGB)
from tf_distill.models import Discriminator, Generator, standard_channels
from tf_distill.models.discriminator import standard_discriminator_channels

SMALL = dict(size=16, style_dim=8, n_mlp=2, channels=[8, 6, 6, 5, 5, 4])


@pytest.mark.parametrize("layer", [
    EqualDense(5, lr_mul=0.01, bias_init=1.0, activation="lrelu"),
    EqualConv2D(4, 3, downsample=True, use_bias=False),
    ModulatedConv2D(4, 3, demodulate=False, upsample=True),
    StyledConv(4, 3, upsample=True),
    ToRGB(),
    ConstantInput(7),
    MappingNetwork([8, 8, 8], lr_mul=0.01, pixel_norm=False),
])
def test_layer_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


def _weights_equal(a, b):
    assert len(a.weights) == len(b.weights)
    for va, vb in zip(a.weights, b.weights):
        assert va.path == vb.path
        np.testing.assert_array_equal(va.numpy(), vb.numpy())


def test_generator_config_round_trip_and_keras_file(tmp_path):
    g = Generator(**SMALL, mapping_widths=[16, 8])
    g.build()
    clone = Generator.from_config(g.get_config())
    clone.build()
    assert clone.get_config() == g.get_config()
    assert [v.shape for v in clone.weights] == [v.shape for v in g.weights]
    path = tmp_path / "g.keras"
    g.save(path)
    loaded = keras.models.load_model(path)
    _weights_equal(g, loaded)
    z = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    np.testing.assert_array_equal(g(z, randomize_noise=False), loaded(z, randomize_noise=False))


def test_discriminator_config_round_trip_and_keras_file(tmp_path):
    d = Discriminator(16, channels=[8, 6, 4])
    d.build()
    assert Discriminator.from_config(d.get_config()).get_config() == d.get_config()
    path = tmp_path / "d.keras"
    d.save(path)
    loaded = keras.models.load_model(path)
    _weights_equal(d, loaded)
    x = np.random.default_rng(1).standard_normal((4, 16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(d(x), loaded(x))


def test_standard_channel_tables():
    assert standard_channels(256) == [512] * 10 + [256] * 2 + [128] * 2
    assert standard_channels(1024) == [512] * 10 + [256] * 2 + [128] * 2 + [64] * 2 + [32] * 2
    assert standard_discriminator_channels(256) == [128, 256, 512, 512, 512, 512, 512]


def test_bad_architectures_are_clear():
    with pytest.raises(ValueError, match="power of two"):
        Generator(48)
    with pytest.raises(ValueError, match="must have 6 entries"):
        Generator(16, channels=[8, 8, 8])
    with pytest.raises(ValueError, match="last mapping width"):
        Generator(**SMALL, mapping_widths=[16, 4])
    g = Generator(**SMALL)
    with pytest.raises(ValueError, match=r"z must have shape \[B, 8\]"):
        g(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="list of 5 maps"):
        g(np.zeros((2, 8), np.float32), noise=[None])


def test_modulated_conv_up_matches_explicit_per_sample_formulation():
    """Spec F.3: the up path equals zero-insert x2, true convolution with the per-sample weight, then blur."""
    from tf_distill.ops import setup_kernel, upfirdn2d  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(2)
    layer = ModulatedConv2D(5, 3, upsample=True)
    x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    style = rng.standard_normal((2, 6)).astype(np.float32)
    y = layer(x, style).numpy()
    s = layer.modulation(style).numpy()
    for b in range(2):
        w = layer.weight.numpy() * layer.scale * s[b][None, None, :, None]  # [k, k, in, out]
        w = w / np.sqrt((w ** 2).sum(axis=(0, 1, 2), keepdims=True) + 1e-8)
        up = upfirdn2d(x[b:b + 1], np.ones((1, 1), np.float32), up=2, pad=(2, 1)).numpy()  # zero-insert, full conv pad
        conv = tf.nn.conv2d(up, w[::-1, ::-1], 1, "VALID").numpy()  # true convolution -> 2H + 1
        expect = upfirdn2d(conv, setup_kernel([1, 3, 3, 1], gain=4), pad=(1, 1)).numpy()
        np.testing.assert_allclose(y[b:b + 1], expect, atol=1e-5)
