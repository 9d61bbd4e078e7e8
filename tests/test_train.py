"""Training: distribution equivalence, kill-and-resume, stage 1, regularizers against finite differences."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tf_distill.io import checkpoints
from tf_distill.losses.gan import path_lengths, r1_penalty
from tf_distill.models import Discriminator, Generator
from tf_distill.train.mimic import MappingMimic

from train_helper import save_tiny_teacher, write_random_images

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "train_helper.py"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_random_images(tmp_path_factory.mktemp("images"), 24, 16)


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher") / "teacher.keras")


def _train(tmp_path, name, data_dir, strategy, steps, max_steps=None, *overrides, wait=True, out=None, env=None):
    out = out or tmp_path / f"{name}.npz"
    cmd = [sys.executable, str(HELPER), str(out), str(tmp_path / name), str(data_dir), strategy, str(steps),
           "-" if max_steps is None else str(max_steps), *overrides]
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), out
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return np.load(out), result.stdout


def _assert_same(a, b, atol):
    keys = [k for k in a.files if k != "step"]
    assert keys == [k for k in b.files if k != "step"]
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in keys)
    assert worst <= atol, worst


@pytest.mark.slow
def test_mirrored_two_replicas_equal_one_device(tmp_path, data_dir, teacher_path):
    """A distillation step (D + R1, G + KD losses, path length, EMA) on 2 logical CPUs equals 1 device."""
    one, _ = _train(tmp_path, "one", data_dir, "default", 1, None, f"teacher={teacher_path}")
    two, _ = _train(tmp_path, "two", data_dir, "mirrored", 1, None, f"teacher={teacher_path}")
    _assert_same(one, two, atol=1e-5)
    start = np.load(tmp_path / "one.npz")
    assert int(start["step"]) == 1


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_multi_worker_two_processes_agree_with_one_worker(tmp_path, data_dir, teacher_path):
    """Two distillation steps by 2 worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy, one
    CPU replica each, sharding "data" so both see the batches one worker would) equal 1 worker."""
    overrides = (f"teacher={teacher_path}", "data.sharding=data")
    one, _ = _train(tmp_path, "one", data_dir, "default", 2, None, *overrides)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(_train(tmp_path, "multi", data_dir, "multi_worker", 2, None, *overrides, wait=False,
                              out=tmp_path / f"multi_{index}.npz", env={"TF_CONFIG": tf_config}))
    logs = []
    for proc, _ in workers:
        try:
            logs.append(proc.communicate(timeout=900)[0])
        finally:
            proc.kill()
        assert proc.returncode == 0, logs[-1][-3000:]
    assert "[train] step 2/2" in logs[0] and "[train] step 2/2" in logs[1]
    chief, other = (np.load(out) for _, out in workers)
    _assert_same(chief, other, atol=0.0)  # the workers hold the same (mirrored) weights
    _assert_same(one, chief, atol=1e-5)
    assert int(chief["step"]) == 2
    # Only the chief's checkpoint is kept; the other worker's scratch copy is gone.
    assert (tmp_path / "multi" / "checkpoints" / "checkpoint").exists()
    assert not list((tmp_path / "multi").glob(".worker_*"))


@pytest.mark.slow
def test_sigterm_and_sigkill_resume_reach_the_uninterrupted_weights(tmp_path, data_dir):
    full, _ = _train(tmp_path, "full", data_dir, "default", 6)
    # SIGTERM: the run checkpoints at the step it is on and exits cleanly; a rerun finishes the job.
    proc, _ = _train(tmp_path, "term", data_dir, "default", 6, None, "log.checkpoint_every=100", wait=False)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "[train] step 2/" in line:
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0, "".join(lines[-20:])
    assert any("stopped by signal" in line for line in lines), "".join(lines[-20:])
    resumed, out = _train(tmp_path, "term", data_dir, "default", 6)
    assert "resumed from" in out
    _assert_same(full, resumed, atol=1e-6)
    # SIGKILL between checkpoints (every 2 steps): the rerun starts from the last checkpoint.
    proc, _ = _train(tmp_path, "kill", data_dir, "default", 6, wait=False)
    for line in proc.stdout:
        if "[train] step 5/" in line:
            proc.kill()
            break
    proc.wait(timeout=60)
    resumed, out = _train(tmp_path, "kill", data_dir, "default", 6)
    assert "(step 4)" in out
    _assert_same(full, resumed, atol=1e-6)


def test_stage1_lowers_the_mimicking_loss():
    tf.keras.utils.set_random_seed(0)
    teacher = Generator(8, style_dim=8, n_mlp=3, channels=[4, 4, 4, 4])
    student = Generator(8, style_dim=8, channels=[4, 4, 4, 4], mapping_widths=[16, 8])
    teacher.build()
    student.build()
    mimic = MappingMimic(student, teacher, batch_size=256, lr=0.01)
    z = tf.random.stateless_normal([512, 8], seed=[0, 1])
    before = float(mimic.distance(z))
    for _ in range(150):
        mimic.step()
    after = float(mimic.distance(z))
    assert after < 0.5 * before, (before, after)


def test_r1_and_path_length_against_finite_differences():
    tf.keras.utils.set_random_seed(1)
    d = Discriminator(8, channels=[4, 4], stddev_group=2)
    d.build()
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float64)
    eps = 1e-3
    grad = np.zeros_like(x)
    flat = grad.reshape(-1)
    for i in range(0, flat.size, 17):  # a sample of coordinates
        e = np.zeros(x.size)
        e[i] = eps
        e = e.reshape(x.shape)
        flat[i] = (float(tf.reduce_sum(d((x + e).astype(np.float32)))) -
                   float(tf.reduce_sum(d((x - e).astype(np.float32))))) / (2 * eps)
    with tf.GradientTape() as tape:
        xt = tf.constant(x, tf.float32)
        tape.watch(xt)
        total = tf.reduce_sum(d(xt))
    auto = tape.gradient(total, xt).numpy().reshape(-1)
    idx = np.arange(0, flat.size, 17)
    np.testing.assert_allclose(auto[idx], flat[idx], rtol=2e-2, atol=2e-3)
    np.testing.assert_allclose(r1_penalty(d, x.astype(np.float32)), np.mean(np.sum(auto.reshape(x.shape) ** 2,
                                                                                      axis=(1, 2, 3))), rtol=1e-5)

    g = Generator(8, style_dim=4, n_mlp=1, channels=[4, 4, 4, 4])
    g.build()
    w = np.random.default_rng(1).standard_normal((1, g.n_latent, 4)).astype(np.float32)
    img_noise = np.random.default_rng(2).standard_normal((1, 8, 8, 3)).astype(np.float32) / 8
    fd = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        e = np.zeros_like(w)
        e[idx] = 1e-2
        f = lambda v: float(tf.reduce_sum(g(v, input_is_latent=True, randomize_noise=False) * img_noise))
        fd[idx] = (f(w + e) - f(w - e)) / 2e-2
    expect = np.sqrt(np.mean(np.sum(fd ** 2, axis=2), axis=1))
    got = path_lengths(g, w, img_noise, randomize_noise=False).numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-2)


def test_distilled_checkpoint_loads_back(tmp_path, data_dir, teacher_path):
    _train(tmp_path, "kd", data_dir, "default", 2, None, f"teacher={teacher_path}")
    models = checkpoints.load_models(tmp_path / "kd" / "final")
    assert sorted(models) == ["d", "g", "g_ema"]
    assert (tmp_path / "kd" / "samples").is_dir()


def test_checkpoint_names_every_variable(tmp_path):
    """tf.train.Checkpoint misses Keras 3's tracked lists; ours names every variable and restores them all."""
    from tf_distill.train.loop import variables_by_path  # pylint: disable=import-outside-toplevel
    from tf_distill.train.optim import TorchAdam  # pylint: disable=import-outside-toplevel

    def make(seed):
        tf.keras.utils.set_random_seed(seed)
        g = Generator(16, style_dim=8, n_mlp=2, channels=[8] * 6, name="g")
        g.build()
        opt = TorchAdam()
        opt.build(g.trainable_variables)
        for v in opt.variables[2:]:
            v.assign(tf.random.normal(v.shape))
        return g, opt

    g, opt = make(0)
    path = tf.train.Checkpoint(**variables_by_path("g", g), **variables_by_path("opt", opt)).save(tmp_path / "ck")
    saved = [n for n, _ in tf.train.list_variables(path) if n not in ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")]
    assert len(saved) == len(g.weights) + len(opt.variables)
    g2, opt2 = make(1)
    tf.train.Checkpoint(**variables_by_path("g", g2), **variables_by_path("opt", opt2)).restore(
        path).assert_consumed()
    for a, b in zip(g.weights + opt.variables, g2.weights + opt2.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
    """A NaN in D's weights after a checkpoint (as a diverged update would leave them): the step's
    losses are NaN, training stops with NonFiniteLossError naming them, nothing is written, and
    the latest checkpoint is still the good one."""
    from tf_distill.train.loop import NonFiniteLossError, Run  # pylint: disable=import-outside-toplevel
    from train_helper import tiny_config  # pylint: disable=import-outside-toplevel

    run = Run(tiny_config(data_dir, "default", 6), tmp_path / "nan")
    assert run.run(max_steps=2) == 2
    good = {v.path: v.numpy() for v in run.d.weights}
    real_step = run.step.train_step

    def diverged_step(batch):  # run() restores the checkpoint first, so the NaN goes in just before the step
        weight = run.d.trainable_weights[0]
        weight.assign(tf.fill(weight.shape, np.float32(np.nan)))
        return real_step(batch)

    run.step.train_step = diverged_step
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3: \{.*d_loss"):
        run.run()
    latest = tf.train.latest_checkpoint(tmp_path / "nan" / "checkpoints")
    assert latest.endswith("ckpt-2"), latest
    resumed = Run(tiny_config(data_dir, "default", 6), tmp_path / "nan")
    assert resumed.restore() == latest and int(resumed.step.step.numpy()) == 2
    for v in resumed.d.weights:
        np.testing.assert_array_equal(v.numpy(), good[v.path])
    assert not (tmp_path / "nan" / "final").exists()
