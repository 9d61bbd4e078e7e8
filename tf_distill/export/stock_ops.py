"""Checks that a SavedModel holds only stock TensorFlow ops (what the stock model server can run).

Walks every node of every MetaGraph: the graph itself and every function of its library
(signature wrappers, tf.functions, While/If bodies, gradients). An op is stock when it is
registered by ``import tensorflow`` in a clean Python process (no ``tf.load_op_library``, no
tf_distill import) and has no ``Namespace>`` prefix; calls of library functions by name are
allowed. Our custom ops (``TfDistill>...``) fail on both counts.

Functions marked for XLA (``_XlaMustCompile``, from ``jit_compile=True``) are reported in
``xla_functions``: stock ``tensorflow/serving`` runs them only with XLA compilation enabled.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from tensorflow.core.protobuf import saved_model_pb2

_CLEAN_PROCESS_SCRIPT = """
import json, sys
import tensorflow  # registers the stock ops, nothing else
from tensorflow.core.framework import op_def_pb2
from tensorflow.python.client import pywrap_tf_session as c_api
ops = op_def_pb2.OpList()
buf = c_api.TF_GetAllOpList()
try:
    ops.ParseFromString(c_api.TF_GetBuffer(buf))
finally:
    c_api.TF_DeleteBuffer(buf)
json.dump(sorted(o.name for o in ops.op), sys.stdout)
"""

_STOCK_CACHE = {}


class NonStockOpError(ValueError):
    """The graph holds ops that the stock TensorFlow (Serving) runtime does not have."""


def stock_op_names():
    """Names of the ops registered by ``import tensorflow`` in a clean process (cached per process)."""
    if "names" not in _STOCK_CACHE:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        proc = subprocess.run([sys.executable, "-I", "-c", _CLEAN_PROCESS_SCRIPT], capture_output=True, text=True,
                              env=env, timeout=300, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"Listing the stock TensorFlow ops in a clean process failed: {proc.stderr[-2000:]}")
        _STOCK_CACHE["names"] = frozenset(json.loads(proc.stdout))
    return _STOCK_CACHE["names"]


def read_saved_model_proto(path):
    path = Path(path)
    pb = path / "saved_model.pb" if path.is_dir() else path
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(pb.read_bytes())
    return proto


def graph_ops(graph_def):
    """{op name: [where it occurs]} over a GraphDef and all its library functions; also XLA-marked functions."""
    library = {f.signature.name for f in graph_def.library.function}
    found, xla = {}, []
    for node in graph_def.node:
        found.setdefault(node.op, []).append(f"graph:{node.name}")
    for fn in graph_def.library.function:
        attr = fn.attr.get("_XlaMustCompile")
        if attr is not None and attr.b:
            xla.append(fn.signature.name)
        for node in fn.node_def:
            found.setdefault(node.op, []).append(f"{fn.signature.name}:{node.name}")
    return found, library, xla


def find_non_stock_ops(graph_def, stock=None):
    """([(op, first location)] of non-stock ops, all ops found, XLA-marked functions)."""
    stock = stock_op_names() if stock is None else stock
    found, library, xla = graph_ops(graph_def)
    bad = [(op, locs[0]) for op, locs in sorted(found.items())
           if op not in library and (">" in op or op not in stock)]
    return bad, {op for op in found if op not in library}, xla


def check_saved_model(path, stock=None, allow_xla=True):
    """Raises NonStockOpError on any non-stock op in any MetaGraph; returns {'ops', 'xla_functions'}."""
    proto = read_saved_model_proto(path)
    all_ops, all_xla, problems = set(), [], []
    for meta in proto.meta_graphs:
        bad, ops, xla = find_non_stock_ops(meta.graph_def, stock)
        all_ops |= ops
        all_xla += xla
        problems += bad
    if problems:
        listed = ", ".join(f"{op} (in {where})" for op, where in problems[:20])
        raise NonStockOpError(
            f"{path}: {len(problems)} op type(s) that stock TensorFlow / tensorflow/serving cannot run: {listed}. "
            "Export through the reference ops (tf-distill-export does: `with tf_distill.ops.implementation('ref'):`) "
            "or serve with a model server that has the custom op library compiled in.")
    if all_xla and not allow_xla:
        raise NonStockOpError(f"{path}: functions compiled with XLA ({', '.join(all_xla[:5])}); stock "
                              "tensorflow/serving runs them only with --xla_cpu_compilation_enabled (CPU).")
    return {"ops": all_ops, "xla_functions": all_xla}
