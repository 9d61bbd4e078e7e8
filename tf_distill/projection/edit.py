"""Latent editing in W+ (spec D.4): style mixing by row ranges, interpolation, direction moves.

All functions take and return W+ arrays ``[B, n_latent, style_dim]`` (NumPy or tensors); render
them with ``g(wplus, input_is_latent=True, noise=...)``.

Row ranges are inclusive, 0-based pairs ``(first, last)``. The paper's ranges for the 14-row W+
of a 256 px generator are coarse ``(1, 3)``, middle ``(5, 8)`` and fine ``(10, 13)``.
:func:`mixing_ranges` scales them to other ``n_latent`` proportionally: a row ``r`` of the 14-row
layout becomes ``round(r * (n_latent - 1) / 13)`` (so the last row stays last and each range keeps
its share of the synthesis depth, i.e. of log2-resolution), with the first range starting at row
1 at least and every range non-empty. E.g. 18 rows (1024 px): coarse 1-4, middle 7-10, fine 13-17;
8 rows (32 px): 1-2, 3-4, 5-7.

Codes, noise maps, directions, alphas and betas from users are checked before anything is
rendered (:func:`load_code`, :func:`parse_floats`, :func:`load_directions`): non-finite values,
entries beyond ``MAX_ABS_LATENT`` (the serving bound, see ``tf_distill.export.savedmodel``) and
shapes that do not fit the generator are an :class:`EditError` naming the file or flag, instead
of NaN (black) or saturated images.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from tf_distill.errors import UserError, reason
from tf_distill.export.savedmodel import MAX_ABS_LATENT

PAPER_RANGES = {"coarse": (1, 3), "middle": (5, 8), "fine": (10, 13)}
PAPER_N_LATENT = 14


class EditError(UserError, ValueError):
    """A code, direction, range or step the user gave cannot be used (the message names it)."""


def check_finite(values, what, bound=MAX_ABS_LATENT):
    """``values`` as float32, or EditError naming ``what`` when an entry is NaN/inf or beyond ``bound``."""
    try:
        values = np.asarray(values, np.float32)
    except (TypeError, ValueError):
        raise EditError(f"{what} does not hold numbers (give float arrays)") from None
    if not np.isfinite(values).all():
        raise EditError(f"{what} holds NaN or infinite values (give finite numbers)")
    if values.size and np.abs(values).max() > bound:
        raise EditError(f"{what} has entries up to {np.abs(values).max():.3g}, beyond +-{bound:g} "
                        "(W+ codes from the mapping network are O(1)-O(10); give a sane code or value)")
    return values


def parse_floats(values, flag):
    """The flag's comma-separated numbers as floats: finite and within +-MAX_ABS_LATENT, else EditError."""
    try:
        floats = [float(v) for v in values]
    except ValueError:
        raise EditError(f"{flag}: {','.join(values)!r} is not a list of numbers (e.g. {flag}=0,0.5,1)") from None
    if not floats:
        raise EditError(f"{flag} is empty (give at least one number)")
    check_finite(floats, flag)
    return floats


