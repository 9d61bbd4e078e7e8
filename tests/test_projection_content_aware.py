"""The projection report's content-aware PSNR/LPIPS: both images times the face-parsing mask."""

import numpy as np
import tensorflow as tf

from tf_distill.projection.project import content_aware_metrics, projection_metrics


def _numpy_psnr(a, b, wrap):
    d = a.astype(np.int64) - b.astype(np.int64)
    e = (np.mod(d, 256) ** 2) % 256 if wrap else d ** 2
    mse = e.mean()
    return 100.0 if mse == 0 else 20 * np.log10(255 / np.sqrt(mse))


def _mean_abs(a, b):  # stands in for LPIPS: any distance shows whether the mask reached its inputs
    return tf.reduce_mean(tf.abs(a - b), axis=[1, 2, 3])


def test_content_aware_metrics_mask_both_images():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    output = np.clip(target / 127.5 - 1 + rng.normal(0, 0.2, target.shape), -1.2, 1.2).astype(np.float32)
    mask = np.zeros((1, 16, 16, 1), np.float32)
    mask[:, 4:12, 3:13] = 1
    got = content_aware_metrics(output, target, _mean_abs, mask)

    out_u8 = np.floor((np.clip(output, -1, 1) + 1) / 2 * 255 + 0.5).astype(np.uint8)
    masked_t, masked_o = target * mask.astype(np.uint8), out_u8 * mask.astype(np.uint8)
    np.testing.assert_allclose(got["psnr_paper_ca"], _numpy_psnr(masked_t, masked_o, wrap=True), rtol=1e-6)
    np.testing.assert_allclose(got["psnr_correct_ca"], _numpy_psnr(masked_t, masked_o, wrap=False), rtol=1e-6)
    expected_lpips = np.abs((target / 127.5 - 1) * mask - output * mask).mean()
    np.testing.assert_allclose(got["lpips_ca"], expected_lpips, rtol=1e-5)

    everything = content_aware_metrics(output, target, _mean_abs, np.ones_like(mask))
    paper, correct, d = projection_metrics(output, target, _mean_abs)
    np.testing.assert_allclose([everything["psnr_paper_ca"], everything["psnr_correct_ca"], everything["lpips_ca"]],
                               [paper[0], correct[0], d[0]], rtol=1e-6)
    assert got["psnr_correct_ca"] > everything["psnr_correct_ca"]  # masked pixels are equal (0) in both
