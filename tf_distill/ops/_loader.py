"""Finds and loads the compiled custom op library (``custom_ops``), once per process.

Until a library is built this reports it as unavailable and the ops run on the reference
path; the custom-ops issue replaces the search below with the Bazel outputs.
"""

_STATE = {"library": None, "reason": "the custom op library has not been built in this checkout"}


def custom_ops_library():
    """The loaded ``tf.load_op_library`` module, or None when it is not available."""
    return _STATE["library"]


def unavailable_reason() -> str:
    return _STATE["reason"]
