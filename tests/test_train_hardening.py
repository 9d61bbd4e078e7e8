"""Training hardening: fallback past unreadable checkpoints, failed saves leave nothing, configs checked at start,
one run per workdir."""

import contextlib
import errno
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management, functional_saver

from tf_distill.data import DamagedDataError, write_tfrecords
from tf_distill.errors import UserError
from tf_distill.outputs import WORKDIR_LOCK, WorkdirLock
from tf_distill.models import Generator
from tf_distill.train.config_check import ConfigError, check_batch, check_config, check_max_steps
from tf_distill.train.loop import CheckpointError, NonFiniteLossError, Run, check_inputs_outside_outputs
from train_helper import tiny_config, write_random_images

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_random_images(tmp_path_factory.mktemp("images"), 24, 16)


def _values(run):
    models = (("g", run.g), ("g_ema", run.g_ema), ("d", run.d), ("g_optim", run.step.g_opt),
              ("d_optim", run.step.d_opt))
    values = {f"{prefix}/{v.path}": v.numpy() for prefix, obj in models for v in obj.variables}
    values.update(step=run.step.step.numpy(), pl_mean=run.step.pl_mean.numpy(), rng=run.step.rng.state.numpy())
    return values


def _save_at(run, step, seed):
    """A checkpoint at ``step`` whose every value differs from the others' (no training needed)."""
    rng = np.random.default_rng(seed)
    for v in run.g.variables + run.g_ema.variables + run.d.variables + run.step.g_opt.variables:
        if "float" in str(v.dtype):
            v.assign(rng.standard_normal(v.shape).astype(np.float32))
    run.step.pl_mean.assign(float(seed))
    run.step.step.assign(step)
    run.save()
    return _values(run)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, data_dir):
    """A workdir with ckpt-2 and ckpt-4, made once; returns (workdir, ckpt-2's values)."""
    workdir = tmp_path_factory.mktemp("pristine") / "run"
    run = Run(tiny_config(data_dir, "default", 6), workdir)
    older = _save_at(run, 2, seed=1)
    _save_at(run, 4, seed=2)
    assert tf.train.latest_checkpoint(workdir / "checkpoints").endswith("ckpt-4")
    return workdir, older


@pytest.fixture
def two_checkpoints(tmp_path, pristine):
    """A copy of the pristine workdir for a test to damage; returns (workdir, ckpt-2's values)."""
    workdir = tmp_path / "run"
    shutil.copytree(pristine[0], workdir)
    return workdir, pristine[1]


def _truncate(prefix):
    data = Path(f"{prefix}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def _garbage(prefix):
    data = Path(f"{prefix}.data-00000-of-00001")
    data.write_bytes(np.random.default_rng(7).bytes(data.stat().st_size))


def _flip_byte(prefix):
    data = Path(f"{prefix}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))


def _bad_index(prefix):
    index = Path(f"{prefix}.index")
    index.write_bytes(np.random.default_rng(7).bytes(index.stat().st_size))


def _missing_data(prefix):
    Path(f"{prefix}.data-00000-of-00001").unlink()


CORRUPTIONS = [_truncate, _garbage, _flip_byte, _bad_index, _missing_data]


def _files(directory):
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir()) if p.is_file()}


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_unreadable_newest_checkpoint_falls_back_to_the_previous(two_checkpoints, data_dir, corrupt, capsys):
    workdir, older = two_checkpoints
    checkpoints = workdir / "checkpoints"
    corrupt(checkpoints / "ckpt-4")
    on_disk = _files(checkpoints)
    run = Run(tiny_config(data_dir, "default", 6), workdir)
    assert run.restore() == str(checkpoints / "ckpt-2")
    restored = _values(run)
    assert sorted(restored) == sorted(older)
    for name, value in older.items():  # every value is ckpt-2's: nothing of the failed partial restore remains
        np.testing.assert_array_equal(restored[name], value, err_msg=name)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(checkpoints / "ckpt-4") in warnings[0], err
    assert _files(checkpoints) == on_disk  # the unreadable checkpoint stays, untouched


