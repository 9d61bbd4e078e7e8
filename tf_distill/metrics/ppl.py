"""Perceptual path length: the paper's CAGAN variant and standard Karras PPL (spec D.2).

``cagan`` (what the paper's table reports): W space, eps 1e-4, LPIPS *not* divided by eps^2,
independent random noise for the two images of a pair (so it mostly measures the noise
resampling), images above 256 px resized to 256, 1st/99th percentile filter, mean.
``karras``: z (slerp) or w (lerp) space, ``full`` (t ~ U[0, 1)) or ``end`` (t = 0) sampling,
the same noise for both images of a pair, divided by eps^2, optional face crop, same filter.

Both default to the reference's 5,000 pairs at batch 50 (CAGAN ``get_ppl.py``); NVlabs' Karras PPL
uses 50,000 pairs, so pass that count to compare with its numbers.
"""

import numpy as np
import tensorflow as tf

MODES = ("cagan", "karras")
NUM_PAIRS, BATCH_SIZE = 5000, 50  # CAGAN get_ppl.py's (spec D.2)


def _slerp(a, b, t):
    a = a / tf.norm(a, axis=-1, keepdims=True)
    b = b / tf.norm(b, axis=-1, keepdims=True)
    d = tf.reduce_sum(a * b, axis=-1, keepdims=True)
    p = t * tf.math.acos(tf.clip_by_value(d, -1.0, 1.0))
    c = b - d * a
    c = c / tf.norm(c, axis=-1, keepdims=True)
    d = a * tf.cos(p) + c * tf.sin(p)
    return d / tf.norm(d, axis=-1, keepdims=True)


def filtered_mean(distances):
    """Mean of the distances between the 1st ('lower') and 99th ('higher') percentiles, inclusive."""
    d = np.asarray(distances, np.float64)
    lo = np.percentile(d, 1, method="lower")
    hi = np.percentile(d, 99, method="higher")
    return float(np.mean(d[(d >= lo) & (d <= hi)]))


def _face_crop(images):
    size = images.shape[1]
    c = size // 8
    return images[:, c * 3:c * 7, c * 2:c * 6, :]


def pair_distances(generator, lpips, batch_size, mode="cagan", space="w", sampling="full", epsilon=1e-4,
                   crop=False, seed=None):
    """LPIPS distances of ``batch_size`` interpolation pairs, [batch_size]."""
    if mode not in MODES:
        raise ValueError(f"PPL mode must be one of {MODES}, got {mode!r}.")
    rng = tf.random.Generator.from_seed(seed) if seed is not None else tf.random.get_global_generator()
    b, dim = batch_size, generator.style_dim
    z = rng.normal([2 * b, dim])
    t = rng.uniform([b, 1]) if sampling == "full" else tf.zeros([b, 1])
    if mode == "cagan" or space == "w":
        w = generator.mapping(z)
        w0, w1 = w[0::2], w[1::2]
        wa, wb = w0 + (w1 - w0) * t, w0 + (w1 - w0) * (t + epsilon)
    else:
        za, zb = _slerp(z[0::2], z[1::2], t), _slerp(z[0::2], z[1::2], t + epsilon)
        wa, wb = generator.mapping(za), generator.mapping(zb)
    latents = tf.reshape(tf.stack([wa, wb], axis=1), [2 * b, dim])  # interleaved pairs
    if mode == "cagan":
        images = generator(latents, input_is_latent=True)  # fresh noise for every image
    else:
        shapes = generator.synthesis.noise_shapes()
        noise = [tf.repeat(rng.normal([b, r, r, 1]), 2, axis=0) for r in shapes]  # shared within a pair
        images = generator(latents, input_is_latent=True, noise=noise)
    if crop:
        images = _face_crop(images)
    if images.shape[1] > 256:
        images = tf.image.resize(images, [256, 256], "bilinear")
    d = lpips(images[0::2], images[1::2])
    return d if mode == "cagan" else d / (epsilon ** 2)


def perceptual_path_length(generator, lpips, num_samples=NUM_PAIRS, batch_size=BATCH_SIZE, mode="cagan", space="w",
                           sampling="full", epsilon=1e-4, crop=False, seed=0, progress=None):
    """PPL over ``num_samples`` pairs (the CAGAN quirk of always generating full batches is kept)."""
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be positive, got {num_samples}, {batch_size}.")
    fn = tf.function(lambda: pair_distances(generator, lpips, batch_size, mode, space, sampling, epsilon, crop))
    tf.random.set_global_generator(tf.random.Generator.from_seed(seed))
    distances = []
    for _ in range(-(-num_samples // batch_size)):
        distances.append(fn().numpy())
        if progress is not None:
            progress(batch_size)
    return filtered_mean(np.concatenate(distances)[:num_samples])
