"""The training losses as pure functions (tf_distill.losses) against independent references, and the
training step built from them: logistic GAN losses vs NumPy, R1 vs torch autograd (values and the
second-order gradient lazy R1 needs), the weighted KD sum vs NumPy, and a step that calls each one."""

import numpy as np
import pytest
import tensorflow as tf

from test_distill_losses import numpy_relation_loss
from test_kd_step_extras import build, replay_inputs, tiny_config
from tf_distill.losses import distill, gan
from tf_distill.train import step as step_module
from tf_distill.train.step import TrainStep


def np_softplus(x):
    return np.logaddexp(0.0, x)


# ---- logistic GAN losses ---------------------------------------------------------------------------

def test_logistic_losses_match_numpy_softplus_also_for_large_logits():
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.standard_normal((6, 1)) * 3, [[80.0], [-80.0]]])
    fake = np.concatenate([rng.standard_normal((6, 1)) * 3, [[-90.0], [90.0]]])
    g = gan.g_logistic_loss(tf.constant(fake)).numpy()
    d = gan.d_logistic_loss(tf.constant(real), tf.constant(fake)).numpy()
    np.testing.assert_allclose(g, np.mean(np_softplus(-fake)), rtol=1e-12)
    np.testing.assert_allclose(d, np.mean(np_softplus(-real)) + np.mean(np_softplus(fake)), rtol=1e-12)
    assert np.isfinite([g, d]).all() and g > 10  # softplus(90) = 90, no overflow


# ---- R1 ---------------------------------------------------------------------------------------------

class TinyD:
    """A differentiable toy D: logits = mean_pixels(tanh(x W1)) w2, [B, 1]; float64 weights."""

    def __init__(self, w1, w2):
        self.w1, self.w2 = tf.Variable(w1), tf.Variable(w2)

    def __call__(self, x, training=False):
        assert training  # R1 evaluates D as in training
        h = tf.tanh(tf.einsum("bhwc,ck->bhwk", x, self.w1))
        return tf.reduce_mean(h, axis=[1, 2]) @ self.w2


