"""tf-distill-project: project real images into the W+ and noise of a teacher and/or a student.

    tf-distill-project --teacher=teacher.pt --student=runs/x/final --input=faces/ --output=proj/
    tf-distill-project --student=student.pt --input=face.png --output=proj/ --steps=801   # the paper's count
    tf-distill-project --teacher=t.pt --student=s.pt --input=Helen/ --output=rep/ --report_only

Writes to ``--output``:
  grid.png         one row per image: target | teacher reconstruction | student reconstruction
  NAME.png         the same row for each image
  NAME.npz         ``{model}_wplus`` [1, n_latent, D] and ``{model}_noise_{j}`` (input of tf-distill-edit)
  report.json/csv  per-image and mean PSNR (``psnr_paper``: uint8 wrap-around, the paper's column;
                   ``psnr_correct``: true PSNR) and LPIPS per model
``--report_only`` writes only the report (no PNGs, no latents). Unreadable images (corrupt, truncated,
not an image) are skipped with a warning and listed in the report (``num_skipped``, ``skipped``).
Files of an earlier run in ``--output`` are replaced only with ``--overwrite``; each file is written
under a temporary name and renamed into place.
Defaults: L-BFGS (Wolfe, history 10) for ``--steps=100`` iterations (CPU-friendly); the paper used 801.
"""

import collections
import csv
import io
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
from absl import app, flags

from tf_distill import cli, limits
from tf_distill.errors import UserError, first_few

_TEACHER = flags.DEFINE_string("teacher", None, "Teacher checkpoint (.pt, our directory or .keras).")
_STUDENT = flags.DEFINE_string("student", None, "Student checkpoint (.pt, our directory or .keras).")
_INPUT = flags.DEFINE_string("input", None, "An image file or a folder of images (searched recursively).")
_OUTPUT = flags.DEFINE_string("output", None, "Output folder.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the files of an earlier run in --output.")
_STEPS = flags.DEFINE_integer("steps", 100, "Optimizer iterations per image (the paper: 801).", lower_bound=0,
                              upper_bound=limits.MAX_COUNT)
_OPTIMIZER = flags.DEFINE_enum("optimizer", "lbfgs", ["lbfgs", "adam"], "L-BFGS (the paper) or Adam.")
_LR = flags.DEFINE_float("lr", None, "L-BFGS initial step (default 1) or Adam learning rate (default 0.1).")
_W_AVG_SAMPLES = flags.DEFINE_integer("w_avg_samples", 1000, "z samples for the w_avg initialisation.",
                                      lower_bound=1, upper_bound=limits.MAX_COUNT)
_MAX_IMAGES = flags.DEFINE_integer("max_images", None, "Project only the first N readable images of the folder.",
                                   lower_bound=1, upper_bound=limits.MAX_COUNT)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of w_avg and of the initial noise maps (image i: seed + i).",
                             lower_bound=0, upper_bound=limits.MAX_SEED)
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Write only report.json/report.csv.")
_FACE_PARSING = flags.DEFINE_string("face_parsing_weights", None, "79999_iter.pth of face-parsing.PyTorch: adds the "
                                    "reference's content-aware PSNR/LPIPS (background and cloth masked out).")

METRIC_KEYS = ("psnr_paper", "psnr_correct", "lpips")
CONTENT_AWARE_KEYS = ("psnr_paper_ca", "psnr_correct_ca", "lpips_ca")
REPORT_FILES = ("report.json", "report.csv")


def _input_files(path):
    # pylint: disable-next=import-outside-toplevel
    from tf_distill.data import DatasetNotFoundError, EmptyDatasetError, list_image_files

    path = Path(path)
    if path.is_file():
        return [str(path)]
    try:
        return list_image_files(path)
    except (DatasetNotFoundError, EmptyDatasetError) as err:
        raise UserError(f"--input: {err}") from None


def planned_outputs(files, report_only):
    """The file names a run over ``files`` writes into --output."""
    if report_only:
        return set(REPORT_FILES)
    stems = {Path(f).stem for f in files}
    return {*REPORT_FILES, "grid.png", *(f"{s}.png" for s in stems), *(f"{s}.npz" for s in stems)}


