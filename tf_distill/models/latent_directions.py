"""Closed-form latent directions of a generator: eigenvectors of its modulation weights (spec C.3).

Why here: they are a property of a trained generator, used by distillation (the LD loss moves
samples along them, tf_distill.losses.distill.sample_offsets) and by editing
(tf_distill.projection.edit.teacher_directions).
"""

import numpy as np

DIRECTIONS_PER_BLOCK = 5


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


def latent_directions(generator, num_blocks, mode="split", per_block=DIRECTIONS_PER_BLOCK):
    """Directions in W from the generator's modulation weights, [per_block * num_blocks, style_dim] float32.

    ``split`` (the paper's): top ``per_block`` eigenvectors of each block's ``A_j A_j^T``, stacked.
    ``global``: top ``per_block * num_blocks`` eigenvectors of the concatenation of all ``A_j``.
    Signs are arbitrary (offsets draw symmetric magnitudes).
    """
    blocks = [modulation_matrix(generator, j) for j in range(num_blocks)]
    if mode == "split":
        directions = np.concatenate([_top_eigenvectors(a, per_block) for a in blocks])
    elif mode == "global":
        directions = _top_eigenvectors(np.concatenate(blocks, axis=1), per_block * num_blocks)
    else:
        raise ValueError(f"direction mode must be 'split' or 'global', got {mode!r}.")
    return directions.astype(np.float32)
