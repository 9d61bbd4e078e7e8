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
``--report_only`` writes only the report (no PNGs, no latents).
Defaults: L-BFGS (Wolfe, history 10) for ``--steps=100`` iterations (CPU-friendly); the paper used 801.
"""

import csv
import json
import sys
from pathlib import Path

import numpy as np
from absl import app, flags

_TEACHER = flags.DEFINE_string("teacher", None, "Teacher checkpoint (.pt, our directory or .keras).")
_STUDENT = flags.DEFINE_string("student", None, "Student checkpoint (.pt, our directory or .keras).")
_INPUT = flags.DEFINE_string("input", None, "An image file or a folder of images (searched recursively).")
_OUTPUT = flags.DEFINE_string("output", None, "Output folder.")
_STEPS = flags.DEFINE_integer("steps", 100, "Optimizer iterations per image (the paper: 801).")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "lbfgs", ["lbfgs", "adam"], "L-BFGS (the paper) or Adam.")
_LR = flags.DEFINE_float("lr", None, "L-BFGS initial step (default 1) or Adam learning rate (default 0.1).")
_W_AVG_SAMPLES = flags.DEFINE_integer("w_avg_samples", 1000, "z samples for the w_avg initialisation.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", None, "Project only the first N images of the folder.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of w_avg and of the initial noise maps (image i: seed + i).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Write only report.json/report.csv.")

METRIC_KEYS = ("psnr_paper", "psnr_correct", "lpips")


def _input_files(path):
    from tf_distill.data import list_image_files  # pylint: disable=import-outside-toplevel

    path = Path(path)
    if path.is_file():
        return [str(path)]
    return list_image_files(path)


def summarize(per_image, models):
    """{model: {n_images, mean psnr_paper, psnr_correct, lpips}} from per-image rows."""
    out = {}
    for m in models:
        rows = [r for r in per_image if r["model"] == m]
        out[m] = {"n_images": len(rows), **{k: float(np.mean([r[k] for r in rows])) for k in METRIC_KEYS}}
    return out


def write_report(output, per_image, models, settings):
    """report.json (settings, means, per-image) and report.csv (per-image rows + a ``mean`` row per model)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    summary = summarize(per_image, models)
    (output / "report.json").write_text(json.dumps({"settings": settings, "mean": summary, "images": per_image},
                                                   indent=2) + "\n")
    with open(output / "report.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "model", *METRIC_KEYS])
        for r in per_image:
            writer.writerow([r["image"], r["model"], *(f"{r[k]:.6f}" for k in METRIC_KEYS)])
        for m, s in summary.items():
            writer.writerow(["mean", m, *(f"{s[k]:.6f}" for k in METRIC_KEYS)])
    return summary


def project_main():
    from tf_distill import model_io  # pylint: disable=import-outside-toplevel
    from tf_distill.metrics.lpips import LPIPS  # pylint: disable=import-outside-toplevel
    from tf_distill.progress import Progress  # pylint: disable=import-outside-toplevel
    from tf_distill.projection import (Projector, load_target, projection_grid, save_png,  # pylint: disable=import-outside-toplevel
                                       save_projection)

    models = {name: model_io.load_generator(path)
              for name, path in (("teacher", _TEACHER.value), ("student", _STUDENT.value)) if path}
    files = _input_files(_INPUT.value)[:_MAX_IMAGES.value]
    lpips = LPIPS()
    projectors = {name: Projector(g, lpips, optimizer=_OPTIMIZER.value, lr=_LR.value,
                                  w_avg_samples=_W_AVG_SAMPLES.value, seed=_SEED.value)
                  for name, g in models.items()}
    output = Path(_OUTPUT.value)
    progress = Progress(len(files) * len(models) * _STEPS.value, "projection")
    per_image, grid_rows = [], []
    for i, path in enumerate(files):
        name = Path(path).stem
        results, target = {}, None
        for model, projector in projectors.items():
            target = load_target(path, projector.g.size)
            results[model] = projector.project(target, steps=_STEPS.value, seed=_SEED.value + i, progress=progress)
            per_image.append({"image": Path(path).name, "model": model, **results[model].metrics()})
        sizes = {p.g.size for p in projectors.values()}
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
    summary = write_report(output, per_image, list(models), settings)
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not (_TEACHER.value or _STUDENT.value):
        raise app.UsageError("Give --teacher and/or --student.")
    if not (_INPUT.value and _OUTPUT.value):
        raise app.UsageError("--input (image or folder) and --output (folder) are required.")
    if not Path(_INPUT.value).exists():
        raise app.UsageError(f"--input {_INPUT.value} does not exist.")
    if _STEPS.value < 0:
        raise app.UsageError("--steps must be >= 0.")
    summary = project_main()
    print(json.dumps(summary, indent=2))
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    sys.exit(run())
