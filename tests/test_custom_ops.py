"""Compiled custom ops (custom_ops/) against the reference ops and the PyTorch golden data.

Needs the built library (custom_ops/build.sh); tests that use it are skipped, with the reason,
when it is not built. The loader-fallback tests run without it. Multi-device and loader tests
run in subprocesses (logical devices must be configured before TensorFlow initialises, and
the loader caches its result per process).
"""

import importlib
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import FIXTURES
import tensorflow as tf

from tf_distill.ops import _loader, choice, fused_bias_act, setup_kernel, upfirdn2d
from tf_distill.ops.fused_bias_act import fused_bias_act_custom, fused_bias_act_ref
from tf_distill.ops import conv3x3, to_rgb
from tf_distill.ops.conv3x3 import conv3x3_ref, direct_conv_wins
from tf_distill.ops.upfirdn2d import upfirdn2d_custom, upfirdn2d_ref
upfirdn2d_module = importlib.import_module("tf_distill.ops.upfirdn2d")  # the package exports the function as upfirdn2d
epilogue_module = importlib.import_module("tf_distill.ops.epilogue")

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = FIXTURES / "ops_reference.npz"

LIBRARY = _loader.custom_ops_library()
requires_library = pytest.mark.skipif(
    LIBRARY is None,
    reason=f"custom op library not available ({_loader.unavailable_reason()}); run custom_ops/build.sh")


@pytest.fixture(autouse=True)
def _custom_kernels_really_ran():
    """impl="custom" falls back to the reference when a kernel fails its self-check (with a warning):
    that would make the comparisons below vacuous, so any failed self-check fails the test."""
    yield
    failed = {op: r for op, r in choice.self_check_results().items() if not r["passed"]}
    assert not failed, f"custom kernels failed their self-check, the tests compared the reference with itself: {failed}"


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.is_file():
        pytest.fail(f"golden fixtures not found at {GOLDEN}; set TF_DISTILL_FIXTURES")
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


def _nhwc(a):
    return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)))


def _nchw(a):
    return np.transpose(np.asarray(a), (0, 3, 1, 2))


def _assert_close(actual, expected, rel=1e-5, what=""):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    err = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    assert err <= rel * scale, f"{what}: max abs error {err:.3g} > {rel:.1g} x scale {scale:.3g}"


def _vjp(fn, inputs, cotangent):
    inputs = [tf.convert_to_tensor(v) for v in inputs]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = fn(*inputs)
    return y, tape.gradient(y, inputs, output_gradients=tf.convert_to_tensor(cotangent, y.dtype))


def _run_python(code, env_extra=None, timeout=240):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


# --------------------------------------------------------------------------- golden data

GOLDEN_UPFIRDN_CASES = ["asym_down2_pad21", "asym_up2_pad12", "asym_up3_down2_negpad", "blur_pad11", "blur_pad11_k4x4",
                        "blur_pad22", "down2_pad11", "up2_pad21_k4x4"]


def test_golden_covers_every_case(golden):
    cases = sorted({k.split("/")[0] for k in golden if not k.startswith("fused")})
    assert cases == sorted(GOLDEN_UPFIRDN_CASES), "update GOLDEN_UPFIRDN_CASES to the fixture's cases"


@requires_library
@pytest.mark.parametrize("case", GOLDEN_UPFIRDN_CASES)
def test_upfirdn2d_matches_golden(golden, case):
    x, kernel = _nhwc(golden[f"{case}/x"]), golden[f"{case}/kernel"]
    up, down = int(golden[f"{case}/up"]), int(golden[f"{case}/down"])
    pad = tuple(int(p) for p in golden[f"{case}/pad"])
    y, (dx,) = _vjp(lambda t: upfirdn2d(t, kernel, up=up, down=down, pad=pad, impl="custom"), [x],
                    _nhwc(golden[f"{case}/cotangent"]))
    _assert_close(_nchw(y), golden[f"{case}/y"], what=f"{case} y")
    _assert_close(_nchw(dx), golden[f"{case}/grad_x"], what=f"{case} grad_x")


@requires_library
def test_fused_lrelu_matches_golden(golden):
    x, bias = _nhwc(golden["fused_lrelu/x"]), golden["fused_lrelu/bias"]
    alpha, gain = float(golden["fused_lrelu/alpha"]), float(golden["fused_lrelu/gain"])
    y, (dx, db) = _vjp(lambda t, b: fused_bias_act(t, b, alpha=alpha, gain=gain, impl="custom"), [x, bias],
                       _nhwc(golden["fused_lrelu/cotangent"]))
    _assert_close(_nchw(y), golden["fused_lrelu/y"], what="y")
    _assert_close(_nchw(dx), golden["fused_lrelu/grad_x"], what="grad_x")
    _assert_close(db, golden["fused_lrelu/grad_bias"], what="grad_bias")


# ------------------------------------------------------------------- random configurations

# (x shape NHWC, kernel shape, "fir" or ("sep", shape), up, down, pad). Rank-1 kernels ("fir",
# ("sep", ...), 1-row / 1-column shapes) take the CPU kernel's two-pass separable path, the
# others its 2-D path.
UPFIRDN_CONFIGS = [
    ((1, 7, 5, 3), (3, 4), 2, 1, (1, 2)),  # batch 1, odd sizes, asymmetric kernel
    ((64, 4, 4, 8), "fir", 2, 1, (2, 1)),  # batch 64, the ToRGB skip upsample
    ((2, 9, 11, 5), (5, 2), 3, 2, (-2, 3)),  # up 3 / down 2, negative pad
    ((3, 8, 8, 70), (4, 4), 1, 2, (1, 1)),  # 70 channels: vector blocks plus a scalar tail
    ((2, 13, 6, 130), (1, 3), 1, 1, (0, -1)),  # crop at the end, 130 channels
    ((1, 5, 5, 1), (2, 2), 4, 3, (3, -2)),  # single channel, up 4 / down 3
    ((2, 6, 7, 16), (1, 1), 2, 2, (0, 0)),  # 1x1 kernel
    ((2, 10, 10, 4), (3, 3), 1, 1, (-2, -1)),  # crops on both sides
    ((2, 12, 12, 4), (1, 1), 1, 3, (0, 0)),  # down larger than the kernel
    ((4, 16, 16, 128), "fir", 1, 1, (1, 1)),  # modulated-conv upsample blur, C = 128
    ((2, 9, 11, 70), ("sep", (5, 2)), 3, 2, (-2, 3)),  # separable, signed, non-square, scalar tail
    ((1, 7, 6, 65), ("sep", (3, 4)), 1, 2, (2, -1)),  # separable downsample with a crop
    ((3, 8, 5, 8), ("sep", (4, 4)), 2, 1, (-1, 2)),  # separable, with a zero row (see below)
    ((2, 9, 14, 16), ("sep", (4, 4)), 1, 1, (2, 1)),  # separable blur, 16 channels (one AVX2 block short of 64)
    ((2, 12, 21, 32), ("sep", (4, 4)), 1, 2, (1, 2)),  # separable 2x downsample, 32 channels
    # 4x4 separable kernels with up = 1 take the sliding-window pass (rows and columns outside the
    # input read as zeros near the edges):
    ((2, 11, 19, 80), ("sep", (4, 4)), 1, 2, (2, 1)),  # 2x downsample, 80 channels: blocks plus one vector
    ((1, 10, 7, 48), "fir", 1, 1, (1, 2)),  # blur, 48 channels, narrow rows (symmetric taps)
    ((2, 10, 13, 32), "fir", 1, 2, (1, 1)),  # the StyleGAN 2x downsample (symmetric taps)
    ((2, 9, 3, 32), ("sep", (4, 4)), 1, 1, (5, 4)),  # pads wider than the kernel, input narrower than it
    ((1, 12, 11, 16), ("sep", (4, 4)), 1, 2, (-1, -2)),  # 2x downsample with crops on both sides
    ((2, 7, 9, 48), "fir", 1, 2, (4, 3)),  # 2x downsample, whole output rows and columns in the padding
    ((2, 9, 12, 144), ("sep", (4, 4)), 1, 2, (2, 1)),  # 2x downsample, whole-pixel blocks plus a tail
    ((1, 8, 10, 160), "fir", 1, 2, (1, 1)),  # the same with symmetric taps, 160 channels
    ((1, 130, 129, 256), "fir", 1, 1, (2, 1)),  # output > 16 MiB: non-temporal stores
]


