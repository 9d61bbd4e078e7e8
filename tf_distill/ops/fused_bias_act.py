"""Bias add + activation + gain, the op StyleGAN2 applies after every conv and dense layer.

``y = act(x + b) * gain`` with the bias on the channel axis (last axis for NHWC and for
dense [N, C] tensors). Defaults follow the reference: leaky ReLU, alpha 0.2, gain sqrt(2).
At ``x + b == 0`` the negative slope is used, like the reference kernel and tf.nn.leaky_relu.

This module holds the public op, its plain-TF reference (the oracle) and the wrapper of the
compiled kernel with its registered gradients; ``tf_distill.ops.choice`` picks between them.
The compiled kernel covers float32 and float16; other dtypes, and a negative leaky-ReLU slope
(the compiled gradient reads the sign of the output), run on the reference path.

Gradients of the compiled ops, registered on the op names (eager, tf.function, graphs, any order):

* ``TfDistill>FusedBiasAct``: ``dx, db = FusedBiasActGrad(dy, y)`` in one pass, ``db`` being the
  sum of ``dx`` over all but the last axis.
* ``TfDistill>FusedBiasActGrad`` is linear in ``dy`` with a piecewise-constant slope, so its
  gradient is itself w.r.t. ``dy`` and zero w.r.t. ``y``.
"""

import math

import numpy as np
import tensorflow as tf

from tf_distill.ops import _loader, choice

ACTIVATIONS = {"linear": 1.0, "relu": math.sqrt(2.0), "lrelu": math.sqrt(2.0)}


def _resolve(act, alpha, gain):
    if act not in ACTIVATIONS:
        raise ValueError(f"act={act!r} is not supported; use one of {sorted(ACTIVATIONS)}.")
    gain = ACTIVATIONS[act] if gain is None else float(gain)
    alpha = 0.2 if alpha is None else float(alpha)
    return gain, alpha


def _check_bias(x, bias):
    x = tf.convert_to_tensor(x)
    if bias is not None:
        bias = tf.convert_to_tensor(bias, dtype=x.dtype)
        if bias.shape.rank != 1 or (x.shape[-1] is not None and bias.shape[0] != x.shape[-1]):
            raise ValueError(f"bias must have shape [C] = [{x.shape[-1]}] (channels last), got {bias.shape}.")
    return x, bias


def fused_bias_act(x, bias=None, act="lrelu", alpha=None, gain=None, impl=None):
    """``act(x + bias) * gain``, channels last; ``impl``: ``"auto"``, ``"ref"``, ``"custom"`` or None (see ``choice``)."""
    _resolve(act, alpha, gain)  # bad arguments raise the same ValueError whichever implementation runs
    x, bias = _check_bias(x, bias)
    if choice.resolve(impl, "fused_bias_act", _self_check) == "custom":
        return fused_bias_act_custom(x, bias, act=act, alpha=alpha, gain=gain)
    return fused_bias_act_ref(x, bias, act=act, alpha=alpha, gain=gain)


# ----------------------------------------------------------------------------- reference


def _leaky_relu(x, alpha):
    """``x > 0 ? x : x * alpha``: tf.nn.leaky_relu's values and gradients, without a LeakyRelu op.

    Why: when oneDNN is on (TensorFlow's default on AVX-512 CPUs), Grappler's remapper fuses
    conv + bias add, then fuses that with a following LeakyRelu although LeakyReluGrad still reads
    the bias add; the pass then fails with "remapper failed: INVALID_ARGUMENT: Mutation::Apply
    error: fanout '.../LeakyReluGrad' exist for missing node '.../add'", logged as an error at
    every trace of a step that differentiates through a leaky ReLU layer (the discriminator in
    the GAN steps). A select has no such fusion.
    """
    return tf.where(x > 0, x, x * tf.cast(alpha, x.dtype))


