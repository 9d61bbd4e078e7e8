"""tf-distill-demo: distill the committed demo teacher into a small student and report the result.

    tf-distill-demo --workdir=out/demo [--steps=1000] [--fid_samples=500]

Writes ``<workdir>/run`` (checkpoints, TensorBoard, samples, ``final/`` student checkpoint),
``<workdir>/teacher_vs_student.png`` (teacher row above student row, same z and noise) and
``<workdir>/metrics.json``: FID of teacher and student against the Fashion-MNIST training
images (the declared sample counts), LPIPS student-to-teacher on the same z, params and FLOPs.
"""

import json
import time
from pathlib import Path

from absl import app, flags

from tf_distill import cli, limits
from tf_distill.outputs import check_workdir, write_file_atomic

_WORKDIR = flags.DEFINE_string("workdir", "out/demo", "Output directory.")
_STEPS = flags.DEFINE_integer("steps", None, "Distillation steps (default: the config's).", lower_bound=1,
                              upper_bound=limits.MAX_COUNT)
_FID_SAMPLES = flags.DEFINE_integer("fid_samples", 500, "Generated and real images per FID (50k in the paper; "
                                    "500 keeps the demo within 15 minutes on 2 CPU cores, and biases FID upwards).",
                                    lower_bound=2, upper_bound=limits.MAX_COUNT)
_LPIPS_SAMPLES = flags.DEFINE_integer("lpips_samples", 256, "z for the student-to-teacher LPIPS.", lower_bound=1,
                                      upper_bound=limits.MAX_COUNT)
_TEACHER = flags.DEFINE_string("teacher", None, "Teacher checkpoint (default: the config's, the committed one).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Use a --workdir that holds other files anyway (nothing in it is "
                               "deleted).")


def run_demo(workdir, steps=None, fid_samples=500, lpips_samples=256, teacher=None):
    import numpy as np  # pylint: disable=import-outside-toplevel

    from tf_distill.configs.demo_distill import get_config  # pylint: disable=import-outside-toplevel
    from tf_distill.images import save_grid  # pylint: disable=import-outside-toplevel
    from tf_distill.metrics import generator_eval  # pylint: disable=import-outside-toplevel
    from tf_distill.metrics.inception import FIDInceptionV3  # pylint: disable=import-outside-toplevel
    from tf_distill.metrics.lpips import LPIPS  # pylint: disable=import-outside-toplevel
    from tf_distill.model_stats import generator_stats  # pylint: disable=import-outside-toplevel
    from tf_distill.progress import Progress  # pylint: disable=import-outside-toplevel
    from tf_distill.train.loop import Run  # pylint: disable=import-outside-toplevel

    workdir = Path(workdir)
    config = get_config()
    if steps is not None:
        config.train.steps = steps
    if teacher:
        config.teacher = teacher
    if not Path(config.teacher).exists():
        raise app.UsageError(f"Teacher checkpoint {config.teacher} not found (check --teacher).")
    start = time.time()
    lpips = LPIPS()
    run = Run(config, workdir / "run", lpips=lpips)
    run.run()
    train_seconds = time.time() - start
    student = run.g_ema
    teacher_g = run.teacher

    z = np.random.default_rng(2024).standard_normal((16, student.style_dim)).astype(np.float32)
    grid = np.concatenate([teacher_g(z, randomize_noise=False).numpy(), student(z, randomize_noise=False).numpy()])
    grid_path = save_grid(grid, workdir / "teacher_vs_student.png", ncol=16)

    inception = FIDInceptionV3()
    stats_path = workdir / f"fashion_mnist_train_{fid_samples}_stats.npz"
    real = generator_eval.dataset_statistics(config.data.source, student.size, fid_samples, 50, "stylekd",
                                             stats_path, inception, Progress(fid_samples, "FID real"))
    fids = {}
    for name, g in (("teacher", teacher_g), ("student", student)):
        fids[name], _ = generator_eval.generator_fid(g, real, fid_samples, 50, inception=inception, seed=7,
                                                     progress=Progress(fid_samples, f"FID {name}"))
    metrics = {
        "fid_samples": fid_samples, "fid_real_images": f"first {fid_samples} Fashion-MNIST training images",
        "fid_mode": "stylekd (raw output, bilinear 299, FID Inception 2015-12-05)",
        "fid_teacher": fids["teacher"], "fid_student": fids["student"],
        "lpips_student_to_teacher": generator_eval.lpips_between(student, teacher_g, lpips, lpips_samples, 32),
        "lpips_samples": lpips_samples,
        "teacher": generator_stats(teacher_g), "student": generator_stats(student),
        "distill_steps": int(run.step.step.numpy()), "batch_size": config.train.batch_size,
        "train_seconds": round(train_seconds, 1),
        "student_checkpoint": str(workdir / "run" / "final"), "grid": str(grid_path),
    }
    metrics["fid_ratio_student_to_teacher"] = metrics["fid_student"] / metrics["fid_teacher"]
    lpips_target, fid_target = generator_eval.RESEMBLANCE_LPIPS, generator_eval.RESEMBLANCE_FID_RATIO
    metrics["targets"] = {  # what a student that resembles its teacher reaches (README)
        f"lpips_student_to_teacher <= {lpips_target}": metrics["lpips_student_to_teacher"] <= lpips_target,
        f"fid_student <= {fid_target} x fid_teacher": metrics["fid_ratio_student_to_teacher"] <= fid_target,
    }
    metrics["params_ratio"] = metrics["teacher"]["params"] / metrics["student"]["params"]
    metrics["flops_ratio"] = metrics["teacher"]["flops"] / metrics["student"]["flops"]
    write_file_atomic(workdir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    check_workdir(_WORKDIR.value, ["run", "metrics.json"], overwrite=_OVERWRITE.value)
    metrics = run_demo(_WORKDIR.value, _STEPS.value, _FID_SAMPLES.value, _LPIPS_SAMPLES.value, _TEACHER.value)
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("teacher", "student")}, indent=2))


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
