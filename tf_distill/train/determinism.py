"""Gradient sums in a fixed order, so that a training run is reproducible bit for bit on CPU.

When a tensor feeds several ops, ``tf.GradientTape`` adds their gradients with one ``AddN``.
TensorFlow's AddN kernel writes the sum into whichever input buffer is free when it runs and
moves that input to the front, so a sum of three or more gradients is associated in an order
that depends on thread timing: ``(a + b) + c`` one run, ``(c + b) + a`` the next. The float32
round-off that follows differs in the last bits, and a GAN amplifies it (two runs of the demo
distillation parted after 2-4 steps and ended 2 FID points apart). Two gradients add exactly
either way round; for three or more, ``deterministic_gradient_sums`` has the tape add them with
one ``reduce_sum`` over the stacked gradients, whose order is fixed.

TensorFlow offers no public hook for this: the tape's sum is its registered "vector space"
(``tensorflow.python.eager.backprop``), replaced here for the process. Where that private API
is missing, training still runs, with a warning that it may not be reproducible.
"""

import warnings

import tensorflow as tf

_STATE = {"enabled": False}


def _stacked_sum(default):
    def aggregate(gradients):
        if len(gradients) > 2 and all(isinstance(g, tf.Tensor) for g in gradients):
            return tf.reduce_sum(tf.stack(gradients), axis=0)
        return default(gradients)  # one or two dense gradients (exact in any order), or IndexedSlices
    return aggregate


def deterministic_gradient_sums():
    """Makes every ``tf.GradientTape`` of this process sum 3+ gradients of a tensor in a fixed order.

    Idempotent. Returns True when the tape's aggregation is replaced, False (with a warning)
    when this TensorFlow lacks the private hook.
    """
    if _STATE["enabled"]:
        return True
    try:
        from tensorflow.python import pywrap_tfe  # pylint: disable=import-outside-toplevel
        from tensorflow.python.eager import backprop  # pylint: disable=import-outside-toplevel

        vspace = backprop._default_vspace  # pylint: disable=protected-access
        pywrap_tfe.TFE_Py_RegisterVSpace(vspace._replace(aggregate_fn=_stacked_sum(vspace.aggregate_fn)))
    except (ImportError, AttributeError, TypeError) as e:
        warnings.warn(f"tf_distill: cannot fix the order of gradient sums in this TensorFlow ({e}); "
                      "training runs, but two runs may differ in the last bits.", RuntimeWarning, stacklevel=2)
        return False
    _STATE["enabled"] = True
    return True
