"""Wrappers around the compiled ops (``custom_ops/``) and their registered gradients.

Only called through :func:`tf_distill.ops.upfirdn2d` / :func:`tf_distill.ops.fused_bias_act`
once the loader found a library. The kernels cover float32 and float16; other dtypes, and a
negative leaky-ReLU slope (the compiled gradient reads the sign of the output), run on the
reference path. Bad shapes and arguments are rejected by the ops themselves with
``tf.errors.InvalidArgumentError`` (eager / at run time) or ``ValueError`` (while tracing a
graph whose shapes are static), never by a crash. XLA cannot compile custom ops: use
``impl="ref"`` inside ``jit_compile=True`` functions and for exported SavedModels.

Gradients are registered on the op names, so they hold in eager mode, ``tf.function`` and
graphs, to any order:

* ``TfDistill>UpFirDn2d``: the gradient is the same op on ``dy`` with the flipped kernel,
  ``up``/``down`` swapped and pads ``(k - p0 - 1, in*up - out*down + p0 - up + 1)`` per axis
  (spec B.1); its own gradient is therefore this rule again. No gradient for the kernel.
* ``TfDistill>FusedBiasAct``: ``dx, db = FusedBiasActGrad(dy, y)`` in one pass, ``db`` being the
  sum of ``dx`` over all but the last axis. ``FusedBiasActGrad`` is linear in ``dy`` with a
  piecewise-constant slope, so its gradient is itself w.r.t. ``dy`` and zero w.r.t. ``y``.
"""

import tensorflow as tf

from tf_distill.ops import _loader
from tf_distill.ops.fused_bias_act import _resolve, fused_bias_act_ref
from tf_distill.ops.upfirdn2d import upfirdn2d_ref

SUPPORTED_DTYPES = (tf.float32, tf.float16)


def _lib():
    library = _loader.custom_ops_library()
    if library is None:
        raise RuntimeError(f"the custom op library is not available: {_loader.unavailable_reason()}")
    return library


# ----------------------------------------------------------------------------- upfirdn2d


def _upfirdn2d_op(x, kernel, up, down, pad_y, pad_x):
    return _lib().tf_distill_up_fir_dn2d(
        x, kernel, up=up, down=down, pad_y0=pad_y[0], pad_y1=pad_y[1], pad_x0=pad_x[0], pad_x1=pad_x[1])


def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
    """upfirdn2d on NHWC with the compiled kernel (same contract as ``upfirdn2d_ref``)."""
    x = tf.convert_to_tensor(x)
    if x.dtype not in SUPPORTED_DTYPES:
        return upfirdn2d_ref(x, kernel, up=up, down=down, pad=pad)
    kernel = tf.convert_to_tensor(kernel, dtype=x.dtype)
    if len(pad) != 2:
        raise ValueError(f"pad must be (before, after), got {pad!r}.")
    p0, p1 = int(pad[0]), int(pad[1])
    return _upfirdn2d_op(x, kernel, int(up), int(down), (p0, p1), (p0, p1))


def _grad_pads(in_size, ksize, up, down, p0, p1):
    """Pads of the gradient along one axis, and whether the result must be cropped to in_size.

    With a static input size these are the exact pads of spec B.1. Without one, the largest
    possible trailing pad is used (the remainder of the forward floor division is unknown) and
    the result, at least ``in_size`` long, is cropped to the input size at run time.
    """
    if in_size is not None:
        out_size = (in_size * up + p0 + p1 - ksize) // down + 1
        return (ksize - p0 - 1, in_size * up - out_size * down + p0 - up + 1), False
    return (ksize - p0 - 1, ksize - p1 - up), True


def _upfirdn2d_grad(op, dy):
    x, kernel = op.inputs
    up, down = op.get_attr("up"), op.get_attr("down")
    kh, kw = kernel.shape
    if kh is None or kw is None:
        raise ValueError("the gradient of the custom upfirdn2d needs a kernel with a static shape.")
    pad_y, crop_y = _grad_pads(x.shape[1], kh, up, down, op.get_attr("pad_y0"), op.get_attr("pad_y1"))
    pad_x, crop_x = _grad_pads(x.shape[2], kw, up, down, op.get_attr("pad_x0"), op.get_attr("pad_x1"))
    dx = _upfirdn2d_op(dy, tf.reverse(kernel, axis=[0, 1]), down, up, pad_y, pad_x)
    if crop_y or crop_x:
        shape = tf.shape(x)
        dx = dx[:, :shape[1], :shape[2], :]
    return [dx, None]


# ------------------------------------------------------------------------ fused_bias_act


def _act_attrs(op):
    act = op.get_attr("act")
    act = act.decode() if isinstance(act, bytes) else act
    return dict(act=act, alpha=op.get_attr("alpha"), gain=op.get_attr("gain"))


def fused_bias_act(x, bias=None, act="lrelu", alpha=None, gain=None):
    """``act(x + bias) * gain`` with the compiled kernel (same contract as ``fused_bias_act_ref``)."""
    gain, alpha = _resolve(act, alpha, gain)
    x = tf.convert_to_tensor(x)
    if x.dtype not in SUPPORTED_DTYPES or (act == "lrelu" and alpha < 0):
        return fused_bias_act_ref(x, bias, act=act, alpha=alpha, gain=gain)
    if bias is None:
        bias = tf.zeros([0], dtype=x.dtype)
    else:
        bias = tf.convert_to_tensor(bias, dtype=x.dtype)
    return _lib().tf_distill_fused_bias_act(x, bias, act=act, alpha=0.0 if act == "relu" else alpha, gain=gain)


def _fused_bias_act_grad(op, dy):
    bias = op.inputs[1]
    no_bias = bias.shape.rank == 1 and bias.shape[0] == 0
    # One pass computes dx and, with a bias, db = sum of dx over all but the last axis.
    dx, db = _lib().tf_distill_fused_bias_act_grad(dy, op.outputs[0], bias_grad=not no_bias, **_act_attrs(op))
    return [dx, tf.zeros_like(bias) if no_bias else db]


def _fused_bias_act_grad_grad(op, ddx, ddb):
    # dx = slope * dy and db = sum(dx): both linear in dy, so the cotangent of dy is
    # slope * (ddx + ddb broadcast over the last axis). The slope is piecewise constant in y.
    dy, y = op.inputs
    if ddx is None and ddb is None:
        return [None, None]
    cot = tf.zeros_like(dy) if ddx is None else ddx
    if op.get_attr("bias_grad") and ddb is not None:
        cot = cot + ddb
    ddy, _ = _lib().tf_distill_fused_bias_act_grad(cot, y, bias_grad=False, **_act_attrs(op))
    return [ddy, None]


def _register_gradients():
    for name, fn in (("TfDistill>UpFirDn2d", _upfirdn2d_grad),
                     ("TfDistill>FusedBiasAct", _fused_bias_act_grad),
                     ("TfDistill>FusedBiasActGrad", _fused_bias_act_grad_grad)):
        try:
            tf.RegisterGradient(name)(fn)
        except KeyError:  # already registered (module reloaded)
            pass


_register_gradients()
