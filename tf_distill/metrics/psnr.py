"""PSNR for image pairs: a correct one and the paper-compatible uint8 wrap-around (spec D.3).

Both take uint8 NHWC batches (or anything castable to integers 0..255) and return
``[N]`` float64 PSNRs in dB, ``20 log10(255 / sqrt(mse))``, with 100 for ``mse == 0``
(as the reference code).

* :func:`psnr`: ``mse = mean((a - b)^2)`` in exact integer/float64 arithmetic.
* :func:`psnr_wraparound`: what StyleKD's ``get_psnr.py`` reports: the difference and its
  square are computed in uint8 arithmetic, so each pixel contributes ``((a - b) mod 256)^2
  mod 256`` (a difference of 16 counts as 0). Use it only to compare with the paper's
  numbers; it inflates PSNR (floor ``10 log10(255) = 24.07`` dB).

:func:`to_uint8_reference` converts generator output in [-1, 1] the way the reference
does before PSNR: clamp, ``(x + 1) / 2 * 255 + 0.5``, floor. :func:`projection_psnr`
combines the two for projections.
"""

from __future__ import annotations

import tensorflow as tf

IDENTICAL_PSNR = 100.0


def to_uint8_reference(x) -> tf.Tensor:
    """[-1, 1] float images -> uint8 as the reference: clamp, (x+1)/2*255+0.5, floor."""
    x = tf.clip_by_value(tf.cast(x, tf.float32), -1.0, 1.0)
    return tf.cast(tf.floor((x + 1.0) / 2.0 * 255.0 + 0.5), tf.uint8)


def _as_int(x) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if x.dtype.is_floating:
        x = tf.round(x)
    return tf.cast(x, tf.int32)


def _psnr_from_mse(mse: tf.Tensor) -> tf.Tensor:
    safe = tf.where(mse > 0, mse, tf.ones_like(mse))
    value = 20.0 * tf.math.log(255.0 / tf.sqrt(safe)) / tf.math.log(tf.constant(10.0, tf.float64))
    return tf.where(mse > 0, value, tf.fill(tf.shape(mse), tf.constant(IDENTICAL_PSNR, tf.float64)))


def _per_image_mean(e: tf.Tensor) -> tf.Tensor:
    e = tf.cast(e, tf.float64)
    return tf.reduce_mean(tf.reshape(e, [tf.shape(e)[0], -1]), axis=1)


def _pair(a, b):
    """Both batches as int32; images of different shapes are a ValueError (they would broadcast)."""
    a, b = _as_int(a), _as_int(b)
    if not a.shape.is_compatible_with(b.shape):
        raise ValueError(f"PSNR needs images of the same shape, got {a.shape} and {b.shape}.")
    return a, b


def psnr(a, b) -> tf.Tensor:
    """Correct per-image PSNR of two uint8-valued NHWC batches -> ``[N]`` float64."""
    a, b = _pair(a, b)
    d = a - b
    return _psnr_from_mse(_per_image_mean(d * d))


def psnr_wraparound(a, b) -> tf.Tensor:
    """Paper-compatible PSNR: uint8 wrap-around in the difference and the square."""
    a, b = _pair(a, b)
    d = tf.math.floormod(a - b, 256)
    e = tf.math.floormod(d * d, 256)
    return _psnr_from_mse(_per_image_mean(e))


def projection_psnr(output, target_uint8, variant: str = "paper") -> tf.Tensor:
    """PSNR of generator ``output`` ([-1, 1]) vs a uint8 ``target``; variant paper|correct."""
    out_u8 = to_uint8_reference(output)
    if variant == "paper":
        return psnr_wraparound(target_uint8, out_u8)
    if variant == "correct":
        return psnr(target_uint8, out_u8)
    raise ValueError(f"variant must be 'paper' or 'correct', got {variant!r}")