def _config_inputs(config, dtype=np.float32, seed=0):
    shape, kshape, up, down, pad = config
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    if kshape == "fir":
        kernel = setup_kernel([1, 3, 3, 1], gain=up * up)
    elif kshape[0] == "sep":
        ky, kx = (rng.standard_normal(n).astype(np.float32) for n in kshape[1])
        if kshape[1] == (4, 4):
            ky[1] = 0.0
        kernel = np.outer(ky, kx)
    else:
        kernel = rng.standard_normal(kshape).astype(np.float32)
    return x, kernel, up, down, pad


def _config_id(config):
    shape, kshape, up, down, pad = config
    kname = kshape if isinstance(kshape, str) else (
        "sep" + "x".join(map(str, kshape[1])) if kshape[0] == "sep" else "x".join(map(str, kshape)))
    return f"x{'x'.join(map(str, shape))}-k{kname}" \
           f"-up{up}-down{down}-pad{pad[0]}_{pad[1]}"


@requires_library
@pytest.mark.parametrize("config", UPFIRDN_CONFIGS, ids=_config_id)
def test_upfirdn2d_matches_reference(config):
    x, kernel, up, down, pad = _config_inputs(config)
    out_shape = upfirdn2d_ref(x, kernel, up=up, down=down, pad=pad).shape
    cot = np.random.default_rng(1).standard_normal(out_shape).astype(np.float32)
    y_ref, (dx_ref,) = _vjp(lambda t: upfirdn2d_ref(t, kernel, up=up, down=down, pad=pad), [x], cot)
    y, (dx,) = _vjp(lambda t: upfirdn2d(t, kernel, up=up, down=down, pad=pad, impl="custom"), [x], cot)
    _assert_close(y, y_ref, what="y")
    _assert_close(dx, dx_ref, what="dx")


@requires_library
def test_upfirdn2d_tf_function_static_and_dynamic_shapes():
    x, kernel, up, down, pad = _config_inputs(((2, 9, 11, 5), (5, 2), 3, 2, (-2, 3)))
    expected = upfirdn2d_ref(x, kernel, up=up, down=down, pad=pad)
    cot = np.random.default_rng(2).standard_normal(expected.shape).astype(np.float32)
    _, (dx_expected,) = _vjp(lambda t: upfirdn2d_ref(t, kernel, up=up, down=down, pad=pad), [x], cot)

    def step(t, c):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = upfirdn2d(t, kernel, up=up, down=down, pad=pad, impl="custom")
        return y, tape.gradient(y, t, output_gradients=c)

    static = tf.function(step)
    dynamic = tf.function(step, input_signature=[tf.TensorSpec([None, None, None, 5]),
                                                 tf.TensorSpec([None, None, None, 5])])
    # Static shapes: the shape function gives the full output shape while tracing.
    traced = static.get_concrete_function(tf.TensorSpec(x.shape), tf.TensorSpec(cot.shape))
    assert traced.structured_outputs[0].shape.as_list() == list(expected.shape)
    for fn in (static, dynamic):
        y, dx = fn(tf.constant(x), tf.constant(cot))
        _assert_close(y, expected, what="y")
        _assert_close(dx, dx_expected, what="dx (unknown input size: padded then cropped gradient)")


# (x shape, bias?, act, alpha, gain)
BIAS_ACT_CONFIGS = [
    ((5, 7), True, "lrelu", None, None),  # dense [N, C]
    ((2, 6, 5, 130), True, "lrelu", None, None),  # NHWC, C not a multiple of the vector width
    ((3, 4, 4, 16), False, "lrelu", 0.1, 2.0),  # no bias
    ((4, 9), True, "relu", None, None),
    ((4, 3, 3, 8), True, "linear", None, 0.5),
    ((2, 3, 3, 8), True, "lrelu", 0.3, -1.5),  # negative gain
    ((64, 32), True, "lrelu", 0.0, 1.0),  # batch 64, alpha 0
    ((1, 1, 1, 3), True, "lrelu", None, None),
    ((11,), True, "lrelu", None, None),  # rank 1: bias on the only axis
    ((1, 128, 128, 272), True, "lrelu", None, None),  # output > 16 MiB: non-temporal stores
    ((4, 64, 64, 272), False, "linear", None, -2.0),  # the same without a bias
]


@requires_library
@pytest.mark.parametrize("config", BIAS_ACT_CONFIGS, ids=lambda c: f"{'x'.join(map(str, c[0]))}-{c[2]}-b{int(c[1])}")
def test_fused_bias_act_matches_reference(config):
    shape, with_bias, act, alpha, gain = config
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(shape[-1]).astype(np.float32)
    cot = rng.standard_normal(shape).astype(np.float32)

    def run(fn):
        if with_bias:
            return _vjp(lambda t, bb: fn(t, bb, act=act, alpha=alpha, gain=gain), [x, b], cot)
        y, (dx,) = _vjp(lambda t: fn(t, None, act=act, alpha=alpha, gain=gain), [x], cot)
        return y, (dx,)

    y_ref, grads_ref = run(fused_bias_act_ref)
    y, grads = run(lambda *a, **k: fused_bias_act(*a, **k, impl="custom"))
    _assert_close(y, y_ref, what="y")
    for g, g_ref in zip(grads, grads_ref):
        _assert_close(g, g_ref, what="grad")


@requires_library
@pytest.mark.parametrize("isa", ["baseline", "avx2"])
def test_every_cpu_instruction_set_matches_reference(isa):
    """The kernels carry baseline, AVX2 and AVX-512 variants and run the best the CPU has (the
    tests above); TF_DISTILL_MAX_ISA caps it, so the lower variants are checked here too."""
    if _loader.cpu_isa() == "baseline" and isa != "baseline":
        pytest.skip(f"this CPU has no {isa}")
    env = {"TF_DISTILL_MAX_ISA": isa, _loader.ENV_LIBRARY: str(_loader.library_path())}
    probe = _run_python("from tf_distill.ops import _loader; print('ISA', _loader.cpu_isa())", env)
    assert f"ISA {isa}" in probe.stdout, probe.stdout + probe.stderr[-3000:]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(pathlib.Path(__file__)),
         "-k", "matches_reference and not every_cpu"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and " passed" in result.stdout, result.stdout[-6000:] + result.stderr[-3000:]


# (x shape, out channels): vector chunks of 3 + 2 with 16 registers, one of 5 with 32 (40, with pixel tails),
# 1 chunk (8), 2 + 2 or 4 (32), 3 + 3 (48), 5 + 5 (80), 4 + 5 + 5 + 2 with 32 registers (128), one pixel,
# widths narrower than a tile, and 12 output channels (not a multiple of 8: the plain loops).
CONV3X3_CASES = [((2, 7, 9, 5), 48), ((1, 6, 13, 40), 40), ((2, 5, 4, 3), 8), ((3, 3, 20, 24), 32),
                 ((1, 1, 1, 16), 16), ((1, 2, 3, 8), 24), ((2, 4, 5, 7), 12), ((1, 3, 11, 16), 80),
                 ((1, 2, 27, 8), 128)]


@requires_library
@pytest.mark.parametrize("epilogue", ["none", "bias, shared noise, lrelu", "per-sample noise", "lrelu only"])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("shape, out", CONV3X3_CASES)
def test_conv3x3_matches_reference(shape, out, transposed, epilogue):
    """The compiled direct conv (called as the op, whatever the width) and its epilogue against TensorFlow's
    conv and ``epilogue_ref``, with the gradients of every input."""
    rng = np.random.default_rng(sum(shape) + out)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((3, 3, shape[-1], out)).astype(np.float32)
    size = [2 * d + 1 for d in shape[1:3]] if transposed else list(shape[1:3])
    inputs, names = [x, w], ["dx", "dw"]
    if epilogue != "none":
        noise_batch = shape[0] if epilogue == "per-sample noise" else 1
        inputs += [rng.standard_normal(out).astype(np.float32),
                   rng.standard_normal([noise_batch] + size + [1]).astype(np.float32), np.float32([0.6])]
        names += ["dbias", "dnoise", "dstrength"]

    def run(conv):
        def fn(*args):
            if len(args) == 2:
                return conv(*args, transposed)
            a, b, bias, noise, strength = args
            if epilogue == "lrelu only":
                return conv(a, b, transposed, activation="lrelu", alpha=0.3)
            return conv(a, b, transposed, bias=bias if epilogue != "per-sample noise" else None, noise=noise,
                        noise_strength=strength, activation="lrelu" if "lrelu" in epilogue else "linear", alpha=0.2)
        return fn

    cot = rng.standard_normal([shape[0]] + size + [out]).astype(np.float32)
    got, got_grads = _vjp(run(conv3x3._conv3x3_op), inputs, cot)
    want, want_grads = _vjp(run(conv3x3_ref), inputs, cot)
    _assert_close(got, want, what="conv3x3")
    for name, a, b in zip(names, got_grads, want_grads):
        if b is None:  # an input the epilogue does not use
            assert a is None or not np.any(a), name
            continue
        _assert_close(a, b, what=f"conv3x3 {name}")