def test_no_readable_checkpoint_is_one_line_error_naming_each(two_checkpoints, data_dir):
    workdir, _ = two_checkpoints
    _truncate(workdir / "checkpoints" / "ckpt-4")
    _bad_index(workdir / "checkpoints" / "ckpt-2")
    run = Run(tiny_config(data_dir, "default", 6), workdir)
    with pytest.raises(CheckpointError) as info:
        run.restore()
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    assert "ckpt-4 (IndexError" in message and "ckpt-2 (" in message and "move" in message, message
    assert (workdir / "checkpoints" / "ckpt-4.index").exists() and (workdir / "checkpoints" / "ckpt-2.index").exists()


@pytest.mark.parametrize("content", [b"\x00\xffnot text", b"not a { proto", b""], ids=["binary", "text", "empty"])
def test_unreadable_checkpoint_list_is_kept_and_the_checkpoints_beside_it_restored(two_checkpoints, data_dir,
                                                                                    content, capsys):
    """A garbled ``checkpoint`` list must not make the run start over on top of its checkpoints."""
    workdir, _ = two_checkpoints
    (workdir / "checkpoints" / "checkpoint").write_bytes(content)
    run = Run(tiny_config(data_dir, "default", 6), workdir)
    assert run.restore() == str(workdir / "checkpoints" / "ckpt-4")
    assert int(run.step.step.numpy()) == 4
    aside = list((workdir / "checkpoints").glob("checkpoint.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert aside[0].name in capsys.readouterr().err


def _fail_merge(error):
    """The real saver writes its ``ckpt-N_temp`` shards, then the merge into ``ckpt-N`` fails."""
    seen = []

    def merge(checkpoint_prefixes, destination_prefix, **kwargs):
        seen.extend(Path(p.numpy().decode()).parent for p in checkpoint_prefixes)
        assert all(p.name.endswith("_temp") and p.is_dir() for p in seen), seen  # real temporaries exist
        raise error
    return mock.patch.object(functional_saver.gen_io_ops, "merge_v2_checkpoints", merge), seen


def _fail_state_write(error):
    """``ckpt-N`` is complete, then writing the ``checkpoint`` list fails (read-only, disk full)."""
    def write(filename, contents, overwrite=True):
        Path(f"{filename}.tmp0123").write_text(contents[:10])  # as far as a real write got
        raise error
    return mock.patch.object(checkpoint_management.file_io, "atomic_write_string_to_file", write)


@pytest.mark.parametrize("case", ["disk_full_in_merge", "read_only_state", "no_space_state"])
def test_failed_save_leaves_nothing_and_keeps_the_previous_latest(tmp_path, data_dir, case):
    workdir = tmp_path / "run"
    checkpoints = workdir / "checkpoints"
    run = Run(tiny_config(data_dir, "default", 6), workdir)
    _save_at(run, 2, seed=1)
    before = _files(checkpoints)
    if case == "disk_full_in_merge":
        patch, seen = _fail_merge(tf.errors.ResourceExhaustedError(None, None, "No space left on device"))
        fix = "free disk space"
    elif case == "read_only_state":
        patch, seen = _fail_state_write(OSError(errno.EROFS, "Read-only file system")), None
        fix = f"make {checkpoints} writable"
    else:
        patch, seen = _fail_state_write(OSError(errno.ENOSPC, "No space left on device")), None
        fix = "free disk space"
    run.step.step.assign(4)
    with patch, pytest.raises(CheckpointError) as info:
        run.save()
    message = str(info.value)
    assert "\n" not in message and "ckpt-4" in message and fix in message, message
    assert "rerun the same command: it resumes from step 2" in message, message
    if seen is not None:
        assert seen  # the saver got as far as its temporaries
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted(before)  # no ckpt-4_temp, no ckpt-4.*
    assert _files(checkpoints) == before  # the checkpoint list is unchanged: ckpt-2 is still the latest
    assert run.manager.latest_checkpoint == str(checkpoints / "ckpt-2")
    assert run.save() == str(checkpoints / "ckpt-4")  # once the disk is fine, saving works again


# ---- configs -------------------------------------------------------------------------------------

BAD_VALUES = [
    ("train.steps", -5), ("train.steps", 0), ("train.batch_size", 0), ("train.lr", 0.0), ("train.lr", math.nan),
    ("train.lr", math.inf), ("train.r1", -1.0), ("train.path_reg", math.nan), ("train.d_reg_every", 0),
    ("train.g_reg_every", 0), ("train.path_batch_shrink", 0), ("train.path_decay", 0.0), ("train.path_decay", 1.5),
    ("train.ema_decay", 1.0), ("train.ema_decay", -0.1), ("train.mixing", 1.5),
    ("log.every", 0), ("log.checkpoint_every", 0), ("log.sample_every", 0), ("log.sample_every", -3),
    ("log.n_samples", 0), ("log.keep_checkpoints", 0), ("eval.fid_every", -1),
    ("kd.group_size", 0), ("kd.group_size", 3), ("kd.weight_l1", -1.0), ("kd.weight_lpips", math.inf), ("kd.weight_relation", -0.5),
    ("kd.offset_weight", math.nan), ("kd.relation_mode", "l1"), ("kd.offset_mode", "diagonal"),
    ("kd.direction_mode", "local"), ("kd.warmup_steps", -1), ("kd.lpips_size", 8),
    ("kd.mimic_layers", [0, 1]), ("kd.mimic_layers", [2, 3]), ("kd.mimic_layers", []),
    ("stage1.steps", -1), ("stage1.batch_size", 0), ("stage1.lr", 0.0), ("stage1.loss", "huber"),
    ("generator.size", 12), ("generator.style_dim", 0), ("generator.channels", [8, 6, 0, 5, 5, 4]),
    ("generator.lr_mlp", math.nan), ("discriminator.channels", [8, -6, 4]),
    ("strategy", "tpu"), ("data.sharding", "rows"), ("data.source", ""), ("data.source", "s3:bucket"),
    ("teacher", "no/such/teacher.pt"), ("seed", -1), ("seed", 10**12), ("generator.kernel_size", 4),
    ("generator.kernel_size", 10**12),
]


@pytest.mark.parametrize("key,value", BAD_VALUES, ids=[f"{k}={v}" for k, v in BAD_VALUES])
def test_bad_config_value_is_refused_naming_the_key(key, value, data_dir):
    config = tiny_config(data_dir, "default", 6, teacher=__file__)  # a teacher: the kd settings are checked
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
    with pytest.raises(ConfigError) as info:
        check_config(config, num_replicas=1)
    message = str(info.value)
    assert f"config.{key}" in message and "\n" not in message, message
    assert message.count("config.") >= 1 and "(" in message  # what is wrong, then how to fix it


def test_good_configs_pass(data_dir):
    from configs import (  # pylint: disable=import-outside-toplevel
        demo_distill, demo_teacher, ffhq256_heter, ffhq256_stylekd)

    check_config(tiny_config(data_dir, "default", 6, teacher=__file__), num_replicas=1)
    for module in (demo_distill, demo_teacher, ffhq256_stylekd, ffhq256_heter):
        config = module.get_config()
        config.teacher = __file__ if config.teacher else ""
        config.data.source = config.data.source or "folder:/data"
        check_config(config, num_replicas=1)
    config = tiny_config(data_dir, "default", 6)
    config.eval.fid_every = 0  # off: allowed
    config.kd.group_size = 16  # larger than the batch: one group of the whole batch
    check_config(config, num_replicas=1)


def test_a_config_without_a_training_configs_keys_names_them(data_dir):
    """A hand-written config (or a reproduction config given to training) fails naming its missing keys, not
    with a KeyError in the checks."""
    from configs import reproduce_fmnist32  # pylint: disable=import-outside-toplevel

    config = tiny_config(data_dir, "default", 6)
    del config.kd["group_size"]
    del config["seed"]
    with pytest.raises(ConfigError, match=r"lacks 2 key\(s\) every training config has: .* \(build it on") as info:
        check_config(config, num_replicas=1)
    assert "config.seed" in str(info.value) and "config.kd.group_size" in str(info.value), info.value
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="looks like a tf-distill-reproduce config, whose training config is "
                                          "config.base"):
        check_config(reproduce_fmnist32.get_config())
    check_config(reproduce_fmnist32.get_config().base)  # the keys are all there (values checked elsewhere)


def test_batch_checks_use_the_replica_count(data_dir):
    config = tiny_config(data_dir, "mirrored", 6)  # batch 8
    check_batch(config, 2)  # 4 per replica, groups of 4
    config.train.batch_size = 6
    with pytest.raises(ConfigError, match=r"config.train.batch_size must be divisible by the 4 replicas"):
        check_batch(config, 4)
    config.train.batch_size, config.kd.group_size = 12, 4  # 6 per replica, not a multiple of 4
    with pytest.raises(ConfigError, match=r"config.kd.group_size must be a divisor of the per-replica batch 6"):
        check_batch(config, 2)


@pytest.mark.parametrize("value", [0, -3])
def test_max_steps_below_one_is_refused(value):
    with pytest.raises(ConfigError, match="--max_steps must be >= 1"):
        check_max_steps(value)
    check_max_steps(None)
    check_max_steps(1)


def test_run_checks_the_config_and_max_steps_before_anything_is_written(tmp_path, data_dir):
    config = tiny_config(data_dir, "default", -5)
    with pytest.raises(ConfigError, match="config.train.steps"):
        Run(config, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    run = Run(tiny_config(data_dir, "default", 6), tmp_path / "good")
    with pytest.raises(ConfigError, match="--max_steps"):
        run.run(max_steps=0)
    assert not (tmp_path / "good" / "checkpoints").exists() or not any((tmp_path / "good" / "checkpoints").iterdir())



@pytest.mark.parametrize("key,where,refused", [
    ("teacher", "final", True),  # the teacher's own training workdir: resumed from, then its final/ replaced
    ("teacher", "final/g_ema.keras", True),
    ("init_from", "checkpoints", True),
    ("kd.face_parsing_weights", "samples/79999_iter.pth", True),
    ("teacher", "teacher.keras", False),  # beside what the run writes: untouched
    ("teacher", "../final", False),
])
def test_inputs_where_the_run_writes_are_refused(tmp_path, data_dir, key, where, refused):
    config = tiny_config(data_dir, "default", 2)
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = str(tmp_path / "w" / where)
    if refused:
        with pytest.raises(UserError, match=rf"config.{key}=.* lies in .*, which this run writes"):
            check_inputs_outside_outputs(config, tmp_path / "w")
    else:
        check_inputs_outside_outputs(config, tmp_path / "w")


def test_the_fid_cache_is_named_by_the_data_it_holds(tmp_path, data_dir):
    """A run resumed with another data source (or size of sample) must not reuse the old statistics."""
    paths = {}
    for name, source, samples in (("a", f"folder:{data_dir}", 8), ("again", f"folder:{data_dir}", 8),
                                  ("other data", f"folder:{tmp_path / 'other'}", 8),
                                  ("more samples", f"folder:{data_dir}", 16)):
        config = tiny_config(data_dir, "default", 2)
        config.data.source, config.eval.fid_samples = source, samples
        run = Run(config, tmp_path / "w")
        paths[name] = run.fid_cache_path()
        run.release()
    assert paths["a"] == paths["again"] and paths["a"].parent == tmp_path / "w"
    assert len({paths["a"], paths["other data"], paths["more samples"]}) == 3


def test_a_damaged_tfrecord_shard_stops_training_naming_the_file(tmp_path, data_dir):
    files = write_tfrecords(data_dir, tmp_path / "shards" / "s", num_shards=2).files
    Path(files[0]).write_bytes(Path(files[0]).read_bytes()[:-100])  # a copy cut short
    config = tiny_config(data_dir, "default", 4)
    config.data.source = f"tfrecord:{tmp_path / 'shards'}"
    with pytest.raises(DamagedDataError, match=f"TFRecord file {files[0]} is damaged: truncated record"):
        Run(config, tmp_path / "w").run()


@pytest.mark.parametrize("workdir,refused", [("images", True), ("images/runs/a", True), ("runs/a", False),
                                             ("images2", False)])
def test_a_workdir_in_the_image_folder_is_refused(tmp_path, workdir, refused):
    config = tiny_config(tmp_path / "images", "default", 2)
    if refused:
        with pytest.raises(UserError, match="lies in the image folder of config.data.source"):
            check_inputs_outside_outputs(config, tmp_path / workdir)
    else:
        check_inputs_outside_outputs(config, tmp_path / workdir)


def test_batch_smaller_than_the_group_size_trains(tmp_path, data_dir):
    """Batch 2 with kd.group_size 4: the D's minibatch stddev takes the whole batch as its one group (it used to
    reshape the batch into chunks of 4 and fail mid-run)."""
    config = tiny_config(data_dir, "default", 1)
    config.train.batch_size = 2
    run = Run(config, tmp_path / "small_batch")
    assert run.run() == 1
    assert run.d.stddev_chunk == 2

@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """An 8 px teacher (the student is 16 px) and a 16 px one with a deeper mapping than the student's."""
    folder = tmp_path_factory.mktemp("teachers")
    tf.keras.utils.set_random_seed(5)
    small = Generator(8, style_dim=8, n_mlp=2, channels=[8, 8, 8, 8])
    deep = Generator(16, style_dim=8, n_mlp=3, channels=[8, 8, 8, 6, 6, 6])
    for g in (small, deep):
        g.build()
    small.save(folder / "small.keras")
    deep.save(folder / "deep.keras")
    return folder


def test_teacher_that_does_not_fit_the_student_is_a_user_error(tmp_path, data_dir, teachers):
    with pytest.raises(UserError, match=r"the teacher's size is 8 but config.generator.size is 16 \(set "):
        Run(tiny_config(data_dir, "default", 6, teacher=str(teachers / "small.keras")), tmp_path / "a")
    with pytest.raises(UserError, match=r"config.kd.load_style copies the teacher's mapping"):
        Run(tiny_config(data_dir, "default", 6, teacher=str(teachers / "deep.keras")), tmp_path / "b")
    config = tiny_config(data_dir, "default", 6)
    config.generator.channels = [8, 6, 6]  # the wrong count for 16 px
    with pytest.raises(UserError, match=r"config.generator: channels for size 16 must have 6 entries"):
        Run(config, tmp_path / "c")


@contextlib.contextmanager
def _lock_held_by_another_process(workdir):
    """A child process holding ``workdir``'s lock, as a first training run would; yields its pid, then SIGKILLs it."""
    code = ("import sys, time; from tf_distill.outputs import WorkdirLock; lock = WorkdirLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code, str(workdir)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout.readline().strip() == "held"
        yield child.pid
    finally:
        child.kill()  # SIGKILL: nothing of the holder's runs, the kernel drops its lock
        child.wait()


def test_a_second_run_on_a_workdir_in_use_is_refused_and_a_killed_runs_lock_does_not_block(tmp_path, data_dir):
    workdir = tmp_path / "run"
    with _lock_held_by_another_process(workdir) as pid:
        with pytest.raises(UserError, match=rf"the workdir {workdir} is in use by another run \(pid {pid} on "):
            Run(tiny_config(data_dir, "default", 6), workdir)
        assert os.listdir(workdir) == [WORKDIR_LOCK]  # the refused run wrote nothing
        lock = WorkdirLock(workdir)
        with pytest.raises(UserError, match="in use by another run"):
            lock.acquire()
    run = Run(tiny_config(data_dir, "default", 6), workdir)  # the holder was SIGKILLed: no stale lock
    with pytest.raises(UserError, match=f"pid {os.getpid()} on "):
        WorkdirLock(workdir).acquire()  # held while the run exists (another process would be refused alike)
    assert run.run(max_steps=1) == 1
    with WorkdirLock(workdir):  # run() released it when it ended
        pass
    assert run.run(max_steps=1) == 2  # and takes it again


@pytest.mark.parametrize("text,fragment", [
    ("{bad", "TF_CONFIG is not JSON"),  # was a JSONDecodeError traceback
    ("[]", 'no "cluster" object'),  # trained alone, silently
    ('{"cluster": {"worker": "x"}, "task": {"type": "worker", "index": 0}}', "not a list of"),  # a TypeError
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 5}}', "task indices 0"),  # a ValueError
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": true}}', "task index True"),
    ('{"cluster": {"worker": ["a:1"]}}', 'no "type" among'),
    ('{"cluster": {"worker": {"x": "a:1"}}, "task": {"type": "worker", "index": 0}}', "task indices"),
])
def test_a_malformed_tf_config_is_one_line_naming_the_fix(text, fragment, monkeypatch):
    from tf_distill.train.strategy import check_tf_config, make_strategy  # pylint: disable=import-outside-toplevel

    with pytest.raises(UserError, match=re.escape(fragment)) as info:
        check_tf_config(text)
    assert "with that worker's index" in str(info.value)
    monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(UserError, match=re.escape(fragment)):
        make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "")
    with pytest.raises(UserError, match="needs TF_CONFIG"):
        make_strategy("multi_worker")
    for good in ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}',
                 '{"cluster": {"chief": ["a:1"], "worker": {"3": "b:2"}}, "task": {"type": "worker", "index": 3}}'):
        assert check_tf_config(good)["cluster"]


