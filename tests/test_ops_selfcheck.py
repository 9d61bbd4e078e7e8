"""The custom kernels' self-check: a kernel that disagrees with the reference (values or gradients)
is reported once and replaced by the reference for the rest of the process.

The faked kernels run without the compiled library (the loader is told one is loaded); the last
tests use the real one when it is built.
"""

import importlib
import time
import warnings

import numpy as np
import pytest
import tensorflow as tf

from tf_distill import ops
from tf_distill.ops import _loader, choice

UPFIRDN = importlib.import_module("tf_distill.ops.upfirdn2d")
BIAS_ACT = importlib.import_module("tf_distill.ops.fused_bias_act")

X = np.random.default_rng(0).standard_normal((2, 5, 5, 3)).astype(np.float32)
K = ops.setup_kernel([1, 3, 3, 1], gain=4.0)


@pytest.fixture(autouse=True)
def _fresh_checks(monkeypatch):
    monkeypatch.setattr(choice, "_CHECKED", {})
    monkeypatch.setattr(choice, "_DEFAULT", {"impl": "auto"})


@pytest.fixture
def fake_kernels(monkeypatch):
    """Installs fake compiled upfirdn2d / fused_bias_act (functions of the reference), counting their calls."""
    monkeypatch.setattr(_loader, "custom_ops_library", lambda: object())
    calls = {"upfirdn2d": 0, "fused_bias_act": 0}

    def install(upfirdn2d=None, fused_bias_act=None):
        def counted(name, fake, ref):
            def run(*args, **kwargs):
                calls[name] += 1
                return fake(ref, *args, **kwargs)
            return run

        same = lambda ref, *a, **k: ref(*a, **k)  # noqa: E731
        monkeypatch.setattr(UPFIRDN, "upfirdn2d_custom", counted("upfirdn2d", upfirdn2d or same, UPFIRDN.upfirdn2d_ref))
        monkeypatch.setattr(BIAS_ACT, "fused_bias_act_custom",
                            counted("fused_bias_act", fused_bias_act or same, BIAS_ACT.fused_bias_act_ref))
        return calls

    return install


def _off_by(delta):
    return lambda ref, *a, **k: ref(*a, **k) + delta


def _wrong_gradient(ref, x, bias, **kwargs):
    """Right values, gradient w.r.t. x 1% too large."""
    @tf.custom_gradient
    def run(x, b):
        def grad(dy):
            with tf.GradientTape() as tape:
                tape.watch([x, b])
                y = ref(x, b, **kwargs)
            dx, db = tape.gradient(y, [x, b], dy)
            return 1.01 * dx, db

        return ref(x, b, **kwargs), grad

    return run(tf.convert_to_tensor(x), tf.convert_to_tensor(bias))


def _raises(ref, *args, **kwargs):
    raise tf.errors.InternalError(None, None, "CUDA error: no kernel image is available for execution on the device")


def _ref_ops():
    return UPFIRDN.upfirdn2d_ref(X, K, up=2, pad=(2, 1)), BIAS_ACT.fused_bias_act_ref(X, np.ones(3, np.float32))


def _run_ops(impl=None):
    return ops.upfirdn2d(X, K, up=2, pad=(2, 1), impl=impl), ops.fused_bias_act(X, np.ones(3, np.float32), impl=impl)


@pytest.mark.parametrize("impl", [None, "custom"])  # "auto" (the default) and an explicit "custom" both fall back
def test_mismatching_kernel_warns_once_and_the_reference_runs(fake_kernels, impl):
    calls = fake_kernels(upfirdn2d=_off_by(1e-2))
    with pytest.warns(RuntimeWarning) as caught:
        up, act = _run_ops(impl)
    messages = [str(w.message) for w in caught if "self-check" in str(w.message)]
    assert len(messages) == 1 and "compiled upfirdn2d kernel differs from the reference by" in messages[0], messages
    expected_up, expected_act = _ref_ops()
    np.testing.assert_array_equal(up, expected_up)  # the reference itself, not the faulty kernel
    np.testing.assert_array_equal(act, expected_act)
    results = choice.self_check_results()
    assert not results["upfirdn2d"]["passed"] and results["upfirdn2d"]["max_error"] > 1e-3
    assert results["fused_bias_act"]["passed"] and results["fused_bias_act"]["max_error"] == 0
    n_checked = dict(calls)
    assert n_checked["fused_bias_act"] > 0  # the good kernel is used ...
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ... and no further warning, no second check
        for _ in range(2):
            up, _ = _run_ops(impl)
    np.testing.assert_array_equal(up, expected_up)
    assert calls["upfirdn2d"] == n_checked["upfirdn2d"] and calls["fused_bias_act"] == n_checked["fused_bias_act"] + 2


