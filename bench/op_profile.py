"""Where a generator forward spends its CPU time: TensorFlow's profiler, op time grouped by kind.

    .venv/bin/python bench/op_profile.py [--model=ffhq256_student] [--batches=1,8] [--repeats=3] \
        [--impl=auto|ref|custom] [--nofold] [--serialize]

Profiles ``--repeats`` calls of the traced forward (random weights and noise) per batch size and
prints, per op kind, the op time per batch (summed over the profiler's TensorFlow op events, so
ops running side by side both count; the wall time is printed next to it), then every conv
layer's MACs/s and its fraction of the machine's 3x3-conv peak (bench/conv_peak.py, timed in the
same run). ``--serialize`` runs one op at a time (one inter-op thread), so the op times add up to
the wall time and show what each kind costs on its own. Named op_profile, not profile: this folder is on sys.path and would shadow the stdlib.
"""

import collections
import os
import re
import sys
import tempfile
from pathlib import Path

from absl import app, flags

import common
import conv_peak
from tf_distill import cli

_MODEL = flags.DEFINE_enum("model", "ffhq256_student", ["ffhq256_student", "ffhq256_teacher"],
                           "Which of the paper's generators (random weights).")
_BATCHES = common.define_int_list("batches", [1, 8], "Batch sizes to profile.")
_REPEATS = common.define_repeats(3, "Profiled calls per batch size (times are per call).")
_IMPL = common.define_impl()
_FOLD = flags.DEFINE_bool("fold", True, "Run the inference form (layers/modulated.py: styles folded into "
                          "conv weights, fewer passes); "
                          "--nofold profiles the unfused form.")
_SERIALIZE = flags.DEFINE_bool("serialize", False, "One op at a time (one inter-op thread): op times add up to "
                               "the wall time, none overlap.")

KINDS = ("conv", "transposed conv", "upfirdn2d blurs", "modulation/demodulation", "noise", "bias-act",
         "ToRGB and skip upsampling", "copies/transposes/loop", "mapping", "other")
_CONV_TYPES = ("Conv2D", "_FusedConv2D", "_MklConv2D", "_MklFusedConv2D", "_MklNativeConv2D",
               "_MklNativeFusedConv2D")
_COPY_TYPES = ("Transpose", "Tile", "ConcatV2", "Pack", "Unpack", "Identity", "BroadcastTo", "StridedSlice",
               "TensorListFromTensor", "TensorListStack", "TensorListGetItem", "TensorListSetItem", "Slice")


def classify(name, op_type):
    """(kind, conv layer or None) of a profiled op ``name`` (its scope path) of type ``op_type``."""
    if re.search(r"(^|/)style(_\d+)?/", name):
        return "mapping", None
    if "to_rgb" in name:
        return "ToRGB and skip upsampling", None
    layer = re.search(r"(?:^|/)(convs_\d+|conv1)(?:_\d+)?/", name)
    if layer:
        layer = layer.group(1)
        if "/noise" in name:
            return "noise", None
        if "/activate" in name or op_type.endswith(("FusedBiasAct", "LeakyRelu", "BiasAdd", ">Epilogue")):
            return "bias-act", None
        if op_type in _CONV_TYPES:
            return "conv", layer
        if op_type.endswith("Conv3x3"):  # the compiled direct conv (ops.conv3x3): the even convs_j upsample
            upsampling = layer != "conv1" and int(layer.split("_")[1]) % 2 == 0
            return ("transposed conv" if upsampling else "conv"), layer
        if op_type in ("Conv2DBackpropInput", "_MklNativeConv2DBackpropInput"):
            return "transposed conv", layer
        if op_type.endswith(("DepthwiseConv2dNative", "UpFirDn2d", "UpFirDn2dEpilogue", "Pad")):
            return "upfirdn2d blurs", None
        if op_type in _COPY_TYPES:
            return "copies/transposes/loop", None
        return "modulation/demodulation", None
    if op_type in _COPY_TYPES or "/map/" in name or "while" in name:
        return "copies/transposes/loop", None
    return "other", None


