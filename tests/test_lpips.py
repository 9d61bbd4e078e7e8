"""LPIPS: parity with the PyTorch ``lpips`` 0.1.4 package on real images, properties, gradients.

``lpips`` imports ``torchvision.models.vgg16``; PyPI torchvision does not import beside our
torch build, so a stand-in module builds torchvision's VGG16 ``features`` stack (cfg "D")
and loads it with the same VGG16 weights as ours (converted back to torch layout).
"""

import io
import sys
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import torch
from PIL import Image, ImageFilter

from torch_reference import lpips_to_torch_state_dicts, torchvision_vgg16_stub
from tf_distill.metrics.lpips import LPIPS, normalize_tensor
from tf_distill.weights import get_weights

SIZE = 96


def _install_torchvision_stub(monkeypatch, vgg_state_dict):
    for name, module in torchvision_vgg16_stub(vgg_state_dict).items():
        monkeypatch.setitem(sys.modules, name, module)
    for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)


@pytest.fixture(scope="module")
def arrays():
    return get_weights("lpips_vgg16")


@pytest.fixture
def torch_lpips(monkeypatch, arrays):
    vgg, _ = lpips_to_torch_state_dicts(arrays)
    _install_torchvision_stub(monkeypatch, vgg)
    import lpips

    def make(spatial=False, inner_eps=False):
        if inner_eps:  # StyleKD's vendored copy: sqrt(sum + eps) + eps
            monkeypatch.setattr(lpips, "normalize_tensor",
                                lambda f, eps=1e-10: f / (torch.sqrt(torch.sum(f ** 2, dim=1, keepdim=True) + eps) + eps))
        # Its own packaged v0.1 linear heads (lpips/weights/v0.1/vgg.pth).
        return lpips.LPIPS(net="vgg", version="0.1", spatial=spatial, verbose=False).eval()

    return make


def _real_pairs():
    """Scikit-image photographs, centre-cropped to SIZE, against distorted copies."""
    from skimage import data

    imgs = []
    for fn in (data.astronaut, data.coffee, data.chelsea, data.rocket):
        im = Image.fromarray(fn())
        s = min(im.size)
        im = im.crop(((im.size[0] - s) // 2, (im.size[1] - s) // 2, (im.size[0] + s) // 2, (im.size[1] + s) // 2))
        imgs.append(im.resize((SIZE, SIZE), Image.BICUBIC))
    rng = np.random.default_rng(0)
    x0, x1 = [], []
    for im in imgs:
        a = np.asarray(im, np.float32)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=15)
        distorted = [
            np.clip(a + rng.normal(0, 20, a.shape), 0, 255),
            np.asarray(im.filter(ImageFilter.GaussianBlur(2)), np.float32),
            np.asarray(Image.open(buf), np.float32),
            np.roll(a, (3, -2), axis=(0, 1)),
            np.clip((a - 128) * 1.3 + 140, 0, 255),
        ]
        for d in distorted:
            x0.append(a)
            x1.append(d)
    to = lambda v: (np.stack(v) / 127.5 - 1).astype(np.float32)  # noqa: E731
    return to(x0), to(x1)


def _torch_run(model, x0, x1):
    with torch.no_grad():
        t = lambda v: torch.from_numpy(v.transpose(0, 3, 1, 2).copy())  # noqa: E731
        return model(t(x0), t(x1)).numpy()


def test_parity_with_pytorch_lpips_on_real_images(torch_lpips, arrays):
    x0, x1 = _real_pairs()
    ref = _torch_run(torch_lpips(), x0, x1).reshape(-1)
    ours = LPIPS(arrays, norm_eps="lpips")(x0, x1).numpy()
    assert ours.shape == (len(x0),)
    assert 0.005 < ref.min() and ref.max() < 1.0  # real, non-trivial distances
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_parity_stylekd_eps_and_spatial(torch_lpips, arrays):
    x0, x1 = _real_pairs()
    x0, x1 = x0[::4], x1[::4]
    ref = _torch_run(torch_lpips(inner_eps=True), x0, x1).reshape(-1)
    np.testing.assert_allclose(LPIPS(arrays)(x0, x1).numpy(), ref, rtol=0, atol=1e-5)
    ref_map = _torch_run(torch_lpips(spatial=True), x0, x1)[:, 0]
    ours_map = LPIPS(arrays, norm_eps="lpips", spatial=True)(x0, x1).numpy()
    assert ours_map.shape == (len(x0), SIZE, SIZE)
    np.testing.assert_allclose(ours_map, ref_map, rtol=0, atol=1e-5)


def test_identity_symmetry_frozen_and_gradients(arrays):
    model = LPIPS(arrays)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32))
    y = tf.constant(np.clip(x.numpy() + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32))
    np.testing.assert_array_equal(model(x, x).numpy(), [0.0, 0.0])
    np.testing.assert_allclose(model(x, y).numpy(), model(y, x).numpy(), rtol=1e-6)
    assert model.trainable_weights == [] and len(model.weights) == 13 * 2 + 5

    @tf.function
    def loss_and_grad(a, b):
        with tf.GradientTape() as tape:
            tape.watch(a)
            loss = tf.reduce_sum(model(a, b))
        return loss, tape.gradient(loss, a)

    loss, g = loss_and_grad(y, x)
    assert loss.numpy() > 0
    assert np.all(np.isfinite(g.numpy())) and np.abs(g.numpy()).max() > 0
    # A small step along -grad lowers the loss: the gradient is the loss's.
    loss2, _ = loss_and_grad(y - 1e-2 * g / tf.norm(g), x)
    assert loss2.numpy() < loss.numpy()


