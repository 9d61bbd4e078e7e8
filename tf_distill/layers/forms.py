"""Which form the layers run, chosen when they are called (or traced): the training form, the reference's
ops as they are, or the inference form, the same function to float32 round-off in fewer passes.

The inference form is used when no gradient tape records (and ``inference_form`` has not switched it
off): a tape needs the training form's gradients. Its variants (weight folding, channel widening,
phase upsampling) are switched in ``layers/modulated.py`` with ``scoped``, the same way.
"""

import contextlib
import contextvars

try:  # TF has no public "is a tape recording?"; without it, the inference form is simply never used.
    from tensorflow.python.eager.record import could_possibly_record as _tape_recording
except ImportError:  # pragma: no cover
    def _tape_recording():
        return True

_INFERENCE = contextvars.ContextVar("tf_distill_inference_form", default=True)


@contextlib.contextmanager
def scoped(var, enabled):
    """Sets the context variable ``var`` to ``bool(enabled)`` inside the block."""
    token = var.set(bool(enabled))
    try:
        yield
    finally:
        var.reset(token)


def inference_form(enabled):
    """Layers called (or traced) inside use the inference form without a tape only if ``enabled``.

    Off gives the training graph's unfused form everywhere (benches and tests compare the two).
    """
    return scoped(_INFERENCE, enabled)


def inference():
    """True when the layers run their inference form: it is on and no gradient tape records."""
    return _INFERENCE.get() and not _tape_recording()