def load_code(generator, model, source, flag):
    """(wplus float32 [1, n_latent, D], noise list or None) of ``model`` from ``seed:N`` or a projection ``.npz``.

    ``seed:N``: w = mapping(stateless normal z of seed [N, 0]) on every row, the stored noise.
    A ``.npz`` (``tf-distill-project``) must hold ``{model}_wplus`` of this generator's shape,
    finite and within bounds, and its noise maps (if any) one per layer of the right size.
    """
    n, d = int(generator.n_latent), int(generator.style_dim)
    if source.startswith("seed:"):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        try:
            seed = int(source[5:])
        except ValueError:
            raise EditError(f"{flag}: unknown code {source!r} (give seed:N with an integer N, or a .npz)") from None
        if not -2**63 <= seed < 2**63:
            raise EditError(f"{flag}: seed {seed} does not fit in int64 (give a smaller N)")
        z = tf.random.stateless_normal([1, d], seed=[seed, 0])
        w = generator.mapping(z).numpy()
        return np.repeat(w[:, None, :], n, axis=1), None
    from tf_distill.projection.project import load_projection  # pylint: disable=import-outside-toplevel

    if not Path(source).is_file():
        raise EditError(f"{flag}: {source} is not a file (give a .npz written by tf-distill-project, or seed:N)")
    try:
        wplus, noise = load_projection(source, model)
    except KeyError as err:
        raise EditError(f"{flag}: {err.args[0]} (project with the {model} too, or drop --{model})") from None
    except (ValueError, EOFError, zipfile.BadZipFile) as err:
        raise EditError(f"{flag}: {source} is not a readable projection .npz ({reason(err)}) "
                        "(give a .npz written by tf-distill-project)") from None
    where = f"{flag}: {source} [{model}_wplus]"
    if np.shape(wplus) not in ((1, n, d), (n, d)):
        raise EditError(f"{where} has shape {np.shape(wplus)}, the {model} needs [1, {n}, {d}] "
                        f"(project with this {model})")
    wplus = check_finite(wplus, where).reshape(1, n, d)
    if noise is not None:
        sizes = generator.synthesis.noise_shapes()
        if len(noise) != len(sizes):
            raise EditError(f"{flag}: {source} has {len(noise)} {model} noise maps, the {model} has {len(sizes)} "
                            f"layers (project with this {model})")
        for j, (m, r) in enumerate(zip(noise, sizes)):
            if np.shape(m) != (1, r, r, 1):
                raise EditError(f"{flag}: {source} [{model}_noise_{j}] has shape {np.shape(m)}, expected "
                                f"[1, {r}, {r}, 1] (project with this {model})")
        noise = [check_finite(m, f"{flag}: {source} [{model}_noise_{j}]") for j, m in enumerate(noise)]
    return wplus, noise


def parse_range(text):
    """``"5-8"`` or ``"5"`` -> (5, 8) / (5, 5)."""
    parts = str(text).split("-")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise EditError(f"A row range is FIRST-LAST or ROW (0-based, inclusive), got {text!r}.")
    first, last = int(parts[0]), int(parts[-1])
    if last < first:
        raise EditError(f"Row range {text!r} is empty (last < first).")
    return first, last


def mixing_ranges(n_latent, ranges=None):
    """{name: (first, last)} for ``n_latent`` rows: ``ranges`` validated, or the paper's scaled (module doc)."""
    if ranges is not None:
        out = {k: (tuple(v) if not isinstance(v, str) else parse_range(v)) for k, v in ranges.items()}
    elif n_latent == PAPER_N_LATENT:
        out = dict(PAPER_RANGES)
    else:
        scale = (n_latent - 1) / (PAPER_N_LATENT - 1)
        out = {}
        for name, (a, b) in PAPER_RANGES.items():
            first = max(1, int(np.floor(a * scale + 0.5)))
            last = max(first, int(np.floor(b * scale + 0.5)))
            out[name] = (first, min(last, n_latent - 1))
    for name, (a, b) in out.items():
        if not 0 <= a <= b < n_latent:
            raise EditError(f"Row range {name}={a}-{b} does not fit a W+ of {n_latent} rows (0..{n_latent - 1}).")
    return out


def _rows_mask(n_latent, rows):
    mask = np.zeros([1, n_latent, 1], np.float32)
    if rows is None:
        mask[:] = 1.0
    else:
        first, last = rows
        if not 0 <= first <= last < n_latent:
            raise EditError(f"rows {rows} out of range for {n_latent} rows (0..{n_latent - 1}).")
        mask[:, first:last + 1] = 1.0
    return mask


