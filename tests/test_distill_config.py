"""configs/distill.py: the student derived from any teacher checkpoint (tf_distill.train.student)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import fixture_path
from tf_distill.configs.distill import get_config
from tf_distill.errors import UserError
from tf_distill.train.config_check import check_config
from tf_distill.train.student import pruned_channels, resolve_student
from train_helper import save_tiny_teacher, write_random_images

TEACHER32 = [32, 32, 32, 32, 24, 24, 16, 16]  # the reference fixture teacher (README): 32 px, style_dim 64


def _config(teacher, **student):
    c = get_config()
    c.teacher = str(teacher)
    c.data.source = "folder:/data"
    c.student.update(student)
    return c


def test_pruned_channels_follow_cagan():
    assert pruned_channels([512, 256, 128, 64, 32], 0.7) == [154, 77, 39, 20, 10]  # the paper's students
    assert pruned_channels(TEACHER32, 0.0) == TEACHER32


def test_student_of_the_reference_pt_teacher():
    c = resolve_student(_config(fixture_path("teacher32_zip.pt")))
    assert c.generator.to_dict() == dict(size=32, style_dim=64, n_mlp=3, lr_mlp=0.01, kernel_size=3,
                                         mapping_widths=None, mapping_lr_mul=1.0, channel_multiplier=2,
                                         channels=(10, 10, 10, 10, 8, 8, 5, 5))
    assert c.kd.mimic_layers == (1, 2, 3)  # the three highest resolutions: 8, 16, 32 px
    check_config(c, num_replicas=1)
    explicit = resolve_student(_config(fixture_path("teacher32_zip.pt"), channels=(16, 12, 12, 10, 10, 8, 8, 6)))
    assert list(explicit.generator.channels) == [16, 12, 12, 10, 10, 8, 8, 6]
    keep = resolve_student(_config(fixture_path("teacher32_legacy.pt"), prune_ratio=0.0))
    assert list(keep.generator.channels) == TEACHER32


def test_student_of_a_keras_teacher_keeps_set_mimic_layers(tmp_path):
    c = _config(save_tiny_teacher(tmp_path / "t.keras"), prune_ratio=0.5)
    c.kd.mimic_layers = [2]
    resolve_student(c)
    assert (c.generator.size, c.generator.style_dim, c.generator.n_mlp) == (16, 8, 2)
    assert list(c.generator.channels) == [4, 4, 4, 3, 3, 3] and list(c.kd.mimic_layers) == [2]


@pytest.mark.parametrize("change, words", [
    (dict(prune_ratio=1.0), "config.student.prune_ratio must be a number in [0, 1), got 1.0"),
    (dict(prune_ratio=-0.1), "config.student.prune_ratio must be a number in [0, 1)"),
    (dict(channels=(8, 8)), "config.student.channels must list 8 integers >= 1"),
    (dict(channels=(8,) * 7 + (0,)), "config.student.channels must list 8 integers >= 1"),
    (dict(teacher=None), "config.teacher is not set"),
    (dict(teacher="/nonexistent/t.pt"), "config.teacher '/nonexistent/t.pt' does not exist"),
    (dict(size=64), "config.generator.size is 64 but the teacher's gives 32"),
])
def test_bad_student_settings_give_one_line(change, words):
    c = _config(fixture_path("teacher32_zip.pt"))
    if "teacher" in change:
        c.teacher = change.pop("teacher")
    if "size" in change:
        c.generator.size = change.pop("size")
    c.student.update(change)
    with pytest.raises(UserError) as info:
        resolve_student(c)
    assert words in str(info.value) and "\n" not in str(info.value) and "(" in str(info.value)


def test_configs_without_a_student_are_left_alone():
    from tf_distill.configs.demo_distill import get_config as demo  # pylint: disable=import-outside-toplevel

    c = demo()
    before = c.to_dict()
    assert resolve_student(c).to_dict() == before


def test_the_issue_command_line_resolves_the_student(tmp_path):
    """The issue's command parses and derives the student (train.steps=0 then stops it at the config check)."""
    out = subprocess.run([sys.executable, "-m", "tf_distill.bin.train", "--config=configs/distill.py",
                          f"--config.teacher={fixture_path('teacher32_zip.pt')}", "--config.student.prune_ratio=0.7",
                          "--config.student.channels=[10,10,10,10,8,8,5,5]", f"--config.data.source=folder:{tmp_path}",
                          f"--workdir={tmp_path / 'run'}", "--config.train.steps=0"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=""))
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1] == ("error: config.train.steps must be an integer >= 1 (the number of "
                                                   "training iterations), got 0 (set --config.train.steps)")


@pytest.mark.slow
def test_distill_the_reference_teacher(tmp_path):
    """A few steps of the 32 px style_dim-64 rosinality teacher into its 0.7-pruned student, on a folder."""
    from tf_distill.train.loop import Run  # pylint: disable=import-outside-toplevel

    c = _config(fixture_path("teacher32_zip.pt"))
    c.data.source = f"folder:{write_random_images(tmp_path / 'images', 8, 32)}"
    c.discriminator.channels = [32, 32, 32, 32]  # the fixture's D (the default, 512 wide at 32 px, is slow on CPU)
    c.train.update(steps=2, batch_size=4)
    c.kd.weight_lpips = 0.0
    c.log.n_samples = 2
    run = Run(c, tmp_path / "run")
    assert run.run() == 2 and run.g.channels == [10, 10, 10, 10, 8, 8, 5, 5] and run.teacher.style_dim == 64
    saved = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert saved["generator"]["channels"] == [10, 10, 10, 10, 8, 8, 5, 5]
    assert (saved["generator"]["size"], saved["generator"]["style_dim"], saved["generator"]["n_mlp"]) == (32, 64, 3)
