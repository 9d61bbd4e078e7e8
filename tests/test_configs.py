"""Every shipped config loads, builds its generator, states only what differs from the defaults, and is found
from any working directory; the ablations differ only where they should."""

import ast
import importlib
import inspect
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tf_distill import cli
from tf_distill.model_stats import generator_stats
from tf_distill.models import Generator
from tf_distill.train.defaults import default_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["ffhq256_stylekd", "ffhq1024_stylekd", "lsun_church_stylekd", "ffhq256_heter", "demo_teacher",
           "demo_distill"]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads(name):
    config = importlib.import_module(f"tf_distill.configs.{name}").get_config()
    gen = {k: v for k, v in config.generator.to_dict().items() if v is not None}
    assert Generator(**gen).n_latent == 2 * (gen["size"].bit_length() - 1) - 2
    if name != "demo_teacher":  # teacher training has no distillation terms
        assert max(config.kd.mimic_layers) <= gen["size"].bit_length() - 3


def _config_assignments(tree):
    """The ``c.<key> = ...`` statements of a config file (``c``: the config get_config builds)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Attribute):
            target = node.targets[0]
            while isinstance(target, ast.Attribute):
                target = target.value
            if isinstance(target, ast.Name) and target.id == "c":
                yield node


def _run_config(path, lines):
    namespace = {"__file__": str(path), "__name__": f"restate_check_{path.stem}"}
    exec(compile("\n".join(lines), str(path), "exec"), namespace)  # pylint: disable=exec-used
    return namespace["get_config"]().to_dict()


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("[!_]*.py")), ids=lambda p: p.name)
def test_configs_restate_nothing(path):
    """Every ``c.key = value`` of a config changes its result: none restates a default or its base's value."""
    source = path.read_text()
    lines = source.splitlines()
    full = _run_config(path, lines)
    restated = []
    for node in _config_assignments(ast.parse(source)):
        indent = lines[node.lineno - 1][:node.col_offset]
        without = lines[:node.lineno - 1] + [indent + "pass"] * (node.end_lineno - node.lineno + 1) + \
            lines[node.end_lineno:]
        try:
            same = _run_config(path, without) == full
        except (AttributeError, KeyError):
            same = False  # later lines need it (a section it creates)
        if same:
            restated.append(lines[node.lineno - 1].strip())
    assert not restated, f"{path.name} restates what it already has: {restated}"


def test_generator_defaults_are_the_generators_own():
    params = inspect.signature(Generator.__init__).parameters
    generator = default_config().generator
    for key, value in generator.items():
        if key in params and params[key].default is not inspect.Parameter.empty:
            assert value == params[key].default, key
    paper = importlib.import_module("tf_distill.configs.paper_models")
    assert "512" not in inspect.getsource(paper._generator)  # pylint: disable=protected-access
    from tf_distill.convert import architecture  # pylint: disable=import-outside-toplevel

    assert "512" not in inspect.getsource(architecture.generator_config)


def test_church_is_the_ffhq_run_without_the_face_mask():
    from tf_distill.configs import ffhq256_stylekd, lsun_church_stylekd  # pylint: disable=import-outside-toplevel

    for variant in ("paper", "rgb", "cagan_init"):
        church, ffhq = lsun_church_stylekd.get_config(variant), ffhq256_stylekd.get_config(variant)
        assert church.kd.content_mask == "off" and ffhq.kd.content_mask == "auto"
        church.kd.content_mask = "auto"
        assert church.to_dict() == ffhq.to_dict()


def test_ablations_of_table_1():
    from tf_distill.configs.ffhq256_stylekd import VARIANTS, get_config  # pylint: disable=import-outside-toplevel

    paper = get_config("paper")
    assert (paper.kd.weight_l1, paper.kd.weight_lpips, paper.kd.weight_relation, paper.kd.relation_mode) == (3.0, 3.0, 30.0, "kl")
    assert paper.kd.mimic_layers == (4, 5, 6) and paper.kd.offset_weight == 5.0 and paper.train.batch_size == 16
    assert get_config("released_code").kd.mimic_layers == (2, 3, 4, 5)
    assert get_config("rgb").kd.weight_relation == 0 and get_config("rgb").kd.weight_lpips == 0
    assert get_config("rgb_random_offset_kl").kd.offset_mode == "random"
    assert get_config("rgb_single_view_kl").kd.single_view
    assert get_config("rgb_lpips_ld_l2").kd.relation_mode == "mse"
    assert not get_config("no_gan").train.gan and get_config("no_gan").train.path_reg == 0
    assert len(VARIANTS) == 12 and get_config("cagan_init").init_from is None
    with pytest.raises(ValueError, match="Unknown variant 'nope'"):
        get_config("nope")


