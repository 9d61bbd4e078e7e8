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

Codes, directions, alphas and betas are checked before anything is rendered: NaN/inf, entries
beyond 1e4, or shapes that do not fit the generators end in one ``error:`` line naming the file
or flag, and no PNG is written.
"""

import json
from pathlib import Path

import numpy as np
from absl import app, flags

from tf_distill import cli
from tf_distill.errors import UserError

MODES = ("mix", "interp", "direction")
_TEACHER = flags.DEFINE_string("teacher", None, "Teacher checkpoint.")
_STUDENT = flags.DEFINE_string("student", None, "Student checkpoint.")
_MODE = flags.DEFINE_multi_enum("mode", ["mix"], MODES, "What to draw (repeatable).")
_A = flags.DEFINE_list("a", [], "Codes A: projection .npz files (tf-distill-project) or seed:N.")
_B = flags.DEFINE_list("b", [], "Codes B (mix, interp): .npz files or seed:N.")
_OUTPUT = flags.DEFINE_string("output", None, "Output folder.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace PNGs of an earlier run in --output.")
_RANGES = flags.DEFINE_list("ranges", [], "Mixing row ranges NAME=FIRST-LAST (0-based, inclusive); default paper's.")
_BETAS = flags.DEFINE_list("betas", ["0", "0.25", "0.5", "0.75", "1"], "Interpolation betas: beta*w_A + (1-beta)*w_B.")
_ALPHAS = flags.DEFINE_list("alphas", ["-10", "-5", "0", "5", "10"], "Direction step sizes (distance in W).")
_DIRECTIONS = flags.DEFINE_list("directions", ["0", "1", "2"], "Indices into the teacher's closed-form directions.")
_DIRECTION_NPY = flags.DEFINE_string("direction_npy", None, "Directions [D] or [k, D] from a .npy (all used).")
_DIRECTION_ROWS = flags.DEFINE_string("direction_rows", "all", "W+ rows to move: all or FIRST-LAST.")
_DIRECTION_BLOCKS = flags.DEFINE_integer("direction_blocks", None, "Blocks for the closed-form directions "
                                         "(default: all synthesis blocks of the teacher).")
_DIRECTION_MODE = flags.DEFINE_enum("direction_mode", "split", ["split", "global"], "Closed-form direction mode.")


def render(generator, wplus, noise=None, batch=8):
    """Images [N, H, W, 3] of W+ codes; ``noise`` one set for all (None: the generator's stored maps)."""
    out = []
    for k in range(0, len(wplus), batch):
        out.append(generator(np.asarray(wplus[k:k + batch], np.float32), input_is_latent=True, noise=noise,
                             randomize_noise=False).numpy())
    return np.concatenate(out)


def _for_flag(flag, fn, *args):
    """``fn(*args)``, with the flag that gave the value named in its EditError."""
    from tf_distill.projection import edit  # pylint: disable=import-outside-toplevel

    try:
        return fn(*args)
    except edit.EditError as err:
        raise edit.EditError(f"{flag}: {err}") from None


def edit_main():
    from tf_distill.io import checkpoints  # pylint: disable=import-outside-toplevel
    from tf_distill.projection import edit, grids  # pylint: disable=import-outside-toplevel

    # Everything the user gave is checked before a model is loaded or a PNG written.
    alphas = edit.parse_floats(_ALPHAS.value, "--alphas") if "direction" in _MODE.value else None
    betas = edit.parse_floats(_BETAS.value, "--betas") if "interp" in _MODE.value else None
    custom = None
    if "mix" in _MODE.value and _RANGES.value:
        if not all("=" in r for r in _RANGES.value):
            raise edit.EditError(f"--ranges: {','.join(_RANGES.value)!r} is not NAME=FIRST-LAST,... "
                                 "(e.g. --ranges=coarse=1-3,middle=5-8)")
        custom = dict(r.split("=", 1) for r in _RANGES.value)
        for text in custom.values():
            _for_flag("--ranges", edit.parse_range, text)
    rows = None
    if "direction" in _MODE.value:
        rows = None if _DIRECTION_ROWS.value == "all" else _for_flag("--direction_rows", edit.parse_range,
                                                                      _DIRECTION_ROWS.value)
        if not _DIRECTION_NPY.value and not (_DIRECTIONS.value and all(i.strip().isdigit() for i in _DIRECTIONS.value)):
            raise edit.EditError(f"--directions: {','.join(_DIRECTIONS.value)!r} is not a list of indices "
                                 "(e.g. --directions=0,1,2)")
    for path in (_TEACHER.value, _STUDENT.value, _DIRECTION_NPY.value):
        if path and not Path(path).exists():
            raise UserError(f"{path} does not exist (check the path)")
    models = {name: checkpoints.load_generator(path)
              for name, path in (("teacher", _TEACHER.value), ("student", _STUDENT.value)) if path}
    codes_a = {m: [edit.load_code(g, m, s, "--a") for s in _A.value] for m, g in models.items()}
    codes_b = {m: [edit.load_code(g, m, s, "--b") for s in _B.value] for m, g in models.items()}
    ranges = {m: _for_flag("--ranges", edit.mixing_ranges, g.n_latent, custom) for m, g in models.items()} \
        if "mix" in _MODE.value else {}
    moved = {}
    if "direction" in _MODE.value:
        if _DIRECTION_NPY.value:
            directions = edit.load_directions(_DIRECTION_NPY.value)
        else:
            source = models.get("teacher", next(iter(models.values())))  # the student's own if no teacher
            all_dirs = edit.teacher_directions(source, _DIRECTION_BLOCKS.value, _DIRECTION_MODE.value)  # names its flag
            index = [int(i) for i in _DIRECTIONS.value]
            if max(index) >= len(all_dirs):
                raise edit.EditError(f"--directions: index {max(index)} is out of range, the generator has "
                                     f"{len(all_dirs)} closed-form directions (0..{len(all_dirs) - 1})")
            directions = all_dirs[index]
        moved = {(k, j, m): _for_flag(f"--direction_rows/--direction_npy ({m})", edit.move, codes_a[m][k][0], v,
                                      alphas, rows)
                 for k in range(len(_A.value)) for j, v in enumerate(directions) for m in models}

    output = Path(_OUTPUT.value)
    written = []
    if "mix" in _MODE.value:
        for name in ranges[next(iter(models))]:
            panels = []
            for m, g in models.items():
                mix_rows = ranges[m][name]
                a_img = np.concatenate([render(g, w, n) for w, n in codes_a[m]])
                b_img = np.concatenate([render(g, w, n) for w, n in codes_b[m]])
                mixed = np.concatenate([render(g, edit.mixing_table(wa, [wb[0] for wb, _ in codes_b[m]], mix_rows),
                                               na) for wa, na in codes_a[m]])
                panels.append(grids.mixing_grid(a_img, b_img, mixed))
            written.append(grids.save_png(grids.side_by_side(panels), output / f"mix_{name}.png"))

    if "interp" in _MODE.value:
        panels = []
        for m, g in models.items():
            strips = [render(g, edit.interpolate(wa, wb, betas), na)
                      for (wa, na), (wb, _) in zip(codes_a[m], codes_b[m])]
            panels.append(grids.strip_grid(strips))
        written.append(grids.save_png(grids.side_by_side(panels), output / "interp.png"))

    if "direction" in _MODE.value:
        strips = [render(models[m], w, codes_a[m][k][1]) for (k, _, m), w in moved.items()]
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
    check_output_folder(_OUTPUT.value, _OVERWRITE.value)
    print(json.dumps({"written": edit_main()}, indent=2))
    return 0


def planned_outputs():
    """The PNG names this run writes into --output."""
    names = set()
    if "mix" in _MODE.value:
        ranges = [r.split("=", 1)[0].strip() for r in _RANGES.value] or ["coarse", "middle", "fine"]
        names.update(f"mix_{name}.png" for name in ranges)
    if "interp" in _MODE.value:
        names.add("interp.png")
    if "direction" in _MODE.value:
        names.add("direction.png")
    return names


def check_output_folder(output, overwrite):
    """Refuses an --output we cannot write, or one holding PNGs this run would replace (without --overwrite)."""
    from tf_distill.outputs import check_output  # pylint: disable=import-outside-toplevel

    output = check_output(output, overwrite=True)
    clash = sorted(n for n in planned_outputs() if (output / n).exists())
    if clash and not overwrite:
        raise app.UsageError(f"--output {output} already holds {', '.join(clash)} (pass --overwrite to replace, or "
                             "choose another folder)")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
