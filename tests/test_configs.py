"""Every shipped config loads, builds its generator, and the ablations differ only where they should."""

import importlib

import pytest

from tf_distill.model_stats import generator_stats
from tf_distill.models import Generator

CONFIGS = ["ffhq256_stylekd", "ffhq1024_stylekd", "lsun_church_stylekd", "ffhq256_heter", "demo_teacher",
           "demo_distill"]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    gen = {k: v for k, v in config.generator.to_dict().items() if v is not None}
    assert Generator(**gen).n_latent == 2 * (gen["size"].bit_length() - 1) - 2
    if name != "demo_teacher":  # teacher training has no distillation terms
        assert max(config.kd.mimic_layers) <= gen["size"].bit_length() - 3


def test_ablations_of_table_1():
    from configs.ffhq256_stylekd import VARIANTS, get_config  # pylint: disable=import-outside-toplevel

    paper = get_config("paper")
    assert (paper.kd.weight_l1, paper.kd.weight_lpips, paper.kd.weight_relation, paper.kd.relation_mode) == (3.0, 3.0, 30.0, "kl")
    assert paper.kd.mimic_layers == [4, 5, 6] and paper.kd.offset_weight == 5.0 and paper.train.batch_size == 16
    assert get_config("released_code").kd.mimic_layers == [2, 3, 4, 5]
    assert get_config("rgb").kd.weight_relation == 0 and get_config("rgb").kd.weight_lpips == 0
    assert get_config("rgb_random_offset_kl").kd.offset_mode == "random"
    assert get_config("rgb_single_view_kl").kd.single_view
    assert get_config("rgb_lpips_ld_l2").kd.relation_mode == "mse"
    assert not get_config("no_gan").train.gan and get_config("no_gan").train.path_reg == 0
    assert len(VARIANTS) == 12 and get_config("cagan_init").init_from is None


def test_heterogeneous_student_size_near_the_paper():
    from configs.ffhq256_heter import get_config  # pylint: disable=import-outside-toplevel

    config = get_config()
    stats = generator_stats(Generator(**{k: v for k, v in config.generator.to_dict().items() if v is not None}))
    assert 3.0e6 < stats["params"] < 3.5e6 and 2.6e9 < stats["flops"] < 2.8e9  # paper: 3.4M / 2.7B
    assert config.stage1.steps == 50000 and config.stage1.lr == 0.05 and config.stage1.batch_size == 4096