def check_output_folder(output, files, report_only, overwrite, input_path):
    """Refuses an --output that cannot be written, that holds the --input (even with --overwrite), or that is
    inside an --input folder (its PNGs would be read back as images); outputs that two images of the same name
    would share; and files of an earlier run this run would replace, without --overwrite."""
    from tf_distill.outputs import check_output, lies_in  # pylint: disable=import-outside-toplevel

    # a folder we can write that holds no input; the files it holds are checked below
    check_output(output, overwrite=True, inputs=[input_path])
    if Path(input_path).is_dir() and lies_in(output, input_path):
        raise UserError(f"--output={output} is inside --input={input_path}, whose images are searched recursively: "
                        "this run's PNGs would be read back as images (choose a folder outside it)")
    output = Path(output)
    stems = collections.defaultdict(list)
    for f in files if not report_only else ():
        stems[Path(f).stem].append(f)
    shared = [names for names in stems.values() if len(names) > 1]
    if shared:
        raise UserError(f"--input holds {len(shared)} name(s) that several images share, whose outputs NAME.png and "
                        f"NAME.npz would overwrite each other ({first_few(shared[0], 3)}) (rename them, or project "
                        "them in separate runs)")
    clash = sorted(n for n in planned_outputs(files, report_only) if (output / n).exists()) if output.is_dir() else []
    if clash and not overwrite:
        raise UserError(f"--output {output} already holds {len(clash)} file(s) this run would replace "
                        f"({first_few(clash, 3)}) (pass --overwrite to replace "
                        "them, or choose another folder)")


def readable_files(files, stats, limit=None):
    """The first ``limit`` readable ``files`` (each is decoded, then let go: memory stays bounded); the
    others go to ``stats``. Raises :class:`UserError` when none is readable."""
    from tf_distill.images import read_images  # pylint: disable=import-outside-toplevel

    readable = [path for path, _ in itertools.islice(read_images(files, stats), limit)]
    if not readable:
        raise UserError(f"none of the {len(files)} image file(s) of --input {_INPUT.value} can be read "
                        f"({'; '.join(stats.skipped[:3])}) (give 8-bit PNG or JPEG images)")
    return readable


def metric_keys(per_image):
    """The report's metric columns: the content-aware ones too when the rows have them."""
    return METRIC_KEYS + (CONTENT_AWARE_KEYS if per_image and CONTENT_AWARE_KEYS[0] in per_image[0] else ())


def summarize(per_image, models):
    """{model: {n_images, mean psnr_paper, psnr_correct, lpips}} from per-image rows."""
    out = {}
    for m in models:
        rows = [r for r in per_image if r["model"] == m]
        out[m] = {"n_images": len(rows), **{k: float(np.mean([r[k] for r in rows])) for k in metric_keys(per_image)}}
    return out


def write_report(output, per_image, models, settings, skipped=None):
    """report.json (settings, means, per-image, skipped images) and report.csv (per-image rows + a ``mean``
    row per model), each written atomically."""
    from tf_distill.outputs import write_file_atomic  # pylint: disable=import-outside-toplevel

    output = Path(output)
    summary = summarize(per_image, models)
    skipped = list(skipped or [])
    report = {"settings": settings, "mean": summary, "images": per_image, "num_skipped": len(skipped),
              "skipped": skipped}
    write_file_atomic(output / "report.json", json.dumps(report, indent=2) + "\n")
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    keys = metric_keys(per_image)
    writer.writerow(["image", "model", *keys])
    for r in per_image:
        writer.writerow([r["image"], r["model"], *(f"{r[k]:.6f}" for k in keys)])
    for m, s in summary.items():
        writer.writerow(["mean", m, *(f"{s[k]:.6f}" for k in keys)])
    write_file_atomic(output / "report.csv", text.getvalue())
    return summary


