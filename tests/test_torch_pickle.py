"""Tests for the torch-free checkpoint reader/writer (torch is used only as the reference)."""

import collections
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tf_distill.io.torch_reader import CheckpointError, load_torch_checkpoint
from tf_distill.io.torch_writer import save_torch_checkpoint

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("TF_DISTILL_FIXTURES") or REPO.parent / "shared" / "fixtures" / "reference")


def fixture(name):
    path = FIXTURES / name
    if not path.exists():
        pytest.fail(f"reference fixture {path} is missing; set TF_DISTILL_FIXTURES to the fixtures folder")
    return path


def assert_same(actual, expected, where="<root>"):
    """Exact structural equality: same types, key order, dtypes, shapes and values."""
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), where
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, where
        np.testing.assert_array_equal(actual, expected, err_msg=where)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), where
        assert list(actual) == list(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{i}]")
    else:
        assert type(actual) is type(expected) and actual == expected, where


def from_torch(obj):
    """torch.load's result with tensors as numpy and OrderedDicts as dicts."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.float().numpy() if obj.dtype == torch.bfloat16 else obj.numpy()
    if isinstance(obj, dict):
        return {k: from_torch(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_torch(v) for v in obj)
    return obj


def expect_error(path, *fragments):
    """load_torch_checkpoint(path) raises a one-line CheckpointError naming the file and fragments."""
    with pytest.raises(CheckpointError) as info:
        load_torch_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- hand-made torch.save files


def op_str(s):
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_int(i):
    if -(2**31) <= i < 2**31:
        return b"J" + struct.pack("<i", i)
    data = pickle.encode_long(i)
    return b"\x8a" + bytes([len(data)]) + data


def op_tuple(items):
    return b"(" + b"".join(items) + b"t"


EMPTY_OD = b"ccollections\nOrderedDict\n)R"


def tensor_ops(size, stride, offset=0, numel=4, key="0", storage=b"FloatStorage", hooks=EMPTY_OD):
    pid = op_tuple([op_str("storage"), b"ctorch\n" + storage + b"\n", op_str(key), op_str("cpu"), op_int(numel)])
    args = [pid + b"Q", op_int(offset), op_tuple(map(op_int, size)), op_tuple(map(op_int, stride)), b"\x89", hooks]
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + op_tuple(args) + b"R"


def state_dict_pickle(*named_tensor_ops):
    body = b"".join(op_str(name) + ops for name, ops in named_tensor_ops)
    return b"\x80\x02" + EMPTY_OD + b"(" + body + b"u."


def write_zip(path, data_pkl, storages=None, byteorder=b"little", archive="archive"):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{archive}/data.pkl", data_pkl)
        if byteorder is not None:
            zf.writestr(f"{archive}/byteorder", byteorder)
        for key, data in (storages or {}).items():
            zf.writestr(f"{archive}/data/{key}", data)
        zf.writestr(f"{archive}/version", b"3\n")
    return path


def write_legacy(path, data_pkl, storages=None):
    """The pre-1.6 stream: magic, protocol, sys_info, data, key list, (count, bytes) per storage."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    with open(path, "wb") as fh:
        for header in (0x1950A86A20F9469CFC6C, 1001, sys_info):
            pickle.dump(header, fh, protocol=2)
        fh.write(data_pkl)
        pickle.dump(list(storages or {}), fh, protocol=2)
        for count, data in (storages or {}).values():
            fh.write(struct.pack("<q", count) + data)
    return path


# ---------------------------------------------------------------- the reference checkpoints


def test_zip_and_legacy_fixtures_match_the_npz():
    ckpt = load_torch_checkpoint(fixture("teacher32_zip.pt"))
    legacy = load_torch_checkpoint(fixture("teacher32_legacy.pt"))
    assert list(ckpt) == ["g", "g_ema", "d"]
    assert_same(legacy, ckpt)
    npz = np.load(fixture("g_teacher32.npz"))
    expected = {k[len("state_dict/"):]: npz[k] for k in npz.files if k.startswith("state_dict/")}
    assert expected and set(ckpt["g_ema"]) == set(expected)
    for name, value in expected.items():
        assert_same(ckpt["g_ema"][name], value, name)


