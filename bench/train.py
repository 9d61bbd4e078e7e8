"""Stage-2 distillation steps/s on CPU: reference vs custom ops, side by side in one run.

    .venv/bin/python bench/train.py                       # the demo config (32 px), batch 8
    .venv/bin/python bench/train.py --paper --batch 4     # the FFHQ-256 paper config (random teacher), slow

Each impl gets its own models and traced step functions (the impl is read while tracing); the
timed steps alternate between the two so machine load affects both alike. Steps are timed
after every variant (R1, path length) has been traced once.
"""

import argparse
import os
import tempfile
import time

import numpy as np
import tensorflow as tf


def make_step(config, impl, teacher_path):
    os.environ["TF_DISTILL_OPS_IMPL"] = impl
    from tf_distill.metrics.lpips import LPIPS  # pylint: disable=import-outside-toplevel
    from tf_distill.train.loop import build_models  # pylint: disable=import-outside-toplevel
    from tf_distill.train.stylekd import StyleKDStep  # pylint: disable=import-outside-toplevel

    config.teacher = teacher_path
    strategy = tf.distribute.get_strategy()
    g, g_ema, d, teacher = build_models(config, strategy)
    return StyleKDStep(strategy, g, g_ema, d, config, teacher, LPIPS(), seed=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", action="store_true", help="FFHQ-256 paper config instead of the demo")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per impl")
    args = parser.parse_args()
    from tf_distill.models import Generator  # pylint: disable=import-outside-toplevel
    from tf_distill.ops import _loader  # pylint: disable=import-outside-toplevel

    if args.paper:
        from configs.ffhq256_stylekd import get_config  # pylint: disable=import-outside-toplevel
        from configs.paper_models import MODELS  # pylint: disable=import-outside-toplevel

        config = get_config("paper")
        teacher = Generator(**MODELS["ffhq256_teacher"]().to_dict())
        teacher.build()
        teacher_path = os.path.join(tempfile.mkdtemp(), "teacher.keras")
        teacher.save(teacher_path)
    else:
        from configs.demo_distill import get_config  # pylint: disable=import-outside-toplevel

        config = get_config()
        teacher_path = config.teacher
    config.train.batch_size = args.batch or config.train.batch_size
    config.kd.g_step = 0
    impls = ["ref"] + (["custom"] if _loader.custom_ops_library() is not None else [])
    steps = {impl: make_step(config, impl, teacher_path) for impl in impls}
    size = config.generator.size
    real = tf.random.stateless_uniform([config.train.batch_size, size, size, 3], [0, 1], -1, 1)
    for impl, step in steps.items():  # trace all three variants: R1 + path length, path length, plain
        os.environ["TF_DISTILL_OPS_IMPL"] = impl
        for _ in range(config.train.d_reg_every + 1):
            step.train_step(real)
    times = {impl: [] for impl in steps}
    for _ in range(args.steps):
        for impl, step in steps.items():
            start = time.perf_counter()
            float(step.train_step(real)["g_loss"])
            times[impl].append(time.perf_counter() - start)
    print(f"{'paper 256 px' if args.paper else 'demo 32 px'} stage 2, batch {config.train.batch_size}, "
          f"{args.steps} steps each (mixed R1/path-length steps), CPU")
    for impl, t in times.items():
        print(f"  {impl:<6} ops: {np.mean(t):8.3f} s/step  {1 / np.mean(t):7.3f} steps/s")
    if len(times) == 2:
        print(f"  custom/ref speed ratio: {np.mean(times['ref']) / np.mean(times['custom']):.2f}x")
    else:
        print("  custom ops not built (custom_ops/build.sh): reference only")


if __name__ == "__main__":
    main()
