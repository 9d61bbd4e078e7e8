"""tf-distill-edit: style mixing, interpolation and direction sweeps of W+ codes, teacher and student side by side.

    # codes from tf-distill-project (NAME.npz) or from seeds (seed:N, w = mapping(z), stored noise maps)
    tf-distill-edit --teacher=t.pt --student=s.pt --mode=mix --a=proj/a.npz,proj/b.npz --b=seed:1,seed:2 --output=ed/
    tf-distill-edit --teacher=t.pt --student=s.pt --mode=interp --a=proj/a.npz --b=proj/b.npz --betas=0,0.25,0.5,0.75,1
    tf-distill-edit --teacher=t.pt --student=s.pt --mode=direction --a=proj/a.npz --directions=0,5,10 \
        --alphas=-10,-5,0,5,10 --direction_rows=all          # or --direction_npy=smile.npy

Writes PNGs to ``--output`` (teacher panel left, student panel right when both are given):
  mix_{coarse,middle,fine}.png   rows A x columns B (top-left blank; first row B, first column A)
  interp.png                     one row per (A_i, B_i) pair (and per model), columns = betas
  direction.png                  one row per (code, direction), teacher and student rows interleaved,
                                 columns = alphas
Mixing ranges default to coarse 1-3, middle 5-8, fine 10-13 for 14 rows (scaled for other
n_latent, see ``tf_distill.projection.edit``); override with ``--ranges=coarse=1-3,middle=5-8``.
"""

import json
import sys
from pathlib import Path

import numpy as np
from absl import app, flags

MODES = ("mix", "interp", "direction")
_TEACHER = flags.DEFINE_string("teacher", None, "Teacher checkpoint.")
_STUDENT = flags.DEFINE_string("student", None, "Student checkpoint.")
_MODE = flags.DEFINE_multi_enum("mode", ["mix"], MODES, "What to draw (repeatable).")
_A = flags.DEFINE_list("a", [], "Codes A: projection .npz files (tf-distill-project) or seed:N.")
_B = flags.DEFINE_list("b", [], "Codes B (mix, interp): .npz files or seed:N.")
_OUTPUT = flags.DEFINE_string("output", None, "Output folder.")
_RANGES = flags.DEFINE_list("ranges", [], "Mixing row ranges NAME=FIRST-LAST (0-based, inclusive); default paper's.")
_BETAS = flags.DEFINE_list("betas", ["0", "0.25", "0.5", "0.75", "1"], "Interpolation betas: beta*w_A + (1-beta)*w_B.")
_ALPHAS = flags.DEFINE_list("alphas", ["-10", "-5", "0", "5", "10"], "Direction step sizes (distance in W).")
_DIRECTIONS = flags.DEFINE_list("directions", ["0", "1", "2"], "Indices into the teacher's closed-form directions.")
_DIRECTION_NPY = flags.DEFINE_string("direction_npy", None, "Directions [D] or [k, D] from a .npy (all used).")
_DIRECTION_ROWS = flags.DEFINE_string("direction_rows", "all", "W+ rows to move: all or FIRST-LAST.")
_DIRECTION_BLOCKS = flags.DEFINE_integer("direction_blocks", None, "Blocks for the closed-form directions "
                                         "(default: all synthesis blocks of the teacher).")
_DIRECTION_MODE = flags.DEFINE_enum("direction_mode", "split", ["split", "global"], "Closed-form direction mode.")


