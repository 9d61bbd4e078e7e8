"""Unreadable images are skipped and counted (project, eval, the FID folder reader), and bad command
lines of tf-distill-project / tf-distill-eval end in one ``error:`` line, never a traceback."""

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_distill.data import DecodeStats, EmptyDatasetError
from tf_distill.errors import UserError
from tf_distill.images import UnreadableImageError, read_images, read_rgb
from tf_distill.outputs import atomic_path, check_output
from tf_distill.metrics import fid
from tf_distill.metrics.psnr import psnr
from tf_distill.models import Generator

REPO = Path(__file__).resolve().parents[1]
BAD = ("corrupt.png", "truncated.jpg", "notes.png")  # what every mixed folder holds besides good images


def _good(rng, size=16):
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def write_bad_images(folder, rng):
    """A PNG with a damaged data stream, a JPEG cut in half and a text file named .png."""
    buf = folder / "_tmp.png"
    Image.fromarray(_good(rng)).save(buf)
    data = bytearray(buf.read_bytes())
    at = data.index(b"IDAT") + 20
    data[at:at + 40] = bytes(40)
    (folder / "corrupt.png").write_bytes(bytes(data))
    Image.fromarray(_good(rng)).save(buf.with_suffix(".jpg"), quality=95)
    jpeg = buf.with_suffix(".jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    (folder / "notes.png").write_text("not an image\n")
    buf.unlink()
    buf.with_suffix(".jpg").unlink()


def mixed_folder(folder, seed=0, names=("a.png", "b.png"), size=16):
    """``names`` readable images plus the three :data:`BAD` files; returns the readable images by name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    good = {n: _good(rng, size) for n in names}
    for n, image in good.items():
        Image.fromarray(image).save(folder / n)
    write_bad_images(folder, rng)
    return good


def _skipped_names(entries):
    return sorted(Path(e.split(" (", 1)[0]).name for e in entries)


# ----------------------------------------------------------------------------- in process


def test_read_images_skips_unreadable_files_with_a_warning(tmp_path, caplog):
    good = mixed_folder(tmp_path / "f")
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(tmp_path / "f" / "deep.png")  # 16-bit: wrong mode
    files = sorted(str(p) for p in (tmp_path / "f").iterdir())
    stats = DecodeStats()
    with caplog.at_level("WARNING"):
        read = dict(read_images(files, stats))
    assert sorted(Path(p).name for p in read) == ["a.png", "b.png"]
    np.testing.assert_array_equal(read[str(tmp_path / "f" / "a.png")], good["a.png"])
    assert stats.num_skipped == 4 and _skipped_names(stats.skipped) == sorted([*BAD, "deep.png"])
    for name in (*BAD, "deep.png"):
        assert name in caplog.text
    with pytest.raises(UnreadableImageError, match="truncated.jpg"):
        read_rgb(tmp_path / "f" / "truncated.jpg")
    assert issubclass(UnreadableImageError, UserError)


def test_fid_folder_reader_skips_and_counts(tmp_path):
    good = mixed_folder(tmp_path / "f", names=("a.png", "b.png", "c.png"))
    Image.fromarray(_good(np.random.default_rng(1), 24)).save(tmp_path / "f" / "d.png")  # another size
    w = tf.constant(np.random.default_rng(9).normal(size=(3, 5)).astype(np.float32))
    extractor = lambda x: tf.reduce_mean(tf.matmul(tf.cast(x, tf.float32) / 255.0, w), axis=[1, 2])
    stats = DecodeStats()
    mu, sigma = fid.real_statistics(str(tmp_path / "f"), batch_size=2, inception=extractor, dims=5, stats=stats)
    expect = extractor(np.stack([good[n] for n in sorted(good)])).numpy().astype(np.float64)
    np.testing.assert_allclose(mu, expect.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(expect, rowvar=False), rtol=1e-4, atol=1e-7)
    assert stats.num_skipped == 4 and _skipped_names(stats.skipped) == sorted([*BAD, "d.png"])
    (tmp_path / "bad").mkdir()
    write_bad_images(tmp_path / "bad", np.random.default_rng(2))
    with pytest.raises(EmptyDatasetError, match="none of the 3 image"):
        fid.real_statistics(str(tmp_path / "bad"), inception=extractor, dims=5)


def test_statistics_file_errors_are_one_line(tmp_path):
    (tmp_path / "text.npz").write_text("garbage")
    np.savez(tmp_path / "keys.npz", mean=np.zeros(3))
    for name in ("text.npz", "keys.npz", "missing.npz"):
        with pytest.raises(UserError, match=f"cannot read FID statistics .*{name}") as err:
            fid.load_statistics(str(tmp_path / name))
        assert "\n" not in str(err.value)
    (tmp_path / "zeros.npz").write_bytes(bytes(1000))  # NumPy's message offered to unpickle it
    with pytest.raises(UserError, match=r"zeros.npz: not a NumPy .npy/.npz file \(give a .npz") as err:
        fid.load_statistics(str(tmp_path / "zeros.npz"))
    assert "pickle" not in str(err.value)


def test_psnr_refuses_pairs_of_different_sizes():
    with pytest.raises(ValueError, match="same shape"):
        psnr(np.zeros([1, 8, 8, 3], np.uint8), np.zeros([1, 16, 16, 3], np.uint8))


def test_atomic_path_keeps_the_old_file_on_failure_and_honours_the_umask(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["report.json"]
    old_umask = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "new" / "x.png") as tmp:
            tmp.write_bytes(b"png")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "new" / "x.png").read_bytes() == b"png" and os.listdir(tmp_path / "new") == ["x.png"]
    assert (tmp_path / "new" / "x.png").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o750


def test_check_output_refuses_paths_that_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    refused = [(tmp_path / "file", "folder", "is a file; a folder"), (tmp_path / "folder", "file", "is a folder; a file"),
               (tmp_path / "file" / "sub" / "out", "folder", "is a file, not a folder")]
    locked = _unwritable_folder(tmp_path)
    if locked is not None:
        refused.append((locked / "out", "folder", "cannot write in"))
    for path, kind, message in refused:
        with pytest.raises(UserError, match=message):
            check_output(path, kind=kind)
    check_output(tmp_path / "new" / "deeper")  # creatable: fine, and nothing created
    check_output(tmp_path / "folder" / "r.json", kind="file")
    assert set(os.listdir(tmp_path)) - {"locked"} == {"file", "folder"}


# ----------------------------------------------------------------------------- the binaries


def _run(module, *args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", f"tf_distill.bin.{module}", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    tf.keras.utils.set_random_seed(0)
    g = Generator(16, style_dim=8, n_mlp=2, channels=[8] * 6)
    g.build()
    path = tmp_path_factory.mktemp("g") / "g.keras"
    g.save(path)
    return path


@pytest.mark.slow  # two projection runs
def test_project_skips_unreadable_images_and_still_reports(tmp_path, generator_file):
    mixed_folder(tmp_path / "faces")
    out = tmp_path / "out"
    proc = _run("project", f"--teacher={generator_file}", f"--input={tmp_path / 'faces'}", f"--output={out}",
                "--steps=2", "--w_avg_samples=50")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for name in BAD:  # one warning line names each skipped file
        assert sum(name in line and "Skipping" in line for line in proc.stderr.splitlines()) == 1, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["num_skipped"] == 3 and _skipped_names(report["skipped"]) == sorted(BAD)
    assert report["mean"]["teacher"]["n_images"] == 2 and [r["image"] for r in report["images"]] == ["a.png", "b.png"]
    assert "[projection] 4/4" in proc.stderr  # 2 readable images x 2 steps
    assert np.asarray(Image.open(out / "grid.png")).shape == (2 + 2 * 18, 2 + 2 * 18, 3)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (out / "report.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no temporary files left
    a_png = (out / "a.png").read_bytes()

    again = _run("project", f"--teacher={generator_file}", f"--input={tmp_path / 'faces'}", f"--output={out}",
                 "--steps=0", "--w_avg_samples=50", "--report_only", "--overwrite")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["settings"]["steps"] == 0  # replaced
    assert (out / "a.png").read_bytes() == a_png  # --report_only leaves the other outputs alone


def test_eval_pairs_skip_unreadable_images_and_size_mismatches(tmp_path):
    images = mixed_folder(tmp_path / "out", seed=0, names=("a.png", "b.png", "c.png"))
    mixed_folder(tmp_path / "ref", seed=1, names=("a.png", "b.png"))
    Image.fromarray(images["a.png"]).save(tmp_path / "ref" / "a.png")  # identical pair: 100 dB
    Image.fromarray(_good(np.random.default_rng(3), 24)).save(tmp_path / "ref" / "c.png")  # size differs
    proc = _run("eval", "--metric=psnr", f"--images={tmp_path / 'out'}", f"--reference={tmp_path / 'ref'}",
                f"--output={tmp_path / 'psnr.json'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    result = json.loads((tmp_path / "psnr.json").read_text())
    b = np.asarray(Image.open(tmp_path / "ref" / "b.png"))
    expect = (100.0 + float(psnr(images["b.png"][None], b[None])[0])) / 2
    assert result["num_pairs"] == 2 and result["psnr"] == pytest.approx(expect, rel=1e-9)
    assert result["num_skipped"] == 7  # three bad files in each folder and the c.png pair
    assert _skipped_names(result["skipped"]) == sorted([*BAD, *BAD, "c.png"])
    for folder in ("out", "ref"):
        for name in BAD:  # a plain warning line, not absl's "W1206 12:00:00.0 ... decode.py:68]" prefix
            line = f"warning: Skipping image that cannot be decoded: {tmp_path / folder / name} ("
            assert sum(x.startswith(line) for x in proc.stderr.splitlines()) == 1, proc.stderr


def _unwritable_folder(tmp_path):
    """A folder this process cannot create files in (root ignores permissions: then /sys, if read-only)."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            return None
    except OSError:
        return Path("/sys")


def _bad_cases(tmp, generator_file):
    """(id, binary, args, expected exit code, text the error line must hold)."""
    (tmp / "empty").mkdir()
    (tmp / "allbad").mkdir()
    write_bad_images(tmp / "allbad", np.random.default_rng(5))
    mixed_folder(tmp / "faces")
    (tmp / "earlier").mkdir()
    (tmp / "earlier" / "report.json").write_text("{}")
    (tmp / "result.json").write_text("{}")
    (tmp / "model.keras").write_bytes(b"a checkpoint")  # refused before it is read
    (tmp / "shards").mkdir()
    (tmp / "shards" / "s.tfrecord").write_bytes(b"a shard")  # read as a folder of TFRecords
    file = tmp / "faces" / "a.png"
    mixed_folder(tmp / "twins", names=("a.png", "b.jpg"))
    mixed_folder(tmp / "twins" / "more", names=("b.png",))  # b.jpg and more/b.png would both write b.png, b.npz
    g, faces = f"--teacher={generator_file}", f"--input={tmp / 'faces'}"
    cases = [
        ("project-missing-input", "project", [g, f"--input={tmp / 'nope'}", f"--output={tmp / 'o'}"], 1,
         "--input"),
        ("project-missing-checkpoint", "project", [f"--teacher={tmp / 'none.pt'}", faces, f"--output={tmp / 'o'}"],
         1, "none.pt does not exist"),
        ("project-output-parent-is-a-file", "project", [g, faces, f"--output={file / 'sub'}"], 1,
         "is a file, not a folder"),
        ("project-would-overwrite", "project", [g, faces, f"--output={tmp / 'earlier'}", "--report_only"], 1,
         "--overwrite"),
        ("project-output-is-the-input", "project", [g, faces, f"--output={tmp / 'faces'}", "--overwrite"], 1,
         "holds the input"),
        ("project-output-holds-the-input-image", "project", [g, f"--input={file}", f"--output={tmp / 'faces'}",
                                                             "--overwrite"], 1, "holds the input"),
        ("project-output-inside-the-input", "project", [g, faces, f"--output={tmp / 'faces' / 'o'}"], 1,
         "inside --input"),
        ("project-images-share-a-name", "project", [g, f"--input={tmp / 'twins'}", f"--output={tmp / 'o'}"], 1,
         "b.jpg"),
        ("project-empty-folder", "project", [g, f"--input={tmp / 'empty'}", f"--output={tmp / 'o'}"], 1, "empty"),
        ("project-no-readable-image", "project", [g, f"--input={tmp / 'allbad'}", f"--output={tmp / 'o'}"], 1,
         "none of the 3 image"),
        ("eval-num-samples-0", "eval", ["--metric=ppl", f"--checkpoint={generator_file}", "--num_samples=0"], 2,
         "--num_samples=0"),
        ("eval-unknown-metric", "eval", ["--metric=fidd"], 2, "--metric"),
        ("eval-output-exists", "eval", ["--metric=psnr", f"--images={tmp / 'faces'}", f"--reference={tmp / 'faces'}",
                                        f"--output={tmp / 'result.json'}"], 1, "--overwrite"),
        ("eval-output-is-the-checkpoint", "eval", ["--metric=ppl", f"--checkpoint={tmp / 'model.keras'}",
                                                   f"--output={tmp / 'model.keras'}", "--overwrite"], 1,
         "holds the input"),
        ("eval-output-is-a-real-tfrecord", "eval", ["--metric=fid", f"--checkpoint={tmp / 'model.keras'}",
                                                    f"--real=tfrecord:{tmp / 'shards'}", "--num_samples=2",
                                                    f"--output={tmp / 'shards' / 's.tfrecord'}", "--overwrite"], 1,
         "holds the input"),
        ("eval-no-readable-reference", "eval", ["--metric=psnr", f"--images={tmp / 'faces'}",
                                                f"--reference={tmp / 'allbad'}"], 1, "none of the 3 image"),
    ]
    locked = _unwritable_folder(tmp)
    if locked is not None:
        cases.append(("eval-output-unwritable", "eval", ["--metric=psnr", f"--images={tmp / 'faces'}",
                                                         f"--reference={tmp / 'faces'}",
                                                         f"--output={locked / 'r.json'}"], 1, "cannot write in"))
    return cases


CASE_IDS = ["project-missing-input", "project-missing-checkpoint", "project-output-parent-is-a-file",
            "project-would-overwrite", "project-output-is-the-input", "project-output-holds-the-input-image",
            "project-output-inside-the-input", "project-images-share-a-name", "project-empty-folder",
            "project-no-readable-image", "eval-num-samples-0", "eval-unknown-metric", "eval-output-exists",
            "eval-output-is-the-checkpoint", "eval-output-is-a-real-tfrecord", "eval-no-readable-reference",
            "eval-output-unwritable"]


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory, generator_file):
    """Every case's process, two at a time (each imports TensorFlow: several seconds)."""
    tmp = tmp_path_factory.mktemp("bad")
    cases = _bad_cases(tmp, generator_file)
    faces = _contents(tmp / "faces")
    with ThreadPoolExecutor(2) as pool:
        procs = pool.map(lambda c: _run(c[1], *c[2], timeout=300), cases)
    return tmp, {c[0]: (c, p) for c, p in zip(cases, procs)}, faces


def _contents(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.slow  # 17 processes, each importing TensorFlow
@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_command_lines_end_in_one_error_line(bad_runs, case):
    tmp, runs, faces = bad_runs
    if case not in runs:
        pytest.skip("no folder here refuses writes (running as root on a writable /sys)")
    (_, _, args, code, expected), proc = runs[case]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == code, (args, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(errors) == 1 and expected in errors[0], proc.stderr[-3000:]
    assert not (tmp / "o").exists() and not (tmp / "faces" / "o").exists()  # a refused run creates no folder
    assert _contents(tmp / "faces") == faces  # nor touches the input folder
