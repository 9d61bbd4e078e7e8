"""Custom CPU kernels vs the reference TF ops, side by side in one run.

    python bench/ops.py                  # 64/128/256 px, batch 4, 128 channels, chains of 1 and 8
    python bench/ops.py --sizes=64 --repeats=3 --chain=1
    python bench/ops.py --allocator=bfc  # TF's BFC CPU allocator: no fresh pages per tensor

For upfirdn2d (upsample 2x: px/2 -> px, blur: px -> px, downsample 2x: px -> px/2, all with
the [1,3,3,1] kernel, NHWC) and for fused bias + leaky ReLU at px, it times the forward pass
and the forward + backward pass (the output and the vector-Jacobian product with a random
cotangent w.r.t. the input, and the bias), each compiled with tf.function. It measures twice:
with one application of the op per tf.function call, and with eight applied one after another
in each call (``--chain``), which spreads the fixed cost of a call (0.3-1 ms here: dispatch,
waking the thread pools, handing the result back) over eight applications and so gives the
per-op cost inside a graph, as in the generator. For each it prints the median wall-clock time
over the repeats (reference and custom take turns within each repeat), the median CPU time
(user + system summed over threads: less sensitive to other processes on a shared machine) and
the ratios reference / custom (> 1: the custom kernel is faster). Needs the built library
(custom_ops/build.sh). Run it on an idle machine and repeat.

TensorFlow's default CPU allocator hands out freshly mapped pages for every large tensor, so
each 128 MiB output costs tens of thousands of page faults (sys time) in both paths alike;
on a VM they can dominate the large sizes. `--allocator=bfc` sets TF_CPU_ALLOCATOR_USE_BFC
(before TensorFlow starts) so buffers are reused and the kernels themselves are compared.
For bias_act a memory-floor row times tf.negative on the same tensor (one read, one write), taking
turns with the forward passes.
"""

import os
import resource
import statistics
import time

from absl import app, flags

import common
from tf_distill import cli

_SIZES = common.define_int_list("sizes", [64, 128, 256], "Output sizes in px, e.g. 64,128.")
_BATCH = common.define_batch(4)
_CHANNELS = flags.DEFINE_integer("channels", 128, "Channels of every tensor.", lower_bound=1)
_REPEATS = common.define_repeats(7, "At least this many timed calls per function; the median is reported.")
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 0.5, "Repeat fast cases until each function has run about this "
                                  "long.", lower_bound=0)
_CHAIN = common.define_int_list("chain", [1, 8], "Applications of the op per tf.function call, one after another "
                                "(amortizes the call overhead; times are per application); one table per value.")
_ALLOCATOR = flags.DEFINE_enum("allocator", "default", ["default", "bfc"], "TF CPU allocator (bfc: "
                               "TF_CPU_ALLOCATOR_USE_BFC=true, reuses buffers).")

