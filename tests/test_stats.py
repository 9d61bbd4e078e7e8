"""Parameter/FLOP counts of the paper's table (spec A.7 'Sanity numbers') and the tf-distill-stats binary."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tf_distill.configs.paper_models import MODELS, get_config
from tf_distill.bin.stats import collect_rows, format_table
from tf_distill.model_stats import generator_stats
from tf_distill.models import Generator

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,params,flops", [
    ("ffhq256_teacher", 30_034_338, 45_124_673_536),
    ("ffhq256_student", 5_573_364, 4_123_578_080),
    ("ffhq1024_teacher", 30_370_060, 74_266_894_336),   # rosinality 1024 G: 30.4M (spec E.13)
    ("ffhq1024_student", 5_647_891, 6_990_183_648),
])
def test_paper_model_numbers(name, params, flops):
    stats = generator_stats(Generator(**MODELS[name]().to_dict()))
    assert (stats["params"], stats["flops"]) == (params, flops)
    assert stats["mapping_params"] == 2_101_248


def test_heterogeneous_mapping_and_kernel_size_are_counted():
    base = generator_stats(Generator(32, style_dim=16, n_mlp=2, channels=[8] * 8))
    hetero = generator_stats(Generator(32, style_dim=16, channels=[8] * 8, mapping_widths=[32, 16]))
    assert hetero["mapping_params"] == 16 * 32 + 32 + 32 * 16 + 16
    assert hetero["flops"] - base["flops"] == (16 * 32 + 32 * 16) - 2 * 16 * 16
    k5 = generator_stats(Generator(32, style_dim=16, n_mlp=2, channels=[8] * 8, kernel_size=5))
    # the non-up conv of each of the 3 blocks (8, 16, 32 px) grows from 3x3 to 5x5
    assert k5["flops"] - base["flops"] == sum(8 * 8 * (25 - 9) * r * r for r in (8, 16, 32))


def test_config_selection_and_errors():
    assert list(get_config("ffhq256_student").generators) == ["ffhq256_student"]
    with pytest.raises(ValueError, match="Unknown model"):
        get_config("ffhq512")


def test_table_and_json_binary(tmp_path):
    rows = collect_rows(get_config("ffhq256_teacher,ffhq256_student"))
    table = format_table(rows)
    assert "30,034,338" in table and "4,123,578,080" in table
    out = subprocess.run([sys.executable, "-m", "tf_distill.bin.stats", "--config=configs/paper_models.py:ffhq256_student",
                          "--json"], capture_output=True, text=True, check=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert json.loads(out.stdout)["ffhq256_student"]["params"] == 5_573_364


def test_frozen_models_count_the_same():
    g = Generator(32, style_dim=16, n_mlp=2, channels=[8] * 8)
    before = generator_stats(g)["params"]
    g.trainable = False
    assert generator_stats(g)["params"] == before > 0
