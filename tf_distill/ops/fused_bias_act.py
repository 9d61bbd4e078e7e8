"""Bias add + activation + gain, the op StyleGAN2 applies after every conv and dense layer.

``y = act(x + b) * gain`` with the bias on the channel axis (last axis for NHWC and for
dense [N, C] tensors). Defaults follow the reference: leaky ReLU, alpha 0.2, gain sqrt(2).
At ``x + b == 0`` the negative slope is used, like the reference kernel and tf.nn.leaky_relu.
"""

import math

import tensorflow as tf

from tf_distill.ops._impl import resolve_impl

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


def fused_bias_act(x, bias=None, act="lrelu", alpha=None, gain=None, impl=None):
    """``act(x + bias) * gain``, channels last; ``impl`` is ``"auto"``, ``"ref"`` or ``"custom"``."""
    _resolve(act, alpha, gain)  # bad arguments raise the same ValueError whichever implementation runs
    x, bias = _check_bias(x, bias)
    if resolve_impl(impl) == "custom":
        from tf_distill.ops import _custom  # pylint: disable=import-outside-toplevel

        return _custom.fused_bias_act(x, bias, act=act, alpha=alpha, gain=gain)
    return fused_bias_act_ref(x, bias, act=act, alpha=alpha, gain=gain)