def test_product_never_imports_torch():
    code = ("import sys; from tf_distill.io.torch_reader import load_torch_checkpoint as f; "
            f"f({str(fixture('teacher32_legacy.pt'))!r}); f({str(fixture('teacher32_zip.pt'))!r}); "
            "sys.exit('torch' in sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("name", ["teacher32_zip.pt", "teacher32_legacy.pt", "student32_zip.pt"])
def test_fixtures_equal_torch_load(name):
    torch = pytest.importorskip("torch")
    expected = from_torch(torch.load(fixture(name), weights_only=True))
    assert_same(load_torch_checkpoint(fixture(name)), expected)


# ---------------------------------------------------------------- malicious pickles


class SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def eval_ops(marker):
    return b"\x80\x02cbuiltins\neval\n" + op_tuple([op_str(f"open({str(marker)!r}, 'w').close()")]) + b"R."


MALICIOUS = {
    "os.system": (lambda m: pickle.dumps({"w": SystemCall(m)}, protocol=2), "system"),
    "os.system (STACK_GLOBAL)": (lambda m: pickle.dumps({"w": SystemCall(m)}, protocol=4), "system"),
    "builtins.eval": (eval_ops, "builtins.eval"),
    "subprocess.call": (lambda m: b"\x80\x02csubprocess\ncall\n" + op_tuple([op_str(f"touch {m}")]) + b"R.",
                        "subprocess.call"),
    "collections.Counter": (lambda m: pickle.dumps(collections.Counter(a=1), protocol=2), "collections.Counter"),
}


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("case", list(MALICIOUS))
def test_malicious_globals_are_refused_and_never_run(tmp_path, fmt, case):
    marker = tmp_path / "pwned"
    make, named = MALICIOUS[case]
    data_pkl = make(marker)
    path = tmp_path / "evil.pt"
    (write_zip if fmt == "zip" else write_legacy)(path, data_pkl)
    message = expect_error(path, named, "only tensors and state_dicts")
    assert not marker.exists(), message


def test_safety_does_not_rely_on_the_prescan(tmp_path, monkeypatch):
    """The unpickler itself refuses what the opcode scan would have caught first."""
    import tf_distill.io.torch_reader as tp

    monkeypatch.setattr(tp, "_scan_pickle", lambda *args: None)
    marker = tmp_path / "pwned"
    path = write_zip(tmp_path / "evil.pt", pickle.dumps(SystemCall(marker), protocol=2))
    expect_error(path, "system", "only tensors and state_dicts")
    assert not marker.exists()


@pytest.mark.parametrize("data_pkl, fragment", [
    # BUILD on an admitted function, with and without slot state: would otherwise set attributes
    (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}" + op_str("__defaults__") + b"Ns" + b"b.", "BUILD"),
    (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}" + op_str("__defaults__") + b"Ns\x86b.", "BUILD"),
    (b"\x80\x02ctorch\nFloatStorage\nN}" + op_str("dtype") + b"Ns\x86b.", "BUILD"),
    # BUILD on an OrderedDict with slot state
    (b"\x80\x02" + EMPTY_OD + b"N}" + op_str("x") + b"K\x01s\x86b.", "OrderedDict state"),
    # instantiating opcodes, even with an admitted class
    (b"(icollections\nOrderedDict\n.", "INST"),
    (b"\x80\x02ccollections\nOrderedDict\n)\x81.", "NEWOBJ"),
    (b"\x80\x02\x82\x01.", "EXT1"),
    # a memo index the C unpickler would grow its memo to
    (b"\x80\x02Nr\xff\xff\xff\x7f.", "memo index"),
    # persistent ids other than storages
    (b"\x80\x02" + op_tuple([op_str("module"), op_str("Generator"), op_str("x.py"), op_str("src")]) + b"Q.",
     "nn.Module"),
    (b"\x80\x02" + op_str("0") + b"Q.", "persistent id"),
    # a global as a value, not called
    (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n.", "refused object"),
], ids=["build-func", "build-slots", "build-dtype", "build-odict", "inst", "newobj", "ext1", "memo",
        "module-pid", "str-pid", "bare-global"])
def test_crafted_pickles_are_refused(tmp_path, data_pkl, fragment):
    expect_error(write_zip(tmp_path / "evil.pt", data_pkl), fragment)
    # nothing leaked into the admitted stand-ins: a real checkpoint still loads
    assert load_torch_checkpoint(fixture("teacher32_zip.pt"))["g_ema"]


def test_rosinality_training_args_namespace_is_read_as_a_dict(tmp_path):
    """rosinality's train.py saves its argparse ``args``; they load as plain data, nothing is built."""
    torch = pytest.importorskip("torch")
    import argparse  # pylint: disable=import-outside-toplevel

    path = tmp_path / "550000.pt"
    torch.save({"g_ema": collections.OrderedDict(w=torch.ones(2)),
                "args": argparse.Namespace(size=256, lr=0.002, mixing=[0.9], name=None)}, path)
    ckpt = load_torch_checkpoint(path)
    assert ckpt["args"] == {"size": 256, "lr": 0.002, "mixing": [0.9], "name": None}
    assert type(ckpt["args"]) is dict
    np.testing.assert_array_equal(ckpt["g_ema"]["w"], np.ones(2, np.float32))


@pytest.mark.parametrize("data_pkl, fragment", [
    (b"\x80\x02cargparse\nNamespace\nK\x01\x85\x81.", "Namespace built from arguments"),
    (b"\x80\x02cargparse\nNamespace\n)\x81]b.", "Namespace state of type list"),
    (b"\x80\x02cargparse\nNamespace\n)\x81}" + op_str("x") + b"cos\nsystem\nsb.", "os.system"),
])
def test_crafted_namespaces_are_refused(tmp_path, data_pkl, fragment):
    expect_error(write_zip(tmp_path / "evil.pt", data_pkl), fragment)


FLOATS = struct.pack("<4f", 1, 2, 3, 4)


@pytest.mark.parametrize("ops, fragment", [
    (tensor_ops((5,), (1,)), "needs 5 elements"),
    (tensor_ops((2, 2), (2, 1), offset=1), "needs 5 elements"),
    (tensor_ops((2,), (4,)), "needs 5 elements"),
    (tensor_ops((10**12,), (0,)), "overlap"),
    (tensor_ops((-1,), (1,)), "invalid tensor size"),
    (tensor_ops((2,), (-1,)), "invalid tensor stride"),
    (tensor_ops((2,), (1, 1)), "differ in length"),
    (tensor_ops((2,), (1,), offset=-1), "storage offset"),
    (tensor_ops((2,), (1,), numel=-4), "invalid storage record"),
    (tensor_ops((2,), (1,), key="../../etc/passwd"), "invalid storage key"),
    (tensor_ops((4,), (1,), storage=b"Counter"), "torch.Counter"),
    (tensor_ops((4,), (1,), hooks=EMPTY_OD[:-1] + b"R" + op_str("h") + b"K\x01s"), "backward hooks"),
    (tensor_ops((4,), (1,), hooks=b"}"), "backward hooks"),
], ids=["too-long", "offset", "stride", "expanded", "neg-size", "neg-stride", "ndim", "neg-offset",
        "neg-numel", "key", "storage-class", "hooks", "hooks-dict"])
def test_invalid_tensor_arguments_are_refused(tmp_path, ops, fragment):
    path = write_zip(tmp_path / "bad.pt", state_dict_pickle(("w", ops)), {"0": FLOATS})
    expect_error(path, fragment)


def test_hand_made_files_load(tmp_path):
    """The helpers above make valid files, so the refusals are about the crafted part only."""
    data_pkl = state_dict_pickle(("w", tensor_ops((2, 2), (1, 2))), ("v", tensor_ops((2,), (2,), offset=1)))
    expected = {"w": np.array([[1, 3], [2, 4]], np.float32), "v": np.array([2, 4], np.float32)}
    assert_same(load_torch_checkpoint(write_zip(tmp_path / "ok.pt", data_pkl, {"0": FLOATS})), expected)
    assert_same(load_torch_checkpoint(write_legacy(tmp_path / "ok_legacy.pt", data_pkl.replace(
        op_tuple([op_str("storage"), b"ctorch\nFloatStorage\n", op_str("0"), op_str("cpu"), op_int(4)]),
        op_tuple([op_str("storage"), b"ctorch\nFloatStorage\n", op_str("0"), op_str("cpu"), op_int(4), b"N"])),
        {"0": (4, FLOATS)})), expected)


def test_big_endian_zip(tmp_path):
    data_pkl = state_dict_pickle(("w", tensor_ops((2, 2), (2, 1))),
                                 ("i", tensor_ops((3,), (1,), key="1", numel=3, storage=b"LongStorage")))
    storages = {"0": struct.pack(">4f", 1, 2, 3, 4), "1": struct.pack(">3q", -1, 2**40, 7)}
    got = load_torch_checkpoint(write_zip(tmp_path / "be.pt", data_pkl, storages, byteorder=b"big"))
    assert_same(got, {"w": np.array([[1, 2], [3, 4]], np.float32), "i": np.array([-1, 2**40, 7], np.int64)})
    assert got["w"].dtype.isnative


def test_legacy_storage_views(tmp_path):
    """Old legacy files name views into a root storage: (view_key, offset, size)."""
    pid = op_tuple([op_str("storage"), b"ctorch\nFloatStorage\n", op_str("7"), op_str("cpu"), op_int(4),
                    op_tuple([op_str("8"), op_int(1), op_int(3)])])
    ops = b"ctorch._utils\n_rebuild_tensor_v2\n" + op_tuple(
        [pid + b"Q", op_int(1), op_tuple([op_int(2)]), op_tuple([op_int(1)]), b"\x89", EMPTY_OD]) + b"R"
    path = write_legacy(tmp_path / "views.pt", state_dict_pickle(("w", ops)), {"7": (4, FLOATS)})
    assert_same(load_torch_checkpoint(path), {"w": np.array([3, 4], np.float32)})
    bad = ops.replace(op_int(1) + op_tuple([op_int(2)]), op_int(2) + op_tuple([op_int(2)]))
    expect_error(write_legacy(tmp_path / "bad.pt", state_dict_pickle(("w", bad)), {"7": (4, FLOATS)}),
                 "needs 4 elements", "has 3")


# ---------------------------------------------------------------- corrupt and foreign files


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.pt", "no such file")


@pytest.mark.parametrize("content, fragment", [
    (b"", "empty file"),
    (b"hello, this is not a checkpoint\n", "not a PyTorch checkpoint"),
    (bytes(range(256)) * 4, "not a PyTorch checkpoint"),
    (pickle.dumps({"a": 1}, protocol=2), "magic number"),
    (b"\x80\x02\xff\xff", "corrupt"),
    (b"PK\x03\x04garbage", "zip"),
])
def test_foreign_files(tmp_path, content, fragment):
    path = tmp_path / "foreign.pt"
    path.write_bytes(content)
    expect_error(path, fragment)


@pytest.mark.parametrize("name", ["teacher32_zip.pt", "teacher32_legacy.pt"])
@pytest.mark.parametrize("keep", [0.02, 0.5, 0.999])
def test_truncated_fixture(tmp_path, name, keep):
    data = fixture(name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * keep)])
    expect_error(path)


