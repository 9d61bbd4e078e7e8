"""The IDX format (MNIST / Fashion-MNIST files), read and written with validation.

Layout: a 4-byte magic ``0x00 0x00 <type> <ndim>``, ``ndim`` big-endian uint32 dimensions, then
the values, big-endian, C order. Types: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64. Files may be gzipped (recognised by the gzip magic ``1f 8b``).
"""

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from tf_distill.errors import UserError

TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
         0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: code for code, dt in TYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"


class IdxError(UserError, ValueError):
    """An IDX file is truncated, corrupt or not an IDX file (the message names the file)."""


def parse_idx(data, name="<bytes>"):
    """IDX bytes (not gzipped) -> numpy array in native byte order. Raises :class:`IdxError`."""
    data = memoryview(data)
    if len(data) < 4:
        raise IdxError(f"{name}: {len(data)} bytes, too short for an IDX header (4-byte magic).")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise IdxError(f"{name}: bad IDX magic {bytes(data[:4]).hex()} (must start with 0000).")
    if code not in TYPES:
        raise IdxError(f"{name}: unknown IDX type code 0x{code:02x} (known: "
                       f"{', '.join(f'0x{c:02x}' for c in TYPES)}).")
    if ndim == 0:
        raise IdxError(f"{name}: IDX header declares 0 dimensions.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{name}: truncated IDX header ({len(data)} bytes, {ndim} dimensions need {header}).")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = TYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise IdxError(f"{name}: truncated IDX data: dims {dims} of {dtype.name} need {expected} bytes, "
                       f"the file has {got}.")
    if got > expected:
        raise IdxError(f"{name}: {got - expected} unexpected trailing bytes after IDX data of dims {dims}.")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path):
    """Reads an IDX file, gzipped or not. Raises :class:`IdxError` for a corrupt or truncated file."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise IdxError(f"{path}: corrupt or truncated gzip data ({e}).") from e
    elif path.suffix == ".gz":
        raise IdxError(f"{path}: named .gz but not gzip data (starts with {raw[:4].hex()}).")
    return parse_idx(raw, name=str(path))


def encode_idx(array):
    """numpy array -> IDX bytes (the inverse of :func:`parse_idx`)."""
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=") if array.dtype.itemsize > 1 else array.dtype
    if native not in _CODES:
        raise ValueError(f"IDX cannot hold dtype {array.dtype} (uint8, int8, int16, int32, float32, float64).")
    code = _CODES[native]
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}.")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=TYPES[code]).tobytes()


def write_idx(path, array, compress=None):
    """Writes ``array`` as an IDX file, gzipped when ``compress`` (default: when the name ends in .gz)."""
    path = Path(path)
    data = encode_idx(array)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path