@requires_library
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("shape, out", [((3, 5, 9, 16), 40), ((2, 4, 6, 7), 16), ((2, 3, 4, 8), 12)])
def test_conv3x3_per_sample_weights_match_a_conv_per_sample(shape, out, transposed):
    """Weights [n, 3, 3, in, out] (a folded modulated conv): sample i convolved with weight i, as TensorFlow's
    conv of each sample alone, with the epilogue (per-sample noise), on the vector tiles and the plain loops
    (12 outputs), and the gradients of the reference."""
    rng = np.random.default_rng(sum(shape) + out)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[0], 3, 3, shape[-1], out)).astype(np.float32)
    size = [2 * d + 1 for d in shape[1:3]] if transposed else list(shape[1:3])
    bias = rng.standard_normal(out).astype(np.float32)
    noise = rng.standard_normal([shape[0]] + size + [1]).astype(np.float32)
    epilogue = dict(noise_strength=np.float32(0.6), activation="lrelu", alpha=0.2)
    got = conv3x3._conv3x3_op(x, w, transposed, bias=bias, noise=noise, **epilogue).numpy()
    for i in range(shape[0]):
        want = conv3x3_ref(x[i:i + 1], w[i], transposed, bias=bias, noise=noise[i:i + 1], **epilogue).numpy()
        _assert_close(got[i:i + 1], want, what=f"conv3x3 sample {i}")
    cot = rng.standard_normal(got.shape).astype(np.float32)
    _, got_grads = _vjp(lambda a, b: conv3x3._conv3x3_op(a, b, transposed, bias=bias, noise=noise, **epilogue),
                        [x, w], cot)
    _, want_grads = _vjp(lambda a, b: conv3x3_ref(a, b, transposed, bias=bias, noise=noise, **epilogue), [x, w], cot)
    for name, a, b in zip(("dx", "dw"), got_grads, want_grads):
        _assert_close(a, b, what=f"conv3x3 per-sample {name}")


@requires_library
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("shape, out, m, per_sample", [((2, 6, 7, 16), 40, 3, True), ((2, 5, 6, 12), 64, 3, True),
                                                       ((1, 4, 5, 7), 12, 3, False), ((2, 3, 9, 8), 16, 1, True),
                                                       ((2, 4, 4, 8), 24, 5, False)])
def test_conv3x3_projection_is_the_outputs_times_each_samples_matrix(shape, out, m, per_sample, transposed):
    """``project`` [n, out, m] (a generator's last conv and its ToRGB): the op stores each sample's epilogue
    outputs times its own matrix, as NumPy's product of the reference conv's outputs, on one chunk of output
    channels (40), several (64, added up), the plain loops (12), one and more than four projected channels; its
    gradients are the reference's."""
    rng = np.random.default_rng(sum(shape) + out + m)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(((shape[0],) if per_sample else ()) + (3, 3, shape[-1], out)).astype(np.float32)
    project = rng.standard_normal((shape[0], out, m)).astype(np.float32)
    size = [2 * d + 1 for d in shape[1:3]] if transposed else list(shape[1:3])
    epilogue = dict(bias=rng.standard_normal(out).astype(np.float32),
                    noise=rng.standard_normal([shape[0]] + size + [1]).astype(np.float32),
                    noise_strength=np.float32(0.6), activation="lrelu", alpha=0.2)
    got = conv3x3._conv3x3_op(x, w, transposed, project, **epilogue).numpy()
    outputs = conv3x3_ref(x, w, transposed, **epilogue).numpy()
    _assert_close(got, np.einsum("nhwc,ncm->nhwm", outputs, project), what="conv3x3 projection")
    cot = rng.standard_normal(got.shape).astype(np.float32)
    _, got_grads = _vjp(lambda a, b, p: conv3x3._conv3x3_op(a, b, transposed, p, **epilogue), [x, w, project], cot)
    _, want_grads = _vjp(lambda a, b, p: conv3x3_ref(a, b, transposed, p, **epilogue), [x, w, project], cot)
    for name, a, b in zip(("dx", "dw", "dproject"), got_grads, want_grads):
        _assert_close(a, b, what=f"conv3x3 projection {name}")


@requires_library
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("shape, w_in, out", [((2, 5, 9, 16), 13, 40), ((2, 4, 6, 9), 4, 16), ((1, 3, 4, 8), 7, 12)])
def test_conv3x3_reads_the_first_channels_of_a_wider_input(shape, w_in, out, transposed, per_sample):
    """x with more channels than the weight takes (a widened layer's): the op reads the first ``w_in`` of each
    pixel, as TensorFlow's conv of x cut to them, on the vector tiles and the plain loops (12 outputs), with
    the epilogue; the gradient of x is zero in the channels not read."""
    rng = np.random.default_rng(sum(shape) + w_in + out)
    x = rng.standard_normal(shape).astype(np.float32)  # the extra channels are not zero: they must not count
    w = rng.standard_normal(((shape[0],) if per_sample else ()) + (3, 3, w_in, out)).astype(np.float32)
    size = [2 * d + 1 for d in shape[1:3]] if transposed else list(shape[1:3])
    epilogue = dict(bias=rng.standard_normal(out).astype(np.float32),
                    noise=rng.standard_normal([1] + size + [1]).astype(np.float32),
                    noise_strength=np.float32(0.6), activation="lrelu", alpha=0.2)
    got = conv3x3._conv3x3_op(x, w, transposed, **epilogue).numpy()
    cut = x[..., :w_in]
    if per_sample:
        want = np.concatenate([conv3x3_ref(cut[i:i + 1], w[i], transposed, **epilogue).numpy()
                               for i in range(shape[0])])
    else:
        want = conv3x3_ref(cut, w, transposed, **epilogue).numpy()
    _assert_close(got, want, what="conv3x3 of a wider input")
    cot = rng.standard_normal(got.shape).astype(np.float32)
    _, (dx, dw) = _vjp(lambda a, b: conv3x3._conv3x3_op(a, b, transposed, **epilogue), [x, w], cot)
    _, (dx_cut, dw_cut) = _vjp(lambda a, b: conv3x3_ref(a, b, transposed, **epilogue), [cut, w], cot)
    _assert_close(dx[..., :w_in], dx_cut, what="conv3x3 dx")
    assert not np.any(dx[..., w_in:])
    _assert_close(dw, dw_cut, what="conv3x3 dw")


@requires_library
@pytest.mark.parametrize("bias, noise, strength, project, message", [
    ((7,), None, (), None, "a bias [8] or an empty one"),
    (None, (1, 4, 5, 1), (), None, "noise [1 or 2, 4, 4, 1]"),
    (None, (3, 4, 4, 1), (), None, "noise [1 or 2, 4, 4, 1]"),
    (None, None, (2,), None, "one noise_strength value"),
    (None, None, (), (2, 7, 3), "a projection [2, 8, m] or an empty one"),
    (None, None, (), (1, 8, 3), "a projection [2, 8, m] or an empty one"),
    (None, None, (), (8, 3), "a projection [2, 8, m] or an empty one"),
])
def test_conv3x3_epilogue_bad_inputs(bias, noise, strength, project, message):
    x, w = tf.zeros((2, 4, 4, 8)), tf.zeros((3, 3, 8, 8))
    empty = tf.zeros([0])
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        _loader.require_library().tf_distill_conv3x3(x, w, empty if project is None else tf.zeros(project),
                                                    empty if bias is None else tf.zeros(bias),
                                                    empty if noise is None else tf.zeros(noise), tf.zeros(strength))


