"""Real images for FID (``tf_distill.data.prepared_images``): PIL LANCZOS resize + centre crop
(+ JPEG round trip) as rosinality's prepare_data, every image once, in order, unflipped, from
folders and TFRecords (the schema's encoded images and NVlabs' raw layout), bad ones skipped."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_distill.data import (DatasetNotFoundError, DataSource, DecodeStats, EmptyDatasetError, prepare_image,
                             prepared_images, write_tfrecords)


def _pil_prepare(array, resolution, jpeg_quality=None):
    """The reference written out with PIL alone: shorter side to R (LANCZOS, longer side rounded), centre crop."""
    im = Image.fromarray(array)
    w, h = im.size
    if (w, h) != (resolution, resolution):
        s = resolution / min(w, h)
        nw, nh = max(resolution, round(w * s)), max(resolution, round(h * s))
        im = im.resize((nw, nh), Image.LANCZOS)
        left, top = (nw - resolution) // 2, (nh - resolution) // 2
        im = im.crop((left, top, left + resolution, top + resolution))
    if jpeg_quality is not None:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=jpeg_quality)
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(im)


def _collect(ds):
    return [b.numpy() for b in ds]


@pytest.fixture
def folder(tmp_path):
    """Five 12x12 images in a nested folder, returned in sorted-path order."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)
    names = ["a/0.png", "a/1.png", "b.png", "c/d/2.png", "e.png"]
    for name, image in zip(names, images):
        (tmp_path / "f" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "f" / name)
    return tmp_path / "f", images


def test_resize_and_crop_equal_pil_exactly(tmp_path):
    rng = np.random.default_rng(1)
    for h, w in ((40, 60), (37, 23), (20, 20)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        np.testing.assert_array_equal(prepare_image(image, 20), _pil_prepare(image, 20))
        np.testing.assert_array_equal(prepare_image(image, 20, jpeg_quality=100), _pil_prepare(image, 20, 100))
    np.testing.assert_array_equal(prepare_image(image), image)  # no resolution: as read
    im = np.zeros((40, 60, 3), np.uint8)
    im[:, 10:50] = 200  # the centre 40x40, kept by the crop, is all 200
    Image.fromarray(im).save(tmp_path / "a.png")
    (batch,) = _collect(prepared_images(DataSource.folder(tmp_path), resolution=20))
    assert batch.shape == (1, 20, 20, 3) and batch.dtype == np.uint8
    assert np.abs(batch[0, :, 3:17].astype(int) - 200).max() <= 2
    np.testing.assert_array_equal(batch[0], _pil_prepare(im, 20))


def test_folder_is_read_once_in_order_unflipped_with_the_remainder(folder):
    root, images = folder
    batches = _collect(prepared_images(f"folder:{root}", batch_size=2))
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(batches), images)
    first4 = _collect(prepared_images(DataSource.folder(root), batch_size=3, max_images=4))
    np.testing.assert_array_equal(np.concatenate(first4), images[:4])
    again = _collect(prepared_images(DataSource.folder(root), batch_size=2))  # deterministic
    np.testing.assert_array_equal(np.concatenate(again), images)


def _raw_example(chw):
    return tf.train.Example(features=tf.train.Features(feature={
        "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(chw.shape))),
        "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[chw.tobytes()]))}))


def test_tfrecords_equal_the_folder_and_bad_records_are_skipped_by_name(folder, tmp_path):
    root, images = folder
    Image.fromarray(images[0]).save(root / "bad.png")
    data = bytearray((root / "bad.png").read_bytes())
    at = data.index(b"IDAT") + 8
    data[at:at + 40] = bytes(40)  # a damaged data stream: the header opens, decoding fails
    (root / "bad.png").write_bytes(bytes(data))  # kept by write_tfrecords(verify=False), named by its path
    written = write_tfrecords(root, tmp_path / "t" / "imgs", num_shards=2, verify=False).files
    stats = DecodeStats()
    got = np.concatenate(_collect(prepared_images(DataSource.tfrecord(tmp_path / "t"), 4, resolution=8,
                                                  stats=stats)))
    np.testing.assert_array_equal(got, np.stack([_pil_prepare(im, 8) for im in images]))
    assert stats.skipped[0].startswith("bad.png (") and stats.num_skipped == 1
    assert len(written) == 2

    raw = tmp_path / "raw.tfrecords"  # NVlabs dataset_tool: CHW bytes + shape; grey images replicated to RGB
    grey = images[0, :, :, :1]
    with tf.io.TFRecordWriter(str(raw)) as writer:
        for chw in (images[0].transpose(2, 0, 1), grey.transpose(2, 0, 1), np.zeros(5, np.uint8)[None, None]):
            writer.write(_raw_example(np.ascontiguousarray(chw)).SerializeToString())
        writer.write(b"not a protobuf \xff\xff")
    stats = DecodeStats()
    got = np.concatenate(_collect(prepared_images(f"tfrecord:{raw}", stats=stats)))
    np.testing.assert_array_equal(got, np.stack([images[0], np.repeat(grey, 3, axis=2)]))
    # the third record has a 1x1x5 shape of another size than the first: skipped; the fourth does not parse
    assert [s.split(" (")[0] for s in stats.skipped] == [f"{raw}#2", f"{raw}#3"]


def test_errors_are_clear(tmp_path, folder):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        prepared_images(DataSource.folder(tmp_path / "none"))
    with pytest.raises(FileNotFoundError):
        prepared_images(DataSource.tfrecord(tmp_path / "none-*.tfrecord"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_text("text")
    with pytest.raises(EmptyDatasetError, match="none of the 1 image"):
        prepared_images(DataSource.folder(tmp_path / "bad"))
    with pytest.raises(ValueError, match="folder or TFRecords"):
        prepared_images("fashion_mnist")
    root, _ = folder
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "z.png")  # another size, last in order
    stats = DecodeStats()
    assert sum(b.shape[0] for b in _collect(prepared_images(DataSource.folder(root), stats=stats))) == 5
    assert "differs from the first image's 12x12; pass resolution=" in stats.skipped[0]
