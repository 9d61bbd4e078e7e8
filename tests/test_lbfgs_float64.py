"""L-BFGS follows hjmshi's FullBatchLBFGS arithmetic in float64 (issue 17 item 7); PPL defaults (item 5)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tf_distill.projection import FullBatchLBFGS

REPO = Path(__file__).resolve().parents[1]


def _rosenbrock(x):
    a, b = x[0::2], x[1::2]
    return tf.reduce_sum(100.0 * tf.square(b - a ** 2) + tf.square(1.0 - a))


def _mirrored_run(dtype, line_search, steps):
    """Runs L-BFGS on a 20-D Rosenbrock while a NumPy mirror repeats every parameter update.

    The mirror does what the reference's ``_add_update`` does, ``x += step * d`` in the variables'
    dtype with ``step`` the Python float the line search computed; the closure checks that every
    trial point equals the mirror bit for bit. Returns the steps and the optimizer.
    """
    np_dtype = dtype.as_numpy_dtype
    x0 = np.tile(np.array([-1.2, 1.0]), 10)
    var = tf.Variable(x0, dtype=dtype)
    mirror = {"x": x0.astype(np_dtype)}
    opt = FullBatchLBFGS([var], line_search=line_search)
    steps_tried = []
    add_update = opt._add_update  # pylint: disable=protected-access

    def spy(step, direction):
        if step != 0:
            steps_tried.append(step)
            mirror["x"] = mirror["x"] + np_dtype(step) * direction.numpy()
        add_update(step, direction)

    opt._add_update = spy  # pylint: disable=protected-access

    def closure():
        np.testing.assert_array_equal(var.numpy(), mirror["x"])
        with tf.GradientTape() as tape:
            loss = _rosenbrock(var)
        return loss, tape.gradient(loss, [var])

    loss, grad = opt.closure_eval(closure)
    for _ in range(steps):
        d_prev, t_prev, skips = opt._d, opt._t, opt.curv_skips + opt.fail_skips  # pylint: disable=protected-access
        result = opt.step(closure, loss, grad)
        # The curvature pair and Bs also use the exact step: s = d t, Bs = -t g (reference's mul).
        if d_prev is not None and opt.curv_skips + opt.fail_skips == skips:  # a pair was added
            np.testing.assert_array_equal(opt.old_dirs[-1].numpy(), d_prev.numpy() * np_dtype(t_prev))
        bs = opt._bs.numpy()  # pylint: disable=protected-access
        np.testing.assert_array_equal(bs, grad.numpy() * np_dtype(-result.t))
        loss, grad = result.loss, result.grad
    return steps_tried, opt


@pytest.mark.parametrize("line_search", ["Wolfe", "Armijo"])
def test_float64_trial_steps_are_exact(line_search):
    steps, opt = _mirrored_run(tf.float64, line_search, steps=12)
    # The search interpolated steps that float32 cannot hold (0.1 would become 0.10000000149...), so
    # a float32 detour on the way to float64 fails the closure's exact comparison.
    assert any(float(np.float32(s)) != s for s in steps), steps
    assert len(opt.old_dirs) > 1


def test_float32_steps_round_as_before():
    """The float32 projector's arithmetic is unchanged: each step is rounded to float32 once."""
    steps, _ = _mirrored_run(tf.float32, "Wolfe", steps=8)
    assert any(float(np.float32(s)) != s for s in steps)


def test_float64_h_diag_scales_exactly():
    var = tf.Variable(np.zeros(3), dtype=tf.float64)
    opt = FullBatchLBFGS([var])
    opt.h_diag = 0.1
    vec = tf.constant([1.0, 3.0, -7.0], tf.float64)
    np.testing.assert_array_equal(opt.two_loop_recursion(vec).numpy(), vec.numpy() * 0.1)


def _reference_curvature_update(g_new, g_old, d, t, eps):
    """NumPy re-implementation of hjmshi's FullBatchLBFGS.curvature_update with damping=True.

    From PyTorch-LBFGS ``functions/LBFGS.py``::

        y = flat_grad.sub(prev_flat_grad); s = d.mul(t); sBs = s.dot(Bs); ys = y.dot(s)
        if ys > eps * sBs or damping == True:
            if damping == True and ys < eps * sBs:
                theta = ((1 - eps) * sBs) / (sBs - ys)
                y = theta * y + (1 - theta) * Bs
            ... old_dirs.append(s); old_stps.append(y)
            H_diag = ys / y.dot(y)   # ys is the undamped one

    with ``Bs = g_old * -t`` stored by the previous step. Returns (s, y, H_diag).
    """
    bs = g_old * -t
    y, s = g_new - g_old, d * t
    sbs, ys = s @ bs, y @ s
    assert ys < eps * sbs  # the damping branch
    theta = ((1 - eps) * sbs) / (sbs - ys)
    y = theta * y + (1 - theta) * bs
    return s, y, ys / (y @ y)


def test_powell_damping_keeps_the_undamped_ys_for_h_diag():
    g_old, g_new = np.array([1.0, 0.0, 0.5]), np.array([0.995, 0.3, 0.49])
    d, t, eps = -g_old, 1.0, 1e-2
    var = tf.Variable(np.zeros(3), dtype=tf.float64)
    opt = FullBatchLBFGS([var])
    # The state a successful step leaves (see FullBatchLBFGS.step): direction, step, Bs, old gradient.
    opt.fail, opt._d, opt._t = False, tf.constant(d), t  # pylint: disable=protected-access
    opt._prev_flat_grad, opt._bs = tf.constant(g_old), tf.constant(g_old * -t)  # pylint: disable=protected-access
    opt.curvature_update(tf.constant(g_new), eps, damping=True)
    s, y, h_diag = _reference_curvature_update(g_new, g_old, d, t, eps)
    np.testing.assert_allclose(opt.old_dirs[-1].numpy(), s, rtol=1e-15)
    np.testing.assert_allclose(opt.old_stps[-1].numpy(), y, rtol=1e-14)
    assert opt.h_diag == pytest.approx(h_diag, rel=1e-12)
    assert opt.h_diag != pytest.approx((y @ s) / (y @ y), rel=1e-3)  # the damped ys (eps s'Bs) differs


def test_eval_sample_size_defaults_per_metric():
    code = ("import json; from tf_distill.bin.eval import sample_sizes as s; "
            "print(json.dumps({m: s(m) for m in ('fid', 'ppl', 'lpips')} | {'given': s('ppl', 7, 3)}))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=300, check=True).stdout
    sizes = json.loads(out.strip().splitlines()[-1])
    assert sizes == {"fid": [50000, 64], "ppl": [5000, 50], "lpips": [50000, 64], "given": [7, 3]}