def test_loader_knows_whether_tensorflow_convs_are_onednn():
    """conv3x3's width limit and the blur's reference form follow TF_ENABLE_ONEDNN_OPTS (TensorFlow's own
    switch), read in a fresh process."""
    probe = "from tf_distill.ops import _loader; print('ONEDNN', _loader.onednn_convs())"
    for value, expected in (("0", False), ("1", True)):
        out = _run_python(probe, {"TF_ENABLE_ONEDNN_OPTS": value})
        assert f"ONEDNN {expected}" in out.stdout, out.stdout + out.stderr[-3000:]


@requires_library
def test_conv3x3_takes_only_the_shapes_where_it_is_faster():
    """impl="custom" puts the compiled conv in the graph only for inputs at least DIRECT_MIN_WIDTH wide
    (``direct_conv_wins``), output widths that are multiples of 8 (at most ONEDNN_MAX_OUT_CHANNELS where
    TensorFlow's convs are oneDNN's), AVX2 CPUs and processes without a GPU; the reference never does."""
    vector_cpu = _loader.cpu_isa() in ("avx2", "avx512") and not tf.config.list_logical_devices("GPU")
    wide, most = conv3x3.DIRECT_MIN_WIDTH, conv3x3.ONEDNN_MAX_OUT_CHANNELS
    wider_too = vector_cpu and not _loader.onednn_convs()
    assert direct_conv_wins(wide, 40) == vector_cpu and direct_conv_wins(4 * wide, 512) == wider_too
    assert direct_conv_wins(wide, most) == vector_cpu and direct_conv_wins(wide, most + 8) == wider_too
    assert not direct_conv_wins(wide - 1, 40) and not direct_conv_wins(wide, 39)
    assert not direct_conv_wins(None, 40) and not direct_conv_wins(wide, None)

    def op_types(width, c, k, transposed, impl):
        fn = tf.function(lambda t, w: conv3x3.conv3x3(t, w, transposed, impl=impl))
        graph = fn.get_concrete_function(tf.TensorSpec((1, 6, width, c)), tf.TensorSpec((3, 3, c, k))).graph
        return {op.type for op in graph.get_operations()}

    assert ("TfDistill>Conv3x3" in op_types(wide, 16, 40, False, "custom")) == vector_cpu
    assert ("TfDistill>Conv3x3" in op_types(wide, 80, 40, True, "custom")) == vector_cpu
    assert "TfDistill>Conv3x3" not in op_types(wide - 1, 16, 40, True, "custom")
    assert "TfDistill>Conv3x3" not in op_types(wide, 16, 40, False, "ref")
    rng = np.random.default_rng(6)
    for width, transposed in ((wide, True), (wide - 1, False)):  # the compiled conv, then TensorFlow's
        x = rng.standard_normal((1, 3, width, 16)).astype(np.float32)
        w = rng.standard_normal((3, 3, 16, 24)).astype(np.float32)
        _assert_close(conv3x3.conv3x3(x, w, transposed, impl="custom"), conv3x3_ref(x, w, transposed),
                      what=f"{width} px, transposed {transposed}")


def _epilogue_parts(rng, n, c, size, scale, bias, noise_n):
    """({scale, bias, noise, noise_strength}, the names of those present): random epilogue inputs for an output
    of n samples of ``size`` [h, w] and c channels, each part only where asked for."""
    extra = dict(scale=rng.uniform(0.5, 2.0, (n, c)).astype(np.float32) if scale else None,
                 bias=rng.standard_normal(c).astype(np.float32) if bias else None,
                 noise=rng.standard_normal([noise_n] + list(size) + [1]).astype(np.float32) if noise_n else None,
                 noise_strength=np.float32(0.4) if noise_n else None)
    return extra, [k for k, v in extra.items() if v is not None]


# (x shape, pad, scale, bias, noise batch or None, activation): the upsampling blur of every student width (40
# = 5 vectors of 8, 80 and 160 take AVX-512's 16 lanes, the pruned 154), a crop (negative pad), 12 channels (a
# scalar tail), noise shared or per sample, each part alone, and nothing (the plain blur).
UPFIRDN2D_EPILOGUE_CASES = [((1, 9, 9, 40), (1, 1), True, True, 1, "lrelu"),
                            ((2, 7, 5, 80), (1, 1), False, True, 2, "lrelu"),
                            ((1, 5, 6, 160), (2, 1), False, False, 1, "linear"),
                            ((2, 8, 8, 12), (1, 0), True, True, None, "lrelu"),
                            ((1, 6, 7, 8), (2, -1), False, False, None, "lrelu"),
                            ((1, 4, 4, 16), (1, 1), False, False, None, "linear"),
                            ((2, 5, 5, 154), (1, 1), True, False, None, "linear")]


@requires_library
@pytest.mark.parametrize("shape, pad, scale, bias, noise_n, activation", UPFIRDN2D_EPILOGUE_CASES)
def test_upfirdn2d_epilogue_matches_reference(shape, pad, scale, bias, noise_n, activation):
    """The blur with the compiled epilogue against upfirdn2d_ref + epilogue_ref (values and every gradient), and
    ``filter2d_separable`` with an epilogue (which takes it on vector CPUs; the reference scales its input)
    against the same."""
    rng = np.random.default_rng(sum(shape) + pad[0])
    n, h, w, c = shape
    kernel = setup_kernel([1, 3, 3, 1], gain=4.0)
    out = [d + pad[0] + pad[1] - 3 for d in (h, w)]
    x = rng.standard_normal(shape).astype(np.float32)
    extra, names = _epilogue_parts(rng, n, c, out, scale, bias, noise_n)

    def run(fn):
        def call(a, *values):
            return fn(a, kernel, pad, activation=activation, alpha=0.2, **dict(zip(names, values)))
        return call

    inputs = [x] + [extra[k] for k in names]
    cot = rng.standard_normal([n] + out + [c]).astype(np.float32)
    got, got_grads = _vjp(run(upfirdn2d_module._upfirdn2d_epilogue_op), inputs, cot)  # pylint: disable=protected-access
    want, want_grads = _vjp(run(upfirdn2d_module._upfirdn2d_epilogue_ref), inputs, cot)  # pylint: disable=protected-access
    _assert_close(got, want, what="upfirdn2d epilogue")
    for name, a, b in zip(["dx"] + names, got_grads, want_grads):
        _assert_close(a, b, what=f"upfirdn2d epilogue d{name}")
    for impl in ("custom", "ref"):
        both = upfirdn2d_module.filter2d_separable(x, [1, 3, 3, 1], gain=4.0, pad=pad, impl=impl,
                                                   activation=activation, alpha=0.2, **extra)
        _assert_close(both, want, what=f"filter2d_separable with an epilogue, {impl}")


@requires_library
def test_upfirdn2d_epilogue_bad_inputs():
    """The epilogue's inputs are checked as conv3x3's are (one shared check), with the op's name."""
    op = _loader.require_library().tf_distill_up_fir_dn2d_epilogue
    x, k, empty = tf.zeros((2, 5, 5, 8)), tf.constant(setup_kernel([1, 3, 3, 1], gain=4.0)), tf.zeros([0])
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape("upfirdn2d expects a bias [8] or an empty one")):
        op(x, k, tf.zeros([7]), empty, tf.zeros([]), empty, pad_y0=1, pad_y1=1, pad_x0=1, pad_x1=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape("noise [1 or 2, 4, 4, 1]")):
        op(x, k, empty, tf.zeros([1, 5, 5, 1]), tf.zeros([]), empty, pad_y0=1, pad_y1=1, pad_x0=1, pad_x1=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape("upfirdn2d expects a scale [2, 8] or an empty")):
        op(x, k, empty, empty, tf.zeros([]), tf.zeros([1, 8]), pad_y0=1, pad_y1=1, pad_x0=1, pad_x1=1)


# (y shape, scale, bias, noise batch or None, activation): 8-lane vectors and the pruned 154 (a tail of 2),
# 5 channels (plain loops only), every part alone and all together, noise shared or per sample.
EPILOGUE_CASES = [((2, 5, 7, 40), True, True, 1, "lrelu"), ((3, 4, 4, 154), True, True, 3, "lrelu"),
                  ((1, 3, 6, 5), True, False, None, "linear"), ((2, 4, 3, 16), False, True, None, "lrelu"),
                  ((1, 6, 5, 24), False, False, 1, "linear"), ((2, 3, 3, 8), False, False, None, "lrelu")]


