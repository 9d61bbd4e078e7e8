"""The Keras generator and discriminator against the reference PyTorch model's golden outputs (spec A)."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import load_npz, nchw, nhwc, state_dict_of
from tf_distill.convert import rosinality
from tf_distill import ops
from tf_distill.layers import modulated
from tf_distill.ops import conv3x3
from tf_distill.losses.gan import path_lengths, r1_penalty

ATOL = 1e-4
B = 4


@pytest.fixture(scope="module", params=["g_teacher32.npz", "g_student32.npz"])
def case(request):
    data = load_npz(request.param)
    g = rosinality.generator_from_state_dict(state_dict_of(data), lr_mlp=float(data["config/lr_mlp"]))
    noise = [nhwc(data[f"inputs/noise_{j}"]) for j in range(g.num_layers)]
    return data, g, noise


def test_architecture_is_derived_from_state_dict(case):
    data, g, _ = case
    assert g.channels == data["config/channels"].tolist()
    assert (g.size, g.style_dim, g.n_mlp, g.kernel_size) == (
        int(data["config/size"]), int(data["config/style_dim"]), int(data["config/n_mlp"]),
        int(data["config/kernel_size"]))


def test_mapping(case):
    data, g, _ = case
    np.testing.assert_allclose(g.mapping(data["inputs/z1"]), data["outputs/w_of_z1"], atol=ATOL)


def test_case_a_single_latent(case):
    data, g, noise = case
    image = g(data["inputs/z1"], noise=[n[:B] for n in noise])
    np.testing.assert_allclose(nchw(image), data["case_a/image"], atol=ATOL)


def test_case_a_with_phase_upsampling(case):
    """TFLite's form of the upsampling convs (one conv to the four phases) against the fixtures too."""
    data, g, noise = case
    with modulated.phase_upsampling(True):
        image = g(data["inputs/z1"], noise=[n[:B] for n in noise])
    np.testing.assert_allclose(nchw(image), data["case_a/image"], atol=ATOL)


def test_case_a_with_the_direct_conv(case, monkeypatch):
    """The compiled direct 3x3 conv (ops.conv3x3, on every layer here) against the fixtures too."""
    if not conv3x3.direct_conv_wins(conv3x3.DIRECT_MIN_WIDTH, 8):
        pytest.skip("the compiled direct conv does not run here (no custom op library, no AVX2, or a GPU)")
    monkeypatch.setattr(conv3x3, "DIRECT_MIN_WIDTH", 4)
    data, g, noise = case
    with ops.implementation("custom"):
        fn = tf.function(lambda z: g(z, noise=[n[:B] for n in noise]))
        graph = fn.get_concrete_function(tf.TensorSpec([B, g.style_dim])).graph
        image = fn(data["inputs/z1"])
    assert "TfDistill>Conv3x3" in {op.type for op in graph.get_operations()}
    np.testing.assert_allclose(nchw(image), data["case_a/image"], atol=ATOL)


def test_case_b_style_mixing(case):
    data, g, noise = case
    image = g([data["inputs/z1"], data["inputs/z2"]], inject_index=int(data["case_b/inject_index"]),
              noise=[n[:B] for n in noise])
    np.testing.assert_allclose(nchw(image), data["case_b/image"], atol=ATOL)


def test_case_c_truncation(case):
    data, g, noise = case
    image = g(data["inputs/z1"], truncation=float(data["case_c/psi"]),
              truncation_latent=data["case_c/truncation_latent"], noise=[n[:B] for n in noise])
    np.testing.assert_allclose(nchw(image), data["case_c/image"], atol=ATOL)


def test_case_e_wplus_input(case):
    data, g, noise = case
    image = g(data["case_e/wplus"], input_is_latent=True, noise=[n[:B] for n in noise])
    np.testing.assert_allclose(nchw(image), data["case_e/image"], atol=ATOL)


def test_case_d_offsets_rgb_features_wplus(case):
    data, g, noise = case
    out = g([data["inputs/z1"], data["inputs/z2"]], inject_index=int(data["case_d/inject_index"]),
            offsets=data["case_d/offsets"], noise=noise, return_rgb_list=True, return_features=True,
            return_latents=True)
    assert out["image"].shape[0] == 2 * B  # normal rows then offset rows
    for i, rgb in enumerate(out["rgb_list"]):
        np.testing.assert_allclose(nchw(rgb), data[f"case_d/rgb_{i}"], atol=ATOL)
    np.testing.assert_allclose(out["image"][:B], out["rgb_list"][-1], atol=0)
    for i, feat in enumerate(out["features"]):
        np.testing.assert_allclose(nchw(feat).reshape(2 * B, -1), data[f"case_d/feat_{i}"], atol=ATOL)
    np.testing.assert_allclose(out["latents"], data["case_d/wplus"], atol=ATOL)


