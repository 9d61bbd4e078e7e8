"""Data pipelines: image folders, TFRecords, Fashion-MNIST IDX files, sharding and determinism."""

import gzip
import json
import logging
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_distill import data
from tf_distill.data import fashion_mnist, idx, tfrecord
from tf_distill.errors import UserError

RES = 16
LEVEL = 2.0 / 255.0  # one uint8 level in [-1, 1]


def _save(path, array, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def _pil_reference(path, resolution=RES):
    """The reference chain: PIL decode -> RGB -> torchvision Resize(R) (PIL bilinear) -> CenterCrop -> [-1, 1]."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    nw, nh = (resolution, int(resolution * h / w)) if w <= h else (int(resolution * w / h), resolution)
    out = np.asarray(img.resize((nw, nh), Image.BILINEAR), np.float32)
    top, left = int(round((nh - resolution) / 2)), int(round((nw - resolution) / 2))
    return out[top:top + resolution, left:left + resolution] / 127.5 - 1.0


def _collect(ds):
    return np.concatenate([b.numpy() for b in ds]) if ds is not None else None


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    """Nested PNG/JPEG files of several modes and shapes, two corrupt images, and non-image files."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    smooth = lambda h, w, c: np.asarray(  # noqa: E731
        Image.fromarray(rng.integers(0, 256, (h // 4, w // 4, c), np.uint8).squeeze()).resize((w, h), Image.BICUBIC))
    _save(root / "a" / "rgb.png", smooth(40, 40, 3))
    _save(root / "a" / "b" / "photo.jpg", smooth(48, 48, 3), quality=95)
    _save(root / "grey.png", smooth(32, 32, 1))
    _save(root / "c" / "RGBA.PNG", np.dstack([smooth(24, 24, 3), np.full((24, 24), 128, np.uint8)]))
    _save(root / "c" / "wide.jpeg", smooth(30, 50, 3), quality=95)
    _save(root / "z" / "exact.png", smooth(RES, RES, 3))
    (root / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    jpeg = (root / "a" / "b" / "photo.jpg").read_bytes()
    (root / "z" / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 3])
    (root / "notes.txt").write_text("not an image")
    _save(root / ".hidden" / "skip.png", smooth(8, 8, 3))
    _save(root / "._resource.png", smooth(8, 8, 3))
    good = ["a/b/photo.jpg", "a/rgb.png", "c/RGBA.PNG", "c/wide.jpeg", "grey.png", "z/exact.png"]
    bad = ["a/corrupt.png", "z/truncated.jpg"]
    return root, good, bad


@pytest.fixture(scope="module")
def numbered_tree(tmp_path_factory):
    """11 constant-colour images (value 20 * i) in nested folders: each is identified by its mean."""
    root = tmp_path_factory.mktemp("numbered")
    for i in range(11):
        size = (20 + i, 24) if i % 3 else (RES, RES)
        path = root / f"d{i % 3}" / f"img{i:02d}.{'png' if i % 2 else 'jpg'}"
        _save(path, np.full(size + (3,), 20 * i, np.uint8), **({"quality": 100} if i % 2 == 0 else {}))
    return root


def _ids(images):
    values = (images.reshape(len(images), -1).mean(axis=1) + 1.0) * 127.5
    ids = np.rint(values / 20).astype(int)
    np.testing.assert_allclose(values, 20 * ids, atol=1.0)
    return ids.tolist()


# --- image folders -------------------------------------------------------------------------------------


def test_list_image_files_is_recursive_sorted_and_filtered(image_tree):
    root, good, bad = image_tree
    files = data.list_image_files(root)
    assert [os.path.relpath(f, root) for f in files] == sorted(good + bad)


def test_folder_pipeline_decodes_resizes_and_skips_corrupt(image_tree, caplog):
    root, good, bad = image_tree
    stats = data.DecodeStats()
    with caplog.at_level(logging.WARNING):
        images = _collect(data.make_dataset(f"folder:{root}", RES, 4, shuffle=False, flip=False, repeat=False,
                                            stats=stats))
    assert images.dtype == np.float32 and images.shape == (len(good), RES, RES, 3)
    assert images.min() >= -1.0 and images.max() <= 1.0
    # Same order as the sorted file list, and within one uint8 level of the PIL/torchvision chain.
    for image, rel in zip(images, sorted(good)):
        ref = _pil_reference(root / rel)
        tol = 1.01 * LEVEL
        assert np.abs(image - ref).max() <= tol, rel
        assert np.abs(image - ref).mean() <= 0.5 * LEVEL, rel
    np.testing.assert_array_equal(images[-1], np.asarray(Image.open(root / "z/exact.png"), np.float32) / 127.5 - 1)
    # The corrupt files are skipped, counted once each, and logged by path.
    assert stats.num_skipped == 2 and stats.num_skip_events == 2
    assert [os.path.relpath(p, root) for p in stats.skipped] == bad
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for rel in bad:
        assert str(root / rel) in logged
    assert "2 undecodable image(s) skipped so far" in logged


def test_repeated_folder_counts_each_corrupt_file_once(image_tree):
    root, good, _ = image_tree
    stats = data.DecodeStats()
    ds = data.make_dataset(data.DataSource.folder(root), RES, 3, shuffle=True, flip=True, repeat=True, seed=1,
                           stats=stats)
    batches = list(ds.take(2 * len(good) // 3 + 1))  # a bit more than two epochs
    assert all(b.shape == (3, RES, RES, 3) for b in batches)
    assert stats.num_skipped == 2 and stats.num_skip_events >= 4


def test_folder_of_only_corrupt_images_is_an_error_not_an_endless_loop(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(b"broken")
    ds = data.make_dataset(f"folder:{tmp_path}", RES, 2, seed=0)
    with pytest.raises(tf.errors.OpError, match=r"None of the 3 image\(s\) of image folder .* can be decoded"):
        next(iter(ds))


@pytest.mark.parametrize("size", [40, RES])  # resized, and passed through at the target size
def test_range_extremes_map_to_minus_one_and_one(tmp_path, size):
    _save(tmp_path / "black.png", np.zeros((size, size, 3), np.uint8))
    _save(tmp_path / "white.png", np.full((size, size, 3), 255, np.uint8))
    black, white = _collect(data.make_dataset(f"folder:{tmp_path}", RES, 2, False, False, False))
    assert np.all(black == -1.0) and white.max() <= 1.0
    np.testing.assert_allclose(white, 1.0, atol=0 if size == RES else 1e-6)


def test_flip_is_random_per_image_and_only_a_mirror(tmp_path):
    gradient = np.tile(np.linspace(0, 255, 32).astype(np.uint8)[None, :, None], (32, 1, 3))
    for i in range(8):
        _save(tmp_path / f"{i}.png", gradient)
    ref = _collect(data.make_dataset(f"folder:{tmp_path}", RES, 8, False, False, False))[0]
    assert not np.allclose(ref, ref[:, ::-1])
    flipped = _collect(data.make_dataset(f"folder:{tmp_path}", RES, 8, True, True, True, seed=3).take(4))
    is_flipped = [bool(np.allclose(x, ref[:, ::-1], atol=1e-5)) for x in flipped]
    assert all(f or np.allclose(x, ref, atol=1e-5) for f, x in zip(is_flipped, flipped))
    assert 4 <= sum(is_flipped) <= 28  # 32 fair coins


def test_missing_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(data.DatasetNotFoundError, match="does not exist.*png/jpg/jpeg") as err:
        data.make_dataset(f"folder:{missing}", RES, 2)
    assert str(missing) in str(err.value)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(data.DatasetNotFoundError, match="is not a folder"):
        data.list_image_files(tmp_path / "file.png")


def test_empty_folder_and_folder_without_images_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.EmptyDatasetError, match="is empty") as err:
        data.make_dataset(f"folder:{empty}", RES, 2)
    assert str(empty) in str(err.value)
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "sub" / "labels.csv").write_text("a,b")
    with pytest.raises(data.EmptyDatasetError, match=r"holds no images: 1 file.*sub/labels.csv") as err:
        data.list_image_files(other)
    assert str(other) in str(err.value)


def test_tf_resize_matches_pil_within_one_level():
    """The documented difference: float32 TF vs uint8-rounding PIL (downscale, non-square, upscale)."""
    rng = np.random.default_rng(1)
    for h, w, r in [(64, 64, 16), (37, 53, 16), (16, 16, 40)]:
        image = rng.integers(0, 256, (h, w, 3), np.uint8)
        ours = data.resize_square(image, r).numpy()
        pil = Image.fromarray(image)
        nw, nh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
        ref = np.asarray(pil.resize((nw, nh), Image.BILINEAR), np.float32)
        top, left = int(round((nh - r) / 2)), int(round((nw - r) / 2))
        diff = np.abs(ours - ref[top:top + r, left:left + r])
        assert diff.max() <= 1.01 and diff.mean() < 0.4, (h, w, r, diff.max(), diff.mean())


# --- TFRecords -----------------------------------------------------------------------------------------


def test_tfrecord_round_trip_equals_folder_pipeline(image_tree, tmp_path):
    root, good, bad = image_tree
    result = data.write_tfrecords(root, tmp_path / "shards" / "train", num_shards=3)
    assert [Path(f).name for f in result.files] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert result.num_images == len(good) and [os.path.relpath(p, root) for p in result.skipped] == bad
    folder = _collect(data.make_dataset(f"folder:{root}", RES, 4, False, False, False))
    for spec in (f"tfrecord:{tmp_path / 'shards'}", f"tfrecord:{tmp_path / 'shards'}/train-*-of-00003.tfrecord"):
        np.testing.assert_array_equal(_collect(data.make_dataset(spec, RES, 4, False, False, False)), folder)
    # The schema: original bytes, size and relative path.
    record = next(iter(tf.data.TFRecordDataset(result.files[0])))
    example = {k: v.numpy() for k, v in data.parse_record(record).items()}
    first = sorted(good)[0]
    assert example["image"] == (root / first).read_bytes()
    assert (example["height"], example["width"], example["path"]) == (48, 48, first.encode())


def test_tfrecord_corrupt_record_is_skipped_and_named(tmp_path):
    png = tmp_path / "ok.png"
    _save(png, np.full((20, 20, 3), 77, np.uint8))
    file = tmp_path / "mixed.tfrecord"
    with tf.io.TFRecordWriter(str(file)) as writer:
        writer.write(data.image_example(png.read_bytes()).SerializeToString())
        writer.write(data.image_example(b"garbage", path="bad/one.png").SerializeToString())
        writer.write(data.image_example(b"more garbage").SerializeToString())
    stats = data.DecodeStats()
    images = _collect(data.make_dataset(f"tfrecord:{file}", RES, 2, False, False, False, stats=stats))
    assert images.shape == (1, RES, RES, 3)
    np.testing.assert_allclose(images, 77 / 127.5 - 1, atol=1e-6)
    assert sorted(stats.skipped) == sorted(["bad/one.png", f"{file}#2"])


def _shards(tmp_path, n=3):
    """``n`` one-image shards (different images), written by write_tfrecords."""
    for i in range(n):
        _save(tmp_path / "images" / f"{i}.png", np.full((20, 20, 3), 40 * i, np.uint8))
    return data.write_tfrecords(tmp_path / "images", tmp_path / "shards" / "s", num_shards=n).files


@pytest.mark.parametrize("damage,words", [
    (lambda b: b[:len(b) // 2], "truncated record at 0: Read less bytes than requested"),  # a copy cut short
    (lambda b: b[:40] + bytes([b[40] ^ 0xFF]) + b[41:], "corrupted record at 12"),  # a flipped bit: bad checksum
])
def test_a_damaged_tfrecord_shard_is_named(tmp_path, damage, words):
    files = _shards(tmp_path)
    assert tfrecord.damaged_files(files) == []
    Path(files[1]).write_bytes(damage(Path(files[1]).read_bytes()))
    assert [f for f, _ in tfrecord.damaged_files(files)] == [files[1]]
    spec = f"tfrecord:{tmp_path / 'shards'}"
    with pytest.raises(tf.errors.DataLossError) as raised:  # what a pipeline meets: TensorFlow names no file
        _collect(data.make_dataset(spec, RES, 1, False, False, False))
    assert files[1] not in str(raised.value)
    with pytest.raises(data.DamagedDataError) as named, data.naming_damaged_files(spec):
        _collect(data.make_dataset(spec, RES, 1, False, False, False))
    explained = named.value
    assert isinstance(explained, data.DamagedDataError) and isinstance(explained, UserError)
    assert str(explained).startswith(f"TFRecord file {files[1]} is damaged: {words}"), str(explained)
    assert "tf-distill-make-tfrecords" in str(explained) and "name:" not in str(explained)


def test_naming_damaged_files_lets_other_errors_pass(tmp_path):
    with pytest.raises(tf.errors.DataLossError, match="not a TFRecord"):  # a folder source: unchanged
        with data.naming_damaged_files(f"folder:{tmp_path}"):
            raise tf.errors.DataLossError(None, None, "not a TFRecord")
    with pytest.raises(ValueError, match="other"), data.naming_damaged_files(f"tfrecord:{tmp_path}"):
        raise ValueError("other")


def test_tfrecord_missing_and_empty_are_clear_errors(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="does not exist"):
        data.make_dataset(f"tfrecord:{tmp_path / 'missing'}", RES, 2)
    with pytest.raises(data.DatasetNotFoundError, match="No files match"):
        data.make_dataset(f"tfrecord:{tmp_path}/*.tfrecord", RES, 2)
    with pytest.raises(data.EmptyDatasetError, match=r"holds no \*\.tfrecord files"):
        data.make_dataset(f"tfrecord:{tmp_path}", RES, 2)


def test_tfrecords_of_no_readable_image_write_nothing_and_keep_old_shards(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"not a png")
    (tmp_path / "in" / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    old = tmp_path / "out" / "s-00000-of-00001.tfrecord"
    old.parent.mkdir()
    old.write_bytes(b"mine")
    with pytest.raises(data.EmptyDatasetError, match=r"none of the 2 image file\(s\).*a.png, b.jpg.*nothing was written"):
        data.write_tfrecords(tmp_path / "in", tmp_path / "out" / "s", num_shards=1)
    assert sorted(p.name for p in old.parent.iterdir()) == [old.name] and old.read_bytes() == b"mine"


def test_tfrecord_shards_hold_only_readable_images_and_none_is_empty(tmp_path):
    """Unreadable files are left out before sharding: 1 readable of 3 files with 3 shards asked is one shard."""
    (tmp_path / "in").mkdir()
    _save(tmp_path / "in" / "b.png", np.full((20, 20, 3), 77, np.uint8))
    (tmp_path / "in" / "a.png").write_bytes(b"not a png")
    (tmp_path / "in" / "c.jpg").write_bytes(b"\xff\xd8 truncated")
    calls = []
    result = data.write_tfrecords(tmp_path / "in", tmp_path / "out" / "s", num_shards=3,
                                  progress=lambda total, label: lambda n: calls.append((label, total, n)))
    assert [Path(f).name for f in result.files] == ["s-00000-of-00001.tfrecord"] and result.num_images == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s-00000-of-00001.tfrecord"]
    assert [r.numpy() for r in tf.data.TFRecordDataset(result.files)] != []
    assert calls == [("checking images", 3, 1)] * 3 + [("writing shards", 1, 1)]


def test_make_tfrecords_binary(numbered_tree, tmp_path):
    from tf_distill.bin import make_tfrecords  # pylint: disable=import-outside-toplevel
    result = make_tfrecords.convert(str(numbered_tree), str(tmp_path / "out" / "num"), num_shards=2, verify=False)
    assert result.num_images == 11 and len(result.files) == 2
    # An unwritable folder is refused before the check pass decodes every image (it failed at the first shard);
    # /sys takes no new files, even from root.
    with pytest.raises(UserError, match=r"--output=/sys/shards: cannot write in /sys"):
        make_tfrecords.check_paths(str(numbered_tree), "/sys/shards")


# --- IDX / Fashion-MNIST -------------------------------------------------------------------------------


def test_parse_hand_made_idx_files(tmp_path):
    u8 = b"\x00\x00\x08\x02" + struct.pack(">II", 2, 3) + bytes(range(6))
    np.testing.assert_array_equal(idx.parse_idx(u8), np.arange(6, dtype=np.uint8).reshape(2, 3))
    i32 = b"\x00\x00\x0c\x01" + struct.pack(">I", 3) + struct.pack(">iii", 1, -2, 70000)
    out = idx.parse_idx(i32)
    assert out.dtype == np.int32 and out.dtype.isnative and out.tolist() == [1, -2, 70000]
    f32 = b"\x00\x00\x0d\x01" + struct.pack(">I", 2) + struct.pack(">ff", 1.5, -0.25)
    assert idx.parse_idx(f32).tolist() == [1.5, -0.25]
    (tmp_path / "a.gz").write_bytes(gzip.compress(u8))
    (tmp_path / "a").write_bytes(u8)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a.gz"), data.read_idx(tmp_path / "a"))
    for array in (np.arange(24, dtype=np.int16).reshape(2, 3, 4) - 7, np.linspace(0, 1, 5), np.arange(3, dtype=np.int8)):
        np.testing.assert_array_equal(data.read_idx(data.write_idx(tmp_path / "rt.gz", array)), array)


@pytest.mark.parametrize("blob, message", [
    (b"\x00\x00\x08\x02" + struct.pack(">II", 2, 3) + bytes(5), "truncated IDX data"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + bytes(3), "trailing bytes"),
    (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + bytes(1), "bad IDX magic"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + bytes(1), "unknown IDX type code 0x07"),
    (b"\x00\x00\x08\x03" + struct.pack(">I", 1), "truncated IDX header"),
    (b"\x00\x00", "too short"),
])
def test_corrupt_idx_is_a_clear_error(tmp_path, blob, message):
    path = tmp_path / "x-idx"
    path.write_bytes(blob)
    with pytest.raises(data.IdxError, match=message) as err:
        data.read_idx(path)
    assert str(path) in str(err.value)


def test_truncated_gzip_idx_is_a_clear_error(tmp_path):
    blob = gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 5000) + bytes(range(256)) * 20)
    (tmp_path / "t.gz").write_bytes(blob[:len(blob) // 2])
    with pytest.raises(data.IdxError, match="corrupt or truncated gzip"):
        data.read_idx(tmp_path / "t.gz")
    (tmp_path / "plain.gz").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(data.IdxError, match="not gzip data"):
        data.read_idx(tmp_path / "plain.gz")


@pytest.fixture(scope="module")
def fake_fashion(tmp_path_factory):
    """A hand-made Fashion-MNIST folder: 6 train / 3 test images with values >= 1 (so padding shows)."""
    root = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(2)
    arrays = {}
    for split, n in (("train", 6), ("test", 3)):
        images = rng.integers(1, 256, (n, 28, 28), np.uint8)
        labels = np.arange(n, dtype=np.uint8)
        image_name, label_name = fashion_mnist.FILES[split]
        (root / (image_name + ".gz")).write_bytes(gzip.compress(
            b"\x00\x00\x08\x03" + struct.pack(">III", n, 28, 28) + images.tobytes()))
        (root / label_name).write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", n) + labels.tobytes())
        arrays[split] = (images, labels)
    return root, arrays


def test_fashion_mnist_loader_and_padding(fake_fashion):
    root, arrays = fake_fashion
    images, labels = data.load_fashion_mnist("train", root)
    np.testing.assert_array_equal(images, arrays["train"][0])
    np.testing.assert_array_equal(labels, arrays["train"][1])
    padded = data.pad_images(images)
    assert padded.shape == (6, 32, 32)
    np.testing.assert_array_equal(padded[:, 2:30, 2:30], images)
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(padded[:, border] == 0)


def test_fashion_mnist_pipeline_is_rgb_padded_and_scaled(fake_fashion):
    root, arrays = fake_fashion
    out = _collect(data.make_dataset(data.DataSource.fashion_mnist("test", root), 32, 2, False, False, False))
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    np.testing.assert_allclose(out[:, 2:30, 2:30, 0], arrays["test"][0] / 127.5 - 1, atol=1e-6)
    assert np.all(out[:, :2] == -1) and np.all(out[:, 30:] == -1)
    assert np.all(out[:, :, :2] == -1) and np.all(out[:, :, 30:] == -1)
    assert out[:, 2:30, 2:30].min() > -1
    up = _collect(data.make_dataset(f"fashion_mnist:test:{root}", 64, 3, False, False, False))
    assert up.shape == (3, 64, 64, 3) and np.all(up[:, :3] == -1) and np.all(up[:, :, -3:] == -1)


def test_fashion_mnist_missing_files_name_the_apt_package(tmp_path, fake_fashion):
    with pytest.raises(data.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        data.load_fashion_mnist("train", tmp_path)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in str(err.value)
    root, _ = fake_fashion
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in os.listdir(root):
        (broken / name).write_bytes((root / name).read_bytes())
    (broken / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + bytes(5))
    with pytest.raises(data.IdxError, match="6 images but .* 5 labels"):
        data.load_fashion_mnist("train", broken)


@pytest.mark.skipif(not os.path.isdir(fashion_mnist.DEFAULT_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_real_debian_fashion_mnist():
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = data.load_fashion_mnist(split)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert images.min() == 0 and images.max() == 255
        assert np.bincount(labels).tolist() == [n // 10] * 10
    batch = next(iter(data.make_dataset("fashion_mnist", 32, 64, seed=0)))
    assert batch.shape == (64, 32, 32, 3)
    assert float(tf.reduce_min(batch)) == -1.0 and float(tf.reduce_max(batch)) == 1.0
    assert np.all(batch.numpy()[:, :2] == -1)


# --- sharding and determinism --------------------------------------------------------------------------


def _context(i, n=2):
    return tf.distribute.InputContext(num_input_pipelines=n, input_pipeline_id=i, num_replicas_in_sync=n)


def test_folder_shards_are_disjoint_and_cover_the_set(numbered_tree):
    parts = []
    for i in range(2):
        ds = data.make_dataset(f"folder:{numbered_tree}", RES, 4, True, True, False, seed=5, input_context=_context(i))
        batches = [b.numpy() for b in ds]
        assert all(len(b) <= 2 for b in batches)  # per-replica batch of the global 4
        parts.append(_ids(np.concatenate(batches)))
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(11))


@pytest.mark.parametrize("num_files", [1, 4])  # by record (fewer files than pipelines) and by file
def test_tfrecord_shards_are_disjoint_and_cover_the_set(numbered_tree, tmp_path, num_files):
    data.write_tfrecords(numbered_tree, tmp_path / "num", num_shards=num_files)
    parts = [_ids(_collect(data.make_dataset(f"tfrecord:{tmp_path}", RES, 4, True, False, False, seed=5,
                                             input_context=_context(i)))) for i in range(2)]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(11))


def test_fashion_mnist_shards_are_disjoint_and_cover_the_set(fake_fashion):
    root, arrays = fake_fashion
    parts = [_collect(data.make_dataset(f"fashion_mnist:train:{root}", 32, 3, True, False, False, seed=0,
                                        input_context=_context(i, 3))) for i in range(3)]
    seen = [tuple(np.rint((x[2:30, 2:30, 0] + 1) * 127.5).astype(np.uint8).ravel()) for p in parts for x in p]
    assert [len(p) for p in parts] == [2, 2, 2]
    assert sorted(seen) == sorted(tuple(x.ravel()) for x in arrays["train"][0])


@pytest.mark.parametrize("skip", [0, 3])
def test_data_sharding_gives_each_pipeline_its_rows_of_the_single_pipeline_batches(numbered_tree, skip):
    """sharding="data": pipeline p of 2 yields rows [2p, 2p + 2) of every global batch of 4 that one
    pipeline yields (flips included), also when resuming ``skip`` per-pipeline batches in."""
    source, steps = f"folder:{numbered_tree}", 5
    single = _collect(data.make_dataset(source, RES, 4, seed=5, skip_batches=skip).take(steps))
    parts = [_collect(data.make_dataset(source, RES, 4, seed=5, input_context=_context(i), skip_batches=skip,
                                        sharding="data").take(steps)) for i in range(2)]
    merged = np.stack([np.concatenate([parts[0][2 * s:2 * s + 2], parts[1][2 * s:2 * s + 2]]) for s in range(steps)])
    np.testing.assert_array_equal(merged.reshape(single.shape), single)
    # "files" gives each pipeline a shard of its own instead: other rows.
    files = _collect(data.make_dataset(source, RES, 4, seed=5, input_context=_context(0)).take(steps))
    assert not np.array_equal(files, parts[0])
    with pytest.raises(ValueError, match="divisible"):
        data.make_dataset(source, RES, 5, input_context=_context(0), sharding="data")
    with pytest.raises(ValueError, match="sharding must be one of"):
        data.make_dataset(source, RES, 4, sharding="rows")


def test_training_stream_drops_remainder_and_has_static_batch(numbered_tree):
    ds = data.make_dataset(f"folder:{numbered_tree}", RES, 4, seed=0)
    assert ds.element_spec.shape.as_list() == [4, RES, RES, 3]
    single = data.make_dataset(f"folder:{numbered_tree}", RES, 4, True, True, False, drop_remainder=True, seed=0)
    assert [len(b) for b in single] == [4, 4]


@pytest.mark.parametrize("spec", ["folder", "fashion"])
def test_same_seed_same_stream_other_seed_other_stream(numbered_tree, fake_fashion, spec):
    source = f"folder:{numbered_tree}" if spec == "folder" else f"fashion_mnist:train:{fake_fashion[0]}"
    res = RES if spec == "folder" else 32

    def stream(seed):
        return _collect(data.make_dataset(source, res, 3, seed=seed).take(8))

    first, again, other = stream(7), stream(7), stream(8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    if spec == "folder":  # epochs are reshuffled: the first 11 images are a permutation of all 11, in order
        ids = _ids(first)
        assert sorted(ids[:11]) == list(range(11)) and ids[:11] != sorted(ids[:11])


def test_source_specs():
    assert data.DataSource.parse("folder:/x:y") == data.DataSource.folder("/x:y")
    assert data.DataSource.parse("fashion_mnist") == data.DataSource.fashion_mnist()
    assert str(data.DataSource.parse("fashion_mnist:test:/d")) == "fashion_mnist:test:/d"
    for bad in ("folder", "folder:", "images:/x", "fashion_mnist:val"):
        with pytest.raises(ValueError):
            data.DataSource.parse(bad)


def test_mirrored_strategy_two_cpus_distribute_datasets_from_function(numbered_tree):
    """The builder as a dataset_fn of distribute_datasets_from_function on two logical CPUs (own process)."""
    script = textwrap.dedent(f"""
        import json, os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tf_distill import data
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        ds = strategy.distribute_datasets_from_function(lambda ctx: data.make_dataset(
            "folder:{numbered_tree}", 8, 6, seed=0, input_context=ctx))
        batch = next(iter(ds))
        print(json.dumps([list(t.shape) for t in strategy.experimental_local_results(batch)]))
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[3, 8, 8, 3], [3, 8, 8, 3]]
