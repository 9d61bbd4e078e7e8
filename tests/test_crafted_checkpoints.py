"""Crafted model files are refused in one line before anything large is allocated (issue 15).

A few-KB ``.pt`` or ``.keras`` may declare any architecture; the declared shapes, bounds and
memory are checked before a model is built (``convert.architecture``), and a tensor's data
must lie in the file (``tf_distill.io.torch_reader``). The peak memory is measured in a child process.
"""

import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import fixture_path
from test_torch_pickle import state_dict_pickle, tensor_ops, write_zip
from tf_distill.io import checkpoints
from tf_distill.convert import architecture, rosinality
from tf_distill.io.torch_reader import CheckpointError
from tf_distill.io.torch_writer import save_torch_checkpoint
from tf_distill.errors import UserError
from tf_distill.models import Discriminator, Generator

REPO = Path(__file__).resolve().parents[1]
PEAK_RSS_LIMIT_KB = 1_000_000  # 1 GB: TensorFlow's import alone takes about 0.6


# ---------------------------------------------------------------- crafted files


def zero_element_generator(path, log_size, channels, style_dim, n_mlp=8):
    """A bare generator state_dict of zero-element tensors whose shapes declare the architecture."""
    conv = np.zeros((0, channels, channels, 3, 3), np.float32)
    sd = {"conv1.conv.weight": conv, "conv1.conv.modulation.weight": np.zeros((0, style_dim), np.float32)}
    sd.update({f"convs.{n}.conv.weight": conv for n in range(2 * (log_size - 2))})
    sd.update({f"style.{i}.weight": np.zeros((0, style_dim), np.float32) for i in range(1, n_mlp + 1)})
    save_torch_checkpoint(sd, path)
    return path


FFHQ_1024 = architecture.generator_shapes(architecture.generator_config({"size": 1024}))[0]


def tiny_storage_generator(path, expanded):
    """An FFHQ-1024 generator's exact names and shapes, its data 4 bytes a storage: every tensor a
    stride-0 view of one float (``expanded``), or each on a storage that claims the full size."""
    tensors = []
    for i, (name, shape) in enumerate(FFHQ_1024.items()):
        numel = int(np.prod(shape))
        if expanded:
            ops = tensor_ops(shape, (0,) * len(shape), numel=1, key="0")
        else:
            ops = tensor_ops(shape, tuple(int(np.prod(shape[d + 1:])) for d in range(len(shape))), numel=numel,
                             key=str(i))
        tensors.append((name, ops))
    storages = {"0": b"\0" * 4} if expanded else {str(i): b"\0" * 4 for i in range(len(tensors))}
    return write_zip(path, state_dict_pickle(*tensors), storages)


def claiming_storage_generator(path):
    """As ``tiny_storage_generator``, with the first record's zip directory entry claiming the full size."""
    tiny_storage_generator(path, expanded=False)
    data, name, entry = bytearray(path.read_bytes()), b"archive/data/0", -1
    while True:  # the record's central directory entry: signature, ..., name length at 28, name at 46
        entry = data.index(b"PK\x01\x02", entry + 1)
        if data[entry + 28:entry + 30] == struct.pack("<H", len(name)) and data[entry + 46:].startswith(name):
            break
    full = int(np.prod(next(iter(FFHQ_1024.values())))) * 4
    data[entry + 20:entry + 28] = struct.pack("<II", full, full)  # compressed and uncompressed size
    path.write_bytes(bytes(data))
    return path


def tiny_generator():
    g = Generator(8, style_dim=8, n_mlp=1, channels=[4, 4, 4, 4])
    g.build()
    return g


def keras_with(path, source, **records):
    """``source`` (a .keras) with some of its records (by name) replaced."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, records.get(info.filename, zin.read(info)))
    return path


def keras_with_config(path, source, **changes):
    """``source`` (a .keras) with its config.json's model config updated by ``changes``."""
    with zipfile.ZipFile(source) as zin:
        config = json.loads(zin.read("config.json"))
    config["config"].update(changes)
    return keras_with(path, source, **{"config.json": json.dumps(config).encode()})


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "g.keras"
    tiny_generator().save(path)
    return path


# ---------------------------------------------------------------- the memory cap, in a child process