def test_wrong_gradient_alone_fails_the_check(fake_kernels):
    fake_kernels(fused_bias_act=_wrong_gradient)
    with pytest.warns(RuntimeWarning, match="compiled fused_bias_act kernel differs from the reference by 0.01"):
        ops.fused_bias_act(X, np.ones(3, np.float32))
    assert choice.self_check_results()["fused_bias_act"]["passed"] is False


@pytest.mark.parametrize("fake,message", [(_off_by(float("nan")), "differs from the reference by nan"),
                                          (_raises, "raised InternalError: CUDA error: no kernel image")])
def test_nan_or_failing_kernel_fails_the_check(fake_kernels, fake, message):
    fake_kernels(upfirdn2d=fake)
    with pytest.warns(RuntimeWarning, match=message):
        y = ops.upfirdn2d(X, K, up=2, pad=(2, 1))
    np.testing.assert_array_equal(y, _ref_ops()[0])


def test_check_first_reached_inside_a_trace_and_a_tape(fake_kernels):
    fake_kernels(upfirdn2d=_off_by(1e-2))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = ops.upfirdn2d(x, K, up=2, pad=(2, 1))
        return y, tape.gradient(y, x, output_gradients=tf.ones_like(y))

    with pytest.warns(RuntimeWarning, match="upfirdn2d kernel differs"):
        graph = step.get_concrete_function(tf.TensorSpec(X.shape)).graph
    assert "DepthwiseConv2dNative" in {op.type for op in graph.get_operations()}  # traced with the reference
    y, dx = step(tf.constant(X))
    np.testing.assert_array_equal(y, _ref_ops()[0])
    assert dx.shape == X.shape


def test_agreeing_kernel_passes_and_is_used(fake_kernels):
    calls = fake_kernels()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run_ops()
    assert all(r["passed"] and r["max_error"] == 0 for r in choice.self_check_results().values())
    before = dict(calls)
    _run_ops()
    assert calls == {name: n + 1 for name, n in before.items()}  # the custom path, no second check


def test_ref_needs_no_check(fake_kernels):
    calls = fake_kernels(upfirdn2d=_off_by(1e-2))
    with ops.implementation("ref"):
        _run_ops()
    assert calls == {"upfirdn2d": 0, "fused_bias_act": 0} and choice.self_check_results() == {}


requires_library = pytest.mark.skipif(
    _loader.custom_ops_library() is None,
    reason=f"custom op library not available ({_loader.unavailable_reason()}); run custom_ops/build.sh")


@requires_library
def test_compiled_kernels_pass_the_check_inside_a_trace_quickly():
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = ops.fused_bias_act(ops.upfirdn2d(x, K, up=2, pad=(2, 1)), tf.ones(3))
        return tape.gradient(y, x, output_gradients=tf.ones_like(y))

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        graph = step.get_concrete_function(tf.TensorSpec(X.shape)).graph
    seconds = time.perf_counter() - start
    types = {op.type for op in graph.get_operations()}
    for fn in graph._functions.values():  # pylint: disable=protected-access
        types |= {node.op for node in fn.definition.node_def}
    assert {"TfDistill>UpFirDn2d", "TfDistill>FusedBiasAct"} <= types, types
    results = choice.self_check_results()
    assert sorted(results) == ["fused_bias_act", "upfirdn2d"], results
    for name, result in results.items():
        assert result["passed"] and result["max_error"] < 1e-5, (name, result)
    assert sum(r["seconds"] for r in results.values()) < min(seconds, 10.0), (results, seconds)
