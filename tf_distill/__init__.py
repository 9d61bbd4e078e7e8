"""tf-distill: StyleKD (distilling StyleGAN2 teachers into compact students) in TF2 / Keras 3."""

__version__ = "0.1.0"