_CHILD = r"""
import json, re, resource, sys
from tf_distill import cli
from tf_distill.io import checkpoints
from tf_distill.errors import UserError

def status(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1))

# Address-space cap, so that a regression fails with MemoryError instead of exhausting the machine.
cap = (status("VmSize") + 4 * 1024 * 1024) * 1024
resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
for path in sys.argv[1:]:
    try:
        checkpoints.load_any(path)
        result = {"refused": False}
    except Exception as err:
        result = {"refused": isinstance(err, UserError), "type": type(err).__name__, "message": cli.describe(err)}
    print(json.dumps({"path": path, "peak_kb": status("VmHWM"), **result}), flush=True)
"""


def test_crafted_files_are_refused_in_one_line_below_1gb(tmp_path, tiny_keras):
    files = {
        "zero_huge.pt": zero_element_generator(tmp_path / "zero_huge.pt", 12, 1024, 8192),
        "zero_style.pt": zero_element_generator(tmp_path / "zero_style.pt", 10, 512, 100_000),
        "expanded.pt": tiny_storage_generator(tmp_path / "expanded.pt", expanded=True),
        "short.pt": tiny_storage_generator(tmp_path / "short.pt", expanded=False),
        "claiming.pt": claiming_storage_generator(tmp_path / "claiming.pt"),
        "style16000.keras": keras_with_config(tmp_path / "style16000.keras", tiny_keras, style_dim=16000, n_mlp=8),
        "size2e20.keras": keras_with_config(tmp_path / "size2e20.keras", tiny_keras, size=2 ** 20),
    }
    expected = {  # a fragment naming each file's problem
        "zero_huge.pt": "the architecture it declares",
        "zero_style.pt": "style_dim=100000 is out of range",
        "expanded.pt": "expanded tensor",
        "short.pt": "holds 4 bytes, expected",
        "claiming.pt": "more than the file holds",
        "style16000.keras": "style_dim=16000 is out of range",
        "size2e20.keras": "size=1048576 is out of range",
    }
    for path in files.values():
        assert path.stat().st_size < 100_000, path  # tens of KB at most
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    child = subprocess.run([sys.executable, "-c", _CHILD, *map(str, files.values())], capture_output=True,
                           text=True, cwd=REPO, env=env, timeout=300)
    results = {Path(r["path"]).name: r for r in map(json.loads, child.stdout.splitlines())}
    assert set(results) == set(files), (child.returncode, child.stderr[-2000:])
    for name, result in results.items():
        assert result["refused"], (name, result)
        assert "\n" not in result["message"] and name in result["message"], (name, result)
        assert expected[name] in result["message"], (name, result)
        assert result["peak_kb"] < PEAK_RSS_LIMIT_KB, (name, result)


def test_convert_refuses_a_crafted_pt_in_one_line(tmp_path):
    crafted = zero_element_generator(tmp_path / "crafted.pt", 10, 512, 100_000)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "tf_distill.bin.convert", f"--input={crafted}",
                             f"--output={tmp_path / 'out'}"], capture_output=True, text=True, cwd=REPO, env=env,
                            timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1 and "crafted.pt [g_ema]: style_dim=100000 is out of range" in errors[0], result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- .pt checks, in process


def test_real_checkpoints_still_load():
    models = checkpoints.read_rosinality(fixture_path("teacher32_zip.pt"))
    assert isinstance(models["g_ema"], Generator) and isinstance(models["d"], Discriminator)
    assert checkpoints.load_generator(fixture_path("student32_zip.pt")).size == 32


def test_architecture_shapes_equal_the_built_models_state_dicts():
    """``architecture`` predicts every name and shape ``rosinality.state_dict`` gives for a built model."""
    for config in (dict(size=8, style_dim=8, n_mlp=2, channels=[4, 5, 6, 7]),
                   dict(size=32, style_dim=16, channels=[8, 6, 6, 5, 5, 4, 4, 3], kernel_size=1,
                        mapping_widths=[12, 16]),
                   dict(size=16, style_dim=8, channels=[8, 6, 6, 5, 5, 4], blur_kernel=[1, 2, 1])):
        g = Generator(**config)
        params, buffers = architecture.generator_shapes(architecture.generator_config(config))
        assert {k: v.shape for k, v in rosinality.state_dict(g).items()} == {**params, **buffers}
    for config in (dict(size=8, channels=[4, 6]), dict(size=32, channels=[8, 7, 6, 4], stddev_features=2)):
        d = Discriminator(**config)
        params, buffers = architecture.discriminator_shapes(architecture.discriminator_config(config))
        assert {k: v.shape for k, v in rosinality.state_dict(d).items()} == {**params, **buffers}


