"""Stage 1 (mapping mimicking) under tf.distribute: 2 replicas equal 1 device; killed or stopped runs resume exactly."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tf_distill.models import Generator

from train_helper import save_tiny_teacher, write_random_images

REPO = Path(__file__).resolve().parents[1]

# Runs the heterogeneous student's two stages on one device and on 2 replicas (2 logical CPUs,
# which must be set up before TensorFlow starts: a fresh process) and saves both students' weights.
_CHILD = r"""
import sys
import numpy as np
import tensorflow as tf
from cpu_devices import split_cpu
split_cpu(2)
tf.config.experimental.enable_op_determinism()
from tf_distill.train.loop import Run
from test_stage1_distributed import stage1_config
out, data_dir, teacher, workdir = sys.argv[1:5]
weights = {}
for strategy in ("default", "mirrored"):
    run = Run(stage1_config(data_dir, teacher, strategy, stage1_steps=5, train_steps=1), f"{workdir}/{strategy}")
    assert run.strategy.num_replicas_in_sync == (2 if strategy == "mirrored" else 1)
    assert run.run() == 1
    for name, model in (("g", run.g), ("g_ema", run.g_ema), ("d", run.d)):
        weights.update({f"{strategy}/{name}/{v.path}": v.numpy() for v in model.weights})
np.savez(out, **weights)
"""


def stage1_config(data_dir, teacher, strategy, stage1_steps, train_steps):
    """A tiny heterogeneous student (mapping 32-16, style_dim 16): stage 1, then cheap stage-2 steps (no D)."""
    from train_helper import tiny_config  # pylint: disable=import-outside-toplevel

    c = tiny_config(data_dir, strategy, train_steps, teacher=str(teacher))
    c.generator.update(dict(style_dim=16, mapping_widths=[32, 16]))
    c.kd.update(dict(load_style=False))
    c.train.update(dict(gan=False, path_reg=0.0, ema_decay=0.5))  # a visible EMA: g_ema's mapping is checked
    c.stage1.update(dict(steps=stage1_steps, batch_size=64, lr=0.05))
    c.log.update(dict(checkpoint_every=2))
    return c


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_random_images(tmp_path_factory.mktemp("images"), 16, 16)


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher") / "teacher.keras", style_dim=16)


def _weights(run):
    return {f"{name}/{v.path}": v.numpy() for name, model in (("g", run.g), ("g_ema", run.g_ema), ("d", run.d))
            for v in model.weights}


@pytest.mark.slow
def test_two_replicas_equal_one_device_through_both_stages(tmp_path, data_dir, teacher_path):
    """Stage 1 (5 steps, z batch split across replicas) and a stage-2 step with MirroredStrategy over 2
    logical CPUs give the weights of one device: the mapping to 1e-6."""
    out = tmp_path / "weights.npz"
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", _CHILD, str(out), str(data_dir), str(teacher_path), str(tmp_path)],
                            env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("[stage1] step 5/5") == 2, result.stdout[-3000:]
    saved = np.load(out)
    one = {k[len("default/"):]: saved[k] for k in saved.files if k.startswith("default/")}
    two = {k[len("mirrored/"):]: saved[k] for k in saved.files if k.startswith("mirrored/")}
    assert sorted(one) == sorted(two) and any("/style/" in k for k in one)
    for key in one:
        atol = 1e-6 if "/style/" in key else 1e-5  # style: the mapping network
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=atol, err_msg=key)


@pytest.mark.slow
def test_stage1_killed_or_stopped_resumes_to_the_uninterrupted_run(tmp_path, data_dir, teacher_path, capsys):
    """Stage 1 killed between checkpoints (resumes from stage 1 step 2), stopped by SIGTERM at stage 1
    step 5 (checkpoints there), resumed for one stage-2 step, resumed again: the weights of one
    uninterrupted run, g_ema's mapping included (copied from g once, when stage 1 ends)."""
    from tf_distill.train.loop import Run  # pylint: disable=import-outside-toplevel

    def make(name):
        return Run(stage1_config(data_dir, teacher_path, "default", stage1_steps=6, train_steps=2), tmp_path / name)

    full = make("full")
    assert full.run() == 2
    expected = _weights(full)

    def interrupt(run, at, action):
        real_step = run.mimic.step

        def step():
            loss = real_step()
            if int(run.mimic_step.numpy()) + 1 == at:  # the loop counts the step after it returns
                action()
            return loss

        run.mimic.step = step

    class Killed(Exception):
        pass

    def kill():
        raise Killed  # dies mid-run: nothing is saved

    killed = make("run")
    interrupt(killed, 3, kill)
    with pytest.raises(Killed):
        killed.run()
    assert int(killed.mimic_step.numpy()) == 2  # the step that raised was not counted
    capsys.readouterr()

    stopped = make("run")
    interrupt(stopped, 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert stopped.run() == 0
    out = capsys.readouterr().out
    assert "(stage 1 step 2)" in out and "at stage 1 step 5; checkpoint written" in out, out

    partial = make("run")
    assert partial.run(max_steps=1) == 1
    assert "(stage 1 step 5)" in capsys.readouterr().out

    resumed = make("run")
    assert resumed.run() == 2
    assert "(step 1)" in capsys.readouterr().out
    got = _weights(resumed)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-6, err_msg=key)


def test_stage1_batch_must_split_across_replicas():
    from tf_distill.train.mimic import MappingMimic  # pylint: disable=import-outside-toplevel

    class TwoReplicas:  # only the replica count is read before the check
        num_replicas_in_sync = 2

    g = Generator(8, style_dim=8, channels=[4, 4, 4, 4], mapping_widths=[8])
    with pytest.raises(ValueError, match="stage1.batch_size 5 is not divisible by the 2 replicas"):
        MappingMimic(g, g, batch_size=5, strategy=TwoReplicas())