def fused_bias_act_ref(x, bias=None, act="lrelu", alpha=None, gain=None):
    """Plain-TF reference; autodiff gives gradients of every order (the oracle)."""
    gain, alpha = _resolve(act, alpha, gain)
    x, bias = _check_bias(x, bias)
    if bias is not None:
        x = x + bias
    if act == "lrelu":
        x = _leaky_relu(x, alpha)
    elif act == "relu":
        x = tf.nn.relu(x)
    if gain != 1.0:
        x = x * tf.cast(gain, x.dtype)
    return x


# ------------------------------------------------------------------------- custom kernel


def fused_bias_act_custom(x, bias=None, act="lrelu", alpha=None, gain=None):
    """``act(x + bias) * gain`` with the compiled kernel (same contract as ``fused_bias_act_ref``)."""
    gain, alpha = _resolve(act, alpha, gain)
    x = tf.convert_to_tensor(x)
    if x.dtype.name not in _loader.KERNEL_DTYPES or (act == "lrelu" and alpha < 0):
        return fused_bias_act_ref(x, bias, act=act, alpha=alpha, gain=gain)
    if bias is None:
        bias = tf.zeros([0], dtype=x.dtype)
    else:
        bias = tf.convert_to_tensor(bias, dtype=x.dtype)
    return _loader.require_library().tf_distill_fused_bias_act(
        x, bias, act=act, alpha=0.0 if act == "relu" else alpha, gain=gain)


def _act_attrs(op):
    act = op.get_attr("act")
    act = act.decode() if isinstance(act, bytes) else act
    return dict(act=act, alpha=op.get_attr("alpha"), gain=op.get_attr("gain"))


@_loader.register_gradient("TfDistill>FusedBiasAct")
def _fused_bias_act_grad(op, dy):
    bias = op.inputs[1]
    no_bias = bias.shape.rank == 1 and bias.shape[0] == 0
    # One pass computes dx and, with a bias, db = sum of dx over all but the last axis.
    dx, db = _loader.require_library().tf_distill_fused_bias_act_grad(
        dy, op.outputs[0], bias_grad=not no_bias, **_act_attrs(op))
    return [dx, tf.zeros_like(bias) if no_bias else db]


@_loader.register_gradient("TfDistill>FusedBiasActGrad")
def _fused_bias_act_grad_grad(op, ddx, ddb):
    # dx = slope * dy and db = sum(dx): both linear in dy, so the cotangent of dy is
    # slope * (ddx + ddb broadcast over the last axis). The slope is piecewise constant in y.
    dy, y = op.inputs
    if ddx is None and ddb is None:
        return [None, None]
    cot = tf.zeros_like(dy) if ddx is None else ddx
    if op.get_attr("bias_grad") and ddb is not None:
        cot = cot + ddb
    ddy, _ = _loader.require_library().tf_distill_fused_bias_act_grad(cot, y, bias_grad=False, **_act_attrs(op))
    return [ddy, None]


# (x shape, act, alpha, gain), all with a bias: the layers' leaky ReLU on NHWC (70 channels: the
# kernels' vector blocks and scalar tail), a dense layer's linear output with a gain, another slope.
_SELF_CHECK_CASES = (((2, 5, 5, 70), "lrelu", None, None), ((6, 9), "linear", None, 0.5),
                     ((3, 4, 4, 8), "lrelu", 0.1, 2.0))


def _self_check():
    """(max relative error, worst case) of the compiled kernel against the reference (see ``choice``)."""
    rng = np.random.default_rng(0)

    def cases():
        for shape, act, alpha, gain in _SELF_CHECK_CASES:
            kw = dict(act=act, alpha=alpha, gain=gain)
            yield (f"x {list(shape)} with a bias, act {act}, alpha {alpha}, gain {gain}",
                   lambda t, b, kw=kw: fused_bias_act_custom(t, b, **kw),
                   lambda t, b, kw=kw: fused_bias_act_ref(t, b, **kw),
                   [rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape[-1]).astype(np.float32)])

    return choice.worst_case(cases())
