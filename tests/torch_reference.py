"""Independent references for tests and benchmarks (PyTorch, SciPy, the inverse weight converters); never product code."""

import types
from typing import Dict, Mapping

import numpy as np

from tf_distill.weights import specs

VGG16_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def torchvision_vgg16_stub(vgg_state_dict):
    """``{"torchvision": ..., "torchvision.models": ...}`` modules whose ``models.vgg16`` builds
    torchvision's VGG16 feature stack with ``vgg_state_dict`` ("features.N.weight" names).

    The `lpips` package imports torchvision, which from PyPI does not import beside our torch;
    put these in ``sys.modules`` before importing lpips.
    """
    import torch  # pylint: disable=import-outside-toplevel
    from torch import nn  # pylint: disable=import-outside-toplevel

    def vgg16(pretrained=False, **unused):  # pylint: disable=unused-argument
        layers, cin = [], 3
        for v in VGG16_LAYERS:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        features = nn.Sequential(*layers)
        features.load_state_dict({k[len("features."):]: torch.from_numpy(v.copy())
                                  for k, v in vgg_state_dict.items()})
        model = nn.Module()
        model.features = features
        return model

    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.vgg16 = vgg16
    return {"torchvision": tv, "torchvision.models": tv.models}


def frechet_distance_scipy(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, sqrtm=None) -> float:
    """pytorch-fid's ``calculate_frechet_distance`` (numpy/scipy): the reference FID is checked against."""
    import scipy.linalg

    sqrtm = sqrtm or (lambda a: scipy.linalg.sqrtm(a))
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    assert mu1.shape == mu2.shape and sigma1.shape == sigma2.shape
    diff = mu1 - mu2
    covmean = sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_to_pytorch_fid_state_dict(arrays: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Inverse of :func:`inception_from_pytorch_fid_state_dict` (for tests and export)."""
    sd = {}
    for name in specs.INCEPTION_CONVS:
        sd[f"{name}.conv.weight"] = np.ascontiguousarray(np.transpose(arrays[f"{name}/kernel"], (3, 2, 0, 1)))
        sd[f"{name}.bn.weight"] = arrays[f"{name}/gamma"]
        sd[f"{name}.bn.bias"] = arrays[f"{name}/beta"]
        sd[f"{name}.bn.running_mean"] = arrays[f"{name}/mean"]
        sd[f"{name}.bn.running_var"] = arrays[f"{name}/var"]
    return sd


def lpips_to_torch_state_dicts(arrays: Mapping[str, np.ndarray]):
    """Inverse of :func:`lpips_from_torch_state_dicts`: (torchvision VGG16 features, LPIPS lin)."""
    vgg, lin = {}, {}
    for name, idx, _, _ in specs.VGG16_CONVS:
        vgg[f"features.{idx}.weight"] = np.ascontiguousarray(np.transpose(arrays[f"{name}/kernel"], (3, 2, 0, 1)))
        vgg[f"features.{idx}.bias"] = arrays[f"{name}/bias"]
    for k in range(5):
        lin[f"lin{k}.model.1.weight"] = arrays[f"lin{k}/kernel"].reshape(1, -1, 1, 1)
    return vgg, lin