def copy_zip(src, dst, drop=(), replace=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if not any(info.filename.endswith(d) for d in drop):
                zout.writestr(info.filename, (replace or {}).get(info.filename.split("/", 1)[1],
                                                                zin.read(info)))
    return dst


def test_zip_without_data_pkl(tmp_path):
    path = copy_zip(fixture("teacher32_zip.pt"), tmp_path / "x.pt", drop=["data.pkl"])
    expect_error(path, "data.pkl")


def test_missing_storage_record(tmp_path):
    path = copy_zip(fixture("teacher32_zip.pt"), tmp_path / "x.pt", drop=["data/5"])
    expect_error(path, "missing storage record", "data/5", "tensor g/")


def test_short_storage_record(tmp_path):
    with zipfile.ZipFile(fixture("teacher32_zip.pt")) as zf:
        short = zf.read("teacher32_zip/data/0")[:-4]
    path = copy_zip(fixture("teacher32_zip.pt"), tmp_path / "x.pt", replace={"data/0": short})
    expect_error(path, "data/0", "style.1.weight", f"holds {len(short)} bytes")


def test_corrupted_storage_bytes(tmp_path):
    data = bytearray(fixture("teacher32_zip.pt").read_bytes())
    with zipfile.ZipFile(fixture("teacher32_zip.pt")) as zf:
        info = zf.getinfo("teacher32_zip/data/0")
    data[info.header_offset + 200] ^= 0xFF  # inside the data: the CRC check must catch it
    path = tmp_path / "x.pt"
    path.write_bytes(bytes(data))
    expect_error(path, "CRC")


def test_legacy_missing_and_short_storage(tmp_path):
    data_pkl = state_dict_pickle(("w", tensor_ops((4,), (1,))))
    legacy_pkl = data_pkl.replace(op_int(4) + b"t", op_int(4) + b"Nt", 1)
    expect_error(write_legacy(tmp_path / "missing.pt", legacy_pkl, {}), "missing storage record", "'0'", "w")
    expect_error(write_legacy(tmp_path / "count.pt", legacy_pkl, {"0": (3, FLOATS[:12])}), "holds 3 elements")
    expect_error(write_legacy(tmp_path / "short.pt", legacy_pkl, {"0": (4, FLOATS[:12])}), "truncated")


# ---------------------------------------------------------------- round trips


def sample_tree():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    return {
        "g": {"conv.weight": weight, "conv.bias": rng.standard_normal(4).astype(np.float32),
              "half": rng.standard_normal((2, 5)).astype(np.float16),
              "double": rng.standard_normal(3), "steps": np.array([1, -2, 2**40], np.int64),
              "i32": np.arange(6, dtype=np.int32).reshape(2, 3), "i16": np.array([-3], np.int16),
              "i8": np.array([-128, 127], np.int8), "u8": np.arange(250, 256, dtype=np.uint8),
              "mask": np.array([True, False, True]), "scalar": np.array(3.5, np.float32),
              "empty": np.zeros((0, 3), np.float32),
              "transposed": weight.transpose(1, 0, 3, 2), "strided": weight[:, ::2, 1],
              "big_endian": np.arange(4, dtype=">f4")},
        "step": 1234, "lr": 0.002, "name": "stylekd ✓", "flag": True, "none": None,
        "list": [1, 2.5, "x", np.float32(0.5)], "tuple": (np.ones(2, np.float32), (3, -4)),
        "optim": {"state": {0: {"step": np.array(10.0, np.float32)}}, "param_groups": [{"lr": 1e-3}]},
    }


def expected_tree():
    tree = sample_tree()
    tree["g"]["big_endian"] = tree["g"]["big_endian"].astype("<f4")
    tree["list"][3] = 0.5
    return tree


def test_save_then_load_without_torch(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_torch_checkpoint(sample_tree(), path)
    assert_same(load_torch_checkpoint(path), expected_tree())
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_saved_layout_mirrors_torch(tmp_path):
    path = tmp_path / "my-model.pt"
    save_torch_checkpoint(sample_tree(), path)
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        names = zf.namelist()
        assert names[:4] == ["my-model/data.pkl", "my-model/.format_version", "my-model/.storage_alignment",
                             "my-model/byteorder"] and names[-1] == "my-model/version"
        assert zf.read("my-model/byteorder") == b"little" and zf.read("my-model/data.pkl")[:2] == b"\x80\x02"
        assert names[4:-1] == [f"my-model/data/{i}" for i in range(len(names) - 5)]
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            fh.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", fh.read(4))
            assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename


def test_save_is_atomic(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_torch_checkpoint({"a": np.ones(2, np.float32)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="object"):
        save_torch_checkpoint({"a": np.ones(2, np.float32), "b": object()}, path)
    with pytest.raises(TypeError, match="uint32"):
        save_torch_checkpoint({"a": np.ones(2, np.uint32)}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
    save_torch_checkpoint({"a": np.zeros(3, np.float32)}, path)
    assert_same(load_torch_checkpoint(path), {"a": np.zeros(3, np.float32)})


def test_failed_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    import tf_distill.io.torch_writer as tp

    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"old")
    real = tp._write_record

    def failing(zf, name, payload):
        if "/data/" in name:
            raise OSError(28, "No space left on device")
        real(zf, name, payload)

    monkeypatch.setattr(tp, "_write_record", failing)
    with pytest.raises(OSError, match="No space"):
        save_torch_checkpoint({"a": np.ones(2, np.float32)}, path)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_saved_file_loads_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "ckpt.pt"
    save_torch_checkpoint(sample_tree(), path)
    for mmap in (False, True):
        loaded = torch.load(path, weights_only=True, mmap=mmap)
        assert type(loaded) is collections.OrderedDict and type(loaded["g"]) is collections.OrderedDict
        assert all(t.is_contiguous() for t in loaded["g"].values())
        assert_same(from_torch(loaded), expected_tree())


def test_saved_state_dict_loads_into_a_torch_module(tmp_path):
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    weights = {k: np.asarray(v.numpy() + 1) for k, v in module.state_dict().items()}
    save_torch_checkpoint({"g": weights}, tmp_path / "ckpt.pt")
    module.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["g"], strict=True)
    assert_same({k: v.numpy() for k, v in module.state_dict().items()}, weights)


def torch_tree():
    import torch

    torch.manual_seed(0)
    base = torch.arange(24, dtype=torch.float32)
    module = torch.nn.Linear(3, 2)
    return {
        "sd": module.state_dict(),  # an OrderedDict with _metadata (pickled with BUILD)
        "param": module.weight,  # an nn.Parameter: _rebuild_parameter
        "half": torch.randn(3, 4).half(), "bf16": torch.randn(5).bfloat16(),
        "long": torch.tensor([-1, 2**40]), "int": torch.arange(6, dtype=torch.int32).view(2, 3),
        "short": torch.tensor([1, -2], dtype=torch.int16), "char": torch.tensor([-5], dtype=torch.int8),
        "byte": torch.tensor([0, 255], dtype=torch.uint8), "bool": torch.tensor([True, False]),
        "double": torch.randn(2, dtype=torch.float64), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3),
        "transposed": torch.randn(3, 4, 5).permute(2, 0, 1), "strided": torch.randn(6, 6)[1::2, ::3],
        # tensors sharing one storage, with offsets
        "view_a": base[2:8], "view_b": base.view(4, 6).t(), "view_c": base[5:].view(19, 1)[::3],
        "meta": {"step": 7, "lr": 0.01, "names": ["a", "b"], "pair": (1, 2.0), "none": None},
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_save_then_load(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    tree = torch_tree()
    path = tmp_path / "ckpt.pt"
    torch.save(tree, path, _use_new_zipfile_serialization=not legacy)
    got = load_torch_checkpoint(path)
    assert_same(got, from_torch({k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in tree.items()}))
    assert got["bf16"].dtype == np.float32
    assert np.shares_memory(got["view_a"], got["view_b"])  # one storage, like torch


def test_crafted_lengths_do_not_allocate(tmp_path):
    """A legacy pickle claiming a 4 GiB string fails as truncated, without allocating it."""
    import tracemalloc

    path = tmp_path / "huge.pt"
    path.write_bytes(b"\x80\x02\x8d" + struct.pack("<Q", 2**32) + b"x")  # BINUNICODE8
    tracemalloc.start()
    try:
        expect_error(path, "truncated or corrupt magic number")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**26, peak


# ---------------------------------------------------------------- TorchScript archives (opt-in)


def scripted_archive(tmp_path):
    torch = pytest.importorskip("torch")

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.sizes = [1, 2, 3]
            self.scales = [0.5, 2.0]
            self.flags = [True, False]
            self.register_buffer("mean", torch.arange(4, dtype=torch.float64))

        def forward(self, x):
            return self.conv(x) * self.scales[0] + float(self.sizes[0])

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(Block(), torch.nn.ReLU())
            self.head = torch.nn.Parameter(torch.randn(2, 5).t())  # non-contiguous

        def forward(self, x):
            return self.body(x).sum() + self.head.sum()

    net = Net().eval()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    return net, path


def test_torchscript_module_tree_is_read_as_inert_records(tmp_path):
    from tf_distill.io.torchscript import ScriptObject, load_torchscript

    net, path = scripted_archive(tmp_path)
    for source in (path, path.read_bytes()):
        root = load_torchscript(source)
        assert type(root) is ScriptObject and root.qualname.startswith("__torch__.") and root.qualname.endswith("Net")
        block = root["body"]["0"]
        assert block.qualname.endswith("Block") and isinstance(root["body"]["1"], ScriptObject)
        assert block["sizes"] == [1, 2, 3] and block["scales"] == [0.5, 2.0] and block["flags"] == [True, False]
        assert block["training"] is False
        conv = block["conv"]
        assert conv.qualname.endswith("Conv2d")
        for name, value in net.state_dict().items():
            node = root
            for part in name.split("."):
                node = node[part]
            assert_same(node, value.numpy(), name)
    # Reading the archive runs none of it: the product stays torch-free.
    code = ("import sys; from tf_distill.io.torchscript import load_torchscript as f; "
            f"f({str(path)!r}); sys.exit('torch' in sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_torchscript_classes_only_in_torchscript_mode(tmp_path):
    _, path = scripted_archive(tmp_path)
    expect_error(path, "refused to load global '__torch__.", "only tensors and state_dicts")


SCRIPT_GLOBAL = b"c__torch__.os\nsystem\n"


@pytest.mark.parametrize("data_pkl, fragment", [
    # a __torch__ name is only ever an inert record class: called with arguments, it refuses
    (b"\x80\x02" + SCRIPT_GLOBAL + op_tuple([op_str("touch pwned")]) + b"R.", "built from arguments"),
    (b"\x80\x02" + SCRIPT_GLOBAL + op_tuple([op_str("x")]) + b"\x81.", "built from arguments"),
    # state must be one str-keyed dict, set once
    (b"\x80\x02" + SCRIPT_GLOBAL + b")\x81" + op_tuple([op_str("x")]) + b"b.", "refused state of type tuple"),
    (b"\x80\x02" + SCRIPT_GLOBAL + b")\x81}" + op_str("a") + b"K\x01sb}" + op_str("b") + b"K\x01sb.",
     "refused state"),
    (b"\x80\x02" + SCRIPT_GLOBAL + b"}" + op_str("a") + b"K\x01sb.", "corrupt"),  # BUILD on the class
    (b"\x80\x02ctorch.jit._pickle\nbuild_intlist\n" + op_tuple([b"]" + op_str("1") + b"a"]) + b"R.",
     "build_intlist"),
    (b"\x80\x02c__torch__.a b\nC\n)\x81.", "refused to load global"),  # not an identifier path
    # everything the plain reader refuses is still refused
    (b"\x80\x02cbuiltins\neval\n" + op_tuple([op_str("1")]) + b"R.", "builtins.eval"),
    (b"\x80\x02" + op_tuple([op_str("module"), op_str("M"), op_str("x.py"), op_str("src")]) + b"Q.", "nn.Module"),
], ids=["reduce-args", "newobj-args", "tuple-state", "state-twice", "build-class", "intlist-type",
        "bad-name", "eval", "module-pid"])
def test_crafted_torchscript_pickles_are_refused(tmp_path, data_pkl, fragment):
    from tf_distill.io.torchscript import load_torchscript

    path = write_zip(tmp_path / "evil.pt", data_pkl)
    with pytest.raises(CheckpointError) as info:
        load_torchscript(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and fragment in message, message
    assert not (tmp_path / "pwned").exists()


def test_torchscript_malicious_globals_never_run(tmp_path):
    from tf_distill.io.torchscript import load_torchscript

    marker = tmp_path / "pwned"
    for case, (make, named) in MALICIOUS.items():
        with pytest.raises(CheckpointError, match=named):
            load_torchscript(write_zip(tmp_path / "evil.pt", make(marker)).read_bytes())
        assert not marker.exists(), case


# ---------------------------------------------------------------- numpy-only pickles (opt-in)


def test_numpy_pickles_read_without_numpy_unpickling(tmp_path):
    from tf_distill.io.torch_reader import load_numpy_pickle

    rng = np.random.default_rng(0)
    tree = {"a": {"kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32), "n": np.arange(5)},
            "fortran": np.asfortranarray(rng.normal(size=(3, 4))),
            "big": np.arange(6, dtype=">f8").reshape(2, 3), "scalar": np.array(2.5, np.float16),
            "empty": np.zeros((0, 3), np.uint8), "mask": np.array([True, False])}
    for protocol in (3, 4):
        data = pickle.dumps(tree, protocol=protocol)
        (tmp_path / "t.pkl").write_bytes(data)
        for source in (data, tmp_path / "t.pkl"):
            got = load_numpy_pickle(source)
            expected = {**tree, "big": tree["big"].astype("=f8")}  # native byte order, like the torch reader
            assert_same(got, expected)
            assert got["big"].dtype.isnative
    assert_same(load_numpy_pickle(pickle.dumps(tree["fortran"])), tree["fortran"])


def np_array_ops(shape_ops, raw, code=b"f4"):
    dtype = (b"cnumpy\ndtype\n" + op_tuple([op_str(code.decode()), b"\x89\x88"]) + b"R"
             + op_tuple([b"K\x03", op_str("<"), b"NNN", op_int(-1), op_int(-1), b"K\x00"]) + b"b")
    return (b"cnumpy.core.multiarray\n_reconstruct\n" + op_tuple([b"cnumpy\nndarray\n", b"K\x00\x85", b"C\x01b"])
            + b"R" + op_tuple([b"K\x01", shape_ops, dtype, b"\x89", b"C" + bytes([len(raw)]) + raw]) + b"b")


@pytest.mark.parametrize("data, fragment", [
    (lambda m: pickle.dumps({"w": SystemCall(m)}), "refused to load global"),
    (lambda m: pickle.dumps({"w": np.array([1, "x"], dtype=object)}), "numpy dtype 'O"),
    (lambda m: pickle.dumps({"w": np.zeros(2, [("a", "f4"), ("b", "i4")])}), "numpy dtype"),
    (lambda m: pickle.dumps({"w": np.zeros(3)}, protocol=5), "opcode BYTEARRAY8"),  # numpy's _frombuffer + buffer
    (lambda m: pickle.dumps({"w": [np.zeros(3)]}), "refused list at w"),
    (lambda m: pickle.dumps({"w": np.zeros(3)})[:-20], "truncated or corrupt pickle"),
    (lambda m: b"\x80\x02" + np_array_ops(op_tuple([b"K\x03"]), b"\0" * 4) + b".", "holds 4 bytes, expected 12"),
    (lambda m: b"\x80\x02" + np_array_ops(op_tuple([op_int(-1)]), b"") + b".", "invalid tensor size"),
    (lambda m: b"\x80\x02" + np_array_ops(op_tuple([b"K\x01"]), b"\0" * 4) + b"(K\x01tb.", "array state"),
    (lambda m: b"\x80\x02cnumpy\nndarray\n" + op_tuple([b"K\x01"]) + b"R.", "refused call of numpy.ndarray"),
    (lambda m: b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n.", "refused to load global"),
    (lambda m: b"garbage", "not a pickle"),
], ids=["system", "object", "struct", "protocol5", "list", "truncated", "short-data", "bad-shape",
        "build-twice", "ndarray-call", "torch-global", "garbage"])
def test_numpy_pickle_refusals_are_one_line(tmp_path, data, fragment):
    from tf_distill.io.torch_reader import load_numpy_pickle

    marker = tmp_path / "pwned"
    with pytest.raises(CheckpointError) as info:
        load_numpy_pickle(data(marker))
    assert "\n" not in str(info.value) and fragment in str(info.value), str(info.value)
    assert not marker.exists()


def test_torch_04_tensors_without_hooks_pickle_none(tmp_path):
    """torch 0.4 wrote ``backward_hooks=None`` (LPIPS's ``vgg.pth``); hooks themselves stay refused."""
    data = b"\x00\x00\x80\x3f" * 4
    path = write_legacy(tmp_path / "old.pt", state_dict_pickle(("w", tensor_ops((2, 2), (2, 1), hooks=b"N"))),
                        {"0": (4, data)})
    assert_same(load_torch_checkpoint(path), {"w": np.ones((2, 2), np.float32)})
    hooks = b"ccollections\nOrderedDict\n)R" + op_str("h") + b"K\x01s"
    path = write_legacy(tmp_path / "hooked.pt", state_dict_pickle(("w", tensor_ops((2, 2), (2, 1), hooks=hooks))),
                        {"0": (4, data)})
    expect_error(path, "backward hooks")


def test_python2_era_ordered_dict_from_pairs(tmp_path):
    """Old pickles build OrderedDict([[key, value], ...]) (LPIPS's v0.1 ``vgg.pth``); only such pairs pass."""
    data = b"\x00\x00\x80\x3f" * 4
    pair = b"]" + op_str("w") + b"a" + tensor_ops((4,), (1,)) + b"a"
    pkl = b"\x80\x02ccollections\nOrderedDict\n" + op_tuple([b"](" + pair + b"e"]) + b"R."
    assert_same(load_torch_checkpoint(write_zip(tmp_path / "ok.pt", pkl, {"0": data})),
                {"w": np.ones(4, np.float32)})
    for bad in (op_tuple([op_str("w")]), op_tuple([b"](" + b"]" + b"}" + b"a" + b"K\x01a" + b"e"]),
                op_tuple([b"]", b"]"])):
        path = write_zip(tmp_path / "bad.pt", b"\x80\x02ccollections\nOrderedDict\n" + bad + b"R.", {"0": data})
        expect_error(path, "refused OrderedDict built from arguments")


# ---------------------------------------------------------------- the tf_distill.io package


def test_removed_modules_are_referenced_nowhere():
    """convert/torch_pickle.py and model_io.py moved into tf_distill.io; nothing may name them any more."""
    removed = ("convert.torch_pickle", "convert import torch_pickle", "tf_distill.model_io", "tf_distill import model_io")
    offenders = []
    for folder in ("tf_distill", "tests", "bench", "configs", "scripts", "docs", "demo", "export"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.suffix in (".py", ".md", ".sh", ".cfg", ".toml") and path.is_file() and path != Path(__file__):
                text = path.read_text(errors="replace")
                offenders += [f"{path.relative_to(REPO)}: {name}" for name in removed if name in text]
    offenders += [f"README.md: {name}" for name in removed if name in (REPO / "README.md").read_text()]
    assert not offenders, offenders
    assert not (REPO / "tf_distill" / "convert" / "torch_pickle.py").exists()
    assert not (REPO / "tf_distill" / "model_io.py").exists()


def test_torch_readers_load_neither_torch_nor_keras():
    """Reading torch files (metric weights) must not pull in Keras or TensorFlow, and tf_distill.io
    must not shadow the standard library's io."""
    code = ("import io, sys; import tf_distill.io.torch_reader, tf_distill.io.torchscript, tf_distill.io.torch_writer; "
            "assert io.BytesIO and sys.modules['io'] is io; "
            "loaded = [m for m in ('torch', 'keras', 'tensorflow') if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
