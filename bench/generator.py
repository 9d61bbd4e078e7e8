"""Images/s on CPU of the FFHQ-256 teacher and the CAGAN 0.7-pruned student, side by side in one run.

    .venv/bin/python bench/generator.py [--batch=4] [--repeats=5] [--impl=auto|ref|custom] [--nofold]
    .venv/bin/python bench/generator.py --compare_impl    # the teacher with reference vs custom ops
    .venv/bin/python bench/generator.py --compare_fold    # both models, folded vs unfused inference form
    .venv/bin/python bench/generator.py --compare_conv    # both models, compiled direct conv vs TensorFlow's convs

Random weights and random noise (the speed does not depend on the values). Both models and a
512-channel 3x3 conv (the machine's conv peak, bench/conv_peak.py) are run in turn inside each
repeat (common.timed_in_turns: an untimed call, then timed calls filling 0.5 s), so machine load
affects them alike; rates are of the medians. Efficiency is MACs/s, MACs counted as
tf_distill.model_stats counts them (the paper's FLOPs).
"""

from absl import app, flags

import common
import conv_peak
from tf_distill import cli

_BATCH = common.define_batch(4)
_REPEATS = common.define_repeats(5)
_IMPL = common.define_impl()
_COMPARE_IMPL = flags.DEFINE_bool("compare_impl", False, "Instead: the 256 px teacher forward with reference vs "
                                  "custom ops, side by side (--impl is then ignored).")
_FOLD = flags.DEFINE_bool("fold", True, "Run the inference form (layers/modulated.py: styles folded into "
                          "conv weights, fewer passes); "
                          "--nofold times the unfused form.")
_COMPARE_FOLD = flags.DEFINE_bool("compare_fold", False, "Instead: each model with the folded and the unfused "
                                  "inference form, side by side.")
_COMPARE_CONV = flags.DEFINE_bool("compare_conv", False, "Instead: each model with the compiled direct 3x3 conv "
                                  "(ops.conv3x3, the default) and with TensorFlow's convs everywhere, side by side.")


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
    times = common.timed_in_turns({impl: (lambda fn=fn: fn(z).numpy()) for impl, fn in fns.items()}, repeats)
    med = {impl: float(np.median(t)) for impl, t in times.items()}
    for impl, m in med.items():
        print(f"teacher 256 px forward, {impl:<6} ops: {m * 1000:9.1f} ms/batch ({batch / m:.2f} images/s)")
    print(f"custom/ref speed ratio: {med['ref'] / med['custom']:.2f}x")


def interleaved(fns, repeats):
    """{name: median seconds per call} of the zero-argument ``fns``, timed in turns (common.timed_in_turns)."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    return {name: float(np.median(t)) for name, t in common.timed_in_turns(fns, repeats).items()}


def generator_fn(g, batch, fold, direct_conv=True):
    """A zero-argument function running ``g`` on a fixed z batch (traced and warmed up here).

    ``direct_conv=False`` traces it with ops.conv3x3's minimum width for the compiled conv out of reach,
    so that every conv is TensorFlow's (the choice is made while tracing).
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tf_distill.layers.forms import inference_form  # pylint: disable=import-outside-toplevel
    from tf_distill.ops import conv3x3  # pylint: disable=import-outside-toplevel

    z = tf.random.normal([batch, g.style_dim])
    min_width = conv3x3.DIRECT_MIN_WIDTH
    try:
        conv3x3.DIRECT_MIN_WIDTH = min_width if direct_conv else float("inf")
        with inference_form(fold):
            fn = tf.function(lambda z: g(z))
            fn(z).numpy()  # trace (with the folding and conv choices) and warm up
    finally:
        conv3x3.DIRECT_MIN_WIDTH = min_width
    return lambda: fn(z).numpy()


