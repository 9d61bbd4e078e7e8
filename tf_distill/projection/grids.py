"""PNG grid layouts for projection and editing (uint8 [H, W, 3] arrays; ``save_png`` writes them).

Every cell is one generator-size image; cells are separated by 2 px of white (``make_grid``), and
side-by-side panels (teacher | student) by a 16 px white gap. Layouts:

* :func:`projection_grid`: one row per image, columns ``target | model 1 | model 2 ...``.
* :func:`mixing_grid`: ``(1 + len(A)) x (1 + len(B))`` cells; first row the B images (top-left
  blank), first column the A images, cell (i, j) = A_i with B_j's rows.
* :func:`strip_grid`: one row per strip (interpolation betas or direction alphas as columns).

``save_png`` (from :mod:`tf_distill.images`) writes a grid atomically.
"""

import numpy as np

from tf_distill.images import make_grid, save_png, to_uint8  # pylint: disable=unused-import  (re-exported)

PANEL_GAP = 16


def _u8(images):
    images = np.asarray(images)
    return images if images.dtype == np.uint8 else to_uint8(images)


def projection_grid(targets, reconstructions):
    """``targets`` uint8/[-1,1] [N, H, W, 3]; ``reconstructions`` list of [N, H, W, 3] (one per model)."""
    columns = [_u8(targets)] + [_u8(r) for r in reconstructions]
    cells = np.stack(columns, axis=1).reshape(-1, *columns[0].shape[1:])  # row-major: image, then column
    return make_grid(cells, ncol=len(columns))


def mixing_grid(a_images, b_images, mixed):
    """``mixed`` [len(A) * len(B), H, W, 3] row-major (see :func:`tf_distill.projection.edit.mixing_table`)."""
    a, b, m = _u8(a_images), _u8(b_images), _u8(mixed)
    if m.shape[0] != a.shape[0] * b.shape[0]:
        raise ValueError(f"mixed must hold len(A) * len(B) = {a.shape[0] * b.shape[0]} images, got {m.shape[0]}.")
    blank = np.full_like(a[:1], 255)
    rows = [np.concatenate([blank, b])]
    for i in range(a.shape[0]):
        rows.append(np.concatenate([a[i:i + 1], m[i * b.shape[0]:(i + 1) * b.shape[0]]]))
    return make_grid(np.concatenate(rows), ncol=b.shape[0] + 1)


def strip_grid(strips):
    """``strips`` list of [k, H, W, 3] (same k) -> one row per strip."""
    strips = [_u8(s) for s in strips]
    return make_grid(np.concatenate(strips), ncol=strips[0].shape[0])


def side_by_side(panels, gap=PANEL_GAP):
    """Concatenates uint8 panels horizontally with a white gap (heights padded with white)."""
    height = max(p.shape[0] for p in panels)
    parts = []
    for k, p in enumerate(panels):
        if p.shape[0] < height:
            p = np.concatenate([p, np.full((height - p.shape[0], *p.shape[1:]), 255, np.uint8)])
        if k:
            parts.append(np.full((height, gap, p.shape[2]), 255, np.uint8))
        parts.append(p)
    return np.concatenate(parts, axis=1)

