"""CAGAN-style init (the reference's ``--load 1``): g, g_ema and d from a pruned checkpoint, and the ``cagan_init`` variant."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import fixture_path
from tf_distill.io import checkpoints
from tf_distill.convert import rosinality
from tf_distill.io.torch_reader import load_torch_checkpoint
from tf_distill.errors import UserError
from tf_distill.train.defaults import default_config

from train_helper import write_random_images

STUDENT_CHANNELS = [16, 12, 12, 10, 10, 8, 8, 6]  # the fixture student's (g_student32.npz config/channels)


@pytest.fixture(scope="module")
def pruned_path(tmp_path_factory):
    """A CAGAN-style pruned checkpoint from the reference fixtures: the student's g and g_ema, the teacher's d."""
    student = checkpoints.read_rosinality(fixture_path("student32_zip.pt"))
    teacher = checkpoints.read_rosinality(fixture_path("teacher32_zip.pt"))
    path = tmp_path_factory.mktemp("pruned") / "pruned.pt"
    checkpoints.write_rosinality(path, g=student["g"], g_ema=student["g_ema"], d=teacher["d"])
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_random_images(tmp_path_factory.mktemp("images32"), 8, 32, seed=1)


def student_config(data_dir, init_from=""):
    """The fixture student distilled from the fixture teacher: every step term on (D + R1, KD, path length)."""
    c = default_config()
    c.seed = 7
    c.init_from = init_from
    c.teacher = str(fixture_path("teacher32_zip.pt"))
    c.generator.update(dict(size=32, style_dim=64, n_mlp=3, lr_mlp=0.01, channels=list(STUDENT_CHANNELS)))
    c.discriminator.channels = [32, 32, 32, 32]
    c.data.source = f"folder:{data_dir}"
    c.train.update(dict(steps=1, batch_size=4))
    c.kd.update(dict(mimic_layers=[1, 2], weight_lpips=0.0))
    c.log.update(dict(every=1, sample_every=1000, n_samples=2))
    return c


def _weights(run):
    return {f"{name}/{v.path}": v.numpy() for name, model in (("g", run.g), ("g_ema", run.g_ema), ("d", run.d))
            for v in model.weights}


@pytest.mark.slow
def test_init_from_matches_weights_loaded_by_hand_after_a_step(tmp_path, pruned_path, data_dir):
    """init_from loads g, g_ema and d (load_style, on, does not replace the loaded mapping); the first
    full step then equals that of a normally built run given the same weights by name."""
    from tf_distill.train.loop import Run  # pylint: disable=import-outside-toplevel

    state = load_torch_checkpoint(pruned_path)
    teacher = checkpoints.load_generator(fixture_path("teacher32_zip.pt"))
    loaded = Run(student_config(data_dir, str(pruned_path)), tmp_path / "loaded")
    assert loaded.config.kd.load_style  # the paper's default: here it must not copy the teacher's mapping
    by_hand = Run(student_config(data_dir), tmp_path / "by_hand")
    for model, key in ((by_hand.g, "g"), (by_hand.g_ema, "g_ema"), (by_hand.d, "d")):
        rosinality.load_state_dict(model, state[key])
    before = _weights(loaded)
    assert sorted(before) == sorted(_weights(by_hand))
    for key, value in _weights(by_hand).items():
        np.testing.assert_array_equal(before[key], value, err_msg=key)
    assert not np.allclose(loaded.g.mapping.weights[0].numpy(), teacher.mapping.weights[0].numpy())

    assert loaded.run() == 1 and by_hand.run() == 1
    after, expected = _weights(loaded), _weights(by_hand)
    changed = 0
    for key, value in expected.items():
        np.testing.assert_allclose(after[key], value, rtol=0, atol=1e-6, err_msg=key)
        changed += not np.array_equal(value, before[key])
    assert changed > len(expected) // 2  # the step trained g, g_ema and d


def _build(config):
    from tf_distill.train.loop import build_models  # pylint: disable=import-outside-toplevel

    return build_models(config, tf.distribute.get_strategy())


def test_init_from_copies_the_file_and_keeps_its_mapping(pruned_path, data_dir):
    g, g_ema, d, teacher = _build(student_config(data_dir, str(pruned_path)))
    state = load_torch_checkpoint(pruned_path)
    for model, key in ((g, "g"), (g_ema, "g_ema"), (d, "d")):
        ours = rosinality.state_dict(model)
        assert sorted(ours) == sorted(state[key])
        for name, value in state[key].items():
            np.testing.assert_array_equal(ours[name], value, err_msg=f"{key}: {name}")
    assert not np.allclose(rosinality.state_dict(g)["style.1.weight"], rosinality.state_dict(teacher)["style.1.weight"])


def test_init_from_architecture_mismatch_names_the_key(pruned_path, data_dir):
    config = student_config(data_dir, str(pruned_path))
    config.generator.channels = [16] * 8
    with pytest.raises(UserError, match=r"its g has channels \[16, 12, 12, 10, 10, 8, 8, 6\] but config.generator."
                                        r"channels gives \[16, 16.*--config.generator.channels=\[16,12,12,10,10,8,8,6\]"
                       ) as err:
        _build(config)
    assert "\n" not in str(err.value)
    config = student_config(data_dir, str(pruned_path))
    config.discriminator.channels = None  # the standard layout, 512 wide at 32 px
    with pytest.raises(UserError, match=r"its d has channels \[32, 32, 32, 32\] but config.discriminator.channels"):
        _build(config)


def test_init_from_without_a_discriminator_is_refused(data_dir):
    """The fixture student file holds g and g_ema only: loading it alone would leave D random, unlike --load 1."""
    path = fixture_path("student32_zip.pt")
    with pytest.raises(UserError, match=r"holds no d \(.*g, g_ema and d.*--config.init_from=\"\"") as err:
        _build(student_config(data_dir, str(path)))
    assert "\n" not in str(err.value)


def test_cagan_init_variant():
    from tf_distill.configs.ffhq256_stylekd import VARIANTS, get_config  # pylint: disable=import-outside-toplevel

    config = get_config("cagan_init")
    assert "cagan_init" in VARIANTS and config.init_from is None and not config.kd.load_style
    config.init_from = "pruned.pt"  # what --config.init_from=pruned.pt does
    assert config.init_from == "pruned.pt"
    assert get_config("cagan_init").init_from is None  # each config has its own placeholder
    paper = get_config("paper").to_dict()
    cagan = get_config("cagan_init").to_dict()
    assert {k for k in set(paper) | set(cagan) if paper.get(k) != cagan.get(k)} <= {"init_from", "kd"}
    assert {k for k in paper["kd"] if paper["kd"][k] != cagan["kd"][k]} == {"load_style"}
    from tf_distill.configs.ffhq256_heter import get_config as heter  # pylint: disable=import-outside-toplevel

    with pytest.raises(ValueError, match="use configs/ffhq256_stylekd.py:cagan_init"):
        heter("cagan_init")


def test_cagan_init_without_a_checkpoint_is_refused(data_dir):
    """The variant has no default file: a run that does not name one fails at start, naming the key."""
    from tf_distill.configs.ffhq256_stylekd import get_config  # pylint: disable=import-outside-toplevel
    from tf_distill.train.config_check import ConfigError, check_config  # pylint: disable=import-outside-toplevel

    config = get_config("cagan_init")
    config.data.source = f"folder:{data_dir}"
    with pytest.raises(ConfigError, match=r"config.init_from must be .*got None .*--config.init_from=PATH"):
        check_config(config)
    config.init_from = str(data_dir / "missing.pt")
    with pytest.raises(ConfigError, match=r"config.init_from '.*missing.pt' does not exist"):
        check_config(config)