def style_mix(w_a, w_b, rows):
    """W+ of A with rows ``first..last`` (inclusive) taken from B; A and B broadcast over the batch."""
    w_a, w_b = np.asarray(w_a, np.float32), np.asarray(w_b, np.float32)
    mask = _rows_mask(w_a.shape[1], rows)
    return w_a * (1.0 - mask) + w_b * mask


def mixing_table(w_as, w_bs, rows):
    """All mixes ``[len(A) * len(B), n_latent, D]``, row-major: entry ``i * len(B) + j`` = mix(A_i, B_j)."""
    w_as, w_bs = np.asarray(w_as, np.float32), np.asarray(w_bs, np.float32)
    return np.stack([style_mix(a[None], b[None], rows)[0] for a in w_as for b in w_bs])


def interpolate(w_a, w_b, betas):
    """``beta * w_A + (1 - beta) * w_B`` for each beta -> ``[len(betas), n_latent, D]`` (w_A, w_B: [1 or none, n, D])."""
    w_a = np.asarray(w_a, np.float32).reshape(np.shape(w_a)[-2:])
    w_b = np.asarray(w_b, np.float32).reshape(np.shape(w_b)[-2:])
    return np.stack([np.float32(b) * w_a + np.float32(1.0 - b) * w_b for b in betas])


def move(wplus, direction, alphas, rows=None, normalize=True):
    """``w + alpha * v`` on ``rows`` (inclusive range, None: all rows) for each alpha.

    ``direction`` is a ``[style_dim]`` vector, unit-normalised when ``normalize`` (the training
    offsets use unit directions too, so alpha is a distance in W). Returns ``[len(alphas), n, D]``
    for a single W+ ``[1, n, D]`` (or ``[n, D]``).
    """
    w = np.asarray(wplus, np.float32).reshape(np.shape(wplus)[-2:])
    v = np.asarray(direction, np.float32).reshape(-1)
    if v.shape[0] != w.shape[-1]:
        raise EditError(f"direction has {v.shape[0]} entries, W+ rows have {w.shape[-1]} (give [{w.shape[-1]}] "
                        f"or [k, {w.shape[-1]}] directions).")
    if normalize:
        v = v / max(float(np.linalg.norm(v)), 1e-12)
    mask = _rows_mask(w.shape[0], rows)[0]
    return np.stack([w + np.float32(a) * mask * v[None, :] for a in alphas])


def teacher_directions(teacher, num_blocks=None, mode="split"):
    """The closed-form directions of the LD loss (``latent_directions``), ``[k, style_dim]``.

    ``num_blocks`` defaults to all synthesis blocks of the teacher (6 at 256 px -> 30 directions,
    the same set as the paper's mimic layers [4, 5, 6]).
    """
    from tf_distill.models.latent_directions import latent_directions  # pylint: disable=import-outside-toplevel

    blocks = len(teacher.synthesis.convs) // 2
    num_blocks = blocks if num_blocks is None else int(num_blocks)
    if not 1 <= num_blocks <= blocks:
        raise EditError(f"num_blocks (--direction_blocks) must be in 1..{blocks} for this generator, got {num_blocks}")
    return latent_directions(teacher, num_blocks, mode)


def load_directions(path):
    """A ``.npy`` of one direction ``[D]`` or several ``[k, D]`` -> ``[k, D]`` float32, finite and non-zero."""
    try:
        v = np.load(path)
    except (ValueError, EOFError, zipfile.BadZipFile) as err:
        raise EditError(f"{path}: not a readable .npy of directions ({reason(err)}) "
                        "(save one with numpy.save)") from None
    if not isinstance(v, np.ndarray) or v.dtype.kind not in "fiu":
        raise EditError(f"{path}: directions must be a numeric .npy array (save one with numpy.save)")
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or v.size == 0:
        raise EditError(f"{path}: directions must be [D] or [k, D], got shape {v.shape}.")
    v = check_finite(v, path)
    if not np.linalg.norm(v.astype(np.float64), axis=1).all():
        raise EditError(f"{path}: a direction is all zeros (give non-zero directions)")
    return v