@requires_library
@pytest.mark.parametrize("shape, scale, bias, noise_n, activation", EPILOGUE_CASES)
def test_epilogue_op_matches_reference(shape, scale, bias, noise_n, activation):
    """The standalone compiled epilogue (one pass after a conv of TensorFlow's) against ``epilogue_ref``, values
    and every gradient, and ``ops.epilogue.epilogue`` with impl="custom" against the same."""
    rng = np.random.default_rng(sum(shape))
    n, h, w, c = shape
    y = rng.standard_normal(shape).astype(np.float32)
    extra, names = _epilogue_parts(rng, n, c, [h, w], scale, bias, noise_n)

    def run(fn):
        def call(a, *values):
            return fn(a, activation=activation, alpha=0.2, **dict(zip(names, values)))
        return call

    inputs = [y] + [extra[k] for k in names]
    cot = rng.standard_normal(shape).astype(np.float32)
    got, got_grads = _vjp(run(epilogue_module._epilogue_op), inputs, cot)  # pylint: disable=protected-access
    want, want_grads = _vjp(run(epilogue_module.epilogue_ref), inputs, cot)
    _assert_close(got, want, what="epilogue")
    for name, a, b in zip(["dy"] + names, got_grads, want_grads):
        _assert_close(a, b, what=f"epilogue d{name}")
    _assert_close(epilogue_module.epilogue(y, impl="custom", activation=activation, alpha=0.2, **extra), want,
                  what="epilogue, impl custom")


@requires_library
def test_epilogue_op_bad_inputs():
    """The standalone epilogue's inputs are checked as the other ops' epilogues are, with the op's name."""
    op = _loader.require_library().tf_distill_epilogue
    y, empty = tf.zeros((2, 4, 4, 8)), tf.zeros([0])
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape("epilogue expects a bias [8] or an empty one")):
        op(y, tf.zeros([7]), empty, tf.zeros([]), empty)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape("noise [1 or 2, 4, 4, 1]")):
        op(y, empty, tf.zeros([1, 5, 4, 1]), tf.zeros([]), empty)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape("epilogue expects a scale [2, 8] or an empty")):
        op(y, empty, empty, tf.zeros([]), tf.zeros([2, 7]))
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=re.escape("x of rank 4 (NHWC)")):
        op(tf.zeros((4, 4, 8)), empty, empty, tf.zeros([]), empty)


@requires_library
def test_self_checks_print_no_tensorflow_log_lines():
    """The self-checks run in users' processes (the first time an op resolves to its kernel), so they must not
    print TensorFlow's C++ log lines (a kernel gradient of the reference upfirdn2d once did, through oneDNN)."""
    result = _run_python("""
        import importlib
        from tf_distill import cli
        cli.import_tensorflow()
        for module, check in [("conv3x3", "_self_check"), ("to_rgb", "_self_check"), ("upfirdn2d", "_self_check"),
                              ("upfirdn2d", "_self_check_epilogue"), ("fused_bias_act", "_self_check"),
                              ("epilogue", "_self_check")]:
            error, case = getattr(importlib.import_module("tf_distill.ops." + module), check)()
            assert error < 1e-4, (module, check, error, case)
        print("CHECKED")
    """)
    assert "CHECKED" in result.stdout, result.stdout + result.stderr[-3000:]
    log_lines = [line for line in result.stderr.splitlines() if re.match(r"^[EWIF]\d{4} ", line)]
    assert not log_lines, "\n".join(log_lines)


# (x shape, outputs, bias, skip taps and pads or None): the vector path for 1-4 outputs with StyleGAN2's
# 4-tap upsampling (student-like 40 channels, one-pixel skip), other kernels and pads (3 taps, 1 tap, a
# crop-free pad of 1), no bias or no skip, widths that are no multiple of 8 (13, the pruned 154, 5: a masked
# last load), and the plain loops (5 outputs).
TO_RGB_CASES = [((2, 8, 6, 40), 3, True, ((1, 3, 3, 1), (2, 1))), ((1, 2, 2, 16), 1, True, ((1, 3, 3, 1), (2, 1))),
                ((2, 6, 4, 8), 4, False, ((1, 2, 1), (1, 1))), ((1, 4, 8, 24), 2, True, ((1,), (0, 0))),
                ((3, 5, 7, 16), 3, True, None), ((1, 6, 6, 12), 5, True, ((1, 3, 3, 1), (2, 1))),
                ((2, 4, 4, 8), 3, False, None), ((2, 6, 10, 13), 3, True, ((1, 3, 3, 1), (2, 1))),
                ((1, 4, 8, 154), 3, True, ((1, 3, 3, 1), (2, 1))), ((1, 4, 3, 5), 2, False, None)]


@requires_library
@pytest.mark.parametrize("shape, out, bias, skip", TO_RGB_CASES)
def test_to_rgb_matches_numpy_and_reference(shape, out, bias, skip):
    """The compiled ToRGB and ``to_rgb_ref`` against NumPy's per-sample matmul + bias + the reference upfirdn2d of
    the skip, and the compiled op's gradients against those of ``to_rgb_ref``."""
    rng = np.random.default_rng(sum(shape) + out)
    n, h, w, c = shape
    x = rng.standard_normal(shape).astype(np.float32)
    weight = rng.standard_normal((n, c, out)).astype(np.float32)
    b = rng.standard_normal(out).astype(np.float32) if bias else None
    taps, pad = skip if skip else ((1, 3, 3, 1), (2, 1))
    low = [(d + 1 - sum(pad) + len(taps) - 2) // 2 for d in (h, w)]
    sk = rng.standard_normal((n, *low, out)).astype(np.float32) if skip else None
    want = np.einsum("nhwc,nco->nhwo", x.astype(np.float64), weight.astype(np.float64))
    if bias:
        want = want + b
    if skip:
        want = want + upfirdn2d_ref(sk, setup_kernel(taps, 4.0), up=2, pad=pad).numpy()
    got = to_rgb._to_rgb_op(x, weight, b, sk, taps, pad)  # pylint: disable=protected-access
    _assert_close(got, want, what="to_rgb")
    _assert_close(to_rgb.to_rgb_ref(x, weight, b, sk, taps, pad), want, what="to_rgb_ref")
    present = [v for v in (x, weight, b, sk) if v is not None]

    def run(fn):
        def call(*args):
            it = iter(args)
            a, wt, bb, s = (next(it) if v is not None else None for v in (x, weight, b, sk))
            return fn(a, wt, bb, s, taps, pad)
        return call

    cot = rng.standard_normal((n, h, w, out)).astype(np.float32)
    _, got_grads = _vjp(run(to_rgb._to_rgb_op), present, cot)  # pylint: disable=protected-access
    _, want_grads = _vjp(run(to_rgb.to_rgb_ref), present, cot)
    for name, a, e in zip(["dx", "dweight", "dbias or dskip", "dskip"], got_grads, want_grads):
        _assert_close(a, e, what=f"to_rgb {name}")


@requires_library
@pytest.mark.parametrize("weight, bias, skip, message", [
    ((2, 8, 3), None, None, "a weight [n, c, k] (one [c, k] per sample of x) for x [2,4,4,16]"),
    ((1, 16, 3), None, None, "a weight [n, c, k]"),
    ((2, 16, 3), (4,), None, "a bias [3] or an empty one"),
    ((2, 16, 3), None, (2, 3, 2, 3), "brings to 4 x 4"),
    ((2, 16, 3), None, (2, 2, 2, 4), "a skip [2, h', w', 3]"),
])
def test_to_rgb_bad_inputs(weight, bias, skip, message):
    """Shapes that do not fit give the op's one-line message (from the shape function or the kernel)."""
    x = tf.zeros((2, 4, 4, 16))
    empty = tf.zeros([0])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=re.escape(message)):
        _loader.require_library().tf_distill_to_rgb(
            x, tf.zeros(weight), empty if bias is None else tf.zeros(bias), empty if skip is None else tf.zeros(skip),
            upfirdn2d_module.separable_factor((1, 3, 3, 1), 4.0), pad0=2, pad1=1)


def test_to_rgb_runs_the_compiled_kernel_only_on_vector_cpus():
    """``impl`` custom takes the op where the CPU kernels are vectorized and no GPU is visible; ``ref`` never."""
    x, weight = tf.zeros((1, 4, 4, 8)), tf.zeros((1, 8, 3))

    def op_types(impl):
        graph = tf.function(lambda a, b: to_rgb.to_rgb(a, b, impl=impl)).get_concrete_function(x, weight).graph
        return {op.type for op in graph.get_operations()}

    assert "TfDistill>ToRgb" not in op_types("ref")
    if _loader.custom_ops_library() is not None:
        assert ("TfDistill>ToRgb" in op_types("custom")) == _loader.vector_cpu_only()