def test_non_finite_loss_is_a_one_line_user_error():
    assert issubclass(NonFiniteLossError, UserError)
    assert "\n" not in str(NonFiniteLossError("non-finite loss at step 3:\n{'d_loss': nan}"))


# ---- the binary ----------------------------------------------------------------------------------

def _train_binary(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "tf_distill.bin.train", "--config=configs/demo_teacher.py", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _one_error_line(result):
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


@pytest.mark.slow
def test_binary_refuses_a_bad_value_and_a_foreign_workdir_in_one_line(tmp_path, data_dir):
    workdir = tmp_path / "run"
    line = _one_error_line(_train_binary(f"--workdir={workdir}", f"--config.data.source=folder:{data_dir}",
                                         "--config.train.steps=-5", "--config.log.checkpoint_every=0"))
    assert "config.train.steps" in line and "config.log.checkpoint_every" in line, line
    assert not workdir.exists()  # nothing written, no untrained final/

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    line = _one_error_line(_train_binary(f"--workdir={foreign}", f"--config.data.source=folder:{data_dir}"))
    assert f"--workdir={foreign}" in line and "--overwrite" in line, line
    assert sorted(os.listdir(foreign)) == ["thesis.tex"] and (foreign / "thesis.tex").read_text() == "precious"

    busy = tmp_path / "busy"  # a second command on a workdir whose first run still trains
    with _lock_held_by_another_process(busy) as pid:
        line = _one_error_line(_train_binary(f"--workdir={busy}", f"--config.data.source=folder:{data_dir}"))
    assert f"the workdir {busy} is in use by another run (pid {pid} on " in line, line
    assert os.listdir(busy) == [WORKDIR_LOCK]
