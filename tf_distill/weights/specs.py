"""Names and shapes of the converted weight sets (no TensorFlow import here).

Two sets, each stored by :mod:`tf_distill.weights.store` as one ``.npz`` of float32 arrays:

``lpips_vgg16``  LPIPS v0.1 (net-lin, VGG16): torchvision ImageNet VGG16 ``features``
    convolutions ``conv{b}_{i}/kernel`` (HWIO) and ``/bias``, and the five linear heads
    ``lin{k}/kernel`` ([C], no bias).
``fid_inception``  The FID Inception-v3 (2015-12-05 graph, as pytorch-fid's
    ``pt_inception-2015-12-05-6726825d.pth``): per conv layer, named as pytorch-fid /
    torchvision (``Mixed_6b.branch7x7_2``), ``/kernel`` (HWIO, no bias) and the
    batch-norm ``/gamma``, ``/beta``, ``/mean``, ``/var`` (eps 1e-3).
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Tuple

# ----------------------------------------------------------------------------- LPIPS / VGG16

#: torchvision ``vgg16().features`` conv layers: (our name, features index, cin, cout).
VGG16_CONVS: List[Tuple[str, int, int, int]] = [
    ("conv1_1", 0, 3, 64), ("conv1_2", 2, 64, 64),
    ("conv2_1", 5, 64, 128), ("conv2_2", 7, 128, 128),
    ("conv3_1", 10, 128, 256), ("conv3_2", 12, 256, 256), ("conv3_3", 14, 256, 256),
    ("conv4_1", 17, 256, 512), ("conv4_2", 19, 512, 512), ("conv4_3", 21, 512, 512),
    ("conv5_1", 24, 512, 512), ("conv5_2", 26, 512, 512), ("conv5_3", 28, 512, 512),
]
#: The LPIPS taps (relu1_2 ... relu5_3) are the outputs of these convs (after ReLU).
LPIPS_TAPS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")
LPIPS_CHANNELS = (64, 128, 256, 512, 512)


def lpips_vgg16_shapes() -> Dict[str, Tuple[int, ...]]:
    shapes: Dict[str, Tuple[int, ...]] = {}
    for name, _, cin, cout in VGG16_CONVS:
        shapes[f"{name}/kernel"] = (3, 3, cin, cout)
        shapes[f"{name}/bias"] = (cout,)
    for k, c in enumerate(LPIPS_CHANNELS):
        shapes[f"lin{k}/kernel"] = (c,)
    return shapes


# ----------------------------------------------------------------------------- FID Inception


class ConvSpec(NamedTuple):
    name: str
    cin: int
    cout: int
    kernel: Tuple[int, int]
    stride: int
    padding: Tuple[int, int]


def _c(name, cin, cout, k, stride=1, pad=0) -> ConvSpec:
    k = (k, k) if isinstance(k, int) else tuple(k)
    pad = (pad, pad) if isinstance(pad, int) else tuple(pad)
    return ConvSpec(name, cin, cout, k, stride, pad)


def _block_a(p, cin, pool_features):
    return [
        _c(f"{p}.branch1x1", cin, 64, 1),
        _c(f"{p}.branch5x5_1", cin, 48, 1), _c(f"{p}.branch5x5_2", 48, 64, 5, pad=2),
        _c(f"{p}.branch3x3dbl_1", cin, 64, 1), _c(f"{p}.branch3x3dbl_2", 64, 96, 3, pad=1),
        _c(f"{p}.branch3x3dbl_3", 96, 96, 3, pad=1),
        _c(f"{p}.branch_pool", cin, pool_features, 1),
    ]


def _block_b(p, cin):
    return [
        _c(f"{p}.branch3x3", cin, 384, 3, stride=2),
        _c(f"{p}.branch3x3dbl_1", cin, 64, 1), _c(f"{p}.branch3x3dbl_2", 64, 96, 3, pad=1),
        _c(f"{p}.branch3x3dbl_3", 96, 96, 3, stride=2),
    ]


def _block_c(p, cin, c7):
    return [
        _c(f"{p}.branch1x1", cin, 192, 1),
        _c(f"{p}.branch7x7_1", cin, c7, 1), _c(f"{p}.branch7x7_2", c7, c7, (1, 7), pad=(0, 3)),
        _c(f"{p}.branch7x7_3", c7, 192, (7, 1), pad=(3, 0)),
        _c(f"{p}.branch7x7dbl_1", cin, c7, 1), _c(f"{p}.branch7x7dbl_2", c7, c7, (7, 1), pad=(3, 0)),
        _c(f"{p}.branch7x7dbl_3", c7, c7, (1, 7), pad=(0, 3)),
        _c(f"{p}.branch7x7dbl_4", c7, c7, (7, 1), pad=(3, 0)),
        _c(f"{p}.branch7x7dbl_5", c7, 192, (1, 7), pad=(0, 3)),
        _c(f"{p}.branch_pool", cin, 192, 1),
    ]


def _block_d(p, cin):
    return [
        _c(f"{p}.branch3x3_1", cin, 192, 1), _c(f"{p}.branch3x3_2", 192, 320, 3, stride=2),
        _c(f"{p}.branch7x7x3_1", cin, 192, 1), _c(f"{p}.branch7x7x3_2", 192, 192, (1, 7), pad=(0, 3)),
        _c(f"{p}.branch7x7x3_3", 192, 192, (7, 1), pad=(3, 0)),
        _c(f"{p}.branch7x7x3_4", 192, 192, 3, stride=2),
    ]


def _block_e(p, cin):
    return [
        _c(f"{p}.branch1x1", cin, 320, 1),
        _c(f"{p}.branch3x3_1", cin, 384, 1),
        _c(f"{p}.branch3x3_2a", 384, 384, (1, 3), pad=(0, 1)),
        _c(f"{p}.branch3x3_2b", 384, 384, (3, 1), pad=(1, 0)),
        _c(f"{p}.branch3x3dbl_1", cin, 448, 1), _c(f"{p}.branch3x3dbl_2", 448, 384, 3, pad=1),
        _c(f"{p}.branch3x3dbl_3a", 384, 384, (1, 3), pad=(0, 1)),
        _c(f"{p}.branch3x3dbl_3b", 384, 384, (3, 1), pad=(1, 0)),
        _c(f"{p}.branch_pool", cin, 192, 1),
    ]


#: (block name, block kind, convs) in network order; kinds: stem, A, B, C, D, E_1, E_2.
INCEPTION_BLOCKS: List[Tuple[str, str, List[ConvSpec]]] = [
    ("stem", "stem", [
        _c("Conv2d_1a_3x3", 3, 32, 3, stride=2), _c("Conv2d_2a_3x3", 32, 32, 3),
        _c("Conv2d_2b_3x3", 32, 64, 3, pad=1), _c("Conv2d_3b_1x1", 64, 80, 1),
        _c("Conv2d_4a_3x3", 80, 192, 3),
    ]),
    ("Mixed_5b", "A", _block_a("Mixed_5b", 192, 32)),
    ("Mixed_5c", "A", _block_a("Mixed_5c", 256, 64)),
    ("Mixed_5d", "A", _block_a("Mixed_5d", 288, 64)),
    ("Mixed_6a", "B", _block_b("Mixed_6a", 288)),
    ("Mixed_6b", "C", _block_c("Mixed_6b", 768, 128)),
    ("Mixed_6c", "C", _block_c("Mixed_6c", 768, 160)),
    ("Mixed_6d", "C", _block_c("Mixed_6d", 768, 160)),
    ("Mixed_6e", "C", _block_c("Mixed_6e", 768, 192)),
    ("Mixed_7a", "D", _block_d("Mixed_7a", 768)),
    ("Mixed_7b", "E_1", _block_e("Mixed_7b", 1280)),
    ("Mixed_7c", "E_2", _block_e("Mixed_7c", 2048)),
]

INCEPTION_CONVS: Dict[str, ConvSpec] = {c.name: c for _, _, convs in INCEPTION_BLOCKS for c in convs}
BN_EPS = 1e-3
FEATURE_DIM = 2048


def fid_inception_shapes() -> Dict[str, Tuple[int, ...]]:
    shapes: Dict[str, Tuple[int, ...]] = {}
    for c in INCEPTION_CONVS.values():
        shapes[f"{c.name}/kernel"] = (c.kernel[0], c.kernel[1], c.cin, c.cout)
        for p in ("gamma", "beta", "mean", "var"):
            shapes[f"{c.name}/{p}"] = (c.cout,)
    return shapes


SHAPES = {
    "lpips_vgg16": lpips_vgg16_shapes,
    "fid_inception": fid_inception_shapes,
}