def efficiency_lines(flops, batch, medians, peak_name="peak 3x3 conv"):
    """The efficiency report: MACs/s per model, student/teacher ratio, the peak and the student's fraction of it."""
    peak = conv_peak.MACS / medians[peak_name]
    lines = [f"{peak_name} (512 ch, 32 px, batch {conv_peak.BATCH}): {peak / 1e9:7.2f} GMAC/s"]
    rate = {}
    for name, macs in flops.items():
        rate[name] = macs * batch / medians[name]
        lines.append(f"{name:<18} {medians[name] * 1000:9.1f} ms/batch {batch / medians[name]:8.2f} images/s "
                     f"{macs / 1e9:7.2f} GMACs/image {rate[name] / 1e9:7.2f} GMAC/s ({rate[name] / peak:.0%} of peak)")
    student, teacher = rate["ffhq256_student"], rate["ffhq256_teacher"]
    lines.append(f"student/teacher speed ratio: {medians['ffhq256_teacher'] / medians['ffhq256_student']:.2f}x "
                 f"(MAC ratio {flops['ffhq256_teacher'] / flops['ffhq256_student']:.2f}x)")
    lines.append(f"student/teacher efficiency (MACs/s): {student / teacher:.0%}; student at {student / peak:.0%} "
                 "of the 3x3-conv peak")
    return lines


def compare(models, flops, batch, repeats, peak_fn, what, variants):
    """Both models in each of ``variants`` ({label: generator_fn keyword arguments}), timed side by side:
    prints each variant's efficiency report, then each model's speed-up of the second variant over the first."""
    fns = {f"{name} {label}": generator_fn(g, batch, **kwargs) for name, g in models.items()
           for label, kwargs in variants.items()}
    medians = interleaved({**fns, "peak 3x3 conv": peak_fn}, repeats)
    for label in variants:
        print(f"--- {what}: {label}")
        print("\n".join(efficiency_lines(flops, batch, {
            **{name: medians[f"{name} {label}"] for name in models}, "peak 3x3 conv": medians["peak 3x3 conv"]})))
    base, new = list(variants)
    for name in models:
        print(f"{name}: {new}/{base} speed-up {medians[f'{name} {base}'] / medians[f'{name} {new}']:.2f}x")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    batch, repeats = _BATCH.value, _REPEATS.value
    if _COMPARE_IMPL.value:
        return compare_impl(batch, repeats)
    common.check_impl(_IMPL.value)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tf_distill.configs.paper_models import MODELS  # pylint: disable=import-outside-toplevel
    from tf_distill.model_stats import generator_flops  # pylint: disable=import-outside-toplevel
    from tf_distill.models import Generator  # pylint: disable=import-outside-toplevel

    models = {name: Generator(**MODELS[name]().to_dict(), impl=_IMPL.value)
              for name in ("ffhq256_teacher", "ffhq256_student")}
    for g in models.values():
        g.build()
    flops = {name: generator_flops(g) for name, g in models.items()}
    print(f"CPU threads: inter {tf.config.threading.get_inter_op_parallelism_threads()} "
          f"intra {tf.config.threading.get_intra_op_parallelism_threads()}; batch {batch}, "
          f"{repeats} repeats, median; impl {_IMPL.value}")
    peak_fn, _ = conv_peak.peak_conv()
    if _COMPARE_FOLD.value:
        return compare(models, flops, batch, repeats, peak_fn, "inference form",
                       {"unfused": dict(fold=False), "folded": dict(fold=True)})
    if _COMPARE_CONV.value:
        return compare(models, flops, batch, repeats, peak_fn, "3x3 convs",
                       {"tf conv": dict(fold=_FOLD.value, direct_conv=False),
                        "direct conv": dict(fold=_FOLD.value, direct_conv=True)})
    fns = {name: generator_fn(g, batch, _FOLD.value) for name, g in models.items()}
    print("\n".join(efficiency_lines(flops, batch, interleaved({**fns, "peak 3x3 conv": peak_fn}, repeats))))
    return None


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
