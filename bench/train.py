"""Stage-2 distillation steps/s on CPU: reference vs custom ops, side by side in one run.

    .venv/bin/python bench/train.py                       # the demo config (32 px), batch 8
    .venv/bin/python bench/train.py --paper --batch=4     # the FFHQ-256 paper config (random teacher), slow

Each impl gets its own models and step functions, built and traced inside
``ops.implementation(impl)``. The three kinds of step of the schedule (spec C.4) are traced once,
then timed: D with R1 and G with path length (1 step in 16), G with path length (3 in 16), plain
(12 in 16); the timed calls alternate between the impls so machine load affects both alike.
steps/s is of the schedule's 16-step cycle, from the median time of each kind. The content-aware
mask's cost (the face-parsing network at 512 px on the teacher's images of one step, random
weights: the cost does not depend on them) is timed in the same loop and printed next to the step.
"""

import os
import tempfile
import time

from absl import app, flags

import common
from tf_distill import cli

_PAPER = flags.DEFINE_bool("paper", False, "FFHQ-256 paper config (random teacher) instead of the demo.")
_BATCH = common.define_batch(None, "Images per batch (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps of each kind per impl.", lower_bound=1)


def make_step(config, impl, teacher_path):
    """The models and StyleKD step of ``config``, built with the ``impl`` ops."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tf_distill import ops  # pylint: disable=import-outside-toplevel
    from tf_distill.metrics.lpips import LPIPS  # pylint: disable=import-outside-toplevel
    from tf_distill.train.loop import build_models  # pylint: disable=import-outside-toplevel
    from tf_distill.train.step import TrainStep  # pylint: disable=import-outside-toplevel

    config.teacher = teacher_path
    strategy = tf.distribute.get_strategy()
    with ops.implementation(impl):
        g, g_ema, d, teacher = build_models(config, strategy)
        return TrainStep(strategy, g, g_ema, d, config, teacher, LPIPS(), seed=0)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tf_distill import ops  # pylint: disable=import-outside-toplevel
    from tf_distill.models import Generator  # pylint: disable=import-outside-toplevel
    from tf_distill.ops import _loader  # pylint: disable=import-outside-toplevel

    if _PAPER.value:
        from tf_distill.configs.ffhq256_stylekd import get_config  # pylint: disable=import-outside-toplevel
        from tf_distill.configs.paper_models import MODELS  # pylint: disable=import-outside-toplevel

        config = get_config("paper")
        teacher = Generator(**MODELS["ffhq256_teacher"]().to_dict())
        teacher.build()
        teacher_path = os.path.join(tempfile.mkdtemp(), "teacher.keras")
        teacher.save(teacher_path)
    else:
        from tf_distill.configs.demo_distill import get_config  # pylint: disable=import-outside-toplevel

        config = get_config()
        teacher_path = config.teacher
    config.train.batch_size = _BATCH.value or config.train.batch_size
    config.kd.warmup_steps = 0
    impls = ["ref"] + (["custom"] if _loader.custom_ops_library() is not None else [])
    steps = {impl: make_step(config, impl, teacher_path) for impl in impls}
    size = config.generator.size
    real = tf.random.stateless_uniform([config.train.batch_size, size, size, 3], [0, 1], -1, 1)
    # iteration -> kind of step: 0 (R1 + path length), 4 (path length), 1 (plain); weights per 16 steps
    kinds = {"r1+pl": (0, 1), "pl": (config.train.g_reg_every, 16 // config.train.g_reg_every - 1), "plain": (1, 0)}
    kinds["plain"] = (1, 16 - kinds["r1+pl"][1] - kinds["pl"][1])

    from tf_distill.losses.content_mask import content_mask  # pylint: disable=import-outside-toplevel
    from tf_distill.models.face_parsing import FaceParsingNet  # pylint: disable=import-outside-toplevel

    parser_net = FaceParsingNet()
    mask_fn = tf.function(lambda images: content_mask(parser_net, images))

    def run_mask():
        start = time.perf_counter()
        float(tf.reduce_sum(mask_fn(real)))
        return time.perf_counter() - start

    def run(impl, iteration):
        step = steps[impl]
        step.step.assign(iteration)
        start = time.perf_counter()
        with ops.implementation(impl):  # the first call of each kind traces it
            float(step.train_step(real)["g_loss"])
        return time.perf_counter() - start

    for impl in steps:  # trace every kind once
        for iteration, _ in kinds.values():
            run(impl, iteration)
    run_mask()
    times = {impl: {kind: [] for kind in kinds} for impl in steps}
    mask_times = []
    for _ in range(_STEPS.value):
        for kind, (iteration, _) in kinds.items():
            for impl in steps:
                times[impl][kind].append(run(impl, iteration))
        mask_times.append(run_mask())
    print(f"{'paper 256 px' if _PAPER.value else 'demo 32 px'} stage 2, batch {config.train.batch_size}, "
          f"median of {_STEPS.value} timed steps of each kind, CPU")
    cycle = {}
    for impl, by_kind in times.items():
        med = {kind: float(np.median(t)) for kind, t in by_kind.items()}
        cycle[impl] = sum(med[kind] * weight for kind, (_, weight) in kinds.items()) / 16
        per_kind = "  ".join(f"{kind} {m:.3f} s" for kind, m in med.items())
        print(f"  {impl:<6} ops: {per_kind}  ->  {cycle[impl]:.3f} s/step, {1 / cycle[impl]:.3f} steps/s")
    if len(cycle) == 2:
        print(f"  custom/ref speed ratio: {cycle['ref'] / cycle['custom']:.2f}x")
    else:
        print("  custom ops not built (custom_ops/build.sh): reference only")
    mask_s, fastest = float(np.median(mask_times)), cycle[impls[-1]]
    print(f"  content-aware mask (face parsing at 512 px, batch {config.train.batch_size}): {mask_s:.3f} s per step, "
          f"{100 * mask_s / fastest:.0f}% of the {impls[-1]}-ops step")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
