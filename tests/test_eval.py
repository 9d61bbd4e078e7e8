"""PPL (both variants), sample batching, and the tf-distill-eval binary."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_distill.metrics.generator_eval import sample_batches
from tf_distill.metrics.ppl import filtered_mean, pair_distances
from tf_distill.models import Generator

REPO = Path(__file__).resolve().parents[1]


def test_sample_batches_count_every_sample():
    assert sample_batches(50000, 64)[-1] <= 64 and sum(sample_batches(50000, 64)) == 50000
    assert sample_batches(10, 4) == [4, 4, 2] and sample_batches(3, 64) == [3]
    with pytest.raises(ValueError):
        sample_batches(0, 4)


def test_filtered_mean_uses_lower_and_higher_percentiles():
    d = np.arange(1, 201, dtype=np.float64)  # 1st 'lower' = 2, 99th 'higher' = 199
    assert filtered_mean(d) == pytest.approx(np.mean(np.arange(2, 200)))
    d[0], d[-1] = -1e6, 1e6  # outliers are dropped: the kept range is still 2..199
    assert filtered_mean(d) == pytest.approx(np.mean(np.arange(2, 200)))


def _mse(x, y):
    return tf.reduce_mean(tf.square(x - y), axis=[1, 2, 3])


def test_ppl_variants_on_a_toy_generator():
    tf.keras.utils.set_random_seed(0)
    g = Generator(8, style_dim=8, n_mlp=2, channels=[8, 8, 8, 8])
    g.build()
    # Noise strengths start at 0, so the CAGAN variant's independent noise has no effect and its raw
    # distance is the Karras W/full distance times eps^2 (same seed: same z and t).
    cagan = pair_distances(g, _mse, 16, "cagan", epsilon=1e-2, seed=3).numpy()
    karras = pair_distances(g, _mse, 16, "karras", space="w", epsilon=1e-2, seed=3).numpy()
    np.testing.assert_allclose(cagan, karras * 1e-4, rtol=1e-4)
    assert cagan.min() > 0
    for block in g.synthesis.convs:
        block.noise.weight.assign([0.5])
    noisy = pair_distances(g, _mse, 16, "cagan", epsilon=1e-2, seed=3).numpy()
    shared = pair_distances(g, _mse, 16, "karras", space="w", epsilon=1e-2, seed=3).numpy() * 1e-4
    assert noisy.mean() > 100 * shared.mean()  # noise resampling dominates the paper's variant
    z_end = pair_distances(g, _mse, 8, "karras", space="z", sampling="end", epsilon=1e-2, seed=4).numpy()
    assert np.all(np.isfinite(z_end)) and z_end.shape == (8,)


def _run_eval(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-m", "tf_distill.bin.eval", *args], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout[result.stdout.index("{"):])


def test_eval_binary_psnr_cases(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    base = np.full((8, 8, 3), 100, np.uint8)
    for name, delta in (("same.png", 0), ("diff3.png", 3)):
        Image.fromarray(base).save(tmp_path / "a" / name)
        Image.fromarray(base + delta).save(tmp_path / "b" / name)
    out = _run_eval("--metric=psnr", f"--images={tmp_path / 'a'}", f"--reference={tmp_path / 'b'}")
    expect = (100 + 20 * np.log10(255 / 3)) / 2
    assert out["num_pairs"] == 2
    assert out["psnr"] == pytest.approx(expect, rel=1e-6)
    assert out["psnr_paper_wraparound"] == pytest.approx(expect, rel=1e-6)


def test_eval_binary_lpips_and_fid(tmp_path):
    g = Generator(16, style_dim=8, n_mlp=2, channels=[8, 8, 8, 8, 8, 8])
    g.build()
    g.save(tmp_path / "g.keras")
    out = _run_eval("--metric=lpips", f"--checkpoint={tmp_path / 'g.keras'}",
                    f"--checkpoint_b={tmp_path / 'g.keras'}", "--num_samples=4", "--batch_size=4")
    assert out["lpips"] == pytest.approx(0.0, abs=1e-6)
    real = tmp_path / "real"
    real.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(real / f"{i}.png")
    out = _run_eval("--metric=fid", f"--checkpoint={tmp_path / 'g.keras'}", f"--real=folder:{real}",
                    "--num_samples=7", "--batch_size=4", f"--output={tmp_path / 'fid.json'}")
    assert out["num_samples"] == 7 and out["fid"] > 0
    assert json.loads((tmp_path / "fid.json").read_text())["fid"] == out["fid"]
