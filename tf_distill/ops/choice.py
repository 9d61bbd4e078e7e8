"""Which implementation the StyleGAN2 ops run: the plain-TF reference or the compiled custom kernels.

The choice is, from strongest to weakest: an op's (or layer's, or model's) ``impl=``; the
innermost ``with implementation(name):`` scope of the calling thread/task; the process default
(``set_default_implementation``, initially ``"auto"``). It is read when an op is called, i.e.
when a model runs eagerly or while a ``tf.function`` is traced: a function traced once keeps
the choice it was traced with.

* ``"ref"``: plain TensorFlow, the oracle; the only choice XLA and stock TF Serving can run.
* ``"auto"``: the custom kernels when their library loads and they pass the self-check below,
  else the reference.
* ``"custom"``: as ``"auto"``, but a missing library is an error rather than a silent fallback.

Self-check: the first time a process resolves an op to its custom kernel, the kernel and the
reference run once on small fixed random inputs (values and gradients), eagerly in a separate
thread so that it is safe inside a ``tf.function`` trace, a gradient tape or a distribution
strategy. A kernel that disagrees (or raises) gives one RuntimeWarning, and that op then runs
on the reference path for the rest of the process, with ``"custom"`` too: a kernel that was
never run on this machine's device can never silently corrupt a training run.
"""

import contextlib
import contextvars
import threading
import time
import warnings

import numpy as np
import tensorflow as tf

from tf_distill.ops import _loader

IMPLS = ("auto", "ref", "custom")
SELF_CHECK_TOLERANCE = 1e-4  # max |custom - ref| / max |ref|, per output and gradient (float32)

_SCOPED = contextvars.ContextVar("tf_distill_ops_implementation", default=None)
_DEFAULT = {"impl": "auto"}
_LOCK = threading.Lock()
_CHECKED = {}  # op name -> {"passed", "max_error", "case", "seconds"}


def check_name(impl):
    """``impl`` lower-cased when it is one of IMPLS; ValueError otherwise."""
    name = str(impl).strip().lower()
    if name not in IMPLS:
        raise ValueError(f"impl={impl!r} is not one of {', '.join(IMPLS)} (pick one of those).")
    return name


@contextlib.contextmanager
def implementation(impl):
    """Ops called (or traced) inside run ``impl`` unless they are given one themselves; scopes nest."""
    token = _SCOPED.set(check_name(impl))
    try:
        yield
    finally:
        _SCOPED.reset(token)


def set_default_implementation(impl):
    """Sets the process-wide default (``"auto"`` initially) used outside any scope."""
    _DEFAULT["impl"] = check_name(impl)


def requested(impl=None):
    """The implementation asked for: ``impl`` itself, else the scoped one, else the process default."""
    if impl is not None:
        return check_name(impl)
    scoped = _SCOPED.get()
    return scoped if scoped is not None else _DEFAULT["impl"]


def resolve(impl, op_name, self_check):
    """``"ref"`` or ``"custom"`` for one call of op ``op_name``; ``self_check()`` -> (max error, case), see ``worst_case``."""
    impl = requested(impl)
    if impl == "ref":
        return "ref"
    if _loader.custom_ops_library() is None:
        if impl == "custom":
            raise RuntimeError(
                "impl='custom' was requested but the custom op library is not available: "
                f"{_loader.unavailable_reason()}. Build it with `custom_ops/build.sh`, or use impl='auto' / 'ref'.")
        return "ref"
    return "custom" if _passes_self_check(op_name, self_check) else "ref"


def self_check_results():
    """{op name: {"passed", "max_error", "case", "seconds"}} of the self-checks this process ran."""
    return {name: dict(result) for name, result in _CHECKED.items()}


def _passes_self_check(op_name, self_check):
    result = _CHECKED.get(op_name)
    if result is None:
        with _LOCK:
            result = _CHECKED.get(op_name)
            if result is None:
                result = _run_self_check(op_name, self_check)
                _CHECKED[op_name] = result
    return result["passed"]


def _run_self_check(op_name, self_check):
    """Runs ``self_check`` eagerly in a fresh thread (no caller graph, tape or strategy); warns on failure."""
    outcome = {}

    def body():
        try:
            outcome["error"], outcome["case"] = self_check()
        except Exception as e:  # pylint: disable=broad-except  # any failure of the kernel means: do not use it
            outcome["exception"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"

    start = time.perf_counter()
    thread = threading.Thread(target=body, name=f"tf_distill-{op_name}-self-check")
    thread.start()
    thread.join()
    seconds = time.perf_counter() - start
    error = outcome.get("error", float("nan"))
    passed = "exception" not in outcome and bool(np.isfinite(error)) and error <= SELF_CHECK_TOLERANCE
    if not passed:
        what = (f"raised {outcome['exception']}" if "exception" in outcome else
                f"differs from the reference by {error:.3g} (relative to the largest value; tolerance "
                f"{SELF_CHECK_TOLERANCE:g}) on {outcome['case']}")
        warnings.warn(
            f"tf_distill custom ops: the compiled {op_name} kernel {what} in its self-check, so this process "
            f"uses the reference TensorFlow {op_name} instead (slower, correct). Rebuild the custom ops for this "
            "machine (custom_ops/build.sh) and run tests/test_custom_ops.py, or pass impl='ref'.",
            RuntimeWarning, stacklevel=5)
    return {"passed": passed, "max_error": float(error), "case": outcome.get("case"), "seconds": seconds}


def worst_case(cases):
    """(largest ``max_error``, its case name) over ``cases``: (name, custom fn, reference fn, input arrays)."""
    worst = (0.0, None)
    for name, custom, ref, inputs in cases:
        error = max_error(custom, ref, inputs)
        if not error <= worst[0]:  # NaN too
            worst = (error, name)
            if np.isnan(error):
                break
    return worst


def max_error(custom, ref, inputs, seed=0):
    """Max over the output and its gradients of |custom - ref| / max |ref| (eager; ``inputs`` are arrays).

    The gradients are those of ``sum(y * c)`` with a fixed random cotangent ``c`` w.r.t. every input.
    """
    def run(fn):
        xs = [tf.constant(v) for v in inputs]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            y = fn(*xs)
            cot = tf.constant(np.random.default_rng(seed).standard_normal(y.shape.as_list()), y.dtype)
            loss = tf.reduce_sum(y * cot)
        return [y] + tape.gradient(loss, xs)

    errors = []
    for got, want in zip(run(custom), run(ref)):
        if got is None or want is None:  # a gradient only one side has
            errors.append(0.0 if got is want else float("nan"))
            continue
        want = want.numpy().astype(np.float64)
        scale = max(float(np.max(np.abs(want))), 1e-30)
        errors.append(float(np.max(np.abs(got.numpy().astype(np.float64) - want))) / scale)
    return max(errors) if np.all(np.isfinite(errors)) else float("nan")