def project_main(files):
    from tf_distill.io import checkpoints  # pylint: disable=import-outside-toplevel
    from tf_distill.data import DecodeStats  # pylint: disable=import-outside-toplevel
    from tf_distill.images import read_images  # pylint: disable=import-outside-toplevel
    from tf_distill.metrics.lpips import LPIPS  # pylint: disable=import-outside-toplevel
    from tf_distill.progress import Progress  # pylint: disable=import-outside-toplevel
    # pylint: disable-next=import-outside-toplevel
    from tf_distill.projection import Projector, projection_grid, save_png, save_projection
    # pylint: disable-next=import-outside-toplevel
    from tf_distill.projection.project import content_aware_metrics, fit_target

    stats = DecodeStats()
    files = readable_files(files, stats, _MAX_IMAGES.value)
    models = {name: checkpoints.load_generator(path)
              for name, path in (("teacher", _TEACHER.value), ("student", _STUDENT.value)) if path}
    mask_of = None
    if _FACE_PARSING.value:
        from tf_distill.losses.content_mask import content_mask  # pylint: disable=import-outside-toplevel
        from tf_distill.models.face_parsing import load_face_parsing  # pylint: disable=import-outside-toplevel

        parser = load_face_parsing(_FACE_PARSING.value)
        mask_of = lambda target: content_mask(parser, np.asarray(target, np.float32) / 127.5 - 1.0)  # noqa: E731
    lpips = LPIPS()
    projectors = {name: Projector(g, lpips, optimizer=_OPTIMIZER.value, lr=_LR.value,
                                  w_avg_samples=_W_AVG_SAMPLES.value, seed=_SEED.value)
                  for name, g in models.items()}
    output = Path(_OUTPUT.value)
    progress = Progress(len(files) * len(models) * _STEPS.value, "projection")
    per_image, grid_rows = [], []
    sizes = {p.g.size for p in projectors.values()}
    for i, (path, image) in enumerate(read_images(files, stats)):
        name = Path(path).stem
        results, target = {}, None
        for model, projector in projectors.items():
            target = fit_target(image, projector.g.size)
            results[model] = projector.project(target, steps=_STEPS.value, seed=_SEED.value + i, progress=progress)
            row = {"image": Path(path).name, "model": model, **results[model].metrics()}
            if mask_of is not None:
                row.update(content_aware_metrics(results[model].image, target, lpips, mask_of(target)))
            per_image.append(row)
        if not _REPORT_ONLY.value:
            save_projection(output / f"{name}.npz", results)
            if len(sizes) == 1:
                row = projection_grid(target, [r.image for r in results.values()])
                save_png(row, output / f"{name}.png")
                grid_rows.append((target, [r.image for r in results.values()]))
    if grid_rows:
        save_png(projection_grid(np.concatenate([t for t, _ in grid_rows]),
                                 [np.concatenate([r[k] for _, r in grid_rows]) for k in range(len(models))]),
                 output / "grid.png")
    settings = {"steps": _STEPS.value, "optimizer": _OPTIMIZER.value, "lr": _LR.value, "seed": _SEED.value,
                "w_avg_samples": _W_AVG_SAMPLES.value, "input": _INPUT.value,
                "checkpoints": {"teacher": _TEACHER.value, "student": _STUDENT.value},
                "columns": "grid.png: target | " + " | ".join(models)}
    summary = write_report(output, per_image, list(models), settings, stats.skipped)
    stats.log_summary()
    return summary


def check_flags():
    """Every mistake that needs no model or image, found before anything is loaded."""
    if not (_TEACHER.value or _STUDENT.value):
        raise app.UsageError("Give --teacher and/or --student.")
    if not (_INPUT.value and _OUTPUT.value):
        raise app.UsageError("--input (image or folder) and --output (folder) are required.")
    for flag, value in (("--teacher", _TEACHER.value), ("--student", _STUDENT.value)):
        if value and not Path(value).exists():
            raise UserError(f"{flag} {value} does not exist (give a .pt, .keras or converted checkpoint folder)")
    if not Path(_INPUT.value).exists():
        raise UserError(f"--input {_INPUT.value} does not exist (give an image file or a folder of images)")
    if _FACE_PARSING.value and not Path(_FACE_PARSING.value).is_file():
        raise UserError(f"--face_parsing_weights {_FACE_PARSING.value} does not exist (give the 79999_iter.pth of "
                        "face-parsing.PyTorch)")
    if _LR.value is not None and not (math.isfinite(_LR.value) and _LR.value > 0):
        raise UserError(f"--lr={_LR.value} must be a positive number (or leave it out for the default)")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    check_flags()
    files = _input_files(_INPUT.value)
    check_output_folder(_OUTPUT.value, files, _REPORT_ONLY.value, _OVERWRITE.value, _INPUT.value)
    summary = project_main(files)
    print(json.dumps(summary, indent=2))
    return 0


def run():
    cli.run(main)


if __name__ == "__main__":
    sys.exit(run())
