"""Binaries: one-line errors instead of tracebacks, outputs that never destroy data, a quiet console."""

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from tf_distill import cli, outputs
from tf_distill.errors import UserError

from conftest import fixture_path

REPO = Path(__file__).resolve().parents[1]


def run_binary(module, *args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the console a user sees
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", f"tf_distill.bin.{module}", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def assert_one_line_error(result, *words):
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    noise = [line for line in (result.stdout + result.stderr).splitlines()
             if line[:1] in "EWI" and line[1:5].isdigit() or "InitializeLog" in line]
    assert not noise, noise  # no TensorFlow C++ log lines (no-GPU notices) either


# ---- output paths ----------------------------------------------------------------------------------

def test_check_output_refuses_what_would_lose_data(tmp_path):
    folder, full, afile = tmp_path / "new", tmp_path / "full", tmp_path / "afile"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    afile.write_text("mine")
    assert outputs.check_output(folder) == folder
    assert outputs.check_output(tmp_path / "empty_ok") == tmp_path / "empty_ok"
    cases = [
        (dict(path=full), "not empty"),
        (dict(path=afile), "is a file"),
        (dict(path=afile / "sub"), "is a file, not a folder"),
        (dict(path=afile, kind="file"), "exists"),
        (dict(path=full, kind="file"), "is a folder"),
        (dict(path=tmp_path, overwrite=True, inputs=[full / "keep.txt"]), "holds the input"),
        (dict(path=afile, overwrite=True, inputs=[afile], kind="file"), "holds the input"),
        # a folder written whole: --overwrite would have deleted the user's file with it
        (dict(path=full, overwrite=True, replaces=("g.keras",)), "holds keep.txt, which this does not write"),
    ]
    for kwargs, words in cases:
        with pytest.raises(UserError, match=words):
            outputs.check_output(**kwargs)
    assert outputs.check_output(full, overwrite=True) == full
    assert outputs.check_output(full, overwrite=True, replaces=("keep.txt", "g.keras")) == full
    assert outputs.check_output(afile, overwrite=True, kind="file") == afile


def test_check_workdir_resumes_ours_and_refuses_others(tmp_path):
    ours, other = tmp_path / "ours", tmp_path / "other"
    (ours / "checkpoints").mkdir(parents=True)
    other.mkdir()
    (other / "thesis.tex").write_text("mine")
    assert outputs.check_workdir(ours, ["checkpoints"]) == ours
    assert outputs.check_workdir(tmp_path / "fresh", ["checkpoints"]) == tmp_path / "fresh"
    with pytest.raises(UserError, match="holds files of something else"):
        outputs.check_workdir(other, ["checkpoints"])
    assert outputs.check_workdir(other, ["checkpoints"], overwrite=True) == other
    assert (other / "thesis.tex").read_text() == "mine"


def test_staged_directory_honours_umask_and_keeps_old_on_failure(tmp_path):
    target = tmp_path / "out"
    old_umask = os.umask(0o022)
    try:
        with outputs.staged_directory(target) as stage:
            (stage / "a.txt").write_text("new")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert (target / "a.txt").read_text() == "new"
    with pytest.raises(RuntimeError):
        with outputs.staged_directory(target) as stage:
            (stage / "a.txt").write_text("half")
            raise RuntimeError("disk full")
    assert (target / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left behind
    # Ctrl-C (or SIGTERM) between moving the old folder aside and renaming the new one in: the old one is put back.
    real_replace, calls = os.replace, []

    def interrupted_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    with mock.patch.object(os, "replace", interrupted_second_rename), pytest.raises(KeyboardInterrupt):
        with outputs.staged_directory(target) as stage:
            (stage / "a.txt").write_text("newer")
    assert (target / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # A failed write into folders that did not exist leaves none of them behind (an export to a full disk left
    # its empty model folder)
    with pytest.raises(OSError):
        with outputs.staged_directory(tmp_path / "new" / "deeper" / "out") as stage:
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError):
        with outputs.atomic_path(tmp_path / "new" / "deeper" / "m.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "theirs.txt").write_text("x")  # a folder that existed keeps what it holds
    with pytest.raises(OSError):
        with outputs.atomic_path(tmp_path / "new" / "deeper" / "m.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["theirs.txt"]


def test_write_file_atomic_leaves_no_temporary_on_failure(tmp_path, monkeypatch):
    path = outputs.write_file_atomic(tmp_path / "m.json", "{}")
    assert path.read_text() == "{}"

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        outputs.write_file_atomic(tmp_path / "m.json", "{\"new\": 1}")
    assert path.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_sigterm_cleans_up_what_a_binary_was_writing(tmp_path):
    """SIGTERM (a scheduler's time limit) mid-write: the staging folder is removed as on Ctrl-C, one error line,
    exit 143 (it used to kill the process on the spot and leave the hidden half-written folder)."""
    code = ("import os, time\n"
            "from tf_distill import cli, outputs\n"
            "def main(argv):\n"
            "    with outputs.staged_directory(os.environ['TARGET']) as stage:\n"
            "        (stage / 'half.bin').write_bytes(b'x')\n"
            "        print('staged', flush=True)\n"
            "        time.sleep(120)\n"
            "cli.run(main, tensorflow=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "TARGET": str(tmp_path / "out")})
    assert proc.stdout.readline().strip() == "staged"
    assert [p.name for p in tmp_path.iterdir()][0].startswith(".out.tmp-")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "error: terminated (SIGTERM)", err
    assert not list(tmp_path.iterdir())  # no staging folder left, no half output


# ---- one-line messages -----------------------------------------------------------------------------

def test_describe_expected_errors_and_leaves_bugs_alone():
    assert cli.describe(UserError("x is bad\n(fix it)")) == "x is bad (fix it)"
    assert cli.describe(FileNotFoundError("Checkpoint a.pt does not exist.")) == "Checkpoint a.pt does not exist."
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out/g.keras")
    assert cli.describe(full) == "No space left on device: /data/out/g.keras (free disk space, or choose another " \
                                 "output folder)"
    assert "read-only" in cli.describe(OSError(errno.EROFS, "Read-only file system", "/ro"))
    assert "shorter path" in cli.describe(OSError(errno.ENAMETOOLONG, "File name too long", "/a" * 200))
    assert cli.describe(RuntimeError("Symlink loop from '/d/loop'")).startswith("Symlink loop from '/d/loop' (the path")
    assert cli.describe(RuntimeError("a bug")) is None
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    disk = tf.errors.ResourceExhaustedError(
        None, None, "{{function_node __wrapped__SaveV2_dtypes_3_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
        "out/1/saved_model.pb.tmp5; No space left on device [Op:SaveV2]\n\t [[{{node SaveV2}}]]")
    assert cli.describe(disk) == ("out/1/saved_model.pb.tmp5; No space left on device (free disk space, or choose "
                                  "another output folder)")  # was "out of memory: ..."
    assert cli.describe(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating")).startswith("out of memory")
    assert cli.describe(KeyError("a bug")) is None
    assert cli.describe(ZeroDivisionError()) is None


def test_a_user_error_raised_inside_a_tf_data_pipeline_is_described():
    """tf.data re-raises what a py_function raises as its own error, quoting it: the quoted UserError is the message."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tf_distill.data import EmptyDatasetError  # pylint: disable=import-outside-toplevel

    def fail(x):
        raise EmptyDatasetError(f"None of the {int(x)} image(s) of image folder imgs can be decoded (fix them)")

    def bug(x):
        raise ZeroDivisionError("a bug")

    for fn, expected in ((fail, "None of the 3 image(s) of image folder imgs can be decoded (fix them)"), (bug, None)):
        dataset = tf.data.Dataset.from_tensors(3).map(lambda x, fn=fn: tf.py_function(fn, [x], tf.int32))
        with pytest.raises(tf.errors.OpError) as info:
            next(iter(dataset))
        assert cli.describe(info.value) == expected
    assert cli.quoted_user_error(ValueError("EmptyDatasetError: not from TensorFlow")) is None


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """A user's folder: a checkpoint, a folder with a file of theirs, a plain file, existing shards."""
    root = tmp_path_factory.mktemp("user")
    (root / "mydata").mkdir()
    (root / "mydata" / "teacher.pt").write_bytes(fixture_path("teacher32_zip.pt").read_bytes())
    (root / "notes").mkdir()
    (root / "notes" / "keep.txt").write_text("mine")
    (root / "1").mkdir()  # a numbered folder that is not a SavedModel
    (root / "1" / "keep.txt").write_text("mine")
    (root / "afile").write_text("mine")
    (root / "images").mkdir()
    (root / "shards-00000-of-00001.tfrecord").write_bytes(b"mine")
    (root / "loop").symlink_to("loop")  # a link to itself
    for name in ("served/seed0.png", "edits/mix_coarse.png"):
        (root / name).parent.mkdir()
        (root / name).write_bytes(b"mine")
    return root


CASES = [  # (module, args, words in the error line)
    ("convert", ["--input=mydata/teacher.pt", "--output=mydata"], ["holds the input"]),
    ("convert", ["--input=mydata/teacher.pt", "--output=mydata", "--overwrite"], ["holds the input"]),
    ("convert", ["--input=mydata/teacher.pt", "--output=notes"], ["holds keep.txt", "move it out"]),
    ("convert", ["--input=mydata/teacher.pt", "--output=notes", "--overwrite"], ["holds keep.txt", "move it out"]),
    ("export", ["--checkpoint=mydata/teacher.pt", "--export_dir=.", "--version=1", "--overwrite"],
     ["version folder", "holds keep.txt"]),
    ("convert", ["--input=mydata/teacher.pt", "--output=afile"], ["is a file"]),
    ("convert", ["--input=missing.pt", "--output=out"], ["missing.pt", "does not exist"]),
    ("convert", ["--input=mydata/teacher.pt", "--output=out", "--n_samples=0"], ["--n_samples"]),
    ("convert", ["--input=mydata/teacher.pt", "--output=out", "--no_such_flag"], ["no_such_flag"]),
    ("train", ["--config=configs/demo_distill.py", "--config.train.lrr=1", "--workdir=w"],
     ["--config.train.lrr", "did you mean --config.train.lr?"]),
    ("train", ["--config=no_such_config.py", "--workdir=w"], ["no_such_config.py"]),
    ("export", ["--checkpoint=mydata/teacher.pt", "--export_dir=afile"], ["--export_dir", "is a file"]),
    ("export", ["--checkpoint=mydata/teacher.pt", "--export_dir=afile/student"], ["is a file, not a folder"]),
    ("make_tfrecords", ["--input=images", "--output=shards"], ["exist already", "--overwrite"]),
    ("make_tfrecords", ["--input=no_images", "--output=new/shards"], ["no_images", "does not exist"]),
    ("demo", ["--workdir=notes"], ["holds files of something else"]),
    ("reproduce", ["--workdir=afile"], ["is a file"]),
    ("stats", ["--checkpoint=missing.pt"], ["missing.pt"]),
    ("fetch_weights", ["--only=lpips,fid", "--cache_dir=notes"], ["--only", "lpips,fid", "lpips_vgg16"]),
    ("eval", ["--metric=lpips", "--checkpoint=mydata/teacher.pt", f"--checkpoint_b={REPO}/demo/teacher_fmnist32.keras",
              "--num_samples=2"], ["z of 64", "z of 128", "do not match"]),
    ("client", ["--server=http://127.0.0.1:9", "--seeds=0-3", "--out=served"], ["seed0.png", "--overwrite"]),
    ("edit", ["--teacher=mydata/teacher.pt", "--a=seed:0", "--b=seed:1", "--output=edits"],
     ["mix_coarse.png", "--overwrite"]),
    # Paths the file system refuses: each was a traceback (OSError ENAMETOOLONG; pathlib's RuntimeError)
    ("convert", ["--input=mydata/teacher.pt", f"--output={'n' * 300}/x"], ["File name too long", "shorter path"]),
    ("convert", ["--input=mydata/teacher.pt", "--output=loop/x"], ["Symlink loop", "symbolic link loop"]),
    ("convert", ["--input=mydata/teacher.pt", "--output=out", "--grid=loop/g.png"], ["Symlink loop"]),
    ("eval", ["--metric=psnr", f"--images={'n' * 300}", "--reference=images"], ["File name too long"]),
    # Integer flags out of range (absl bounds): each was a traceback (int64 overflow, a negative NumPy seed)
    ("convert", ["--input=mydata/teacher.pt", "--output=out", "--seed=-1"], ["--seed=-1", "range [0, 2147483647]"]),
    ("convert", ["--input=mydata/teacher.pt", "--output=out", f"--n_samples={2**63}"], ["--n_samples", "range"]),
    ("eval", ["--metric=ppl", "--checkpoint=mydata/teacher.pt", f"--batch_size={10**12}"], ["--batch_size", "1024]"]),
    ("export", ["--checkpoint=mydata/teacher.pt", "--export_dir=out", f"--w_avg_seed={2**63}"], ["--w_avg_seed"]),
    ("project", ["--teacher=mydata/teacher.pt", "--input=images", "--output=out", f"--seed={2**63}"], ["--seed"]),
    ("demo", ["--workdir=w", "--fid_samples=1"], ["--fid_samples=1", "range [2,"]),
    ("client", ["--server=http://[::1", "--seeds=0", "--out=new"], ["http://[::1 is not a valid URL"]),
    ("client", ["--server=http://127.0.0.1:9", "--timeout=1e308", "--out=new"], ["--timeout", "up to 86400"]),
    ("client", ["--server=127.0.0.1:9", f"--version={2**63}", "--out=new"],  # gRPC: a ValueError traceback
     ["--version=9223372036854775808", "range [0, 9223372036854775807]"]),
]


BAD_CONFIGS = [  # (config file text, words in the error line); each of them but the last raises inside the file
    ("def get_config(:\n", ["cannot load the config file bad.py", "SyntaxError"]),
    ("def get_config():\n    raise ValueError('no such dataset')\n",
     ["cannot load the config file bad.py", "ValueError: no such dataset"]),
    ("import no_such_module_here\n", ["cannot load the config file bad.py", "ModuleNotFoundError"]),
    ("CONFIG = {}\n", ["cannot load the config file bad.py", "has no attribute 'get_config'"]),
    ("def get_config():\n    return 5\n", ["the config file bad.py", "returned int, not a ConfigDict"]),
]


@pytest.mark.parametrize("text,words", BAD_CONFIGS, ids=[w[1] for _, w in BAD_CONFIGS])
def test_a_config_file_that_fails_to_run_gives_one_line(tmp_path, text, words):
    """ml_collections runs a config file while parsing --config: what the file raises is the user's to fix, and
    --debug shows where in the file."""
    (tmp_path / "bad.py").write_text(text)
    assert_one_line_error(run_binary("stats", "--config=bad.py", cwd=tmp_path), *words)
    if words[0].startswith("cannot load"):
        debug = run_binary("stats", "--config=bad.py", "--debug", cwd=tmp_path)
        assert debug.returncode != 0 and "Traceback" in debug.stderr, debug.stderr


def test_overriding_a_list_in_a_config_says_to_make_it_a_tuple(tmp_path):
    """ml_collections cannot override a list field from the command line (it raised from inside the flag parser)."""
    (tmp_path / "rows.py").write_text(PLAIN_CONFIG.replace("{CONTENT}", "{'generators': {}, 'rows': ['a']}"))
    result = run_binary("stats", "--config=rows.py", "--config.rows=b", cwd=tmp_path)
    assert_one_line_error(result, "field config.rows", "make it a tuple in the config file", "--config.KEY='(a, b)'")


PLAIN_CONFIG = "import ml_collections\ndef get_config():\n    return ml_collections.ConfigDict({CONTENT})\n"
WRONG_CONFIGS = [  # (binary, config content, words in the error line): valid Python, wrong for the binary
    ("stats", "{'generators': {'mine': {'size': 33}}}", ["config.generators.mine", "power of two", "33"]),
    ("stats", "{'generators': {'mine': {'size': 32, 'widht': 2}}}", ["config.generators.mine", "widht"]),
    ("train", "{'seed': 0}", ["lacks", "config.generator", "default_config()"]),
    ("reproduce", "{'seeds': 2}", ["lacks", "config.base", "configs/reproduce_fmnist32.py"]),
]


@pytest.mark.parametrize("module,content,words", WRONG_CONFIGS, ids=[f"{m}:{c}" for m, c, _ in WRONG_CONFIGS])
def test_a_config_of_the_wrong_shape_gives_one_line(tmp_path, module, content, words):
    (tmp_path / "mine.py").write_text(PLAIN_CONFIG.replace("{CONTENT}", content))
    assert_one_line_error(run_binary(module, "--config=mine.py", "--workdir=runs", cwd=tmp_path)
                          if module != "stats" else run_binary(module, "--config=mine.py", cwd=tmp_path), *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.py"]  # nothing written


@pytest.mark.parametrize("module,args,words", CASES, ids=[f"{m}:{' '.join(a)}" for m, a, _ in CASES])
def test_bad_input_gives_one_line_and_keeps_user_files(user_files, module, args, words):
    if module in ("train", "reproduce", "demo"):  # their configs name repo-relative paths
        args = [a.replace("=w", f"={user_files / 'w'}").replace("=notes", f"={user_files / 'notes'}")
                .replace("=afile", f"={user_files / 'afile'}").replace("=no_such", f"={user_files / 'no_such'}")
                for a in args]
        result = run_binary(module, *args, cwd=REPO)
    else:
        result = run_binary(module, *args, cwd=user_files)
    assert_one_line_error(result, *words)
    assert (user_files / "mydata" / "teacher.pt").read_bytes() == fixture_path("teacher32_zip.pt").read_bytes()
    assert (user_files / "notes" / "keep.txt").read_text() == "mine"
    assert [p.name for p in (user_files / "1").iterdir()] == ["keep.txt"]
    assert (user_files / "afile").read_text() == "mine"
    for name in ("shards-00000-of-00001.tfrecord", "served/seed0.png", "edits/mix_coarse.png"):
        assert (user_files / name).read_bytes() == b"mine"
    assert sorted(p.name for p in user_files.iterdir()) == ["1", "afile", "edits", "images", "loop", "mydata",
                                                            "notes", "served", "shards-00000-of-00001.tfrecord"]
    assert [p.name for p in (user_files / "served").iterdir()] == ["seed0.png"]
