"""Projection: the L-BFGS port, recovery of a known W+, PSNR variants, the binary and its grids/report."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf
from PIL import Image

from tf_distill.images import to_uint8
from tf_distill.models import Generator
from tf_distill.projection import FullBatchLBFGS, Projector, polyinterp, projection_grid, projection_metrics
from tf_distill.projection.project import load_projection

REPO = Path(__file__).resolve().parents[1]


def _rosenbrock_tf(x):  # extended Rosenbrock: independent pairs, unique minimum at ones
    a, b = x[0::2], x[1::2]
    return tf.reduce_sum(100.0 * tf.square(b - tf.square(a)) + tf.square(1.0 - a))


def _rosenbrock_np(x):
    a, b = x[0::2], x[1::2]
    return np.sum(100.0 * (b - a ** 2) ** 2 + (1.0 - a) ** 2)


def _rosenbrock_grad_np(x):
    a, b = x[0::2], x[1::2]
    g = np.zeros_like(x)
    g[0::2] = -400.0 * a * (b - a ** 2) - 2.0 * (1.0 - a)
    g[1::2] = 200.0 * (b - a ** 2)
    return g


@pytest.mark.parametrize("line_search", ["Wolfe", "Armijo"])
def test_lbfgs_matches_scipy_on_rosenbrock(line_search):
    x0 = np.array([-1.2, 1.0, 0.5, -0.7, 2.0, 3.0])
    var = tf.Variable(x0, dtype=tf.float64)

    def closure():
        with tf.GradientTape() as tape:
            loss = _rosenbrock_tf(var)
        return loss, tape.gradient(loss, [var])

    opt = FullBatchLBFGS([var], lr=1.0, history_size=10, line_search=line_search)
    loss, grad = opt.closure_eval(closure)
    losses = [loss]
    for _ in range(300):
        result = opt.step(closure, loss, grad, max_ls=10)
        loss, grad = result.loss, result.grad
        losses.append(loss)
        if float(tf.norm(grad)) < 1e-9:
            break
    ref = scipy.optimize.minimize(_rosenbrock_np, x0, jac=_rosenbrock_grad_np, method="L-BFGS-B",
                                  options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10})
    np.testing.assert_allclose(var.numpy(), ref.x, atol=1e-4)
    np.testing.assert_allclose(var.numpy(), np.ones(6), atol=1e-5)
    assert loss < 1e-10 and ref.fun < 1e-8
    assert all(b <= a for a, b in zip(losses, losses[1:]))  # Armijo: never increases


def test_polyinterp_quadratic_and_cubic():
    # f(x) = (x - 0.3)^2: from f(0), f'(0), f(1) the quadratic minimiser is exact.
    assert polyinterp(np.array([[0.0, 0.09, -0.6], [1.0, 0.49, np.nan]])) == pytest.approx(0.3)
    # cubic through two points with derivatives, f(x) = x^3 - x on [0, 1]: minimiser 1/sqrt(3).
    assert polyinterp(np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 2.0]])) == pytest.approx(1 / np.sqrt(3))
    # general linear-solve branch (three points): (x - 0.4)^2 + 1
    f = lambda x: (x - 0.4) ** 2 + 1
    pts = np.array([[0.0, f(0.0), -0.8], [1.0, f(1.0), np.nan], [2.0, f(2.0), np.nan]])
    assert polyinterp(pts) == pytest.approx(0.4, abs=1e-9)


def tame_generator(size=16, style_dim=8, seed=0):
    """A tiny random generator whose outputs stay roughly inside [-1, 1] (ToRGB weights scaled by 1/4)."""
    tf.keras.utils.set_random_seed(seed)
    g = Generator(size, style_dim=style_dim, n_mlp=2, channels=[8] * (2 * (int(np.log2(size)) - 1)))
    g.build()
    for layer in [g.synthesis.to_rgb1, *g.synthesis.to_rgbs]:
        layer.conv.weight.assign(layer.conv.weight * 0.25)
    return g


@pytest.fixture(scope="module")
def lpips():
    from tf_distill.metrics.lpips import LPIPS

    return LPIPS()


def test_projection_recovers_known_wplus(lpips):
    g = tame_generator()
    projector = Projector(g, lpips, optimizer="lbfgs")
    w_avg = projector.w_avg.numpy()
    w_true = w_avg[:, None, :] + 0.5 * np.random.default_rng(3).standard_normal([1, g.n_latent, 8]).astype(np.float32)
    noise = [tf.random.stateless_normal([1, r, r, 1], seed=[5, j]) for j, r in enumerate(g.synthesis.noise_shapes())]
    target_image = g(w_true, input_is_latent=True, noise=noise).numpy()
    target = to_uint8(target_image)
    start = g(np.repeat(w_avg[:, None], g.n_latent, 1), input_is_latent=True, noise=noise).numpy()
    start_psnr = projection_metrics(start, target, lambda a, b: tf.zeros([1]))[1][0]

    result = projector.project(target, steps=30)

    # Stated threshold: > 35 dB true PSNR after 30 L-BFGS steps (measured ~50 dB; the w_avg start is ~20 dB).
    assert result.psnr_correct > 35.0 and result.psnr_correct > start_psnr + 10
    assert result.psnr_paper >= result.psnr_correct - 1e-9  # wrap-around can only raise PSNR
    assert result.lpips < 0.01
    assert all(b <= a for a, b in zip(result.losses, result.losses[1:])), result.losses  # monotone with Wolfe
    assert result.losses[-1] < 0.01 * result.losses[0]
    err_start = np.abs(w_avg[:, None] - w_true).mean()
    assert np.abs(result.wplus - w_true).mean() < 0.6 * err_start  # moved towards the known code
    assert result.wplus.shape == (1, g.n_latent, 8) and len(result.noise) == g.num_layers
    assert result.image.shape == (1, 16, 16, 3) and len(result.losses) == 31


def test_projection_adam_reduces_loss(lpips):
    g = tame_generator(seed=1)
    target = to_uint8(g(tf.random.stateless_normal([1, 8], seed=[1, 1]), randomize_noise=False).numpy())
    result = Projector(g, lpips, optimizer="adam", lr=0.05).project(target, steps=15)
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert np.isfinite(result.psnr_paper) and np.isfinite(result.lpips)


def test_projection_init_is_w_avg_and_fresh_noise(lpips):
    g = tame_generator()
    projector = Projector(g, lpips, w_avg_samples=1000, seed=7)
    projector.reset(np.zeros([1, 16, 16, 3], np.uint8), seed=7)
    w_avg = g.mean_latent(1000, seed=7).numpy()
    np.testing.assert_allclose(projector.wplus.numpy(), np.repeat(w_avg[:, None], g.n_latent, 1), rtol=1e-6)
    stds = [float(np.std(v.numpy())) for v in projector.noise[-4:]]
    assert all(0.7 < s < 1.3 for s in stds) and len(projector.noise) == g.num_layers


def _u8_to_raw(u8):
    return np.asarray(u8, np.float32) / 127.5 - 1.0  # to_uint8_reference maps this back to the same uint8


def test_projection_psnr_variants_spec_cases():
    zero_lpips = lambda a, b: tf.zeros([tf.shape(a)[0]])
    target = np.full([3, 8, 8, 3], 100, np.uint8)
    out = np.stack([target[0], target[1] + 3, target[2] + 16])
    paper, correct, _ = projection_metrics(_u8_to_raw(out), target, zero_lpips)
    np.testing.assert_allclose(correct, [100.0, 20 * np.log10(255 / 3), 20 * np.log10(255 / 16)], rtol=1e-9)
    # uint8 wrap-around: a constant difference of 16 squares to 256 = 0 mod 256 -> "identical" (100 dB).
    np.testing.assert_allclose(paper, [100.0, 20 * np.log10(255 / 3), 100.0], rtol=1e-9)


def test_projection_grid_layout():
    targets = np.zeros([2, 16, 16, 3], np.uint8)
    recon = [np.full([2, 16, 16, 3], 0.0, np.float32), np.full([2, 16, 16, 3], 1.0, np.float32)]
    grid = projection_grid(targets, recon)
    assert grid.shape == (2 + 2 * 18, 2 + 3 * 18, 3)  # rows = images, columns target | teacher | student
    assert grid[2:18, 2:18].max() == 0 and grid[2:18, 2 + 36:18 + 36].min() == 255
    assert grid[2:18, 20:36].mean() == pytest.approx(128)  # 0.0 -> 128


def test_project_binary_grids_latents_report(tmp_path):
    teacher, student = tame_generator(seed=0), tame_generator(seed=1)
    teacher.save(tmp_path / "teacher.keras")
    student.save(tmp_path / "student.keras")
    (tmp_path / "faces").mkdir()
    for name in ("a", "b"):
        image = teacher(tf.random.stateless_normal([1, 8], seed=[ord(name), 0]), randomize_noise=False).numpy()
        Image.fromarray(to_uint8(image)[0]).resize((24, 24)).save(tmp_path / "faces" / f"{name}.png")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "tf_distill.bin.project", f"--teacher={tmp_path / 'teacher.keras'}",
                           f"--student={tmp_path / 'student.keras'}", f"--input={tmp_path / 'faces'}",
                           f"--output={out}", "--steps=3", "--w_avg_samples=100"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[projection] 12/12" in proc.stderr  # progress bar: 2 images x 2 models x 3 steps
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape == (2 + 2 * 18, 2 + 3 * 18, 3)
    for col in range(3):  # every cell holds an image, not blank
        cell = grid[2:18, 2 + 18 * col:18 + 18 * col]
        assert cell.std() > 1.0
    assert np.asarray(Image.open(out / "a.png")).shape == (20, 56, 3)
    w, noise = load_projection(out / "a.npz", "student")
    assert w.shape == (1, student.n_latent, 8) and len(noise) == student.num_layers
    report = json.loads((out / "report.json").read_text())
    assert set(report["mean"]) == {"teacher", "student"}
    assert set(report["mean"]["teacher"]) == {"n_images", "psnr_paper", "psnr_correct", "lpips"}
    assert report["mean"]["student"]["n_images"] == 2 and len(report["images"]) == 4
    rows = list(csv.reader(open(out / "report.csv")))
    assert rows[0] == ["image", "model", "psnr_paper", "psnr_correct", "lpips"] and len(rows) == 1 + 4 + 2
    assert rows[-1][0] == "mean"
