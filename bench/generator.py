"""Images/s on CPU of the FFHQ-256 teacher and the CAGAN 0.7-pruned student, side by side in one run.

    .venv/bin/python bench/generator.py [--batch=4] [--repeats=5] [--impl=auto|ref|custom]
    .venv/bin/python bench/generator.py --compare_impl    # the teacher with reference vs custom ops

Random weights and random noise (the speed does not depend on the values). Both models are run
in turn inside each repeat, so machine load affects them alike; the ratio is of the medians.
"""

import time

from absl import app, flags

import common
from tf_distill import cli

_BATCH = common.define_batch(4)
_REPEATS = common.define_repeats(5)
_IMPL = common.define_impl()
_COMPARE_IMPL = flags.DEFINE_bool("compare_impl", False, "Instead: the 256 px teacher forward with reference vs "
                                  "custom ops, side by side (--impl is then ignored).")


def time_generator(g, batch, repeats):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    z = tf.random.normal([batch, g.style_dim])
    fn = tf.function(lambda z: g(z))
    fn(z)  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(z).numpy()
        times.append(time.perf_counter() - start)
    return times


def compare_impl(batch, repeats):
    """Teacher forward (256 px), one model per impl with the same weights; runs interleaved so load drifts hit both."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tf_distill.configs.paper_models import MODELS  # pylint: disable=import-outside-toplevel
    from tf_distill.models import Generator  # pylint: disable=import-outside-toplevel

    common.require_custom_ops("--compare_impl")
    z = tf.random.normal([batch, MODELS["ffhq256_teacher"]().style_dim])
    fns, weights = {}, None
    for impl in ("ref", "custom"):
        g = Generator(**MODELS["ffhq256_teacher"]().to_dict(), impl=impl)
        g.build()
        if weights is None:
            weights = g.get_weights()
        g.set_weights(weights)
        fns[impl] = tf.function(lambda z, g=g: g(z))
        fns[impl](z).numpy()
    times = {impl: [] for impl in fns}
    for _ in range(repeats):
        for impl, fn in fns.items():
            start = time.perf_counter()
            fn(z).numpy()
            times[impl].append(time.perf_counter() - start)
    med = {impl: float(np.median(t)) for impl, t in times.items()}
    for impl, m in med.items():
        print(f"teacher 256 px forward, {impl:<6} ops: {m * 1000:9.1f} ms/batch ({batch / m:.2f} images/s)")
    print(f"custom/ref speed ratio: {med['ref'] / med['custom']:.2f}x")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    batch, repeats = _BATCH.value, _REPEATS.value
    if _COMPARE_IMPL.value:
        return compare_impl(batch, repeats)
    common.check_impl(_IMPL.value)
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tf_distill.configs.paper_models import MODELS  # pylint: disable=import-outside-toplevel
    from tf_distill.model_stats import generator_flops  # pylint: disable=import-outside-toplevel
    from tf_distill.models import Generator  # pylint: disable=import-outside-toplevel

    models = {name: Generator(**MODELS[name]().to_dict(), impl=_IMPL.value)
              for name in ("ffhq256_teacher", "ffhq256_student")}
    times = {name: [] for name in models}
    for name, g in models.items():
        g.build()
        time_generator(g, batch, 1)
    for _ in range(repeats):  # interleaved so that load drifts hit both models
        for name, g in models.items():
            times[name] += time_generator(g, batch, 1)
    print(f"CPU threads: inter {tf.config.threading.get_inter_op_parallelism_threads()} "
          f"intra {tf.config.threading.get_intra_op_parallelism_threads()}; batch {batch}, "
          f"{repeats} repeats, median")
    rates, flops = {}, {name: generator_flops(g) for name, g in models.items()}
    for name in models:
        median = float(np.median(times[name]))
        rates[name] = batch / median
        print(f"{name:<18} {median * 1000:9.1f} ms/batch {rates[name]:8.2f} images/s "
              f"{flops[name] / 1e9:7.2f} GFLOPs")
    print(f"student/teacher speed ratio: {rates['ffhq256_student'] / rates['ffhq256_teacher']:.2f}x "
          f"(FLOP ratio {flops['ffhq256_teacher'] / flops['ffhq256_student']:.2f}x)")
    return None


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
