"""Importing and exporting rosinality checkpoints: architecture derivation, name/shape checks, round trips."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import fixture_path, load_npz, nchw, nhwc, state_dict_of
from tf_distill.io import checkpoints
from tf_distill.convert import rosinality
from tf_distill.convert.rosinality import StateDictError
from tf_distill.io.torch_reader import CheckpointError, load_torch_checkpoint
from tf_distill.models import Generator

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def teacher_models():
    return checkpoints.read_rosinality(fixture_path("teacher32_zip.pt"))


def _assert_same_weights(a, b):
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)


def test_zip_and_legacy_checkpoints_give_the_same_models(teacher_models):
    legacy = checkpoints.read_rosinality(fixture_path("teacher32_legacy.pt"))
    assert sorted(teacher_models) == sorted(legacy) == ["d", "g", "g_ema"]
    for key in ("g", "g_ema", "d"):
        _assert_same_weights(teacher_models[key], legacy[key])


def test_imported_checkpoint_reproduces_the_reference_images(teacher_models):
    data = load_npz("g_teacher32.npz")
    g = teacher_models["g_ema"]
    noise = [nhwc(data[f"inputs/noise_{j}"])[:4] for j in range(g.num_layers)]
    np.testing.assert_allclose(nchw(g(data["inputs/z1"], noise=noise)), data["case_a/image"], atol=1e-4)


def test_student_checkpoint_architecture():
    g = checkpoints.load_generator(fixture_path("student32_zip.pt"))
    assert g.channels == load_npz("g_student32.npz")["config/channels"].tolist()


def test_wrong_shape_missing_and_extra_parameters_are_named():
    sd = state_dict_of(load_npz("g_teacher32.npz"))
    g = rosinality.generator_from_state_dict(sd)
    bad = dict(sd, **{"convs.3.conv.modulation.bias": np.zeros(7, np.float32)})
    with pytest.raises(StateDictError, match=r"'convs.3.conv.modulation.bias' has shape \(7,\)") as err:
        rosinality.load_state_dict(g, bad)
    assert "\n" not in str(err.value)
    with pytest.raises(StateDictError, match="lacks 1 parameter.*'to_rgbs.1.bias'"):
        rosinality.load_state_dict(g, {k: v for k, v in sd.items() if k != "to_rgbs.1.bias"})
    with pytest.raises(StateDictError, match="'convs.99.noise.weight'"):
        rosinality.load_state_dict(g, dict(sd, **{"convs.99.noise.weight": np.zeros(1, np.float32)}))
    with pytest.raises(StateDictError, match="NaN"):
        rosinality.load_state_dict(g, dict(sd, **{"conv1.noise.weight": np.array([np.nan], np.float32)}))
    with pytest.raises(StateDictError, match="no parameter 'conv1.conv.weight'"):
        rosinality.generator_config_from_state_dict({"style.1.weight": np.zeros((4, 4))})


def test_failed_load_leaves_the_model_untouched():
    sd = state_dict_of(load_npz("g_teacher32.npz"))
    g = rosinality.generator_from_state_dict(sd)
    before = [v.numpy().copy() for v in g.weights]
    bad = {k: (v * 2 if k != "to_rgbs.2.bias" else np.zeros((1, 4, 1, 1), np.float32)) for k, v in sd.items()}
    with pytest.raises(StateDictError):
        rosinality.load_state_dict(g, bad)
    for b, v in zip(before, g.weights):
        np.testing.assert_array_equal(b, v.numpy())


def test_corrupt_checkpoints_give_one_line_errors(tmp_path):
    data = fixture_path("teacher32_zip.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt") as err:
        checkpoints.read_rosinality(truncated)
    assert "\n" not in str(err.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="garbage.pt"):
        checkpoints.read_rosinality(garbage)


def test_checkpoint_with_a_wrong_shape_names_network_and_parameter(tmp_path):
    from tf_distill.io.torch_writer import save_torch_checkpoint  # pylint: disable=import-outside-toplevel

    ckpt = load_torch_checkpoint(fixture_path("teacher32_zip.pt"))
    ckpt["d"]["final_linear.1.weight"] = np.zeros((2, 32), np.float32)
    path = tmp_path / "bad.pt"
    save_torch_checkpoint(ckpt, path)
    with pytest.raises(StateDictError, match=r"bad.pt \[d\]: parameter 'final_linear.1.weight' has shape \(2, 32\)"):
        checkpoints.read_rosinality(path)


def test_round_trip_keras_pt_keras_is_exact_and_torch_loads_it(tmp_path, teacher_models):
    path = tmp_path / "teacher.pt"
    checkpoints.write_rosinality(path, **teacher_models)
    back = checkpoints.read_rosinality(path)
    for key in ("g", "g_ema", "d"):
        _assert_same_weights(teacher_models[key], back[key])
    torch = pytest.importorskip("torch")
    written = torch.load(path, weights_only=True)
    original = torch.load(fixture_path("teacher32_zip.pt"), weights_only=True)
    for key in ("g", "g_ema", "d"):  # the same names, shapes and values the reference code saved
        assert set(written[key]) == set(original[key])
        for name, value in original[key].items():
            assert torch.equal(written[key][name], value), (key, name)


def test_heterogeneous_mapping_round_trip(tmp_path):
    g = Generator(16, style_dim=8, channels=[8, 6, 6, 5, 5, 4], mapping_widths=[12, 8])
    g.build()
    sd = rosinality.state_dict(g)
    assert "style.0.weight" in sd and sd["style.0.weight"].shape == (12, 8)
    config = rosinality.generator_config_from_state_dict(sd)
    assert config["mapping_widths"] == [12, 8] and config["mapping_lr_mul"] == 1.0
    g2 = rosinality.generator_from_state_dict(sd)
    _assert_same_weights(g, g2)


def _run(module, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=REPO, env=env)


def test_convert_binary_both_directions(tmp_path):
    out = tmp_path / "teacher"
    result = _run("tf_distill.bin.convert", f"--input={fixture_path('teacher32_zip.pt')}", f"--output={out}",
                  "--n_samples=4")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["d.keras", "g.keras", "g_ema.keras", "samples.png"]
    grid = np.asarray(Image.open(out / "samples.png"))
    assert grid.shape == (2 + 2 * 34, 2 + 2 * 34, 3) and grid[2:34, 2:34].std() > 5  # 2x2 grid of 32 px images
    back = tmp_path / "back.pt"
    result = _run("tf_distill.bin.convert", f"--input={out}", f"--output={back}", "--grid=")
    assert result.returncode == 0, result.stderr
    original = load_torch_checkpoint(fixture_path("teacher32_zip.pt"))
    written = load_torch_checkpoint(back)
    for name, value in original["g_ema"].items():
        np.testing.assert_array_equal(written["g_ema"][name], value)
    stats = _run("tf_distill.bin.stats", f"--checkpoint={out}", "--json")
    assert stats.returncode == 0, stats.stderr
    assert '"channels": [\n      32,' in stats.stdout


def test_convert_binary_reports_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02cos\nsystem\n.")
    result = _run("tf_distill.bin.convert", f"--input={bad}", f"--output={tmp_path / 'x'}")
    assert result.returncode != 0
    assert "refused to load global 'os.system'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["nan", "-0.01", "inf"])
def test_convert_binary_refuses_a_bad_lr_mlp_as_a_flag_problem(tmp_path, value):
    """A bad --lr_mlp is the flag's fault, not the checkpoint's: the message names the flag, and nothing is written."""
    result = _run("tf_distill.bin.convert", f"--input={fixture_path('teacher32_zip.pt')}", f"--output={tmp_path / 'x'}",
                  f"--lr_mlp={value}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--lr_mlp must be a finite number > 0" in result.stderr and "damaged" not in result.stderr
    assert not (tmp_path / "x").exists()
