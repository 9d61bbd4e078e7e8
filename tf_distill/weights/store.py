"""Our on-disk format for converted weights, and where it lives.

Each weight set is one uncompressed ``.npz`` holding float32 arrays under the names of
:mod:`tf_distill.weights.specs`, plus ``__format__`` (the set's name and format version)
and ``__source__`` (where it was converted from). ``np.load`` runs with
``allow_pickle=False``; names, shapes and finiteness are verified on load.

Cache directory: ``$TF_DISTILL_WEIGHTS_DIR`` if set, else ``~/.cache/tf_distill/weights``;
every public function also takes an explicit ``cache_dir``.
"""

from __future__ import annotations

import os
import zipfile
from typing import Dict, Mapping, Optional

import numpy as np

from tf_distill.errors import reason
from tf_distill.outputs import atomic_path
from tf_distill.weights import specs

ENV_VAR = "TF_DISTILL_WEIGHTS_DIR"
FORMAT_VERSION = 1
FILENAMES = {
    "lpips_vgg16": "lpips_vgg16_v0.1.npz",
    "fid_inception": "fid_inception_2015-12-05.npz",
}
FETCH_COMMAND = "python -m tf_distill.bin.fetch_weights"


class WeightsError(RuntimeError):
    """Base class: a weight file is missing or unusable."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    pass


class WeightsCorruptError(WeightsError, ValueError):
    pass


def default_cache_dir() -> str:
    env = os.environ.get(ENV_VAR)
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.join(os.path.expanduser("~"), ".cache", "tf_distill", "weights")


def weights_path(kind: str, cache_dir: Optional[str] = None) -> str:
    if kind not in FILENAMES:
        raise ValueError(f"unknown weight set {kind!r}; known: {sorted(FILENAMES)}")
    return os.path.join(cache_dir or default_cache_dir(), FILENAMES[kind])


def fetch_hint(cache_dir: Optional[str] = None) -> str:
    cmd = FETCH_COMMAND
    if cache_dir and os.path.abspath(cache_dir) != default_cache_dir():
        cmd += f" --cache_dir={cache_dir}"
    return cmd


def _format_tag(kind: str) -> str:
    return f"tf_distill.{kind}.v{FORMAT_VERSION}"


def verify_arrays(kind: str, arrays: Mapping[str, np.ndarray], where: str = "weights") -> Dict[str, np.ndarray]:
    """Checks names/shapes/finiteness against the spec; returns float32 copies."""
    expected = specs.SHAPES[kind]()
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise WeightsCorruptError(
            f"{where}: {kind} weight names do not match (missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''})")
    out = {}
    for name, shape in expected.items():
        a = np.asarray(arrays[name])
        if tuple(a.shape) != tuple(shape):
            raise WeightsCorruptError(f"{where}: {name} has shape {tuple(a.shape)}, expected {tuple(shape)}")
        a = a.astype(np.float32)
        if not np.all(np.isfinite(a)):
            raise WeightsCorruptError(f"{where}: {name} has non-finite values")
        out[name] = a
    return out


def save_weights(kind: str, arrays: Mapping[str, np.ndarray], path: Optional[str] = None,
                 source: str = "", cache_dir: Optional[str] = None) -> str:
    """Verifies and writes a weight set atomically; returns the path."""
    path = path or weights_path(kind, cache_dir)
    arrays = verify_arrays(kind, arrays, where=f"converted {kind}")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # the umask's permissions
        np.savez(f, __format__=np.array(_format_tag(kind)), __source__=np.array(source), **arrays)
    return path


def load_weights_file(kind: str, path: str, hint: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Loads and verifies one ``.npz`` weight set; one-line errors say how to fix it."""
    hint = hint or fetch_hint()
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"{kind} weights not found at {path}; get them with `{hint}`")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise WeightsCorruptError(
            f"{kind} weights at {path} are unreadable ({type(e).__name__}: {reason(e)}); "
            f"re-create them with `{hint} --force`") from None
    tag = str(data.pop("__format__", ""))
    data.pop("__source__", None)
    if tag != _format_tag(kind):
        raise WeightsCorruptError(
            f"{path} is not a {_format_tag(kind)} file (found {tag or 'no format tag'}); "
            f"re-create it with `{hint} --force`")
    try:
        return verify_arrays(kind, data, where=path)
    except WeightsCorruptError as e:
        raise WeightsCorruptError(f"{e}; re-create it with `{hint} --force`") from None
