"""Serving benchmark: exported teacher vs student SavedModels (and the TFLite student), CPU, one run.

    python export/bench_serving.py [--size=256] [--reps=5] [--workdir=/tmp/bench_serving] [--no_tflite]

Builds the paper's teacher and 0.7-pruned student (configs/paper_models.py) with random weights,
exports both with tf-distill-export's code, and prints per model and batch (1 and 8) the latency
p50/p99 and images/s of the SavedModel's ``from_seeds`` signature, the student/teacher
throughput ratio, the export sizes, and for the TFLite student (float32, float16, dynamic int8)
size, latency and max abs pixel error against the student SavedModel.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, choices=[256, 1024])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--workdir", default="/tmp/bench_serving")
    parser.add_argument("--no_tflite", action="store_true")
    args = parser.parse_args()

    import keras  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from configs import paper_models  # pylint: disable=import-outside-toplevel
    from tf_distill.export import savedmodel, tflite  # pylint: disable=import-outside-toplevel
    from tf_distill.models import Generator  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(0)
    work = Path(args.workdir)
    results = {"device": "CPU", "threads": os.cpu_count(), "tensorflow": tf.__version__, "models": {}}
    generators = {}
    for role in ("teacher", "student"):
        g = Generator(**paper_models.MODELS[f"ffhq{args.size}_{role}"]().to_dict())
        g.build()
        generators[role] = g
        t0 = time.perf_counter()
        path = savedmodel.export_saved_model(g, work / role, version=1, overwrite=True, w_avg_samples=1024)
        export_s = time.perf_counter() - t0
        sig = tf.saved_model.load(str(path)).signatures["from_seeds"]
        rows = []
        for batch in (1, 8):
            seeds = tf.range(batch, dtype=tf.int64)
            psi = tf.constant(1.0)
            rows.append(summarize(time_calls(lambda: sig(seeds=seeds, truncation_psi=psi), args.reps), batch))
        results["models"][role] = {"params": int(g.count_params()), "saved_model_bytes": dir_size(path),
                                   "export_s": export_s, "saved_model": rows}
        print(json.dumps({role: results["models"][role]}), flush=True)
    for i, batch in enumerate((1, 8)):
        results[f"student_over_teacher_images_per_s_batch{batch}"] = (
            results["models"]["student"]["saved_model"][i]["images_per_s"]
            / results["models"]["teacher"]["saved_model"][i]["images_per_s"])
    if not args.no_tflite:
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
            report.update(bytes=size, **summarize(time_calls(lambda: runner(z=z1, truncation_psi=one), args.reps), 1))
            results["tflite_student"][quantize or "float32"] = report
            print(json.dumps({f"tflite_{quantize or 'float32'}": report}), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