@requires_library
@pytest.mark.parametrize("x_shape, w_shape, message", [
    ((1, 4, 4, 4), (3, 3, 8, 8), "reads more input channels than x"),
    ((1, 4, 4, 8), (5, 5, 8, 8), "weight [3, 3, in, out]"),
    ((4, 4, 8), (3, 3, 8, 8), "rank 4 (NHWC)"),
    ((2, 4, 4, 8), (3, 3, 3, 8, 8), "for another batch than x"),
    ((1, 4, 4, 8), (1, 1, 3, 3, 8, 8), "weight [3, 3, in, out]"),
])
def test_conv3x3_bad_inputs_raise_readable_errors(x_shape, w_shape, message):
    x, w = tf.zeros(x_shape), tf.zeros(w_shape)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=re.escape(message)):
        conv3x3._conv3x3_op(x, w, False)
    fn = tf.function(lambda a, b: conv3x3._conv3x3_op(a, b, False))  # unknown shapes: the kernel's own check
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        fn.get_concrete_function(tf.TensorSpec(None), tf.TensorSpec(None))(x, w)


@requires_library
def test_fused_bias_act_uses_negative_slope_at_zero():
    b = np.array([0.5, -1.0, 2.0], np.float32)
    x = np.stack([-b, -b + 1.0, -b - 1.0]).astype(np.float32)  # first row: x + b == 0 exactly
    y, (dx, db) = _vjp(lambda t, bb: fused_bias_act(t, bb, impl="custom"), [x, b], np.ones_like(x))
    y_ref, (dx_ref, db_ref) = _vjp(lambda t, bb: fused_bias_act_ref(t, bb), [x, b], np.ones_like(x))
    np.testing.assert_allclose(dx[0], 0.2 * np.sqrt(2.0) * np.ones(3), rtol=1e-6)
    _assert_close(y, y_ref, what="y")
    _assert_close(dx, dx_ref, what="dx")
    _assert_close(db, db_ref, what="db")


@requires_library
def test_unsupported_settings_fall_back_to_reference():
    x = np.random.default_rng(4).standard_normal((3, 5))
    b = np.linspace(-1, 1, 5)
    # float64 and negative alpha are not compiled: same results as the reference, no error.
    _assert_close(fused_bias_act(x, b, impl="custom"), fused_bias_act_ref(x, b), rel=1e-12, what="float64")
    _assert_close(fused_bias_act(x.astype(np.float32), b.astype(np.float32), alpha=-0.5, impl="custom"),
                  fused_bias_act_ref(x.astype(np.float32), b.astype(np.float32), alpha=-0.5), what="alpha < 0")
    x4 = np.random.default_rng(5).standard_normal((1, 6, 6, 2))
    _assert_close(upfirdn2d(x4, setup_kernel([1, 2, 1]), impl="custom"), upfirdn2d_ref(x4, setup_kernel([1, 2, 1])),
                  rel=1e-12, what="float64 upfirdn2d")


@requires_library
def test_graphs_use_the_compiled_ops_and_their_gradients():
    x = tf.TensorSpec((2, 8, 8, 4))
    kernel = setup_kernel([1, 3, 3, 1])

    @tf.function
    def step(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = fused_bias_act(upfirdn2d(t, kernel, up=2, pad=(2, 1), impl="custom"), tf.ones(4), impl="custom")
        return tape.gradient(y, t, output_gradients=tf.ones_like(y))

    graph = step.get_concrete_function(x).graph
    op_types = {op.type for op in graph.get_operations()}
    for fn in graph._functions.values():  # pylint: disable=protected-access
        op_types |= {node.op for node in fn.definition.node_def}
    assert {"TfDistill>UpFirDn2d", "TfDistill>FusedBiasAct", "TfDistill>FusedBiasActGrad"} <= op_types, op_types
    assert "DepthwiseConv2dNative" not in op_types and "LeakyRelu" not in op_types, op_types


# ------------------------------------------------------------------------------ float16

@requires_library
@pytest.mark.parametrize("config", [UPFIRDN_CONFIGS[1], UPFIRDN_CONFIGS[2], UPFIRDN_CONFIGS[9]], ids=_config_id)
def test_upfirdn2d_float16(config):
    x, kernel, up, down, pad = _config_inputs(config, dtype=np.float16)
    y32 = upfirdn2d(x.astype(np.float32), kernel, up=up, down=down, pad=pad, impl="custom")
    cot = np.random.default_rng(6).standard_normal(y32.shape).astype(np.float16)
    y, (dx,) = _vjp(lambda t: upfirdn2d(t, kernel, up=up, down=down, pad=pad, impl="custom"), [x], cot)
    y_ref, (dx_ref,) = _vjp(lambda t: upfirdn2d_ref(t, kernel, up=up, down=down, pad=pad), [x], cot)
    assert y.dtype == tf.float16 and dx.dtype == tf.float16
    _assert_close(y, y32, rel=2e-3, what="float16 y vs float32")  # float accumulation, one rounding
    _assert_close(y, y_ref, rel=1e-2, what="float16 y vs reference")
    _assert_close(dx, dx_ref, rel=1e-2, what="float16 dx vs reference")


@requires_library
def test_fused_bias_act_float16():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 8, 8, 24)).astype(np.float16)
    b = rng.standard_normal(24).astype(np.float16)
    cot = rng.standard_normal(x.shape).astype(np.float16)
    y, (dx, db) = _vjp(lambda t, bb: fused_bias_act(t, bb, impl="custom"), [x, b], cot)
    y_ref, (dx_ref, db_ref) = _vjp(lambda t, bb: fused_bias_act_ref(t, bb), [x, b], cot)
    assert y.dtype == dx.dtype == db.dtype == tf.float16
    _assert_close(y, y_ref, rel=2e-3, what="y")
    _assert_close(dx, dx_ref, rel=2e-3, what="dx")
    _assert_close(db, db_ref, rel=1e-2, what="db")


# -------------------------------------------------------------------------- gradients

@requires_library
def test_first_order_gradients_numerically():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    kernel = rng.standard_normal((3, 2)).astype(np.float32)
    theoretical, numerical = tf.test.compute_gradient(
        lambda t: upfirdn2d(t, kernel, up=2, down=1, pad=(1, 0), impl="custom"), [x], delta=1e-2)
    _assert_close(theoretical[0], numerical[0], rel=2e-3, what="upfirdn2d jacobian")

    b = rng.standard_normal(3).astype(np.float32)
    x = np.where(np.abs(x + b) < 0.05, x + 0.2, x).astype(np.float32)  # stay away from the kink
    theoretical, numerical = tf.test.compute_gradient(
        lambda t, bb: fused_bias_act(t, bb, impl="custom"), [x, b], delta=1e-3)
    for i, name in enumerate(("x", "bias")):
        _assert_close(theoretical[i], numerical[i], rel=2e-3, what=f"fused_bias_act jacobian w.r.t. {name}")


