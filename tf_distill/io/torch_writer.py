"""Write ``torch.save`` checkpoints without torch.

Why: weights trained here must go back to the PyTorch code. The writer emits the zip format
that ``torch.load(weights_only=True)`` reads (and ``tf_distill.io.torch_reader`` reads back).
"""

from __future__ import annotations

import os
import pickle
import re
import secrets
import struct
import zipfile
from typing import Callable

import numpy as np

from tf_distill.io.torch_reader import _MAX_DEPTH, _STORAGE_CLASSES

__all__ = ["save_torch_checkpoint"]


# numpy dtype name -> torch storage class
_WRITE_STORAGE = {dtype: cls for cls, dtype in _STORAGE_CLASSES.items() if dtype != "bfloat16"}
_ALIGN = 64  # torch aligns every record's data to 64 bytes (.storage_alignment)


class _PickleWriter:
    """Emits protocol-2 pickle opcodes for the few types a checkpoint holds, as torch would.

    Hand-written because the standard pickler would need the real torch globals imported.
    """

    def __init__(self):
        self.out = bytearray()
        self.storages: list[np.ndarray] = []
        self._memo: dict[tuple, int] = {}
        self._active: set[int] = set()

    def dump(self, obj) -> bytes:
        self.out += b"\x80\x02"
        self._save(obj, "<root>", 0)
        self.out += b"."
        return bytes(self.out)

    def _memoized(self, key: tuple, emit: Callable[[], None]) -> None:
        if key in self._memo:
            idx = self._memo[key]
            self.out += b"h" + bytes([idx]) if idx < 256 else b"j" + struct.pack("<I", idx)
            return
        emit()
        idx = self._memo[key] = len(self._memo)
        self.out += b"q" + bytes([idx]) if idx < 256 else b"r" + struct.pack("<I", idx)

    def _global(self, module: str, name: str) -> None:
        self._memoized(("g", module, name),
                       lambda: self.out.extend(f"c{module}\n{name}\n".encode("ascii")))

    def _str(self, s: str) -> None:
        data = s.encode("utf-8", "surrogatepass")
        self.out += b"X" + struct.pack("<I", len(data)) + data

    def _int(self, i: int) -> None:
        if 0 <= i < 256:
            self.out += b"K" + bytes([i])
        elif 0 <= i < 65536:
            self.out += b"M" + struct.pack("<H", i)
        elif -(2**31) <= i < 2**31:
            self.out += b"J" + struct.pack("<i", i)
        else:
            data = pickle.encode_long(i)
            if len(data) > 255:
                raise ValueError(f"integer {i} too large for a checkpoint")
            self.out += b"\x8a" + bytes([len(data)]) + data

    def _save(self, obj, where: str, depth: int) -> None:
        if isinstance(obj, np.generic):
            obj = obj.item()
        if obj is None:
            self.out += b"N"
        elif obj is True or obj is False:
            self.out += b"\x88" if obj else b"\x89"
        elif type(obj) is int:
            self._int(obj)
        elif type(obj) is float:
            self.out += b"G" + struct.pack(">d", obj)
        elif type(obj) is str:
            self._str(obj)
        elif isinstance(obj, np.ndarray):
            self._tensor(obj, where)
        elif isinstance(obj, (dict, list, tuple)):
            if id(obj) in self._active or depth > _MAX_DEPTH:
                raise ValueError(f"cannot save {where}: self-referencing or nested too deep")
            self._active.add(id(obj))
            self._container(obj, where, depth)
            self._active.discard(id(obj))
        else:
            raise TypeError(f"cannot save {type(obj).__name__} at {where}: only dicts, lists, "
                            f"tuples, numpy arrays, numbers, strings and None")

    def _container(self, obj, where: str, depth: int) -> None:
        if isinstance(obj, dict):  # every dict as an OrderedDict, like a torch state_dict
            self._global("collections", "OrderedDict")
            self.out += b")R"
            items = list(obj.items())
            for start in range(0, len(items), 1000):
                self.out += b"("
                for key, value in items[start:start + 1000]:
                    if type(key) not in (str, int):
                        raise TypeError(f"cannot save dict key {key!r} at {where}: keys must be str or int")
                    self._save(key, where, depth + 1)
                    self._save(value, f"{where}/{key}", depth + 1)
                self.out += b"u"
        elif isinstance(obj, list):
            self.out += b"]"
            for start in range(0, len(obj), 1000):
                self.out += b"("
                for i, value in enumerate(obj[start:start + 1000], start):
                    self._save(value, f"{where}[{i}]", depth + 1)
                self.out += b"e"
        else:
            self.out += b"("
            for i, value in enumerate(obj):
                self._save(value, f"{where}[{i}]", depth + 1)
            self.out += b"t"

    def _tensor(self, arr: np.ndarray, where: str) -> None:
        storage_cls = _WRITE_STORAGE.get(arr.dtype.name)
        if storage_cls is None:
            raise TypeError(f"cannot save {arr.dtype} array at {where}: supported dtypes are "
                            f"{', '.join(sorted(_WRITE_STORAGE))}")
        data = np.asarray(arr, dtype=arr.dtype.newbyteorder("<"), order="C")  # keeps 0-d
        key = str(len(self.storages))
        self.storages.append(data)
        stride, step = [], 1
        for n in reversed(data.shape):  # torch's contiguous strides
            stride.append(step)
            step *= max(n, 1)
        # _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict())
        self._global("torch._utils", "_rebuild_tensor_v2")
        self.out += b"(("
        self._memoized(("s", "storage"), lambda: self._str("storage"))
        self._global("torch", storage_cls)
        self._str(key)
        self._memoized(("s", "cpu"), lambda: self._str("cpu"))
        self._int(data.size)
        self.out += b"tQ"
        self._int(0)
        self._save(tuple(data.shape), where, 0)
        self._save(tuple(reversed(stride)), where, 0)
        self.out += b"\x89"
        self._global("collections", "OrderedDict")
        self.out += b")RtR"


