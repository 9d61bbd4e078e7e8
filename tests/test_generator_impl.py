"""The generator and discriminator give the same outputs and gradients with the custom ops and the reference ops."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import load_npz, state_dict_of
from tf_distill.convert import rosinality
from tf_distill.losses.gan import path_lengths, r1_penalty
from tf_distill.ops import _loader


@pytest.fixture(autouse=True)
def _needs_library():
    if _loader.custom_ops_library() is None:
        pytest.fail(f"custom ops library not available ({_loader.unavailable_reason()}); build it with "
                    "custom_ops/build.sh (the README's test command does)")


def _with_impl(monkeypatch, impl, fn):
    monkeypatch.setenv("TF_DISTILL_OPS_IMPL", impl)
    return fn()


def test_generator_same_images_features_and_path_lengths(monkeypatch):
    data = load_npz("g_teacher32.npz")
    g = rosinality.generator_from_state_dict(state_dict_of(data))
    noise = [tf.constant(np.moveaxis(data[f"inputs/noise_{j}"], 1, -1)) for j in range(g.num_layers)]

    def run():
        out = g([data["inputs/z1"], data["inputs/z2"]], inject_index=5, offsets=data["case_d/offsets"],
                noise=noise, return_features=True)
        pl = path_lengths(g, data["case_pl/wplus"], np.moveaxis(data["case_pl/image_noise"], 1, -1),
                          noise=[n[:4] for n in noise])
        return out["image"].numpy(), [f.numpy() for f in out["features"]], pl.numpy()

    ref, custom = _with_impl(monkeypatch, "ref", run), _with_impl(monkeypatch, "custom", run)
    np.testing.assert_allclose(custom[0], ref[0], atol=1e-5)
    for a, b in zip(custom[1], ref[1]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(custom[2], ref[2], rtol=1e-5)


def test_discriminator_same_logits_and_r1_gradients(monkeypatch):
    data = load_npz("d32.npz")
    d = rosinality.discriminator_from_state_dict(state_dict_of(data))
    images = np.moveaxis(data["inputs/images"], 1, -1)

    def run():
        with tf.GradientTape() as tape:
            r1 = r1_penalty(d, images)  # second order through upfirdn2d and bias-act
        grads = tape.gradient(r1, d.trainable_variables)
        # A disconnected gradient (None) and an all-zero one are the same: R1 is piecewise constant in the biases.
        return d(images).numpy(), r1.numpy(), [np.zeros(v.shape) if g is None else g.numpy()
                                               for g, v in zip(grads, d.trainable_variables)]

    ref, custom = _with_impl(monkeypatch, "ref", run), _with_impl(monkeypatch, "custom", run)
    np.testing.assert_allclose(custom[0], ref[0], atol=1e-5)
    np.testing.assert_allclose(custom[1], ref[1], rtol=1e-4)
    for a, b in zip(custom[2], ref[2]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)
