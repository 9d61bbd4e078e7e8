"""Serving benchmark: exported teacher vs student SavedModels (and the TFLite student), CPU, one run.

    python bench/serving.py [--size=256|1024] [--repeats=5] [--workdir=DIR] [--notflite]

Builds the paper's teacher and 0.7-pruned student (configs/paper_models.py) with random weights,
exports both with tf-distill-export's code, and prints per model and batch (1 and 8) the latency
p50/p99 (over the repeats, each the mean call of its turn) and images/s (of the median) of the
SavedModel's ``from_seeds`` signature, all timed in turns with the 3x3-conv peak in the same loop
(``common.timed_in_turns``), the student/teacher
throughput ratio, the export sizes, and for the TFLite student (float32, float16, dynamic int8,
run with LiteRT and its XNNPACK delegate) size, batch-1 latency, max / mean abs pixel error
against the student SavedModel on seeds 0..7, and images/s over the SavedModel student's at batch
1, the two timed in turns in the same loop (``tflite_<variant>_over_saved_model_batch1``). The
exports go to a temporary folder, deleted at the end, or to ``--workdir`` (a new or empty folder, kept).
"""

import json
import os
import tempfile
import time
from pathlib import Path

from absl import app, flags

import common
import conv_peak
from tf_distill import cli
from tf_distill.outputs import check_output

_SIZE = flags.DEFINE_enum("size", "256", ["256", "1024"], "Resolution of the paper's teacher and student.")
_REPEATS = common.define_repeats(5, "Timed calls per model and batch.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A new or empty folder to keep the exports in (default: a "
                               "temporary folder, deleted at the end).")
_TFLITE = flags.DEFINE_bool("tflite", True, "Also convert and time the TFLite student (--notflite skips it).")


def dir_size(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def summarize(times, batch):
    import numpy as np  # pylint: disable=import-outside-toplevel

    t = np.asarray(times)
    return {"batch": batch, "p50_ms": float(np.percentile(t, 50) * 1e3), "p99_ms": float(np.percentile(t, 99) * 1e3),
            "images_per_s": float(batch / np.median(t))}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _WORKDIR.value:
        return bench(check_output(_WORKDIR.value, flag="--workdir"))
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as work:
        return bench(Path(work))


def bench(work):
    """Exports into the new or empty folder ``work`` and prints the measurements."""
    tf = cli.import_tensorflow()
    import keras  # pylint: disable=import-outside-toplevel

    import numpy as np  # pylint: disable=import-outside-toplevel

    from tf_distill.configs import paper_models  # pylint: disable=import-outside-toplevel
    from tf_distill.export import savedmodel, tflite  # pylint: disable=import-outside-toplevel
    from tf_distill.model_stats import generator_flops  # pylint: disable=import-outside-toplevel
    from tf_distill.models import Generator  # pylint: disable=import-outside-toplevel

    if _TFLITE.value:
        tflite.require_litert()  # one error line now rather than after the SavedModel timings
    px = int(_SIZE.value)
    keras.utils.set_random_seed(0)
    results = {"device": "CPU", "threads": os.cpu_count(), "tensorflow": tf.__version__, "models": {}}
    generators, calls = {}, {}
    psi = tf.constant(1.0)
    for role in ("teacher", "student"):
        g = Generator(**paper_models.MODELS[f"ffhq{px}_{role}"]().to_dict())
        g.build()
        generators[role] = g
        t0 = time.perf_counter()
        path = savedmodel.export_saved_model(g, work / role, version=1, w_avg_samples=1024)
        export_s = time.perf_counter() - t0
        sig = tf.saved_model.load(str(path)).signatures["from_seeds"]
        for batch in (1, 8):
            seeds = tf.range(batch, dtype=tf.int64)
            calls[role, batch] = (lambda sig, seeds: lambda: sig(seeds=seeds, truncation_psi=psi))(sig, seeds)
        results["models"][role] = {"params": int(g.count_params()), "saved_model_bytes": dir_size(path),
                                   "export_s": export_s, "macs_per_image": generator_flops(g)}
    calls["peak"], peak_macs = conv_peak.peak_conv()
    times = common.timed_in_turns(calls, _REPEATS.value)
    peak = peak_macs / float(np.median(times.pop("peak")))
    for role in ("teacher", "student"):
        report = results["models"][role]
        report["saved_model"] = [summarize(times[role, batch], batch) for batch in (1, 8)]
        for row in report["saved_model"]:
            row["macs_per_s"] = report["macs_per_image"] * row["images_per_s"]
        print(json.dumps({role: report}), flush=True)
    results["peak_3x3_conv_macs_per_s"] = peak
    for i, batch in enumerate((1, 8)):
        student, teacher = (results["models"][role]["saved_model"][i] for role in ("student", "teacher"))
        results[f"student_over_teacher_images_per_s_batch{batch}"] = student["images_per_s"] / teacher["images_per_s"]
        results[f"student_over_teacher_macs_per_s_batch{batch}"] = student["macs_per_s"] / teacher["macs_per_s"]
        results[f"student_fraction_of_peak_batch{batch}"] = student["macs_per_s"] / peak
        print(f"batch {batch}: teacher {teacher['macs_per_s'] / 1e9:.2f} GMAC/s, "
              f"student {student['macs_per_s'] / 1e9:.2f} GMAC/s, student/teacher efficiency "
              f"{student['macs_per_s'] / teacher['macs_per_s']:.0%}, student at "
              f"{student['macs_per_s'] / peak:.0%} of the 3x3-conv peak ({peak / 1e9:.2f} GMAC/s)", flush=True)
    if _TFLITE.value:
        results["tflite_student"] = bench_tflite(generators["student"], work, _REPEATS.value)
    print(json.dumps(results, indent=2))


def bench_tflite(generator, work, reps):
    """TFLite student variants vs the student SavedModel (``work/student/1``) at batch 1, timed in turns."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tf_distill.export import savedmodel, tflite  # pylint: disable=import-outside-toplevel

    student_path = work / "student" / "1"
    loaded = tf.saved_model.load(str(student_path))
    z = savedmodel.z_from_seeds(np.arange(8, dtype=np.int64), generator.style_dim).numpy()
    reference = tflite.saved_model_images(student_path, z)
    sig = loaded.signatures["from_seeds"]
    seed, psi = tf.constant([0], tf.int64), tf.constant(1.0)
    calls = {"saved_model": lambda: sig(seeds=seed, truncation_psi=psi)}
    reports = {}
    for quantize in (None, "float16", "dynamic_int8"):
        name = quantize or "float32"
        out, size = tflite.convert(generator, loaded.w_avg.numpy(), work / f"student_{name}.tflite", quantize=quantize)
        reports[name] = {"bytes": size, **tflite.compare(out, reference, z)}
        runner = tflite.interpreter(out).get_signature_runner()
        calls[name] = (lambda r: lambda: r(z=z[:1], truncation_psi=np.float32(1.0)))(runner)
    times = common.timed_in_turns(calls, reps)
    saved = summarize(times.pop("saved_model"), 1)
    results = {"saved_model_batch1": saved}
    for name, report in reports.items():
        report.update(summarize(times[name], 1))
        report["over_saved_model_batch1"] = report["images_per_s"] / saved["images_per_s"]
        results[name] = report
        print(json.dumps({f"tflite_{name}": report}), flush=True)
    return results


def run():
    cli.run(main, tensorflow=False)  # --workdir is checked before TensorFlow loads


if __name__ == "__main__":
    run()
