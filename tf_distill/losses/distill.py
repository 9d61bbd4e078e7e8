"""StyleKD distillation terms: latent directions, latent offsets, the LD relation loss and the
per-skip RGB loss (spec C.3, C.4).

The relation loss compares, for teacher and student, the cosine-similarity matrix between the
features of normal samples (rows) and of the same samples moved along a latent direction
(columns). The reference computes it per GPU with B = 4, so a global batch is split into groups
of ``group_size`` samples whose losses are averaged (spec E.9).
"""

import numpy as np
import tensorflow as tf

COSINE_EPS = 1e-8
DIRECTIONS_PER_BLOCK = 5
KD_MODES = ("output_only", "intermediate")  # the reference's --kd_mode Output_Only | Intermediate


def modulation_matrix(generator, block):
    """``A_j``: the modulation weights of block ``block``'s two convs, [style_dim, in1 + in2], unit columns."""
    convs = generator.synthesis.convs
    if not 0 <= block < len(convs) // 2:
        raise ValueError(f"block must be in [0, {len(convs) // 2 - 1}], got {block}.")
    a = np.concatenate([np.asarray(convs[2 * block + i].conv.modulation.weight.numpy(), np.float64)
                        for i in (0, 1)], axis=1)  # each [style_dim, in_channels]
    return a / np.linalg.norm(a, axis=0, keepdims=True)


def _top_eigenvectors(a, k):
    """The ``k`` eigenvectors of ``a a^T`` with the largest eigenvalues, as rows [k, dim]."""
    values, vectors = np.linalg.eigh(a @ a.T)
    return vectors[:, np.argsort(values)[::-1][:k]].T


def latent_directions(teacher, num_blocks, mode="split", per_block=DIRECTIONS_PER_BLOCK):
    """Directions in W from the teacher's modulation weights, [per_block * num_blocks, style_dim] float32.

    ``split`` (the paper's): top ``per_block`` eigenvectors of each block's ``A_j A_j^T``, stacked.
    ``global``: top ``per_block * num_blocks`` eigenvectors of the concatenation of all ``A_j``.
    Signs are arbitrary (offsets draw symmetric magnitudes).
    """
    blocks = [modulation_matrix(teacher, j) for j in range(num_blocks)]
    if mode == "split":
        directions = np.concatenate([_top_eigenvectors(a, per_block) for a in blocks])
    elif mode == "global":
        directions = _top_eigenvectors(np.concatenate(blocks, axis=1), per_block * num_blocks)
    else:
        raise ValueError(f"direction mode must be 'split' or 'global', got {mode!r}.")
    return directions.astype(np.float32)


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