@requires_library
def test_second_order_gradients_numerically():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 4, 5, 2)).astype(np.float32)
    kernel = rng.standard_normal((3, 3)).astype(np.float32)
    w = tf.constant(rng.standard_normal((1, 3, 3, 2)).astype(np.float32))

    def grad_of_upfirdn(t):  # d/dt sum(w * upfirdn(t)^2): the gradient op, differentiated again
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = upfirdn2d(t, kernel, up=1, down=2, pad=(2, 1), impl="custom")
            loss = tf.reduce_sum(w * y * y)
        return tape.gradient(loss, t)

    theoretical, numerical = tf.test.compute_gradient(grad_of_upfirdn, [x], delta=1e-2)
    _assert_close(theoretical[0], numerical[0], rel=5e-3, what="upfirdn2d second order")

    b = rng.standard_normal(2).astype(np.float32)
    x = np.where(np.abs(x + b) < 0.05, x + 0.2, x).astype(np.float32)

    def grad_of_bias_act(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = fused_bias_act(t, b, impl="custom")
            loss = tf.reduce_sum(y * y * y)
        return tape.gradient(loss, t)

    theoretical, numerical = tf.test.compute_gradient(grad_of_bias_act, [x], delta=1e-3)
    _assert_close(theoretical[0], numerical[0], rel=5e-3, what="fused_bias_act second order")


def _r1_like(impl, x, v1, b1, v2, b2, w):
    """R1-style penalty through two layers; returns the gradients of the penalty."""
    k_up, k_down = setup_kernel([1, 3, 3, 1], gain=4.0), np.array([[1.0, 2.0], [0.5, -1.0], [0.3, 0.2]], np.float32)
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            h = fused_bias_act(upfirdn2d(x, k_up, up=2, pad=(2, 1), impl=impl) * v1, b1, impl=impl)
            h = fused_bias_act(upfirdn2d(h, k_down, down=2, pad=(1, 1), impl=impl) * v2, b2, impl=impl)
            score = tf.reduce_sum(h * w)
        g = inner.gradient(score, x)
        penalty = tf.reduce_sum(tf.square(g)) + score
    return [penalty] + outer.gradient(penalty, [x, v1, b1, v2, b2])


@requires_library
def test_second_order_nested_tapes_match_reference():
    rng = np.random.default_rng(10)
    x = tf.constant(rng.standard_normal((2, 5, 6, 3)).astype(np.float32))
    v1 = tf.Variable(rng.uniform(0.5, 1.5, 3).astype(np.float32))
    b1 = tf.Variable(rng.standard_normal(3).astype(np.float32))
    v2 = tf.Variable(rng.uniform(0.5, 1.5, 3).astype(np.float32))
    b2 = tf.Variable(rng.standard_normal(3).astype(np.float32))
    w = tf.constant(rng.standard_normal((2, 5, 7, 3)).astype(np.float32))
    expected = _r1_like("ref", x, v1, b1, v2, b2, w)
    for result in (_r1_like("custom", x, v1, b1, v2, b2, w),
                   tf.function(_r1_like)("custom", x, v1, b1, v2, b2, w)):
        for name, got, want in zip(("penalty", "d/dx", "d/dv1", "d/db1", "d/dv2", "d/db2"), result, expected):
            _assert_close(got, want, rel=2e-5, what=name)
    assert float(tf.reduce_max(tf.abs(expected[2]))) > 0  # the second-order path is not trivially zero


@requires_library
def test_third_order_gradient_of_upfirdn2d():
    x = tf.constant(np.random.default_rng(11).standard_normal((1, 4, 4, 1)).astype(np.float32))
    kernel = np.array([[1.0, -2.0, 0.5]], np.float32)

    def third(impl):
        with tf.GradientTape() as t3:
            t3.watch(x)
            with tf.GradientTape() as t2:
                t2.watch(x)
                with tf.GradientTape() as t1:
                    t1.watch(x)
                    y = upfirdn2d(x, kernel, up=2, down=1, pad=(1, 1), impl=impl)
                    loss = tf.reduce_sum(y ** 4)
                g1 = t1.gradient(loss, x)
                s = tf.reduce_sum(g1 * g1)
            g2 = t2.gradient(s, x)
            r = tf.reduce_sum(g2)
        return t3.gradient(r, x)

    _assert_close(third("custom"), third("ref"), rel=1e-4, what="third-order gradient")


# ------------------------------------------------------------------------- bad inputs

BAD_UPFIRDN = [
    (dict(x=(4, 4, 3)), "rank 4"),
    (dict(kernel=(4,)), "2-D FIR kernel"),
    (dict(kernel=(0, 3)), "non-empty FIR kernel"),
    (dict(up=0), "up >= 1"),
    (dict(down=0), "down >= 1"),
    (dict(pad=(-4, -4)), "enlarge the input or the padding"),
    (dict(x=(1, 1, 1, 1), pad=(2 ** 30, 2 ** 30)), "overflow int32"),
    (dict(x=(1, 1, 1, 1), pad=(50000, 50000)), "2^31-1 elements"),
]


def _bad_upfirdn_call(spec):
    """Straight to the kernel wrapper: the public op rejects statically bad arguments in Python first
    (test_ops_ref), so this exercises the kernel's own OP_REQUIRES checks."""
    x = tf.zeros(spec.get("x", (1, 4, 4, 3)))
    kernel = tf.ones(spec.get("kernel", (2, 2)))
    return upfirdn2d_custom(x, kernel, up=spec.get("up", 1), down=spec.get("down", 1),
                            pad=spec.get("pad", (0, 0)))


@requires_library
@pytest.mark.parametrize("spec,message", BAD_UPFIRDN, ids=[m for _, m in BAD_UPFIRDN])
def test_upfirdn2d_bad_inputs_raise_readable_errors(spec, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message.replace("^", r"\^")):
        _bad_upfirdn_call(spec)


@requires_library
@pytest.mark.parametrize("spec,message", BAD_UPFIRDN[:6], ids=[m for _, m in BAD_UPFIRDN[:6]])
def test_upfirdn2d_bad_inputs_in_graphs(spec, message):
    # Static shapes fail while tracing (shape function: ValueError), others at run time.
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=message):
        tf.function(lambda: _bad_upfirdn_call(spec))()


@requires_library
def test_fused_bias_act_bad_inputs_raise_readable_errors():
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"bias of shape \[3\]"):
        fused_bias_act_custom(tf.zeros((2, 3)), tf.zeros(4))
    with pytest.raises(tf.errors.InvalidArgumentError, match="rank >= 1"):
        fused_bias_act_custom(tf.constant(1.0), tf.zeros(0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="same shape"):
        LIBRARY.tf_distill_fused_bias_act_grad(tf.zeros((2, 3)), tf.zeros((3, 2)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="alpha >= 0"):
        LIBRARY.tf_distill_fused_bias_act(tf.zeros((2, 3)), tf.zeros(3), alpha=-0.1)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=r"bias of shape \[3\]"):
        tf.function(lambda: fused_bias_act_custom(tf.zeros((2, 3)), tf.zeros(4)))()


# ------------------------------------------------------------------ MirroredStrategy

MIRRORED_SCRIPT = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tf_distill.ops import _loader, choice, fused_bias_act, setup_kernel, upfirdn2d
assert _loader.custom_ops_library() is not None, _loader.unavailable_reason()
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
rng = np.random.default_rng(0)
images = rng.standard_normal((4, 6, 6, 8)).astype(np.float32)
with strategy.scope():
    v = tf.Variable(rng.uniform(0.5, 1.5, 8).astype(np.float32))
    b = tf.Variable(rng.standard_normal(8).astype(np.float32))
k_up, k_blur = setup_kernel([1, 3, 3, 1], gain=4.0), setup_kernel([1, 3, 3, 1])

def replica_step(x, impl):
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            h = fused_bias_act(upfirdn2d(x, k_up, up=2, pad=(2, 1), impl=impl) * v, b, impl=impl)
            h = upfirdn2d(h, k_blur, down=2, pad=(1, 1), impl=impl)
            score = tf.reduce_sum(h * h)
        g = inner.gradient(score, x)
        loss = (tf.reduce_sum(g * g) + score) / 4.0  # scaled by the global batch
    return outer.gradient(loss, [v, b])

@tf.function
def step(dist_x, impl):
    per_replica = strategy.run(replica_step, args=(dist_x, impl))
    return [strategy.reduce("SUM", g, axis=None) for g in per_replica]

dist = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(images).batch(4)))
dist_x = next(dist)
devices = sorted({t.device for t in strategy.experimental_local_results(dist_x)})
assert len(devices) == 2, devices
custom = step(dist_x, "custom")
ref = step(dist_x, "ref")
single = replica_step(tf.constant(images), "ref")
for c, r, s in zip(custom, ref, single):
    scale = max(1.0, float(np.max(np.abs(r))))
    assert np.max(np.abs(c.numpy() - r.numpy())) <= 1e-5 * scale, (c.numpy(), r.numpy())
    assert np.max(np.abs(c.numpy() - s.numpy())) <= 1e-4 * scale, (c.numpy(), s.numpy())
