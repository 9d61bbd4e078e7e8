"""StyleKD distillation terms: latent offsets, the LD relation loss, the per-skip RGB loss and their
weighted sum with the RGB L1 and LPIPS terms (spec C.3, C.4). The latent directions the offsets follow
are computed from the teacher in tf_distill.models.latent_directions.

The relation loss compares, for teacher and student, the cosine-similarity matrix between the
features of normal samples (rows) and of the same samples moved along a latent direction
(columns). The reference computes it per GPU with B = 4, so a global batch is split into groups
of ``group_size`` samples whose losses are averaged (spec E.9).
"""

import tensorflow as tf

COSINE_EPS = 1e-8
KD_MODES = ("output_only", "intermediate")  # the reference's --kd_mode Output_Only | Intermediate


def sample_offsets(batch, style_dim, directions=None, alpha_std=5.0, seed=None):
    """Latent offsets [B, 1, style_dim]: ``v / |v| * alpha`` with ``alpha ~ N(0, alpha_std^2)``.

    ``v`` is a direction drawn uniformly (with replacement) from ``directions`` when given (the
    paper's ``main`` mode), otherwise isotropic Gaussian (the ``random`` ablation). ``seed`` is a
    stateless seed pair, or None for the global generator.
    """
    def normal(shape, s):
        return tf.random.normal(shape) if s is None else tf.random.stateless_normal(shape, seed=s)

    seeds = [None, None, None] if seed is None else tf.unstack(
        tf.random.experimental.stateless_split(tf.convert_to_tensor(seed, tf.int64), 3))
    if directions is not None:
        directions = tf.convert_to_tensor(directions, tf.float32)
        n = tf.shape(directions)[0]
        idx = (tf.random.uniform([batch], 0, n, tf.int32) if seed is None
               else tf.random.stateless_uniform([batch], seeds[0], 0, n, tf.int32))
        v = tf.gather(directions, idx)
    else:
        v = normal([batch, style_dim], seeds[1])
    alpha = normal([batch, 1], seeds[2]) * alpha_std
    return (tf.math.l2_normalize(v, axis=-1, epsilon=1e-24) * alpha)[:, None, :]


def _unit_rows(f):
    f = tf.reshape(f, [tf.shape(f)[0], -1])
    return f / tf.maximum(tf.norm(f, axis=1, keepdims=True), COSINE_EPS)


def similarity_matrices(features, batch, group_size=4, single_view=False):
    """Cosine similarities per group, [G, g, g]: rows normal samples, columns offset (or normal) samples."""
    f = _unit_rows(features)
    normal, other = f[:batch], (f[:batch] if single_view else f[batch:2 * batch])
    groups = batch // group_size
    normal = tf.reshape(normal, [groups, group_size, -1])
    other = tf.reshape(other, [groups, group_size, -1])
    return tf.matmul(normal, other, transpose_b=True)


def relation_loss(student_features, teacher_features, batch, mode="kl", single_view=False, group_size=4):
    """LD relation loss of one layer, averaged over groups of ``group_size`` samples.

    Features are [2B, ...] (normal rows then offset rows; any layout, flattened per sample).
    ``kl``: ``sum_ij p_ij (log p_ij - log q_ij) / g`` with ``p = softmax_j(S_teacher)``,
    ``q = softmax_j(S_student)`` (PyTorch ``kl_div(..., 'batchmean')``); ``mse``: mean squared difference.
    """
    if batch % group_size:
        raise ValueError(f"batch {batch} is not divisible by the relation group size {group_size}.")
    s = similarity_matrices(student_features, batch, group_size, single_view)
    t = tf.stop_gradient(similarity_matrices(teacher_features, batch, group_size, single_view))
    if mode == "kl":
        log_p, log_q = tf.nn.log_softmax(t, axis=-1), tf.nn.log_softmax(s, axis=-1)
        per_group = tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=[1, 2]) / group_size
    elif mode == "mse":
        per_group = tf.reduce_mean(tf.square(s - t), axis=[1, 2])
    else:
        raise ValueError(f"relation loss mode must be 'kl' or 'mse', got {mode!r}.")
    return tf.reduce_mean(per_group)


def skip_l1(student_rgbs, teacher_rgbs):
    """The reference's ``Intermediate`` RGB loss: ``sum_k mean|T_k - S_k|`` over the RGB skip images
    (4^2 ... size^2, the generator's ``rgb_list``; the last one is the final image), unmasked."""
    if len(student_rgbs) != len(teacher_rgbs):
        raise ValueError(f"student and teacher have {len(student_rgbs)} and {len(teacher_rgbs)} RGB skips; "
                         "they must have the same resolution.")
    return tf.add_n([tf.reduce_mean(tf.abs(t - s)) for s, t in zip(student_rgbs, teacher_rgbs)])


def kd_loss(student_image, teacher_image, student, teacher, *, weight_l1=0.0, weight_lpips=0.0, weight_relation=0.0,
            mask=None, lpips=None, lpips_size=256, mode="output_only", mimic_layers=(), relation_mode="kl",
            single_view=False, group_size=4):
    """The weighted StyleKD sum ``weight_l1 * L1 + weight_lpips * LPIPS + weight_relation * LD`` and its terms.

    ``student_image`` and ``teacher_image`` are the final images of the B normal samples (the first
    rows of the outputs' ``"image"``; the step passes the slice its GAN term also uses, so gradients
    sum as before). ``student`` and ``teacher`` are the generator outputs (``return_features=True``,
    plus ``return_rgb_list=True`` in ``intermediate`` mode): the B normal samples, then B offset
    samples when ``weight_relation > 0``. L1 and LPIPS compare the two images, both multiplied by
    ``mask`` ([B, H, W, 1], carrying no gradient) when given; in ``intermediate`` mode L1 is
    :func:`skip_l1` instead (unmasked, as the reference). LPIPS sees the images downsized to
    ``lpips_size`` when larger; ``lpips`` maps (x, y) to [N] distances. The LD term sums
    :func:`relation_loss` over ``mimic_layers`` (1-based synthesis blocks). Terms whose weight is 0
    are not computed. Returns ``(total, {"kd_l1": ..., "kd_lpips": ..., "kd_relation": ...})``.
    """
    batch, fake, t_image = int(student_image.shape[0]), student_image, teacher_image
    if mask is not None:
        fake, t_image = fake * mask, t_image * mask
    total, terms = tf.constant(0.0, student_image.dtype), {}
    if weight_l1 > 0:
        if mode == "intermediate":
            terms["kd_l1"] = skip_l1(student["rgb_list"], teacher["rgb_list"])
        else:
            terms["kd_l1"] = tf.reduce_mean(tf.abs(t_image - fake))
        total += weight_l1 * terms["kd_l1"]
    if weight_lpips > 0:
        x, y = fake, t_image
        if x.shape[1] > lpips_size:
            x = tf.image.resize(x, [lpips_size] * 2, "bilinear")
            y = tf.image.resize(y, [lpips_size] * 2, "bilinear")
        terms["kd_lpips"] = tf.reduce_mean(lpips(x, y))
        total += weight_lpips * terms["kd_lpips"]
    if weight_relation > 0:
        terms["kd_relation"] = tf.add_n([
            relation_loss(student["features"][m - 1], teacher["features"][m - 1], batch, relation_mode, single_view,
                          group_size) for m in mimic_layers])
        total += weight_relation * terms["kd_relation"]
    return total, terms