def _write_record(zf: zipfile.ZipFile, name: str, payload) -> None:
    """A stored record whose data starts on a 64-byte boundary (padding in the local extra)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    size = len(payload)
    zip64_extra = 20 if size * 1.05 > zipfile.ZIP64_LIMIT else 0  # what zipfile will add
    header = zf.fp.tell() + 30 + len(name.encode("utf-8")) + 4 + zip64_extra
    pad = -header % _ALIGN
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    zf.writestr(info, payload)


def save_torch_checkpoint(obj, path) -> None:
    """Write ``obj`` as a zip-format ``torch.save`` file that ``torch.load(weights_only=True)`` reads.

    ``obj`` is a nested structure of dicts (str or int keys; written as OrderedDicts so
    ``load_state_dict`` takes them), lists, tuples, numpy arrays (written contiguous,
    little-endian; float32/16/64, int64/32/16/8, uint8, bool) and python scalars/strings.
    The file is replaced atomically: a temporary file in the same folder, fsynced, renamed.
    """
    path = os.fspath(path)
    folder, filename = os.path.split(os.path.abspath(path))
    archive = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(filename)[0]) or "archive"
    writer = _PickleWriter()
    data_pkl = writer.dump(obj)

    while True:  # os.open applies the umask, so the result has the usual permissions
        tmp = os.path.join(folder, f".{filename}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
                _write_record(zf, f"{archive}/data.pkl", data_pkl)
                _write_record(zf, f"{archive}/.format_version", b"1")
                _write_record(zf, f"{archive}/.storage_alignment", str(_ALIGN).encode())
                _write_record(zf, f"{archive}/byteorder", b"little")
                for key, arr in enumerate(writer.storages):
                    _write_record(zf, f"{archive}/data/{key}", memoryview(arr.reshape(-1).view(np.uint8)))
                _write_record(zf, f"{archive}/version", b"3\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
