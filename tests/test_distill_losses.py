"""StyleKD loss terms, directions, offsets, Adam and EMA against NumPy / closed forms (spec C.3-C.5, F.7, F.9)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tf_distill.losses.distill import relation_loss, sample_offsets
from tf_distill.models.latent_directions import latent_directions, modulation_matrix
from tf_distill.models import Generator
from tf_distill.train.optim import EMA_DECAY, TorchAdam, ema_update, lazy_regularization


def numpy_relation_loss(fs, ft, batch, mode, single_view, group):
    def cos(a, b):
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-8)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-8)
        return a @ b.T

    losses = []
    for g0 in range(0, batch, group):
        rows = slice(g0, g0 + group)
        cols = rows if single_view else slice(batch + g0, batch + g0 + group)
        s, t = cos(fs[rows], fs[cols]), cos(ft[rows], ft[cols])
        if mode == "kl":
            p = np.exp(t) / np.exp(t).sum(1, keepdims=True)
            q = np.exp(s) / np.exp(s).sum(1, keepdims=True)
            losses.append((p * (np.log(p) - np.log(q))).sum() / group)
        else:
            losses.append(((s - t) ** 2).mean())
    return np.mean(losses)


@pytest.mark.parametrize("mode", ["kl", "mse"])
@pytest.mark.parametrize("single_view", [False, True])
@pytest.mark.parametrize("batch,group", [(4, 4), (8, 4), (6, 2)])
def test_relation_loss_matches_numpy(mode, single_view, batch, group):
    rng = np.random.default_rng(0)
    fs = rng.standard_normal((2 * batch, 3, 3, 5))
    ft = rng.standard_normal((2 * batch, 3, 3, 7))
    got = relation_loss(tf.constant(fs), tf.constant(ft), batch, mode, single_view, group).numpy()
    want = numpy_relation_loss(fs.reshape(2 * batch, -1), ft.reshape(2 * batch, -1), batch, mode, single_view, group)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert want > 1e-4


def test_relation_loss_matches_pytorch_kl_div_batchmean():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    fs, ft = rng.standard_normal((8, 10)), rng.standard_normal((8, 10))
    cos = torch.nn.functional.cosine_similarity
    ts, tt = torch.tensor(fs), torch.tensor(ft)
    s = cos(ts[:4, None, :], ts[None, 4:, :], dim=-1, eps=1e-8)  # the reference's broadcast form
    t = cos(tt[:4, None, :], tt[None, 4:, :], dim=-1, eps=1e-8)
    want = torch.nn.functional.kl_div(torch.log_softmax(s, 1), torch.softmax(t, 1), reduction="batchmean")
    np.testing.assert_allclose(relation_loss(fs, ft, 4, "kl").numpy(), want.item(), rtol=1e-6)


def test_relation_loss_is_layout_invariant_and_single_view_diagonal_is_one():
    rng = np.random.default_rng(2)
    f = rng.standard_normal((8, 4, 4, 3)).astype(np.float32)
    nchw = np.ascontiguousarray(f.transpose(0, 3, 1, 2))
    t = rng.standard_normal((8, 5)).astype(np.float32)
    np.testing.assert_allclose(relation_loss(f, t, 4), relation_loss(nchw, t, 4), rtol=1e-5)
    from tf_distill.losses.distill import similarity_matrices  # pylint: disable=import-outside-toplevel

    np.testing.assert_allclose(np.diagonal(similarity_matrices(f, 4, single_view=True)[0]), 1.0, rtol=1e-6)
    assert float(relation_loss(f, f, 4)) == pytest.approx(0.0, abs=1e-7)


@pytest.fixture(scope="module")
def teacher():
    g = Generator(32, style_dim=16, n_mlp=2, channels=[12, 12, 10, 10, 8, 8, 6, 6])
    g.build()
    return g


def test_split_directions_are_top_eigenvectors(teacher):
    dirs = latent_directions(teacher, num_blocks=3, mode="split")
    assert dirs.shape == (15, 16)
    for j in range(3):
        a = modulation_matrix(teacher, j)
        np.testing.assert_allclose(np.linalg.norm(a, axis=0), 1.0, rtol=1e-6)
        values, vectors = np.linalg.eig(a @ a.T)  # the reference's call; top 5 by eigenvalue
        top = vectors[:, np.argsort(-values.real)[:5]].real
        d = dirs[5 * j:5 * j + 5].T
        # same subspace: projecting one basis on the other preserves it
        np.testing.assert_allclose(top @ (top.T @ d), d, atol=1e-5)


def test_global_directions(teacher):
    dirs = latent_directions(teacher, num_blocks=2, mode="global")
    a = np.concatenate([modulation_matrix(teacher, 0), modulation_matrix(teacher, 1)], axis=1)
    rayleigh = np.einsum("kd,de,ke->k", dirs, a @ a.T, dirs)
    assert dirs.shape == (10, 16) and np.all(np.diff(rayleigh) <= 1e-4)
    assert rayleigh.min() >= np.sort(np.linalg.eigvalsh(a @ a.T))[-10] - 1e-4


def test_offset_statistics_and_directions():
    directions = np.eye(16, dtype=np.float32)[:5] * 3.0
    off = sample_offsets(20000, 16, directions, alpha_std=5.0, seed=(1, 2)).numpy()
    assert off.shape == (20000, 1, 16)
    norms = np.linalg.norm(off[:, 0], axis=1)
    assert np.std(norms * np.sign(off[:, 0].sum(1))) == pytest.approx(5.0, rel=0.03)
    assert np.all(np.count_nonzero(off[:, 0, 5:], axis=1) == 0)  # only along the given directions
    counts = np.bincount(np.argmax(np.abs(off[:, 0]), axis=1), minlength=5)
    assert counts.min() > 3600  # uniform over the 5 directions
    rand = sample_offsets(20000, 16, None, alpha_std=5.0, seed=(3, 4)).numpy()[:, 0]
    assert np.std(np.linalg.norm(rand, axis=1) * np.sign(rand[:, 0])) == pytest.approx(5.0, rel=0.03)
    np.testing.assert_array_equal(sample_offsets(4, 16, None, seed=(5, 6)), sample_offsets(4, 16, None, seed=(5, 6)))


def test_torch_adam_matches_the_pytorch_formula():
    rng = np.random.default_rng(3)
    lr, betas = lazy_regularization(0.002, (0.0, 0.99), 4)
    assert lr == pytest.approx(0.0016) and betas[1] == pytest.approx(0.99 ** 0.8)
    p0 = rng.standard_normal(5)
    grads = rng.standard_normal((4, 5))
    var = tf.Variable(p0.astype(np.float32))
    opt = TorchAdam(lr, *betas)
    p, m, v = p0.copy(), np.zeros(5), np.zeros(5)
    for t, g in enumerate(grads, start=1):
        opt.apply_gradients([(tf.constant(g, tf.float32), var)])
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        p = p - lr * (m / (1 - betas[0] ** t)) / (np.sqrt(v / (1 - betas[1] ** t)) + 1e-8)
    np.testing.assert_allclose(var.numpy(), p, rtol=1e-5, atol=1e-7)
    torch = pytest.importorskip("torch")
    tp = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float32))
    topt = torch.optim.Adam([tp], lr=lr, betas=betas, eps=1e-8)
    for g in grads:
        tp.grad = torch.tensor(g, dtype=torch.float32)
        topt.step()
    np.testing.assert_allclose(var.numpy(), tp.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_ema_constant_and_update_skips_buffers():
    assert EMA_DECAY == pytest.approx(0.99778439, abs=1e-8)
    assert EMA_DECAY == pytest.approx(math.pow(0.5, 32 / 10000))
    g = Generator(8, style_dim=4, n_mlp=1, channels=[4, 4, 4, 4])
    ema = Generator.from_config(g.get_config())
    g.build()
    ema.build()
    before = [w.numpy().copy() for w in ema.weights]
    ema_update(ema, g, decay=0.9)
    for w, b in zip(ema.weights, before):
        if w.trainable:
            src = next(s for s in g.trainable_weights if s.path == w.path)
            np.testing.assert_allclose(w.numpy(), 0.9 * b + 0.1 * src.numpy(), rtol=1e-6)
        else:
            np.testing.assert_array_equal(w.numpy(), b)