def conv_macs(g):
    """{conv layer name: MACs per image}, counted as tf_distill.model_stats does (up-convs at input size)."""
    ch, macs = g.channels, {"conv1": g.channels[0] * g.channels[1] * 9 * 16}
    for j in range(len(g.synthesis.convs)):
        k = 3 if j % 2 == 0 else g.kernel_size
        res_in = 4 * 2 ** (j // 2 + (j % 2))
        macs[f"convs_{j}"] = ch[j + 1] * ch[j + 2] * k * k * res_in ** 2
    return macs


def op_times(fn, repeats):
    """(summed op seconds per (kind, layer), wall seconds), per call, from the profiler's XPlane."""
    import time  # pylint: disable=import-outside-toplevel

    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=import-outside-toplevel

    with tempfile.TemporaryDirectory(prefix="op_profile_") as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        wall = (time.perf_counter() - start) / repeats
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    totals = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                full = plane.event_metadata[event.metadata_id].name
                if ":" not in full or "::" in full:
                    continue  # executor and thread-pool bookkeeping, not an op
                name, op_type = full.rsplit(":", 1)
                totals[classify(name, op_type)] += event.duration_ps * 1e-12 / repeats
    return totals, wall


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    common.check_impl(_IMPL.value)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tf_distill.configs.paper_models import MODELS  # pylint: disable=import-outside-toplevel
    from tf_distill.layers.forms import inference_form  # pylint: disable=import-outside-toplevel
    from tf_distill.models import Generator  # pylint: disable=import-outside-toplevel

    g = Generator(**MODELS[_MODEL.value]().to_dict(), impl=_IMPL.value)
    g.build()
    macs = conv_macs(g)
    peak_fn, peak_macs = conv_peak.peak_conv()
    for batch in _BATCHES.value:
        z = tf.random.normal([batch, g.style_dim])
        with inference_form(_FOLD.value):
            fn = tf.function(lambda z: g(z))
            fn(z).numpy()  # trace and warm up
        peak = peak_macs / min(conv_peak.seconds(peak_fn) for _ in range(3))
        totals, wall = op_times(lambda: fn(z).numpy(), _REPEATS.value)
        op_sum = sum(totals.values())
        print(f"\n{_MODEL.value}, batch {batch}, impl {_IMPL.value}, fold {_FOLD.value}"
              f"{', serialized' if _SERIALIZE.value else ''}: "
              f"wall {wall * 1e3:.1f} ms/batch, op time {op_sum * 1e3:.1f} ms; 3x3-conv peak {peak / 1e9:.1f} GMAC/s")
        by_kind = collections.Counter()
        for (kind, _), t in totals.items():
            by_kind[kind] += t
        print(f"  {'op kind':<28}{'ms/batch':>10}{'share':>8}")
        for kind in KINDS:
            if by_kind[kind]:
                print(f"  {kind:<28}{by_kind[kind] * 1e3:10.1f}{by_kind[kind] / op_sum:8.0%}")
        print(f"  {'conv layer':<12}{'GMACs':>8}{'ms':>9}{'GMAC/s':>8}{'of peak':>9}")
        for layer, layer_macs in macs.items():
            t = totals.get(("conv", layer), 0.0) + totals.get(("transposed conv", layer), 0.0)
            if t:
                rate = layer_macs * batch / t
                print(f"  {layer:<12}{layer_macs * batch / 1e9:8.2f}{t * 1e3:9.1f}{rate / 1e9:8.1f}{rate / peak:9.0%}")


def run():
    # TensorFlow is initialised while the flags are parsed (cli.run), after which its inter-op pool is fixed,
    # so --serialize takes effect through the variable its runtime reads when it creates the pool.
    if any(arg in ("--serialize", "--serialize=true", "--serialize=True") for arg in sys.argv[1:]):
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    cli.run(main)


if __name__ == "__main__":
    run()
