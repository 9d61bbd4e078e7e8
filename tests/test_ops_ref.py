"""Reference ops against the PyTorch golden outputs, a NumPy model of spec B.1, and finite differences."""

import math

import numpy as np
import pytest
import tensorflow as tf

from conftest import load_npz, nchw, nhwc
from tf_distill.ops import fused_bias_act, setup_kernel, upfirdn2d

OPS = load_npz("ops_reference.npz")
CASES = sorted({k.split("/")[0] for k in OPS.files if not k.startswith("fused_lrelu")})


def numpy_upfirdn2d(x, k, up, down, p0, p1):
    """Spec B.1 literally, NHWC, one channel at a time."""
    n, h, w, c = x.shape
    u = np.zeros((n, h * up, w * up, c), x.dtype)
    u[:, ::up, ::up, :] = x
    u = np.pad(u, [(0, 0), (max(p0, 0), max(p1, 0)), (max(p0, 0), max(p1, 0)), (0, 0)])
    u = u[:, max(-p0, 0):u.shape[1] - max(-p1, 0), max(-p0, 0):u.shape[2] - max(-p1, 0), :]
    kh, kw = k.shape
    oh, ow = u.shape[1] - kh + 1, u.shape[2] - kw + 1
    kf = k[::-1, ::-1]
    out = np.zeros((n, oh, ow, c), np.float64)
    for i in range(kh):
        for j in range(kw):
            out += kf[i, j] * u[:, i:i + oh, j:j + ow, :]
    return out[:, ::down, ::down, :]


@pytest.mark.parametrize("case", CASES)
def test_upfirdn2d_matches_reference_values_and_grads(case):
    x = tf.constant(nhwc(OPS[f"{case}/x"]))
    kernel = OPS[f"{case}/kernel"]
    up, down, pad = int(OPS[f"{case}/up"]), int(OPS[f"{case}/down"]), tuple(int(p) for p in OPS[f"{case}/pad"])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = upfirdn2d(x, kernel, up=up, down=down, pad=pad, impl="ref")
        loss = tf.reduce_sum(y * nhwc(OPS[f"{case}/cotangent"]))
    grad = tape.gradient(loss, x)
    np.testing.assert_allclose(nchw(y), OPS[f"{case}/y"], atol=1e-5)
    np.testing.assert_allclose(nchw(grad), OPS[f"{case}/grad_x"], atol=1e-5)


@pytest.mark.parametrize("shape,kshape,up,down,pad", [
    ((1, 5, 7, 2), (4, 4), 2, 1, (2, 1)),
    ((3, 9, 8, 3), (3, 5), 1, 2, (-1, 3)),
    ((2, 6, 6, 1), (2, 3), 3, 2, (0, -1)),
    ((1, 8, 8, 4), (1, 1), 1, 3, (0, 0)),
])
def test_upfirdn2d_matches_numpy_model(shape, kshape, up, down, pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    k = rng.standard_normal(kshape).astype(np.float32)
    y = upfirdn2d(x, k, up=up, down=down, pad=pad, impl="ref").numpy()
    np.testing.assert_allclose(y, numpy_upfirdn2d(x, k, up, down, *pad), atol=1e-5)


def test_upfirdn2d_ref_uses_only_4d_tensors_with_its_gradient():
    """TFLite's builtin Pad stops at 5-D: the reference (the exported graph) must stay within 4-D."""
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = upfirdn2d(x, setup_kernel([1, 3, 3, 1], gain=9.0), up=3, pad=(2, 1), impl="ref")
        return y, tape.gradient(y, x, output_gradients=tf.ones_like(y))

    graph = step.get_concrete_function(tf.TensorSpec([None, None, None, 3])).graph
    ranks = {(op.type, t.shape.rank) for op in graph.get_operations() for t in list(op.inputs) + list(op.outputs)}
    assert max(rank for _, rank in ranks if rank is not None) <= 4, sorted(r for r in ranks if r[1] and r[1] > 4)
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 3)).astype(np.float32)
    y, _ = step(tf.constant(x))  # gradients: the golden cases above (up 2) check them
    np.testing.assert_allclose(y, numpy_upfirdn2d(x, setup_kernel([1, 3, 3, 1], gain=9.0), 3, 1, 2, 1), atol=1e-5)


