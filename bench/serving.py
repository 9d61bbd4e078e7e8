"""Serving benchmark: exported teacher vs student SavedModels (and the TFLite student), CPU, one run.

    python bench/serving.py [--size=256|1024] [--repeats=5] [--workdir=DIR] [--notflite]

Builds the paper's teacher and 0.7-pruned student (configs/paper_models.py) with random weights,
exports both with tf-distill-export's code, and prints per model and batch (1 and 8) the latency
p50/p99 and images/s of the SavedModel's ``from_seeds`` signature, the student/teacher
throughput ratio, the export sizes, and for the TFLite student (float32, float16, dynamic int8)
size, latency and max abs pixel error against the student SavedModel. The exports go to a
temporary folder, deleted at the end, or to ``--workdir`` (a new or empty folder, kept).
"""

import json
import os
import tempfile
import time
from pathlib import Path

from absl import app, flags

import common
from tf_distill import cli
from tf_distill.outputs import check_output

_SIZE = flags.DEFINE_enum("size", "256", ["256", "1024"], "Resolution of the paper's teacher and student.")
_REPEATS = common.define_repeats(5, "Timed calls per model and batch.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A new or empty folder to keep the exports in (default: a "
                               "temporary folder, deleted at the end).")
_TFLITE = flags.DEFINE_bool("tflite", True, "Also convert and time the TFLite student (--notflite skips it).")


def dir_size(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def time_calls(fn, reps):
    fn()  # warm-up (first call builds the executor)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def summarize(times, batch):
    import numpy as np  # pylint: disable=import-outside-toplevel

    t = np.asarray(times)
    return {"batch": batch, "p50_ms": float(np.percentile(t, 50) * 1e3), "p99_ms": float(np.percentile(t, 99) * 1e3),
            "images_per_s": float(batch / t.mean())}


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
    from tf_distill.models import Generator  # pylint: disable=import-outside-toplevel

    px = int(_SIZE.value)
    keras.utils.set_random_seed(0)
    results = {"device": "CPU", "threads": os.cpu_count(), "tensorflow": tf.__version__, "models": {}}
    generators = {}
    for role in ("teacher", "student"):
        g = Generator(**paper_models.MODELS[f"ffhq{px}_{role}"]().to_dict())
        g.build()
        generators[role] = g
        t0 = time.perf_counter()
        path = savedmodel.export_saved_model(g, work / role, version=1, w_avg_samples=1024)
        export_s = time.perf_counter() - t0
        sig = tf.saved_model.load(str(path)).signatures["from_seeds"]
        rows = []
        for batch in (1, 8):
            seeds = tf.range(batch, dtype=tf.int64)
            psi = tf.constant(1.0)
            rows.append(summarize(time_calls(lambda: sig(seeds=seeds, truncation_psi=psi), _REPEATS.value), batch))
        results["models"][role] = {"params": int(g.count_params()), "saved_model_bytes": dir_size(path),
                                   "export_s": export_s, "saved_model": rows}
        print(json.dumps({role: results["models"][role]}), flush=True)
    for i, batch in enumerate((1, 8)):
        results[f"student_over_teacher_images_per_s_batch{batch}"] = (
            results["models"]["student"]["saved_model"][i]["images_per_s"]
            / results["models"]["teacher"]["saved_model"][i]["images_per_s"])
    if _TFLITE.value:
        student_path = work / "student" / "1"
        w_avg = tf.saved_model.load(str(student_path)).w_avg.numpy()
        z = savedmodel.z_from_seeds(np.arange(4, dtype=np.int64), 512).numpy()
        reference = tflite.saved_model_images(student_path, z)
        results["tflite_student"] = {}
        for quantize in (None, "float16", "dynamic_int8"):
            out, size = tflite.convert(generators["student"], w_avg, work / f"student_{quantize or 'float32'}.tflite",
                                       quantize=quantize)
            report = tflite.compare(out, reference, z)
            interpreter = tf.lite.Interpreter(model_path=str(out))
            runner = interpreter.get_signature_runner()
            z1, one = z[:1], np.float32(1.0)
            timed = time_calls(lambda: runner(z=z1, truncation_psi=one), _REPEATS.value)
            report.update(bytes=size, **summarize(timed, 1))
            results["tflite_student"][quantize or "float32"] = report
            print(json.dumps({f"tflite_{quantize or 'float32'}": report}), flush=True)
    print(json.dumps(results, indent=2))


def run():
    cli.run(main, tensorflow=False)  # --workdir is checked before TensorFlow loads


if __name__ == "__main__":
    run()
