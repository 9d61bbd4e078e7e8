"""Finds and loads the compiled custom op library, once per process.

Search order: the path in ``$TF_DISTILL_CUSTOM_OPS_LIBRARY`` when it is set (and nothing
else); otherwise the CUDA library, then the CPU-only library, each looked up first in Bazel's
output tree (``<repo>/bazel-bin/custom_ops/``) and then next to this file (a copied or
installed build). The CUDA library also holds the CPU kernels, so it is used on machines
without a GPU as well. When nothing loads, the ops run on the reference path and one
warning says why. Build the libraries with ``custom_ops/build.sh`` (Bazel) or, without Bazel,
``custom_ops/build_without_bazel.py`` (writes them next to this file).
"""

import ctypes
import functools
import os
import pathlib
import threading
import warnings

ENV_LIBRARY = "TF_DISTILL_CUSTOM_OPS_LIBRARY"
LIBRARY_NAMES = ("_custom_ops_cuda.so", "_custom_ops.so")  # preference order
KERNEL_DTYPES = ("float32", "float16")  # what the compiled kernels take; other dtypes run the reference ops
BUILD_HINT = "build them with `custom_ops/build.sh` (Bazel) or `python custom_ops/build_without_bazel.py` (g++)"

_LOCK = threading.Lock()
_STATE = {"loaded": False, "library": None, "path": None, "reason": None, "warned": False}


def _repo_root() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parents[2]


def candidate_paths():
    """The library files to try, in order."""
    override = os.environ.get(ENV_LIBRARY, "").strip()
    if override:
        return [pathlib.Path(override)]
    dirs = [_repo_root() / "bazel-bin" / "custom_ops", pathlib.Path(__file__).resolve().parent]
    return [d / name for name in LIBRARY_NAMES for d in dirs]


def _load():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    problems = []
    for path in candidate_paths():
        if not path.is_file():
            problems.append(f"{path} does not exist")
            continue
        try:
            library = tf.load_op_library(str(path))
        except Exception as e:  # pylint: disable=broad-except  # NotFoundError, OSError, AlreadyExists...
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            problems.append(f"{path} could not be loaded ({type(e).__name__}: {message})")
            continue
        failed = [p for p in problems if not p.endswith("does not exist")]
        if failed:  # a preferred library (the CUDA one) exists but did not load: say so once
            warnings.warn(f"tf_distill custom ops: using {path}; " + "; ".join(failed), RuntimeWarning, stacklevel=5)
        return library, path, None
    if os.environ.get(ENV_LIBRARY, "").strip():
        reason = f"${ENV_LIBRARY} points to a library that is unusable: " + "; ".join(problems)
    elif all(p.endswith("does not exist") for p in problems):
        reason = "no custom op library is built (looked for " + ", ".join(str(p) for p in candidate_paths()) + ")"
    else:
        reason = "; ".join(p for p in problems if not p.endswith("does not exist"))
    return None, None, reason


def _ensure_loaded():
    if _STATE["loaded"]:
        return
    with _LOCK:
        if _STATE["loaded"]:
            return
        library, path, reason = _load()
        _STATE.update(library=library, path=path, reason=reason, loaded=True)
        if library is None and not _STATE["warned"]:
            _STATE["warned"] = True
            warnings.warn(
                f"tf_distill custom ops are unavailable, using the reference TensorFlow ops instead: {reason}. "
                f"To use the compiled kernels, {BUILD_HINT}.",
                RuntimeWarning,
                stacklevel=4,
            )


def custom_ops_library():
    """The loaded ``tf.load_op_library`` module, or None when it is not available."""
    _ensure_loaded()
    return _STATE["library"]


def require_library():
    """The loaded library; RuntimeError saying why when there is none."""
    library = custom_ops_library()
    if library is None:
        raise RuntimeError(f"the custom op library is not available: {unavailable_reason()}")
    return library


def register_gradient(op_type):
    """``tf.RegisterGradient(op_type)`` that tolerates a second registration (a reloaded module)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    def register(fn):
        try:
            tf.RegisterGradient(op_type)(fn)
        except KeyError:  # already registered
            pass
        return fn

    return register


def library_path():
    """Path of the loaded library, or None."""
    _ensure_loaded()
    return _STATE["path"]


def unavailable_reason() -> str:
    """Why the library is not available ('' when it is loaded)."""
    _ensure_loaded()
    return _STATE["reason"] or ""


def cpu_isa():
    """The vector instruction set the loaded library's CPU kernels use ("avx512", "avx2" or
    "baseline"; ``$TF_DISTILL_MAX_ISA`` caps it), or None when no library is loaded."""
    path = library_path()
    if path is None:
        return None
    function = ctypes.CDLL(str(path)).TfDistillCpuIsa  # the handle of the already loaded library
    function.restype = ctypes.c_char_p
    return function().decode()


@functools.lru_cache(maxsize=None)
def vector_cpu_only():
    """No GPU in this process, and the library's CPU kernels are vectorized (AVX2 or better): where the
    CPU-only kernels (conv3x3, to_rgb) are the faster choice."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    return not tf.config.list_logical_devices("GPU") and cpu_isa() in ("avx2", "avx512")


@functools.lru_cache(maxsize=None)
def onednn_convs():
    """Whether TensorFlow runs its CPU convs with oneDNN in this process (TF_ENABLE_ONEDNN_OPTS, or by default
    on CPUs with AVX-512 VNNI / BF16 or AMX): which of TensorFlow's formulations is the faster one differs
    (conv3x3's width rules, the blur's reference form in ops.upfirdn2d)."""
    try:  # TensorFlow's own test helper reads it so (test_util.IsMklEnabled); not a public API
        from tensorflow.python.util import _pywrap_util_port  # pylint: disable=import-outside-toplevel

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # a TensorFlow without it: keep the rules measured without oneDNN
        return False