def test_case_pl_path_lengths(case):
    data, g, noise = case
    pl = path_lengths(g, data["case_pl/wplus"], nhwc(data["case_pl/image_noise"]), noise=[n[:B] for n in noise])
    np.testing.assert_allclose(pl, data["case_pl/path_lengths"], atol=ATOL)


def test_noise_modes(case):
    data, g, _ = case
    z = data["inputs/z1"]
    stored_a, stored_b = g(z, randomize_noise=False), g(z, randomize_noise=False)
    np.testing.assert_array_equal(stored_a, stored_b)
    given = g(z, noise=[tf.transpose(v, [0, 1, 2, 3]) for v in g.synthesis.noises])
    np.testing.assert_allclose(given, stored_a, atol=1e-6)
    random_a, random_b = g(z), g(z)
    assert np.abs(np.asarray(random_a) - np.asarray(random_b)).max() > 1e-4


def test_random_inject_index_draws_rows_in_range(case):
    data, g, _ = case
    z1, z2 = data["inputs/z1"], data["inputs/z2"]
    w1, w2 = g.mapping(z1).numpy(), g.mapping(z2).numpy()
    seen = set()
    for _ in range(40):
        latents = g([z1, z2], randomize_noise=False, return_latents=True)["latents"].numpy()
        first = np.all(np.isclose(latents, w1[:, None, :]), axis=(0, 2))
        second = np.all(np.isclose(latents, w2[:, None, :]), axis=(0, 2))
        index = int(first.sum())
        assert np.all(first[:index]) and np.all(second[index:]) and 1 <= index <= g.n_latent - 1
        seen.add(index)
    assert len(seen) > 2


def test_discriminator_logits_and_r1():
    data = load_npz("d32.npz")
    d = rosinality.discriminator_from_state_dict(state_dict_of(data))
    images = nhwc(data["inputs/images"])
    np.testing.assert_allclose(d(images), data["outputs/logits"], atol=ATOL)
    np.testing.assert_allclose(r1_penalty(d, images), data["outputs/r1_penalty"], rtol=1e-4, atol=1e-7)


def test_minibatch_stddev_groups_are_strided():
    from tf_distill.models.discriminator import minibatch_stddev  # pylint: disable=import-outside-toplevel

    x = np.random.default_rng(0).standard_normal((8, 2, 2, 3)).astype(np.float32)
    y = minibatch_stddev(tf.constant(x)).numpy()[..., -1]
    for n in range(8):
        members = x[[n % 2, n % 2 + 2, n % 2 + 4, n % 2 + 6]]
        expect = np.sqrt(members.var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(y[n], expect, rtol=1e-5)


def test_minibatch_stddev_chunks_equal_separate_batches():
    from tf_distill.models.discriminator import minibatch_stddev  # pylint: disable=import-outside-toplevel

    x = tf.constant(np.random.default_rng(1).standard_normal((8, 3, 3, 5)).astype(np.float32))
    chunked = minibatch_stddev(x, chunk=4).numpy()
    separate = np.concatenate([minibatch_stddev(x[:4]).numpy(), minibatch_stddev(x[4:]).numpy()])
    np.testing.assert_allclose(chunked, separate, rtol=1e-6)
    assert np.abs(chunked - minibatch_stddev(x).numpy()).max() > 1e-3


def test_per_sample_inject_index(case):
    data, g, _ = case
    z1, z2 = data["inputs/z1"], data["inputs/z2"]
    index = np.array([1, 3, g.n_latent, 5], np.int32)
    latents = g([z1, z2], inject_index=index, randomize_noise=False, return_latents=True)["latents"].numpy()
    w1, w2 = g.mapping(z1).numpy(), g.mapping(z2).numpy()
    for b, i in enumerate(index):
        np.testing.assert_allclose(latents[b, :i], np.broadcast_to(w1[b], (i, w1.shape[1])), rtol=1e-6)
        np.testing.assert_allclose(latents[b, i:], np.broadcast_to(w2[b], (g.n_latent - i, w2.shape[1])), rtol=1e-6)