@pytest.mark.parametrize("config, fragment", [
    ({"size": 12}, "not a power of two"),
    ({"size": 8192}, "size=8192 is out of range"),
    ({"size": 2048}, "no standard channel table"),
    ({"size": 32, "style_dim": 0}, "style_dim=0"),
    ({"size": 32, "n_mlp": 1000}, "n_mlp=1000"),
    ({"size": 8, "channels": [4, 4, 4]}, "channels has 3 entries where the architecture needs 4"),
    ({"size": 8, "channels": [4, 4, 4, 10 ** 6]}, "channels[3]=1000000"),
    ({"size": 8, "channels": "wide"}, "channels must be a list"),
    ({"size": 32, "kernel_size": 4}, "kernel_size=4 must be odd"),
    ({"size": 32, "lr_mlp": float("nan")}, "lr_mlp=nan"),
    ({"size": 32, "style_dim": 8, "mapping_widths": [8] * 65}, "mapping_widths has 65 entries"),
    ({"size": 32, "style_dim": 8, "mapping_widths": [16, 4]}, "last mapping width 4 differs"),
    ({"size": 32, "blur_kernel": [1] * 100}, "blur_kernel must list"),
    ({"size": 32, "blur_kernel": [1, -1]}, "sums to zero"),
    ({"size": 32, "style_dim": True}, "style_dim=True"),
    ({"size": 64, "style_dim": 8192, "channels": [8192] * 10}, "more than 268435456 elements"),
])
def test_generator_config_bounds(config, fragment):
    with pytest.raises(architecture.ArchitectureError) as err:
        architecture.generator_config(config)
    assert fragment in str(err.value) and isinstance(err.value, UserError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("config, fragment", [
    ({"size": 4}, "size=4 is out of range"),
    ({"size": 32, "channels": [8, 8, 8]}, "channels has 3 entries"),
    ({"size": 32, "stddev_features": 3, "channels": [8, 8, 8, 8]}, "does not divide"),
    ({"size": 32, "stddev_group": 0}, "stddev_group=0"),
])
def test_discriminator_config_bounds(config, fragment):
    with pytest.raises(architecture.ArchitectureError) as err:
        architecture.discriminator_config(config)
    assert fragment in str(err.value)


def test_memory_limit_is_named_and_can_be_raised(monkeypatch):
    path = fixture_path("teacher32_zip.pt")
    monkeypatch.setenv(architecture.MEMORY_LIMIT_ENV, "0.001")
    with pytest.raises(rosinality.StateDictError, match=r"teacher32_zip.pt \[g_ema\]: the generator has [\d,]+ "
                                                       r"parameters and needs about .* GB .*TF_DISTILL_MAX_MODEL_GB"):
        checkpoints.read_rosinality(path)
    monkeypatch.setenv(architecture.MEMORY_LIMIT_ENV, "many")
    with pytest.raises(UserError, match="TF_DISTILL_MAX_MODEL_GB='many' is not a number"):
        checkpoints.read_rosinality(path)
    # The default covers an FFHQ-1024 teacher, its discriminator included, several times over.
    monkeypatch.delenv(architecture.MEMORY_LIMIT_ENV)
    architecture.check_memory(FFHQ_1024)
    d1024 = architecture.discriminator_shapes(architecture.discriminator_config({"size": 1024}))[0]
    assert architecture.parameter_count(d1024) * architecture.BYTES_PER_PARAMETER * 4 < \
        architecture.memory_limit_bytes()


def test_state_dict_problems_are_found_before_building(tmp_path, monkeypatch):
    """Names, shapes, dtypes and the latent_avg are checked before any Keras model exists."""
    built = []
    monkeypatch.setattr(rosinality, "build_from_state_dict", lambda *args: built.append(args))
    ckpt = {"g_ema": dict(rosinality.state_dict(tiny_generator()))}
    good = dict(ckpt["g_ema"])
    cases = {
        "shape": ({**good, "to_rgbs.0.bias": np.zeros((1, 4, 1, 1), np.float32)}, "'to_rgbs.0.bias' has shape"),
        "missing": ({k: v for k, v in good.items() if k != "convs.1.noise.weight"}, "lacks 1 parameter(s)"),
        "extra": ({**good, "convs.9.noise.weight": np.zeros(1, np.float32)}, "1 name(s) the architecture"),
        "dtype": ({**good, "input.input": good["input.input"].astype(np.int32)}, "dtype int32"),
        "not a tensor": ({**good, "conv1.conv.modulation.weight": "x"}, "is a str, not a 2-D tensor"),
        "buffer": ({**good, "convs.0.conv.blur.kernel": np.zeros((3, 3), np.float32)}, "blur.kernel' has shape"),
    }
    for name, (sd, fragment) in cases.items():
        save_torch_checkpoint({"g_ema": sd}, tmp_path / "x.pt")
        with pytest.raises(rosinality.StateDictError) as err:
            checkpoints.read_rosinality(tmp_path / "x.pt")
        assert fragment in str(err.value) and "x.pt [g_ema]" in str(err.value), (name, str(err.value))
    save_torch_checkpoint({"g_ema": good, "latent_avg": np.zeros(9, np.float32)}, tmp_path / "x.pt")
    with pytest.raises(rosinality.StateDictError, match=r"latent_avg is shape \(9,\).*style_dim \[8\]"):
        checkpoints.read_rosinality(tmp_path / "x.pt")
    assert not built


def test_errors_are_user_errors():
    assert issubclass(CheckpointError, UserError) and issubclass(CheckpointError, ValueError)
    assert issubclass(rosinality.StateDictError, UserError) and issubclass(rosinality.StateDictError, ValueError)
    assert "\n" not in str(CheckpointError("a\nb")) and "\n" not in str(rosinality.StateDictError("a\nb"))


# ---------------------------------------------------------------- .keras checks, in process


def _refusal(path, error=UserError):
    with pytest.raises(error) as err:
        checkpoints.load_any(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_real_keras_files_load_with_their_weights(tmp_path):
    g = tiny_generator()
    g.save(tmp_path / "g.keras")
    loaded = checkpoints.load_any(tmp_path / "g.keras")["g_ema"]
    assert len(loaded.weights) == len(g.weights)
    for a, b in zip(g.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_corrupt_and_foreign_keras_files_are_one_line(tmp_path, tiny_keras):
    data = tiny_keras.read_bytes()
    (tmp_path / "garbage.keras").write_bytes(b"not a zip" * 10)
    assert "not a readable .keras archive" in _refusal(tmp_path / "garbage.keras", checkpoints.ModelFileError)
    (tmp_path / "truncated.keras").write_bytes(data[: len(data) // 2])
    assert "not a readable .keras archive" in _refusal(tmp_path / "truncated.keras", checkpoints.ModelFileError)
    with zipfile.ZipFile(tiny_keras) as zin:
        config = json.loads(zin.read("config.json"))
        weights = zin.read("model.weights.h5")
    config["class_name"], config["registered_name"] = "Sequential", None
    foreign = keras_with(tmp_path / "foreign.keras", tiny_keras, **{"config.json": json.dumps(config).encode()})
    assert "holds a 'Sequential' model" in _refusal(foreign, checkpoints.ModelFileError)
    bad_weights = keras_with(tmp_path / "bad_weights.keras", tiny_keras, **{"model.weights.h5": b"\0" * len(weights)})
    assert "cannot load the .keras archive" in _refusal(bad_weights, checkpoints.ModelFileError)
    nested = keras_with(tmp_path / "nested.keras", tiny_keras, **{"config.json": b"[" * 100_000 + b"]" * 100_000})
    assert "RecursionError" in _refusal(nested, checkpoints.ModelFileError)
    no_config = keras_with(tmp_path / "no_config.keras", tiny_keras, **{"config.json": b"{}"})
    assert "holds a 'None' model" in _refusal(no_config, checkpoints.ModelFileError)


def test_keras_declaring_more_parameters_than_its_weights_hold(tmp_path, tiny_keras, monkeypatch):
    # within the bounds and the memory limit, but 8 x 2048^2 parameters cannot fit in a few KB of weights
    crafted = keras_with_config(tmp_path / "wide.keras", tiny_keras, style_dim=2048, n_mlp=8)
    assert "weights record cannot hold the 33," in _refusal(crafted, checkpoints.ModelFileError)
    monkeypatch.setenv(architecture.MEMORY_LIMIT_ENV, "0.000001")
    assert "TF_DISTILL_MAX_MODEL_GB" in _refusal(tiny_keras, architecture.ArchitectureError)


def test_crafted_latent_avg_npy_is_refused(tmp_path, tiny_keras):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "g_ema.keras").write_bytes(tiny_keras.read_bytes())
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4000000000,), }".ljust(117) + "\n"
    (folder / "latent_avg.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    assert "latent_avg.npy" in _refusal(folder)
    np.save(folder / "latent_avg.npy", np.zeros(5, np.float32))
    assert "style_dim [8]" in _refusal(folder)
    np.save(folder / "latent_avg.npy", np.ones(8, np.float32))
    np.testing.assert_array_equal(checkpoints.load_any(folder)["latent_avg"], np.ones((1, 8), np.float32))


# ---------------------------------------------------------------- save_models


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o002, 0o775)])
def test_saved_directories_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        checkpoints.save_models(tmp_path / "out", g_ema=tiny_generator(), latent_avg=np.zeros((1, 8)))
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["g_ema.keras", "latent_avg.npy"]