def test_r1_penalty_and_its_gradient_match_torch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x, w1, w2 = rng.standard_normal((3, 4, 4, 3)), rng.standard_normal((3, 5)), rng.standard_normal((5, 1))

    xt = torch.tensor(x, requires_grad=True)
    w1t, w2t = torch.tensor(w1, requires_grad=True), torch.tensor(w2, requires_grad=True)
    logits_t = torch.tanh(torch.einsum("bhwc,ck->bhwk", xt, w1t)).mean(dim=(1, 2)) @ w2t
    (grad,) = torch.autograd.grad(logits_t.sum(), xt, create_graph=True)  # the reference's d_r1_loss
    r1_t = grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()
    r1_t.backward()

    d = TinyD(w1, w2)
    with tf.GradientTape() as tape:
        penalty, logits = gan.r1_penalty(d, x, return_logits=True)
    grads = tape.gradient(penalty, [d.w1, d.w2])
    np.testing.assert_allclose(penalty.numpy(), r1_t.item(), rtol=1e-12)
    np.testing.assert_allclose(logits.numpy(), logits_t.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(grads[0].numpy(), w1t.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(grads[1].numpy(), w2t.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(gan.r1_penalty(d, x).numpy(), r1_t.item(), rtol=1e-12)


# ---- the weighted KD sum -----------------------------------------------------------------------------

def np_lpips(x, y):
    return np.mean((x - y) ** 2 * (1.5 + np.tanh(x)), axis=(1, 2, 3))


def tf_lpips(x, y):
    """Asymmetric in (x, y), so the test sees that the student's image comes first."""
    return tf.reduce_mean(tf.square(x - y) * (1.5 + tf.tanh(x)), axis=[1, 2, 3])


def outputs(rng, batch):
    """Generator outputs of ``batch`` normal then ``batch`` offset samples, 16 px, 2 feature layers (float32,
    as ``tf.image.resize`` returns; the references compute in float64 from the same values)."""
    out = {"image": rng.standard_normal((2 * batch, 16, 16, 3)),
           "features": [rng.standard_normal((2 * batch, 4, 4, 5)), rng.standard_normal((2 * batch, 8, 8, 3))],
           "rgb_list": [rng.standard_normal((2 * batch, r, r, 3)) for r in (4, 8, 16)]}
    return tf.nest.map_structure(lambda a: a.astype(np.float32).astype(np.float64), out)


def kd(student, teacher, batch, **kwargs):
    s, t = tf.nest.map_structure(lambda a: tf.constant(a, tf.float32), (student, teacher))
    total, terms = distill.kd_loss(s["image"][:batch], t["image"][:batch], s, t, **kwargs)
    return float(total), {k: float(v) for k, v in terms.items()}


def pool2(x):
    """The 2x2 average: bilinear 16 -> 8 with half-pixel centers."""
    return x.reshape(x.shape[0], x.shape[1] // 2, 2, x.shape[2] // 2, 2, -1).mean(axis=(2, 4))


@pytest.mark.parametrize("mode", ["output_only", "intermediate"])
def test_kd_loss_is_the_weighted_sum_of_masked_l1_lpips_and_relation(mode):
    rng = np.random.default_rng(2)
    batch = 4
    student, teacher = outputs(rng, batch), outputs(rng, batch)
    mask = (rng.random((batch, 16, 16, 1)) > 0.5).astype(np.float64)
    s, t = student["image"][:batch] * mask, teacher["image"][:batch] * mask
    if mode == "intermediate":  # over every RGB skip, unmasked
        l1 = sum(np.mean(np.abs(b - a)) for a, b in zip(student["rgb_list"], teacher["rgb_list"]))
    else:
        l1 = np.mean(np.abs(t - s))
    lp = np.mean(np_lpips(pool2(s), pool2(t)))
    rel = sum(numpy_relation_loss(student["features"][m - 1].reshape(2 * batch, -1),
                                  teacher["features"][m - 1].reshape(2 * batch, -1), batch, "kl", False, 2)
              for m in (1, 2))
    total, terms = kd(student, teacher, batch, weight_l1=3.0, weight_lpips=2.0, weight_relation=30.0,
                      mask=tf.constant(mask, tf.float32), lpips=tf_lpips, lpips_size=8, mode=mode, mimic_layers=(1, 2),
                      group_size=2)
    np.testing.assert_allclose([terms["kd_l1"], terms["kd_lpips"], terms["kd_relation"]], [l1, lp, rel], rtol=1e-5)
    np.testing.assert_allclose(total, 3.0 * l1 + 2.0 * lp + 30.0 * rel, rtol=1e-5)
    assert min(l1, lp, rel) > 1e-3


def test_kd_loss_without_mask_at_lpips_size_and_zero_weights():
    rng = np.random.default_rng(3)
    student, teacher = outputs(rng, 2), outputs(rng, 2)
    s, t = student["image"][:2], teacher["image"][:2]
    total, terms = kd(student, teacher, 2, weight_lpips=0.5, lpips=tf_lpips, lpips_size=16)
    assert set(terms) == {"kd_lpips"}  # zero weights are not computed
    np.testing.assert_allclose(total, 0.5 * np.mean(np_lpips(s, t)), rtol=1e-5)  # not resized at its size
    total, terms = kd(student, teacher, 2, weight_l1=1.0, weight_relation=0.0)  # no LPIPS model needed
    assert set(terms) == {"kd_l1"}
    np.testing.assert_allclose(total, np.mean(np.abs(t - s)), rtol=1e-5)
    assert kd(student, teacher, 2) == (0.0, {})


# ---- the step calls them -------------------------------------------------------------------------------

def test_the_step_takes_every_loss_from_the_losses_package(monkeypatch):
    """D, G and path-length steps call the pure losses (spied), and the logged R1 is ``r1_penalty``
    of the real batch before D's update."""
    calls = {}

    def spy(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return fn(*args, **kwargs)
        monkeypatch.setattr(step_module, name, wrapper)

    for name in ("d_logistic_loss", "g_logistic_loss", "r1_penalty", "kd_loss", "path_length_penalty"):
        spy(name, getattr(step_module, name))
    config = tiny_config(weight_relation=30.0)
    config.train.update(dict(gan=True, path_reg=2.0, d_reg_every=1, g_reg_every=1))
    teacher, g, g_ema, d = build(config)
    step = TrainStep(tf.distribute.get_strategy(), g, g_ema, d, config, teacher, lpips=tf_lpips)
    real = tf.random.stateless_uniform([4, 16, 16, 3], seed=[4, 5], minval=-1, maxval=1)
    want_r1 = float(gan.r1_penalty(d, real))
    z1, z2, index, noise = replay_inputs(step, do_pl=True)["d"]
    fake = g([z1, z2], inject_index=index, noise=noise)
    want_d = float(gan.d_logistic_loss(d(real, training=True), d(fake, training=True)))
    logs = step.train_step(real)
    assert calls == dict.fromkeys(calls, 1) and len(calls) == 5, calls
    np.testing.assert_allclose(float(logs["r1"]), want_r1, rtol=1e-5)
    np.testing.assert_allclose(float(logs["d_loss"]), want_d, rtol=1e-5)
    assert {"g_gan", "kd_l1", "kd_lpips", "kd_relation", "path_loss"} <= set(logs)
