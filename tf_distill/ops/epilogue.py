"""StyleGAN2's epilogue after a conv: ``act(y + bias + noise * noise_strength)``.

The compiled conv3x3 and upfirdn2d ops can apply it as they store their outputs
(``custom_ops/cc/kernels/epilogue.h``), which saves up to three passes over a large activation;
``epilogue_ref`` is what they are checked against and what every other path runs.
"""

import numpy as np
import tensorflow as tf

_NONE = np.zeros([0], np.float32)  # an absent bias or noise


def epilogue_ref(y, bias=None, noise=None, noise_strength=None, activation="linear", alpha=0.2):
    """What StyleGAN2 does after a conv, in TensorFlow's ops: ``act(y + bias + noise * noise_strength)``, each
    part optional (``noise`` [B or 1, H, W, 1]; ``activation`` "linear" or "lrelu" with slope ``alpha``)."""
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


def epilogue_op_inputs(bias=None, noise=None, noise_strength=None, activation="linear", alpha=0.2):
    """(bias, noise, noise_strength inputs, activation and alpha attributes) of a compiled op with an epilogue:
    empty tensors stand for an absent bias or noise."""
    return ([_NONE if bias is None else bias, _NONE if noise is None else noise,
             tf.reshape(0.0 if noise_strength is None else noise_strength, [])],
            dict(activation=activation, alpha=float(alpha)))


def epilogue_grad(op, dy, forward_ref, n_main, constant=()):
    """Gradients of a compiled op whose first ``n_main`` inputs feed ``forward_ref(*main, **epilogue)`` and whose
    next three are the epilogue's (``epilogue_op_inputs``): those of the reference, through a recomputed forward
    (the compiled kernels are forward only). Inputs at the indices ``constant`` (e.g. a FIR kernel) are passed
    as their static values and get no gradient."""
    inputs = list(op.inputs)
    bias, noise, strength = inputs[n_main:n_main + 3]
    has_bias, has_noise = bias.shape.num_elements() != 0, noise.shape.num_elements() != 0  # empty: absent
    main = [tf.get_static_value(t) if i in constant else t for i, t in enumerate(inputs[:n_main])]
    watched = [t for i, t in enumerate(inputs) if i not in constant]
    with tf.GradientTape() as tape:
        tape.watch(watched)
        y = forward_ref(*main, bias=bias if has_bias else None, noise=noise if has_noise else None,
                        noise_strength=strength, activation=op.get_attr("activation").decode(),
                        alpha=op.get_attr("alpha"))
    grads = iter(tape.gradient(y, watched, output_gradients=dy))
    return [None if i in constant else next(grads) for i in range(len(inputs))]
