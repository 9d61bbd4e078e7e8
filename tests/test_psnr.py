"""PSNR: spec F.10 cases for the correct and the paper-compatible (uint8 wrap-around) variant."""

import math

import numpy as np
import pytest

from tf_distill.metrics.psnr import projection_psnr, psnr, psnr_wraparound, to_uint8_reference


def _pair(diff, shape=(2, 8, 8, 3), base=100):
    a = np.full(shape, base, np.uint8)
    return a, (a.astype(np.int32) + diff).astype(np.uint8)


@pytest.mark.parametrize("fn", [psnr, psnr_wraparound])
def test_identical_is_100(fn):
    a = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fn(a, a).numpy(), [100.0] * 3)


@pytest.mark.parametrize("fn", [psnr, psnr_wraparound])
def test_constant_difference_3(fn):
    a, b = _pair(3)
    np.testing.assert_allclose(fn(a, b).numpy(), 20 * math.log10(255 / 3), rtol=1e-12)
    # Order does not matter for 3: (-3) mod 256 = 253, 253^2 mod 256 = 9.
    np.testing.assert_allclose(fn(b, a).numpy(), 20 * math.log10(255 / 3), rtol=1e-12)


def test_constant_difference_16_wraps_to_zero_only_in_paper_variant():
    a, b = _pair(16)
    np.testing.assert_array_equal(psnr_wraparound(a, b).numpy(), [100.0, 100.0])
    np.testing.assert_allclose(psnr(a, b).numpy(), 20 * math.log10(255 / 16), rtol=1e-12)


def test_wraparound_matches_numpy_uint8_arithmetic():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    with np.errstate(over="ignore"):
        e = ((a - b) ** 2).astype(np.float64)  # uint8 wrap, as the reference code
    mse = e.reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(psnr_wraparound(a, b).numpy(), 20 * np.log10(255 / np.sqrt(mse)), rtol=1e-12)
    mse_true = ((a.astype(np.float64) - b) ** 2).reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(psnr(a, b).numpy(), 20 * np.log10(255 / np.sqrt(mse_true)), rtol=1e-12)
    assert np.all(psnr_wraparound(a, b).numpy() >= 10 * math.log10(255) - 1e-9)


def test_to_uint8_reference_and_projection_psnr():
    x = np.array([-2.0, -1.0, -0.5, 0.0, 0.999, 1.0, 3.0], np.float32).reshape(1, 1, 7, 1)
    expect = np.floor((np.clip(x, -1, 1) + 1) / 2 * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(to_uint8_reference(x).numpy(), expect)
    target = to_uint8_reference(x).numpy()
    assert projection_psnr(x, target, "paper").numpy()[0] == 100.0
    with pytest.raises(ValueError):
        projection_psnr(x, target, "other")