UPFIRDN_CASES = {  # name: (input size from px, kernel gain, up, down, pad)
    "upsample2x": (lambda px: px // 2, 4.0, 2, 1, (2, 1)),
    "blur": (lambda px: px, 1.0, 1, 1, (2, 1)),
    "downsample2x": (lambda px: px, 1.0, 1, 2, (1, 1)),
}


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def _time_in_turns(fns, args, repeats, chain=1, warmup=2, min_seconds=0.0):
    """Median wall-clock ms and median CPU ms (summed over threads) per call of each function,
    divided by ``chain`` (the op applications per call).

    The functions take turns within every repeat, so a noisy neighbour on a shared machine slows
    both sides of a ratio alike instead of whichever happened to run during the disturbance.
    Fast cases repeat until every function has run about ``min_seconds`` (at least ``repeats``
    times): a median of a few millisecond-long calls moves by tens of percent on a shared VM."""
    for _ in range(warmup):  # the first call traces the function
        for fn in fns:
            fn(*args)
    start = time.perf_counter()
    for fn in fns:
        fn(*args)
    per_round = time.perf_counter() - start
    repeats = max(repeats, int(min_seconds * len(fns) / max(per_round, 1e-9)))
    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start, start_cpu = time.perf_counter(), _cpu_seconds()
            fn(*args)  # a tf.function call on CPU returns once its outputs are computed
            wall[i].append(time.perf_counter() - start)
            cpu[i].append(_cpu_seconds() - start_cpu)
    return [(statistics.median(w) * 1e3 / chain, statistics.median(c) * 1e3 / chain) for w, c in zip(wall, cpu)]


def _serial(body, chain):
    """A tf.function running ``body`` ``chain`` times one after another (each run waits for the
    previous one's outputs), returning the last outputs: the per-call cost of a tf.function is
    then shared by ``chain`` applications of the op.

    Grappler's dependency optimizer turns side-effect-free nodes whose outputs only feed control
    edges into NoOps, which would leave one real application per call: main() switches it off."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    @tf.function(jit_compile=False)
    def fn(*args):
        outputs = body(*args)
        for _ in range(chain - 1):
            with tf.control_dependencies(tf.nest.flatten(outputs)):
                outputs = body(*[tf.identity(a) for a in args])
        return outputs

    return fn


def _upfirdn_fns(kernel, up, down, pad, impl, chain):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tf_distill.ops.upfirdn2d import upfirdn2d  # pylint: disable=import-outside-toplevel

    def forward(x, cot):
        del cot
        return upfirdn2d(x, kernel, up=up, down=down, pad=pad, impl=impl)

    def forward_backward(x, cot):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = upfirdn2d(x, kernel, up=up, down=down, pad=pad, impl=impl)
        return y, tape.gradient(y, x, output_gradients=cot)  # y too, or the forward is pruned

    return _serial(forward, chain), _serial(forward_backward, chain)


def _bias_act_fns(impl, chain):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tf_distill.ops.fused_bias_act import fused_bias_act  # pylint: disable=import-outside-toplevel

    def forward(x, b, cot):
        del cot
        return fused_bias_act(x, b, impl=impl)

    def forward_backward(x, b, cot):
        with tf.GradientTape() as tape:
            tape.watch([x, b])
            y = fused_bias_act(x, b, impl=impl)
        return [y] + tape.gradient(y, [x, b], output_gradients=cot)

    return _serial(forward, chain), _serial(forward_backward, chain)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _ALLOCATOR.value == "bfc":
        os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"  # read when TensorFlow starts, so before it is imported
    tf = cli.import_tensorflow()
    import numpy as np  # pylint: disable=import-outside-toplevel

    from tf_distill.ops import _loader  # pylint: disable=import-outside-toplevel
    from tf_distill.ops.upfirdn2d import setup_kernel  # pylint: disable=import-outside-toplevel

    # Keep every chained application (see _serial); a chain of 1 has no control edges to prune.
    tf.config.optimizer.set_experimental_options({"dependency_optimization": False})

    common.require_custom_ops("bench/ops.py")
    print(f"library: {_loader.library_path()} (CPU kernels: {_loader.cpu_isa()})")
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "default"
    print(f"TF {tf.__version__}, intra-op threads: {threads}, CPUs: {os.cpu_count()}, batch {_BATCH.value}, "
          f"channels {_CHANNELS.value}, median of >= {_REPEATS.value} calls and ~{_MIN_SECONDS.value} s per function, "
          f"allocator: {'BFC' if os.environ.get('TF_CPU_ALLOCATOR_USE_BFC') == 'true' else 'default'}")
    rng = np.random.default_rng(0)
    kernel = setup_kernel([1, 3, 3, 1])
    for chain in _CHAIN.value:
        what = ("one application per tf.function call" if chain == 1 else
                f"{chain} applications in sequence per tf.function call: per-op cost inside a graph")
        print(f"\n{what} (times per application)")
        _table(chain, rng, kernel)


def _table(chain, rng, kernel):
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tf_distill.ops.upfirdn2d import upfirdn2d  # pylint: disable=import-outside-toplevel

    header = (f"{'op':<14}{'px':>5}  {'pass':<9}{'shape in -> out':<36}{'ref ms':>9}{'custom ms':>11}{'ratio':>8}"
              f"  |{'ref cpu':>9}{'custom cpu':>11}{'ratio':>8}")
    print(header)
    print("-" * len(header))
    rows = []
    for px in _SIZES.value:
        for name, (in_size, gain, up, down, pad) in UPFIRDN_CASES.items():
            size = in_size(px)
            x = tf.constant(rng.standard_normal((_BATCH.value, size, size, _CHANNELS.value), dtype=np.float32))
            k = kernel * gain
            y_shape = upfirdn2d(x[:1], k, up=up, down=down, pad=pad, impl="ref").shape
            cot = tf.constant(rng.standard_normal((_BATCH.value,) + tuple(y_shape[1:]), dtype=np.float32))
            fns = {impl: _upfirdn_fns(k, up, down, pad, impl, chain) for impl in ("ref", "custom")}
            for i, label in enumerate(("forward", "fwd+bwd")):
                ref, custom = _time_in_turns((fns["ref"][i], fns["custom"][i]), (x, cot), _REPEATS.value, chain,
                                             min_seconds=_MIN_SECONDS.value)
                shapes = f"{list(x.shape)} -> {[_BATCH.value] + list(y_shape[1:])}"
                _row(rows, name, px, label, shapes, ref, custom)
        x = tf.constant(rng.standard_normal((_BATCH.value, px, px, _CHANNELS.value), dtype=np.float32))
        b = tf.constant(rng.standard_normal((_CHANNELS.value,), dtype=np.float32))
        cot = tf.constant(rng.standard_normal(x.shape, dtype=np.float32))
        fns = {impl: _bias_act_fns(impl, chain) for impl in ("ref", "custom")}
        # The memory floor (one read and one write of the same tensor) takes turns with the forward
        # passes, so it sees the same cache and thread-pool state they do.
        floor_fn = _serial(lambda x, b, cot: tf.negative(x), chain)
        for i, label in enumerate(("forward", "fwd+bwd")):
            timed = (fns["ref"][i], fns["custom"][i]) + ((floor_fn,) if i == 0 else ())
            ref, custom, *floor = _time_in_turns(timed, (x, b, cot), _REPEATS.value, chain,
                                                 min_seconds=_MIN_SECONDS.value)
            _row(rows, "bias_act", px, label, f"{list(x.shape)} + bias, lrelu", ref, custom)
            if floor:
                print(f"{'  tf.negative':<14}{px:>5}  {'forward':<9}{'same tensor: memory floor':<36}"
                      f"{floor[0][0]:>9.2f}{'':>11}{'':>8}  |{floor[0][1]:>9.1f}", flush=True)
    print("-" * len(header))
    for what, col in (("wall", 0), ("cpu", 1)):
        ratios = [r[col] for r in rows]
        print(f"ref/custom ({what}, chain {chain}): min {min(ratios):.2f}x, geometric mean "
              f"{float(np.exp(np.mean(np.log(ratios)))):.2f}x, max {max(ratios):.2f}x")


def _row(rows, name, px, label, shapes, ref, custom):
    wall, cpu = ref[0] / custom[0], ref[1] / max(custom[1], 1e-9)
    rows.append((wall, cpu))
    print(f"{name:<14}{px:>5}  {label:<9}{shapes:<36}{ref[0]:>9.2f}{custom[0]:>11.2f}{wall:>7.2f}x"
          f"  |{ref[1]:>9.1f}{custom[1]:>11.1f}{cpu:>7.2f}x", flush=True)


def run():
    cli.run(main, tensorflow=False)  # main imports TensorFlow once --allocator is applied


if __name__ == "__main__":
    run()
