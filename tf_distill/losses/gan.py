"""StyleGAN2's losses and regularizers: the non-saturating logistic loss of G and D, the R1 penalty,
the path lengths and their penalty (spec A.4 step 9, C.4)."""

import tensorflow as tf


def g_logistic_loss(fake_logits):
    """G's non-saturating logistic loss ``mean softplus(-D(G(z)))``."""
    return tf.reduce_mean(tf.nn.softplus(-fake_logits))


def d_logistic_loss(real_logits, fake_logits):
    """D's logistic loss ``mean softplus(-D(x)) + mean softplus(D(G(z)))``."""
    return tf.reduce_mean(tf.nn.softplus(-real_logits)) + tf.reduce_mean(tf.nn.softplus(fake_logits))


def r1_penalty(discriminator, real_images, return_logits=False):
    """``mean_b sum (dD(x)/dx)^2`` over real images, differentiable (for lazy R1).

    With ``return_logits`` also returns ``D(x)`` of the same forward pass, as ``(penalty, logits)``,
    so a D step that regularizes needs no second pass over the real images.
    """
    real_images = tf.convert_to_tensor(real_images)
    with tf.GradientTape() as tape:
        tape.watch(real_images)
        logits = discriminator(real_images, training=True)
        total = tf.reduce_sum(logits)
    grad = tape.gradient(total, real_images)
    penalty = tf.reduce_mean(tf.reduce_sum(tf.square(grad), axis=[1, 2, 3]))
    return (penalty, logits) if return_logits else penalty


def path_lengths(generator, wplus, image_noise=None, noise=None, randomize_noise=True):
    """Per-sample ``sqrt(mean_layers(sum_dim(g^2)))`` with ``g = d sum(image * n) / d W+``.

    ``image_noise`` defaults to ``N(0, 1) / sqrt(H * W)`` as in the reference. Returns [B].
    """
    wplus = tf.convert_to_tensor(wplus)
    with tf.GradientTape() as tape:
        tape.watch(wplus)
        image, _, _ = generator.synthesis(wplus, noise=noise, randomize_noise=randomize_noise)
        if image_noise is None:
            size = tf.cast(tf.shape(image)[1] * tf.shape(image)[2], image.dtype)
            image_noise = tf.random.normal(tf.shape(image), dtype=image.dtype) / tf.sqrt(size)
        total = tf.reduce_sum(image * image_noise)
    grad = tape.gradient(total, wplus)
    return tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(grad), axis=2), axis=1))


def path_length_penalty(pl, pl_mean, decay, batch_mean=None):
    """The reference's path-length penalty ``mean((pl - m)^2)`` and the new running mean ``m``.

    ``m = pl_mean + decay * (mean(pl) - pl_mean)``, kept in the graph as rosinality's and NVlabs'
    StyleGAN2 do: the penalty's gradient includes the term through ``mean(pl)``, which changes
    the path-length gradients by ~1-9% early in training. ``batch_mean`` replaces ``mean(pl)``
    (e.g. its mean across replicas, whose all-reduce is differentiable). Store ``m`` as the next
    ``pl_mean``.
    """
    pl = tf.convert_to_tensor(pl)
    if batch_mean is None:
        batch_mean = tf.reduce_mean(pl)
    new_mean = pl_mean + decay * (batch_mean - pl_mean)
    return tf.reduce_mean(tf.square(pl - new_mean)), new_mean