def code_for(generator, model, source):
    """(wplus [1, n, D], noise list or None) of ``model`` from ``seed:N`` or a projection ``.npz``."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tf_distill.projection import load_projection  # pylint: disable=import-outside-toplevel

    if source.startswith("seed:"):
        z = tf.random.stateless_normal([1, generator.style_dim], seed=[int(source[5:]), 0])
        w = generator.mapping(z).numpy()
        return np.repeat(w[:, None, :], generator.n_latent, axis=1), None
    return load_projection(source, model)


def render(generator, wplus, noise=None, batch=8):
    """Images [N, H, W, 3] of W+ codes; ``noise`` one set for all (None: the generator's stored maps)."""
    out = []
    for k in range(0, len(wplus), batch):
        out.append(generator(np.asarray(wplus[k:k + batch], np.float32), input_is_latent=True, noise=noise,
                             randomize_noise=False).numpy())
    return np.concatenate(out)


def _floats(values):
    return [float(v) for v in values]


def edit_main():
    from tf_distill import model_io  # pylint: disable=import-outside-toplevel
    from tf_distill.projection import edit, grids  # pylint: disable=import-outside-toplevel

    models = {name: model_io.load_generator(path)
              for name, path in (("teacher", _TEACHER.value), ("student", _STUDENT.value)) if path}
    output = Path(_OUTPUT.value)
    written = []
    codes_a = {m: [code_for(g, m, s) for s in _A.value] for m, g in models.items()}
    codes_b = {m: [code_for(g, m, s) for s in _B.value] for m, g in models.items()}

    if "mix" in _MODE.value:
        custom = dict(r.split("=", 1) for r in _RANGES.value) or None
        ranges = {m: edit.mixing_ranges(g.n_latent, custom) for m, g in models.items()}
        for name in ranges[next(iter(models))]:
            panels = []
            for m, g in models.items():
                rows = ranges[m][name]
                a_img = np.concatenate([render(g, w, n) for w, n in codes_a[m]])
                b_img = np.concatenate([render(g, w, n) for w, n in codes_b[m]])
                mixed = np.concatenate([render(g, edit.mixing_table(wa, [wb[0] for wb, _ in codes_b[m]], rows), na)
                                        for wa, na in codes_a[m]])
                panels.append(grids.mixing_grid(a_img, b_img, mixed))
            written.append(grids.save_png(grids.side_by_side(panels), output / f"mix_{name}.png"))

    if "interp" in _MODE.value:
        panels = []
        for m, g in models.items():
            strips = [render(g, edit.interpolate(wa, wb, _floats(_BETAS.value)), na)
                      for (wa, na), (wb, _) in zip(codes_a[m], codes_b[m])]
            panels.append(grids.strip_grid(strips))
        written.append(grids.save_png(grids.side_by_side(panels), output / "interp.png"))

    if "direction" in _MODE.value:
        if _DIRECTION_NPY.value:
            directions = edit.load_directions(_DIRECTION_NPY.value)
        else:
            source = models.get("teacher", next(iter(models.values())))  # the student's own if no teacher
            all_dirs = edit.teacher_directions(source, _DIRECTION_BLOCKS.value, _DIRECTION_MODE.value)
            directions = all_dirs[[int(i) for i in _DIRECTIONS.value]]
        rows = None if _DIRECTION_ROWS.value == "all" else edit.parse_range(_DIRECTION_ROWS.value)
        strips = []
        for k in range(len(_A.value)):
            for v in directions:
                for m, g in models.items():
                    wa, na = codes_a[m][k]
                    strips.append(render(g, edit.move(wa, v, _floats(_ALPHAS.value), rows), na))
        written.append(grids.save_png(grids.strip_grid(strips), output / "direction.png"))
    return [str(p) for p in written]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not (_TEACHER.value or _STUDENT.value):
        raise app.UsageError("Give --teacher and/or --student.")
    if not _OUTPUT.value or not _A.value:
        raise app.UsageError("--output and --a are required.")
    if set(_MODE.value) & {"mix", "interp"} and not _B.value:
        raise app.UsageError("--mode=mix/interp need --b codes.")
    if "interp" in _MODE.value and len(_A.value) != len(_B.value):
        raise app.UsageError("--mode=interp pairs --a and --b: give the same number of codes.")
    print(json.dumps({"written": edit_main()}, indent=2))
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    sys.exit(run())
