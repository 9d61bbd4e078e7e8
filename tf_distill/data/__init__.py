"""Training data as ``tf.data`` pipelines: image folders, TFRecords, Debian's Fashion-MNIST.

Every pipeline yields float32 NHWC batches in [-1, 1] at a requested square resolution, sharded
per ``tf.distribute`` input pipeline. Entry point: :func:`make_dataset`. Real images for FID
statistics, prepared as the reference's evaluation saw them: :func:`prepared_images`.
"""

from tf_distill.data.decode import DecodeStats, resize_square, to_signed_unit
from tf_distill.data.errors import DamagedDataError, DatasetNotFoundError, EmptyDatasetError
from tf_distill.data.fashion_mnist import load_fashion_mnist, pad_images
from tf_distill.data.folder import IMAGE_EXTENSIONS, list_image_files
from tf_distill.data.idx import IdxError, read_idx, write_idx
from tf_distill.data.pipeline import make_dataset, naming_damaged_files, random_flip
from tf_distill.data.prepare import prepare_image, prepared_images
from tf_distill.data.source import DataSource
from tf_distill.data.tfrecord import FEATURES, image_example, parse_record, write_tfrecords

__all__ = [
    "DamagedDataError", "DataSource", "DatasetNotFoundError", "DecodeStats", "EmptyDatasetError", "FEATURES",
    "IMAGE_EXTENSIONS", "IdxError", "image_example", "list_image_files", "load_fashion_mnist", "make_dataset",
    "naming_damaged_files", "pad_images", "parse_record", "prepare_image", "prepared_images", "random_flip",
    "read_idx", "resize_square", "to_signed_unit", "write_idx", "write_tfrecords",
]