def test_upfirdn2d_bad_arguments_are_clear():
    x = tf.zeros([1, 4, 4, 1])
    with pytest.raises(ValueError, match="up >= 1"):
        upfirdn2d(x, np.ones((2, 2)), up=0)
    with pytest.raises(ValueError, match="rank 4"):
        upfirdn2d(tf.zeros([4, 4]), np.ones((2, 2)))
    with pytest.raises(ValueError, match="output height would be"):
        upfirdn2d(x, np.ones((3, 3)), pad=(-2, -2))
    with pytest.raises(ValueError, match="impl"):
        upfirdn2d(x, np.ones((2, 2)), impl="fast")


def test_setup_kernel_matches_reference_make_kernel():
    k = setup_kernel([1, 3, 3, 1])
    np.testing.assert_allclose(k * 64, np.outer([1, 3, 3, 1], [1, 3, 3, 1]))
    assert math.isclose(setup_kernel([1, 3, 3, 1], gain=4).sum(), 4.0, rel_tol=1e-6)


def test_fused_bias_act_matches_reference_values_and_grads():
    x = tf.constant(nhwc(OPS["fused_lrelu/x"]))
    b = tf.constant(OPS["fused_lrelu/bias"])
    with tf.GradientTape() as tape:
        tape.watch([x, b])
        y = fused_bias_act(x, b, alpha=float(OPS["fused_lrelu/alpha"]), gain=float(OPS["fused_lrelu/gain"]),
                           impl="ref")
        loss = tf.reduce_sum(y * nhwc(OPS["fused_lrelu/cotangent"]))
    gx, gb = tape.gradient(loss, [x, b])
    np.testing.assert_allclose(nchw(y), OPS["fused_lrelu/y"], atol=1e-5)
    np.testing.assert_allclose(nchw(gx), OPS["fused_lrelu/grad_x"], atol=1e-5)
    np.testing.assert_allclose(gb, OPS["fused_lrelu/grad_bias"], atol=1e-4)


@pytest.mark.parametrize("act,alpha,gain,expect", [
    ("linear", None, None, lambda v: v),
    ("relu", None, None, lambda v: np.maximum(v, 0) * math.sqrt(2)),
    ("lrelu", 0.1, 3.0, lambda v: np.where(v > 0, v, 0.1 * v) * 3.0),
])
def test_fused_bias_act_activations(act, alpha, gain, expect):
    rng = np.random.default_rng(1)
    x, b = rng.standard_normal((3, 7)).astype(np.float32), rng.standard_normal(7).astype(np.float32)
    y = fused_bias_act(x, b, act=act, alpha=alpha, gain=gain, impl="ref").numpy()
    np.testing.assert_allclose(y, expect(x + b), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="bias must have shape"):
        fused_bias_act(x, b[:3], act=act)


def _hessian_check(fn, x0):
    """Jacobian of the autodiff gradient (second order) against finite differences of it, in float64."""
    def grad_fn(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return tape.gradient(y, x)

    theoretical, numerical = tf.test.compute_gradient(grad_fn, [x0], delta=1e-4)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)
    assert np.abs(theoretical[0]).max() > 1e-3  # the check is not vacuous


def test_upfirdn2d_second_order_gradients():
    rng = np.random.default_rng(2)
    x0 = tf.constant(rng.standard_normal((1, 4, 5, 2)))
    k = rng.standard_normal((3, 4))
    c = tf.constant(rng.standard_normal((1, 8, 9, 2)))  # output (4*2 + 2 - 3 + 1, 5*2 + 2 - 4 + 1)
    fn = lambda x: tf.reduce_sum(c * tf.square(upfirdn2d(x, k, up=2, pad=(1, 1), impl="ref")))
    _hessian_check(fn, x0)


def test_fused_bias_act_second_order_gradients():
    """d/d(x, b) of |d/dx sum(v * act(x + b)^2)|^2: needs the gradient of the activation's gradient."""
    rng = np.random.default_rng(3)
    v = tf.constant(rng.standard_normal((4, 6)))
    b = tf.constant(rng.standard_normal(6) * 0.1)
    x0 = tf.constant(rng.standard_normal((4, 6)))

    def r1_like(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(v * tf.square(fused_bias_act(x, b, impl="ref")))
        return tf.reduce_sum(tf.square(tape.gradient(y, x)))

    _hessian_check(r1_like, x0)
