"""Editing: style mixing vs the generator's own mixing, interpolation, direction moves, grids, the binary."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_distill.models.latent_directions import latent_directions
from tf_distill.models import Generator
from tf_distill.projection import (interpolate, mixing_grid, mixing_ranges, mixing_table, move, parse_range,
                                   side_by_side, strip_grid, style_mix, teacher_directions)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen():
    tf.keras.utils.set_random_seed(0)
    g = Generator(16, style_dim=8, n_mlp=2, channels=[8] * 6)
    g.build()
    return g


def _noise(g):
    return [tf.random.stateless_normal([1, r, r, 1], seed=[9, j]) for j, r in enumerate(g.synthesis.noise_shapes())]


def test_style_mix_equals_generator_mixing(gen):
    w = gen.mapping(tf.random.stateless_normal([2, 8], seed=[1, 2])).numpy()
    wa, wb = np.repeat(w[:1, None], gen.n_latent, 1), np.repeat(w[1:, None], gen.n_latent, 1)
    noise = _noise(gen)
    for k in range(1, gen.n_latent):
        mixed = style_mix(wa, wb, (k, gen.n_latent - 1))
        own = gen([w[:1], w[1:]], input_is_latent=True, inject_index=k, noise=noise, return_latents=True)
        np.testing.assert_array_equal(mixed, own["latents"].numpy())
        ours = gen(mixed, input_is_latent=True, noise=noise).numpy()
        np.testing.assert_allclose(ours, own["image"].numpy(), atol=1e-6)
    # a middle range replaces exactly those rows
    mixed = style_mix(wa, wb, (2, 3))
    np.testing.assert_array_equal(mixed[:, 2:4], wb[:, 2:4])
    np.testing.assert_array_equal(mixed[:, [0, 1, 4, 5]], wa[:, [0, 1, 4, 5]])


def test_mixing_table_order(gen):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal([2, gen.n_latent, 8]), rng.standard_normal([3, gen.n_latent, 8])
    table = mixing_table(a, b, (1, 3))
    assert table.shape == (6, gen.n_latent, 8)
    np.testing.assert_allclose(table[1 * 3 + 2], style_mix(a[1:2], b[2:3], (1, 3))[0], rtol=1e-6)


def test_mixing_ranges_paper_and_scaled():
    assert mixing_ranges(14) == {"coarse": (1, 3), "middle": (5, 8), "fine": (10, 13)}
    assert mixing_ranges(18) == {"coarse": (1, 4), "middle": (7, 10), "fine": (13, 17)}  # 1024 px
    assert mixing_ranges(8) == {"coarse": (1, 2), "middle": (3, 4), "fine": (5, 7)}  # 32 px
    assert mixing_ranges(6) == {"coarse": (1, 1), "middle": (2, 3), "fine": (4, 5)}  # 16 px
    assert mixing_ranges(14, {"x": "2-4", "y": "7"}) == {"x": (2, 4), "y": (7, 7)}
    assert parse_range("10-13") == (10, 13)
    with pytest.raises(ValueError):
        mixing_ranges(8, {"fine": "10-13"})
    with pytest.raises(ValueError):
        parse_range("5-3")


def test_interpolation_endpoints(gen):
    rng = np.random.default_rng(1)
    wa, wb = rng.standard_normal([1, gen.n_latent, 8]), rng.standard_normal([1, gen.n_latent, 8])
    out = interpolate(wa, wb, [0.0, 0.5, 1.0])
    assert out.shape == (3, gen.n_latent, 8)
    np.testing.assert_array_equal(out[0], wb[0].astype(np.float32))
    np.testing.assert_array_equal(out[2], wa[0].astype(np.float32))
    np.testing.assert_allclose(out[1], (wa[0] + wb[0]) / 2, rtol=1e-6)


def test_direction_move(gen):
    rng = np.random.default_rng(2)
    w = rng.standard_normal([1, gen.n_latent, 8]).astype(np.float32)
    v = rng.standard_normal(8)
    out = move(w, v, [0.0, 3.0], rows=(2, 4))
    np.testing.assert_array_equal(out[0], w[0])  # alpha 0 is the identity
    np.testing.assert_array_equal(out[1][[0, 1, 5]], w[0][[0, 1, 5]])
    np.testing.assert_allclose(np.linalg.norm(out[1][2:5] - w[0][2:5], axis=1), 3.0, rtol=1e-5)
    img0 = gen(out[:1], input_is_latent=True, noise=_noise(gen)).numpy()
    np.testing.assert_array_equal(img0, gen(w, input_is_latent=True, noise=_noise(gen)).numpy())
    out_all = move(w, v, [1.0])
    np.testing.assert_allclose(np.linalg.norm(out_all[0] - w[0], axis=1), 1.0, rtol=1e-5)


def test_teacher_directions_are_the_ld_loss_directions(gen):
    dirs = teacher_directions(gen)
    assert dirs.shape == (5 * 2, 8)  # 16 px: 2 blocks (8, 16)
    np.testing.assert_allclose(dirs, latent_directions(gen, 2, "split"))
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, rtol=1e-5)


def test_grid_layouts():
    a = np.zeros([2, 8, 8, 3], np.uint8)
    b = np.full([3, 8, 8, 3], 200, np.uint8)
    m = np.full([6, 8, 8, 3], 50, np.uint8)
    grid = mixing_grid(a, b, m)
    assert grid.shape == (2 + 3 * 10, 2 + 4 * 10, 3)  # (1 + len(A)) x (1 + len(B)) cells
    assert grid[2:10, 2:10].min() == 255  # top-left blank
    assert grid[2:10, 12:20].min() == 200 and grid[12:20, 2:10].max() == 0 and grid[12:20, 12:20].max() == 50
    strips = strip_grid([np.zeros([5, 8, 8, 3], np.uint8)] * 2)
    assert strips.shape == (2 + 2 * 10, 2 + 5 * 10, 3)
    both = side_by_side([grid, strips])
    assert both.shape == (grid.shape[0], grid.shape[1] + 16 + strips.shape[1], 3)


def test_edit_binary_writes_grids(tmp_path, gen):
    teacher = gen
    tf.keras.utils.set_random_seed(1)
    student = Generator(16, style_dim=8, n_mlp=2, channels=[4] * 6)
    student.build()
    teacher.save(tmp_path / "teacher.keras")
    student.save(tmp_path / "student.keras")
    dir_path = tmp_path / "d.npy"
    np.save(dir_path, np.ones(8, np.float32))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = tmp_path / "out"
    common = [sys.executable, "-m", "tf_distill.bin.edit", f"--teacher={tmp_path / 'teacher.keras'}",
              f"--student={tmp_path / 'student.keras'}", f"--output={out}"]
    proc = subprocess.run(common + ["--mode=mix", "--mode=interp", "--mode=direction", "--a=seed:1,seed:2",
                                    "--b=seed:3,seed:4", "--directions=0,1", "--alphas=-3,0,3",
                                    "--betas=0,0.5,1", "--direction_rows=1-3"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads(proc.stdout[proc.stdout.index("{"):])["written"]
    assert sorted(Path(p).name for p in written) == ["direction.png", "interp.png", "mix_coarse.png",
                                                      "mix_fine.png", "mix_middle.png"]
    cell = 18
    panel = 2 + 3 * cell  # 3 x 3 cells: blank + 2 B; 2 A rows
    mix = np.asarray(Image.open(out / "mix_fine.png"))
    assert mix.shape == (panel, 2 * panel + 16, 3)  # teacher panel | student panel
    for x0 in (2 + cell, panel + 16 + 2 + cell):  # mixed cells have content
        assert mix[2 + cell:2 + 2 * cell, x0:x0 + 16].std() > 1.0
    interp = np.asarray(Image.open(out / "interp.png"))
    assert interp.shape == (2 + 2 * cell, 2 * (2 + 3 * cell) + 16, 3)  # 2 pairs x 3 betas per panel
    direction = np.asarray(Image.open(out / "direction.png"))
    assert direction.shape == (2 + 2 * 2 * 2 * cell, 2 + 3 * cell, 3)  # 2 codes x 2 dirs x 2 models, 3 alphas
    proc = subprocess.run(common[:-2] + [f"--output={out}2", "--mode=direction", "--a=seed:1",
                                         f"--direction_npy={dir_path}", "--alphas=0,5"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = np.asarray(Image.open(Path(f"{out}2") / "direction.png"))  # teacher only, one .npy direction
    assert single.shape == (2 + cell, 2 + 2 * cell, 3) and single.std() > 1.0
