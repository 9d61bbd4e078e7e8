"""Images/s on CPU of the FFHQ-256 teacher and the CAGAN 0.7-pruned student, side by side in one run.

    .venv/bin/python bench/generator.py [--batch 4] [--repeats 5] [--impl auto|ref|custom]

Random weights and random noise (the speed does not depend on the values). Both models are run
in turn inside each repeat, so machine load affects them alike; the ratio is of the medians.
"""

import argparse
import os
import time

import numpy as np
import tensorflow as tf

from configs.paper_models import MODELS
from tf_distill.model_stats import generator_flops
from tf_distill.models import Generator


def time_generator(g, batch, repeats):
    z = tf.random.normal([batch, g.style_dim])
    fn = tf.function(lambda z: g(z))
    fn(z)  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(z).numpy()
        times.append(time.perf_counter() - start)
    return times


def compare_impl(args):
    """Teacher forward (256 px) traced once per impl; runs interleaved so load drifts hit both."""
    g = Generator(**MODELS["ffhq256_teacher"]().to_dict())
    g.build()
    z = tf.random.normal([args.batch, g.style_dim])
    fns = {}
    for impl in ("ref", "custom"):
        os.environ["TF_DISTILL_OPS_IMPL"] = impl  # read while tracing
        fns[impl] = tf.function(lambda z: g(z))
        fns[impl](z).numpy()
    times = {impl: [] for impl in fns}
    for _ in range(args.repeats):
        for impl, fn in fns.items():
            start = time.perf_counter()
            fn(z).numpy()
            times[impl].append(time.perf_counter() - start)
    med = {impl: float(np.median(t)) for impl, t in times.items()}
    for impl, m in med.items():
        print(f"teacher 256 px forward, {impl:<6} ops: {m * 1000:9.1f} ms/batch ({args.batch / m:.2f} images/s)")
    print(f"custom/ref speed ratio: {med['ref'] / med['custom']:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--impl", default=None, help="ops implementation (default: TF_DISTILL_OPS_IMPL or auto)")
    parser.add_argument("--compare_impl", action="store_true",
                        help="instead: the 256 px teacher forward with reference vs custom ops, side by side")
    args = parser.parse_args()
    if args.compare_impl:
        return compare_impl(args)
    if args.impl:
        os.environ["TF_DISTILL_OPS_IMPL"] = args.impl
    models = {name: Generator(**MODELS[name]().to_dict()) for name in ("ffhq256_teacher", "ffhq256_student")}
    times = {name: [] for name in models}
    for name, g in models.items():
        g.build()
        time_generator(g, args.batch, 1)
    for _ in range(args.repeats):  # interleaved so that load drifts hit both models
        for name, g in models.items():
            times[name] += time_generator(g, args.batch, 1)
    print(f"CPU threads: inter {tf.config.threading.get_inter_op_parallelism_threads()} "
          f"intra {tf.config.threading.get_intra_op_parallelism_threads()}; batch {args.batch}, "
          f"{args.repeats} repeats, median")
    rates = {}
    for name, g in models.items():
        median = float(np.median(times[name]))
        rates[name] = args.batch / median
        print(f"{name:<18} {median * 1000:9.1f} ms/batch {rates[name]:8.2f} images/s "
              f"{generator_flops(g) / 1e9:7.2f} GFLOPs")
    print(f"student/teacher speed ratio: {rates['ffhq256_student'] / rates['ffhq256_teacher']:.2f}x "
          f"(FLOP ratio {generator_flops(models['ffhq256_teacher']) / generator_flops(models['ffhq256_student']):.2f}x)")


if __name__ == "__main__":
    main()
