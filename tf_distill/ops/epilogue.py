"""StyleGAN2's epilogue after a conv: ``act(y * scale + bias + noise * noise_strength)``.

The compiled conv3x3 and upfirdn2d ops can apply it as they store their outputs
(``custom_ops/cc/kernels/epilogue.h``), which saves up to four passes over a large activation;
after a conv of TensorFlow's (oneDNN's, the student's layers up to 64 px), ``epilogue`` runs it in one
compiled pass (``TfDistill>Epilogue``) instead of a multiply, BiasAdd, add and LeakyRelu.
``epilogue_ref`` is what they are checked against and what every other path runs.
"""

import functools

import numpy as np
import tensorflow as tf

from tf_distill.ops import _loader, choice

_NONE = np.zeros([0], np.float32)  # an absent optional input (optional_input)


def epilogue(y, scale=None, bias=None, noise=None, noise_strength=None, activation="linear", alpha=0.2, impl=None):
    """``epilogue_ref(y, …)``, in one compiled pass where it runs (float32 NHWC, CPUs with AVX2 in processes
    that see no GPU), else the reference, whichever ``impl`` is asked for."""
    parts = dict(scale=scale, bias=bias, noise=noise, noise_strength=noise_strength, activation=activation, alpha=alpha)
    y = tf.convert_to_tensor(y)
    if (choice.resolve(impl, "epilogue", _self_check) == "custom" and y.dtype == tf.float32 and y.shape.rank == 4
            and _loader.vector_cpu_only()):
        return _epilogue_op(y, **parts)
    return epilogue_ref(y, **parts)


def epilogue_ref(y, scale=None, bias=None, noise=None, noise_strength=None, activation="linear", alpha=0.2):
    """What StyleGAN2 does after a conv, in TensorFlow's ops: ``act(y * scale + bias + noise * noise_strength)``,
    each part optional (``scale`` [B, C]: a modulated conv's demodulation per sample; ``noise`` [B or 1, H, W, 1];
    ``activation`` "linear" or "lrelu" with slope ``alpha``)."""
    if scale is not None:
        y = scale_channels(y, scale)
    if bias is not None:
        y = tf.nn.bias_add(y, bias)
    if noise is not None:
        with tf.name_scope("noise"):
            y = y + noise * noise_strength
    if activation == "lrelu":
        with tf.name_scope("activate"):
            y = tf.nn.leaky_relu(y, alpha)
    elif activation != "linear":
        raise ValueError(f"activation must be 'linear' or 'lrelu', got {activation!r}.")
    return y


def scale_channels(y, scale):
    """NHWC ``y`` times ``scale`` [B, C], per sample and channel (the epilogue's scale)."""
    return y * tf.convert_to_tensor(scale, y.dtype)[:, None, None, :]


def epilogue_op_inputs(bias=None, noise=None, noise_strength=None, activation="linear", alpha=0.2):
    """(bias, noise, noise_strength inputs, activation and alpha attributes) of a compiled op with an epilogue:
    empty tensors stand for an absent bias or noise."""
    return ([optional_input(bias), optional_input(noise),
             tf.reshape(0.0 if noise_strength is None else noise_strength, [])],
            dict(activation=activation, alpha=float(alpha)))


def optional_input(value=None):
    """An optional input of a compiled op (an epilogue's scale, bias or noise, ToRGB's skip, a conv's
    projection): ``value``, or for None the empty tensor that stands for an absent one."""
    return _NONE if value is None else value