checks = choice.self_check_results()  # first reached inside a strategy.run trace: ran eagerly, passed
assert sorted(checks) == ["fused_bias_act", "upfirdn2d"] and all(r["passed"] for r in checks.values()), checks
print("MIRRORED_OK", devices)
"""


@requires_library
def test_mirrored_strategy_two_logical_cpus():
    result = _run_python(MIRRORED_SCRIPT)
    assert result.returncode == 0 and "MIRRORED_OK" in result.stdout, result.stdout[-3000:] + result.stderr[-6000:]


# -------------------------------------------------------------------------- loader

LOADER_SCRIPT = """
import warnings, numpy as np
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from tf_distill.ops import _loader, fused_bias_act, setup_kernel, upfirdn2d
    from tf_distill.ops.fused_bias_act import fused_bias_act_ref
    from tf_distill.ops.upfirdn2d import upfirdn2d_ref
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 3)).astype(np.float32)
    k = setup_kernel([1, 3, 3, 1])
    for _ in range(3):
        y = upfirdn2d(x, k, up=2, pad=(2, 1))
        z = fused_bias_act(x, np.ones(3, np.float32))
    assert np.allclose(y, upfirdn2d_ref(x, k, up=2, pad=(2, 1)))
    assert np.allclose(z, fused_bias_act_ref(x, np.ones(3, np.float32)))
ours = [w for w in caught if issubclass(w.category, RuntimeWarning) and "custom ops" in str(w.message)]
print("LIBRARY", _loader.custom_ops_library() is not None)
print("WARNINGS", len(ours))
for w in ours:
    print("MESSAGE", w.message)
try:
    upfirdn2d(x, k, impl="custom")
    print("CUSTOM", "ran")
except RuntimeError as e:
    print("CUSTOM", "RuntimeError", e)
"""


@pytest.mark.parametrize("problem", ["missing", "unloadable"])
def test_loader_falls_back_with_one_warning(problem, tmp_path):
    if problem == "missing":
        path = tmp_path / "does_not_exist" / "_custom_ops.so"
    else:
        path = tmp_path / "_custom_ops.so"
        path.write_bytes(b"this is not an ELF shared object")
    result = _run_python(LOADER_SCRIPT, {"TF_DISTILL_CUSTOM_OPS_LIBRARY": str(path)})
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-6000:]
    assert "LIBRARY False" in out
    assert "WARNINGS 1" in out, out
    message = [line for line in out.splitlines() if line.startswith("MESSAGE")][0]
    assert str(path) in message and "reference TensorFlow ops" in message
    assert ("does not exist" if problem == "missing" else "could not be loaded") in message
    assert "CUSTOM RuntimeError" in out  # impl="custom" says why instead of silently using ref


@requires_library
def test_loader_prefers_cuda_library_and_the_cpu_library_works():
    names = [p.name for p in _loader.candidate_paths()] if not os.environ.get(_loader.ENV_LIBRARY) else []
    if names:
        assert names.index("_custom_ops_cuda.so") < names.index("_custom_ops.so")
    loaded = pathlib.Path(_loader.library_path())
    cpu_lib = loaded.with_name("_custom_ops.so")
    if not cpu_lib.is_file():
        pytest.skip(f"no CPU-only library next to {loaded}")
    # The CPU-only library on its own (subprocess: a process loads one library).
    code = """
    import numpy as np
    from tf_distill.ops import _loader, fused_bias_act, upfirdn2d
    from tf_distill.ops.upfirdn2d import upfirdn2d_ref
    from tf_distill.ops.fused_bias_act import fused_bias_act_ref
    assert _loader.custom_ops_library() is not None, _loader.unavailable_reason()
    x = np.random.default_rng(0).standard_normal((2, 7, 5, 70)).astype(np.float32)
    k = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    assert np.allclose(upfirdn2d(x, k, up=2, down=3, pad=(1, 2), impl="custom"),
                       upfirdn2d_ref(x, k, up=2, down=3, pad=(1, 2)), atol=1e-4)
    assert np.allclose(fused_bias_act(x, x[0, 0, 0], impl="custom"), fused_bias_act_ref(x, x[0, 0, 0]), atol=1e-5)
    print("CPU_LIB_OK", _loader.library_path())
    """
    result = _run_python(code, {_loader.ENV_LIBRARY: str(cpu_lib)})
    assert result.returncode == 0 and f"CPU_LIB_OK {cpu_lib}" in result.stdout, result.stdout + result.stderr[-6000:]


@requires_library
def test_loader_warns_when_a_preferred_library_fails_but_a_later_one_loads(tmp_path):
    cpu_lib = pathlib.Path(_loader.library_path()).with_name("_custom_ops.so")
    if not cpu_lib.is_file():
        pytest.skip(f"no CPU-only library next to {_loader.library_path()}")
    broken = tmp_path / "_custom_ops_cuda.so"
    broken.write_bytes(b"\x7fELF but not really")
    code = f"""
    import pathlib, warnings
    warnings.simplefilter("always")
    from tf_distill.ops import _loader
    _loader.candidate_paths = lambda: [pathlib.Path({str(broken)!r}), pathlib.Path({str(cpu_lib)!r})]
    with warnings.catch_warnings(record=True) as caught:
        assert _loader.custom_ops_library() is not None
        _loader.custom_ops_library()
    messages = [str(w.message) for w in caught if "custom ops" in str(w.message)]
    assert len(messages) == 1, messages
    assert {str(broken)!r} in messages[0] and "could not be loaded" in messages[0], messages
    print("PARTIAL_OK", _loader.library_path())
    """
    result = _run_python(code)
    assert result.returncode == 0 and f"PARTIAL_OK {cpu_lib}" in result.stdout, result.stdout + result.stderr[-6000:]


# ----------------------------------------------------------- one source list, two builders

def test_build_config_lists_the_sources_and_build_loads_them():
    import configure  # pylint: disable=import-outside-toplevel  # the repository root is on pythonpath

    config = configure.load_build_config()
    lists = {name: config[name] for name in ("OP_SRCS", "KERNEL_SRCS", "CUDA_SRCS", "HDRS")}
    listed = [src for srcs in lists.values() for src in srcs]
    assert len(listed) == len(set(listed)), listed
    on_disk = sorted(str(p.relative_to(REPO / "custom_ops")) for p in (REPO / "custom_ops" / "cc").rglob("*")
                     if p.is_file())
    assert sorted(listed) == on_disk, "every file under custom_ops/cc/ is in exactly one list of build_config.bzl"

    build = (REPO / "custom_ops" / "BUILD").read_text()
    load = build[build.index('load(\n    "//custom_ops:build_config.bzl"'):]
    load = load[:load.index(")")]
    for name in lists:
        assert f'"{name}"' in load, f"custom_ops/BUILD does not load {name} from build_config.bzl"
        assert f"{name} = " not in build, f"custom_ops/BUILD defines its own {name}"
    for src in listed:
        assert src not in build, f"custom_ops/BUILD names {src} itself instead of using build_config.bzl"


FALLBACK_CHECK = """
import numpy as np
from tf_distill.ops import _loader, fused_bias_act, upfirdn2d
assert _loader.custom_ops_library() is not None, _loader.unavailable_reason()
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 7, 6, 70)).astype(np.float32)
k = rng.standard_normal((3, 4)).astype(np.float32)
b = rng.standard_normal(70).astype(np.float32)
for up, down, pad in [(2, 1, (1, 2)), (1, 2, (2, -1)), (3, 2, (-2, 3))]:
    np.testing.assert_allclose(upfirdn2d(x, k, up=up, down=down, pad=pad, impl="custom"),
                               upfirdn2d(x, k, up=up, down=down, pad=pad, impl="ref"), rtol=1e-5, atol=1e-4)
np.testing.assert_allclose(fused_bias_act(x, b, impl="custom"), fused_bias_act(x, b, impl="ref"),
                           rtol=1e-6, atol=1e-6)
print("FALLBACK_OK", _loader.library_path())
"""


@pytest.mark.slow
def test_build_without_bazel_cpu_library(tmp_path):
    build = subprocess.run([sys.executable, str(REPO / "custom_ops" / "build_without_bazel.py"), "--python",
                            sys.executable, "--cuda", "no", "--output_dir", str(tmp_path)],
                           cwd=REPO, capture_output=True, text=True, timeout=1200)
    library = tmp_path / "_custom_ops.so"
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    assert library.is_file() and not (tmp_path / "_custom_ops_cuda.so").exists()
    assert not list(tmp_path.glob(".*.tmp")), "temporary link outputs left behind"
    result = _run_python(FALLBACK_CHECK, {_loader.ENV_LIBRARY: str(library)})
    assert result.returncode == 0 and f"FALLBACK_OK {library}" in result.stdout, \
        result.stdout[-3000:] + result.stderr[-6000:]