def test_eps_placement_matters_only_at_zero_features():
    f = tf.constant(np.concatenate([np.zeros((1, 1, 1, 4)), np.full((1, 1, 1, 4), 0.5)], axis=1), tf.float32)
    for mode in ("stylekd", "lpips"):
        np.testing.assert_allclose(normalize_tensor(f, mode).numpy()[0, 1, 0], [0.5] * 4, rtol=1e-6)
    grads = {}
    for mode in ("stylekd", "lpips"):
        with tf.GradientTape() as tape:
            tape.watch(f)
            out = tf.reduce_sum(normalize_tensor(f, mode))
        grads[mode] = tape.gradient(out, f).numpy()
    # At an all-zero tap: 1 / (sqrt(1e-10) + 1e-10) as torch computes for StyleKD's copy...
    np.testing.assert_allclose(grads["stylekd"][0, 0], 99999.0, rtol=1e-4)
    # ...while the pip placement blows up (torch: NaN from sqrt'(0); TF: 1 / 1e-10).
    g = grads["lpips"][0, 0]
    assert np.all(np.isnan(g) | (np.abs(g) >= 1e9))
    with pytest.raises(ValueError):
        normalize_tensor(f, "other")


def test_input_gradient_matches_pytorch_autograd(torch_lpips, arrays):
    """The frozen convs' hand-written input gradient (a forward conv with the flipped kernel) is autograd's."""
    x0, x1 = _real_pairs()
    x0, x1 = x0[1::4], x1[1::4]
    model = torch_lpips(inner_eps=True)
    t0 = torch.from_numpy(x0.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    model(t0, torch.from_numpy(x1.transpose(0, 3, 1, 2).copy())).sum().backward()
    ref = t0.grad.numpy().transpose(0, 2, 3, 1)
    a = tf.constant(x0)
    with tf.GradientTape() as tape:
        tape.watch(a)
        loss = tf.reduce_sum(LPIPS(arrays)(a, x1))
    ours = tape.gradient(loss, a).numpy()
    scale = np.abs(ref).max()
    assert scale > 1e-4
    # ReLU kinks and max-pool ties may route a few elements differently between frameworks.
    assert np.mean(np.abs(ours - ref) > 1e-4 * scale) < 1e-3
    assert np.abs(ours - ref).max() < 2e-2 * scale

    # Against TensorFlow's own Conv2DBackpropInput on the same graph: float32 round-off only.
    model = LPIPS(arrays)
    with tf.GradientTape() as tape:
        tape.watch(a)
        loss = tf.reduce_sum(model(a, x1))
    with tf.GradientTape() as tape2:
        tape2.watch(a)
        with mock.patch("tf_distill.metrics.lpips.frozen_conv3x3", lambda x, k, _: tf.nn.conv2d(x, k, 1, "SAME")):
            loss2 = tf.reduce_sum(model(a, x1))
    np.testing.assert_allclose(tape.gradient(loss, a).numpy(), tape2.gradient(loss2, a).numpy(), rtol=0,
                               atol=1e-5 * scale)