@pytest.mark.parametrize("name", ["ffhq1024_stylekd", "lsun_church_stylekd"])
def test_cagan_init_requires_the_file_in_every_config(name):
    config = importlib.import_module(f"tf_distill.configs.{name}").get_config("cagan_init")
    assert config.init_from is None and not config.kd.load_style  # a run without --config.init_from is refused


def test_heterogeneous_student_size_near_the_paper():
    from tf_distill.configs.ffhq256_heter import get_config  # pylint: disable=import-outside-toplevel

    config = get_config()
    stats = generator_stats(Generator(**{k: v for k, v in config.generator.to_dict().items() if v is not None}))
    assert 3.0e6 < stats["params"] < 3.5e6 and 2.6e9 < stats["flops"] < 2.8e9  # paper: 3.4M / 2.7B
    assert config.stage1.steps == 50000 and config.stage1.lr == 0.05 and config.stage1.batch_size == 4096
    assert config.generator.mapping_lr_mul == 1.0 and list(config.generator.mapping_widths) == [512, 512, 512]


def test_config_paths_resolve_to_the_installed_configs(tmp_path, monkeypatch):
    installed = Path(importlib.import_module("tf_distill.configs").__file__).parent
    monkeypatch.chdir(tmp_path)
    assert cli.config_path("configs/ffhq256_stylekd.py:rgb") == f"{installed / 'ffhq256_stylekd.py'}:rgb"
    assert cli.config_path("configs/nope.py") == "configs/nope.py"  # left for the loader's own error
    assert cli.config_path("other/ffhq256_stylekd.py") == "other/ffhq256_stylekd.py"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "ffhq256_stylekd.py").write_text("")
    assert cli.config_path("configs/ffhq256_stylekd.py") == "configs/ffhq256_stylekd.py"  # the user's own first


def test_train_finds_config_and_demo_teacher_from_another_directory(tmp_path):
    """From outside the repository: the config loads and its teacher exists (check_config then refuses steps=0)."""
    out = subprocess.run([sys.executable, "-m", "tf_distill.bin.train", "--config", "configs/demo_distill.py",
                          "--config.train.steps=0", "--workdir=w"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, PYTHONPATH=""))
    assert out.returncode == 1, out.stderr
    assert "config.train.steps must be an integer >= 1" in out.stderr, out.stderr
    assert "config.teacher" not in out.stderr and "cannot load" not in out.stderr, out.stderr


def test_demo_teacher_is_found_from_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from tf_distill.configs import demo_distill, reproduce_fmnist32  # pylint: disable=import-outside-toplevel

    assert Path(demo_distill.get_config().teacher).is_file()
    assert reproduce_fmnist32.get_config("quick").base.teacher == demo_distill.get_config().teacher


def test_pyproject_lists_every_package():
    """The package list is explicit (configs/ and demo/ map into tf_distill/): a new subpackage must be in it."""
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "tf_distill").rglob("__init__.py")}
    mapped = set(setup["package-dir"])
    assert mapped == {"tf_distill.configs", "tf_distill.demo"}
    assert set(setup["packages"]) == found | mapped
    assert not any(p == "configs" or p.startswith("configs.") for p in setup["packages"])  # no generic top level


def test_channel_lists_can_be_set_from_the_command_line():
    """The architecture lists are tuple fields: ml_collections refuses to override list fields from flags, so
    advice such as "set --config.generator.channels=[...]" (init_from) could not be followed."""
    script = ("from absl import app\nfrom ml_collections import config_flags\n"
              "C = config_flags.DEFINE_config_file('config')\n"
              "def main(_):\n    c = C.value\n"
              "    print(list(c.generator.channels), list(c.generator.mapping_widths), list(c.discriminator.channels),"
              " list(c.kd.mimic_layers))\napp.run(main)\n")
    result = subprocess.run(
        [sys.executable, "-c", script, f"--config={REPO / 'configs' / 'demo_distill.py'}",
         "--config.generator.channels=[8,8,8,8,4,4,2,2]", "--config.generator.mapping_widths=(64,64,64)",
         "--config.discriminator.channels=[4,4,4,4]", "--config.kd.mimic_layers=[1,2]"],
        capture_output=True, text=True, check=False, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[8, 8, 8, 8, 4, 4, 2, 2] [64, 64, 64] [4, 4, 4, 4] [1, 2]"