def test_saved_generator_and_discriminator_load_back(tmp_path):
    g, d = tiny_generator(), Discriminator(8, channels=[4, 4])
    d.build()
    checkpoints.save_models(tmp_path / "out", g_ema=g, d=d, latent_avg=np.ones(8))
    loaded = checkpoints.load_models(tmp_path / "out")
    assert sorted(loaded) == ["d", "g_ema", "latent_avg"] and isinstance(loaded["d"], Discriminator)
    for model in (g, d):
        key = "d" if model is d else "g_ema"
        for a, b in zip(model.weights, loaded[key].weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---------------------------------------------------------------- the architecture alone (generator_config)


def _no_model_building(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("generator_config built a model")

    monkeypatch.setattr(rosinality, "build_from_state_dict", refuse)
    monkeypatch.setattr(checkpoints.keras.models, "load_model", refuse)


def test_generator_config_is_the_loaded_generators_without_building_it(tmp_path, tiny_keras, monkeypatch):
    d = Discriminator(8, channels=[4, 4])
    d.build()
    checkpoints.save_models(tmp_path / "g_and_d", g=tiny_generator(), d=d)  # no g_ema: falls back to g
    sources = [fixture_path("teacher32_zip.pt"), fixture_path("teacher32_legacy.pt"), fixture_path("student32_zip.pt"),
               tiny_keras, tmp_path / "g_and_d"]
    generators = [checkpoints.load_generator(path) for path in sources]
    _no_model_building(monkeypatch)
    for path, g in zip(sources, generators):
        config = checkpoints.generator_config(path)
        as_built = {key: getattr(g, key) for key in config}
        assert config == {key: list(v) if isinstance(v, tuple) else v for key, v in as_built.items()}, path
        assert Generator(**config).channels == g.channels


def test_generator_config_refuses_what_load_generator_refuses(tmp_path, tiny_keras, monkeypatch):
    d = Discriminator(8, channels=[4, 4])
    d.build()
    checkpoints.save_models(tmp_path / "only_d", d=d)
    d.save(tmp_path / "d.keras")
    checkpoints.save_models(tmp_path / "bad_latent", g_ema=tiny_generator(), latent_avg=np.zeros(5))
    checkpoints.save_models(tmp_path / "only_latent", latent_avg=np.zeros(8))
    save_torch_checkpoint({"d": rosinality.state_dict(d), "latent_avg": np.zeros(8, np.float32)},
                          tmp_path / "d_and_latent.pt")
    save_torch_checkpoint({"g_ema": rosinality.state_dict(tiny_generator()), "latent_avg": np.zeros(5, np.float32)},
                          tmp_path / "bad_latent.pt")
    crafted = [zero_element_generator(tmp_path / "zero_style.pt", 10, 512, 100_000),
               claiming_storage_generator(tmp_path / "claiming.pt"),
               keras_with_config(tmp_path / "style16000.keras", tiny_keras, style_dim=16000, n_mlp=8),
               keras_with_config(tmp_path / "wide.keras", tiny_keras, style_dim=2048, n_mlp=8),
               tmp_path / "only_d", tmp_path / "d.keras", tmp_path / "missing.pt", tmp_path / "bad_latent",
               tmp_path / "only_latent", tmp_path / "d_and_latent.pt", tmp_path / "bad_latent.pt"]
    for path in crafted:
        with pytest.raises((UserError, FileNotFoundError)) as loading:
            checkpoints.load_generator(path)
        with monkeypatch.context() as patched:
            _no_model_building(patched)
            with pytest.raises(type(loading.value)) as reading:
                checkpoints.generator_config(path)
        assert str(reading.value) == str(loading.value) and "\n" not in str(reading.value), path