def epilogue_grad(op, dy, forward_ref, n_main, constant=()):
    """Gradients of a compiled op whose first ``n_main`` inputs feed ``forward_ref(*main, **epilogue)`` and whose
    next three are the epilogue's (``epilogue_op_inputs``), followed by its scale where it takes one
    (``optional_input``): those of the reference, through a recomputed forward (the compiled kernels are forward
    only). Inputs at the indices ``constant`` (e.g. a FIR kernel) are passed as their static values and get no
    gradient."""
    inputs = list(op.inputs)
    bias, noise, strength = inputs[n_main:n_main + 3]
    scale = inputs[n_main + 3] if len(inputs) > n_main + 3 else None
    def given(t):  # an empty input stands for an absent part
        return None if t.shape.num_elements() == 0 else t

    main = [tf.get_static_value(t) if i in constant else t for i, t in enumerate(inputs[:n_main])]
    watched = [t for i, t in enumerate(inputs) if i not in constant]
    with tf.GradientTape() as tape:
        tape.watch(watched)
        extra = {} if scale is None else {"scale": given(scale)}
        y = forward_ref(*main, bias=given(bias), noise=given(noise), noise_strength=strength,
                        activation=op.get_attr("activation").decode(), alpha=op.get_attr("alpha"), **extra)
    grads = iter(tape.gradient(y, watched, output_gradients=dy))
    return [None if i in constant else next(grads) for i in range(len(inputs))]


def _epilogue_op(y, scale=None, **parts):
    inputs, attrs = epilogue_op_inputs(**parts)
    return _loader.require_library().tf_distill_epilogue(y, *inputs, optional_input(scale), **attrs)


@_loader.register_gradient("TfDistill>Epilogue")
def _epilogue_grad(op, dy):
    """Those of ``epilogue_ref``, through a recomputed forward."""
    return epilogue_grad(op, dy, epilogue_ref, 1)


# (y shape, scale, bias, noise batch or None, activation): 8-lane vectors with and without a tail (13, the
# pruned 154), every part alone and all together, noise shared or per sample.
_SELF_CHECK_CASES = (((2, 3, 4, 16), True, True, 1, "lrelu"), ((1, 2, 5, 13), True, False, None, "linear"),
                     ((2, 4, 3, 154), False, True, 2, "lrelu"), ((1, 3, 3, 8), False, False, None, "lrelu"))


def self_check_parts(rng, n, c, size, scale, bias, noise_n):
    """Random epilogue inputs for a self-check case of ``n`` samples of ``c`` channels and output ``size`` [h, w]:
    a scale, a bias, and noise with its strength, each only where asked for (``self_check_kwargs`` turns them
    back into keyword arguments)."""
    arrays = [rng.uniform(0.5, 2.0, (n, c)).astype(np.float32)] if scale else []
    arrays += [rng.standard_normal(c).astype(np.float32)] if bias else []
    if noise_n:
        arrays += [rng.standard_normal([noise_n] + list(size) + [1]).astype(np.float32), np.float32([0.7])]
    return arrays


def self_check_kwargs(values, scale, bias, noise_n, activation):
    """The epilogue keyword arguments of ``self_check_parts``' ``values`` for the same case."""
    values = list(values)
    parts = dict(scale=values.pop(0) if scale else None, bias=values.pop(0) if bias else None, activation=activation,
                 alpha=0.2)
    if noise_n:
        parts.update(noise=values[0], noise_strength=values[1])
    return parts


def _self_check():
    """(max relative error, worst case) of the compiled epilogue against the reference (see ``choice``)."""
    rng = np.random.default_rng(2)

    def cases():
        for shape, scale, bias, noise_n, activation in _SELF_CHECK_CASES:
            n, h, w, c = shape
            arrays = [rng.standard_normal(shape).astype(np.float32)] + self_check_parts(rng, n, c, (h, w), scale,
                                                                                         bias, noise_n)

            def run(fn, y, *extra, case=(scale, bias, noise_n, activation)):
                return fn(y, **self_check_kwargs(extra, *case))

            yield (f"y {list(shape)}, scale {scale}, bias {bias}, noise {noise_n}, {activation}",
                   functools.partial(run, _epilogue_op), functools.partial(run, epilogue_ref), arrays)

    return choice.worst_case(cases())
