"""Evaluation metrics: LPIPS, FID (Inception + streaming statistics), PSNR.

Submodules import TensorFlow; import them directly::

    from tf_distill.metrics.lpips import LPIPS
    from tf_distill.metrics.inception import FIDInceptionV3
    from tf_distill.metrics.fid import FIDAccumulator, frechet_distance
    from tf_distill.metrics.psnr import psnr, psnr_wraparound
"""
