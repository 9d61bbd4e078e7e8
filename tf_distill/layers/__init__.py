"""Keras layers of the rosinality StyleGAN2 (NHWC, equalized learning rate, raw parameters)."""

from tf_distill.layers.equalized import EqualConv2D, EqualDense, FusedLeakyReLU
from tf_distill.layers.mapping import MappingNetwork, PixelNorm
from tf_distill.layers.modulated import (ConstantInput, ModulatedConv2D, NoiseInjection, StyledConv,
                                         ToRGB)

__all__ = [
    "ConstantInput", "EqualConv2D", "EqualDense", "FusedLeakyReLU", "MappingNetwork", "ModulatedConv2D",
    "NoiseInjection", "PixelNorm", "StyledConv", "ToRGB",
]
