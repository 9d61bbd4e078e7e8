"""A training run with the content-aware mask on: the face-parsing weights loaded, the mask used, a sample PNG."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tf_distill.losses.content_mask import content_mask
from tf_distill.train.config_check import ConfigError
from tf_distill.train.loop import Run

from train_helper import save_tiny_teacher, tiny_config, write_random_images

WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "face_parsing" / "bisenet_random_fp16.pth"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mask_run")
    write_random_images(root / "images", 8, 16)
    save_tiny_teacher(root / "teacher.keras")
    return root


def _config(root, **kd):
    config = tiny_config(root / "images", "default", 1, teacher=str(root / "teacher.keras"))
    config.train.batch_size = 4
    config.kd.update(kd)
    return config


def test_run_with_the_mask_writes_its_sample_and_masks_the_kd_images(setup):
    if not WEIGHTS.exists():
        pytest.fail(f"face-parsing fixture {WEIGHTS} is missing")
    run = Run(_config(setup, content_mask="on", face_parsing_weights=str(WEIGHTS)), setup / "work")
    assert run.step.content_mask_fn is not None
    images = run.teacher(run.sample_z, randomize_noise=False)
    np.testing.assert_array_equal(run.step.content_mask_fn(images).numpy(),
                                  content_mask(run.face_parser, images).numpy())
    assert run.run() == 1
    sample = np.asarray(Image.open(setup / "work" / "samples" / "content_mask.png"))
    assert sample.shape[0] == 2 + 3 * (16 + 2)  # teacher | parsing | masked teacher rows


def test_auto_mask_follows_the_weights_and_true_needs_them(setup):
    assert Run(_config(setup, content_mask="auto"), setup / "auto").step.content_mask_fn is None
    with pytest.raises(ConfigError, match="face_parsing_weights"):
        Run(_config(setup, content_mask="on"), setup / "refused")
