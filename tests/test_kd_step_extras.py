"""StyleKD step extras of the reference (spec C.4): the path-length gradient through the running
mean, the ``intermediate`` KD mode, and the content-aware mask applied inside the step.

The step's randomness comes from its ``tf.random.Generator``; the tests replay it (``_sample``
from a saved state) to recompute the step's losses and gradients by hand.

    python tests/test_kd_step_extras.py OUT.npz   # the 1- vs 2-replica run (needs its own process)
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tf_distill.losses.gan import path_length_penalty, path_lengths
from tf_distill.models import Discriminator, Generator
from tf_distill.train.config_check import ConfigError, check_config
from tf_distill.train.defaults import default_config
from tf_distill.train.step import TrainStep

STUDENT = [8, 6, 6, 5, 5, 4]
TEACHER = [8, 8, 8, 6, 6, 6]


def brighter_than_mean(t):
    """A mask that depends on the teacher image: the pixels brighter than their image's mean (about half)."""
    x = tf.reduce_mean(t, -1, keepdims=True)
    return tf.cast(x > tf.reduce_mean(x, [1, 2, 3], keepdims=True), t.dtype)


def toy_lpips(x, y):
    """Stands in for LPIPS: nonlinear and asymmetric, so the test sees which images reach it, in which order."""
    return tf.reduce_mean(tf.sqrt(tf.square(x - y) + 1e-2) * (1.5 + tf.tanh(x)), axis=[1, 2, 3])


def tiny_config(batch=4, **kd):
    c = default_config()
    c.generator.update(dict(size=16, style_dim=8, n_mlp=2, channels=STUDENT))
    c.discriminator.channels = [8, 6, 4]
    c.train.update(dict(batch_size=batch, gan=False, path_reg=0.0))
    c.kd.update(dict(weight_l1=3.0, weight_lpips=2.0, weight_relation=0.0, mimic_layers=[1, 2]))
    unknown = set(kd) - set(c.kd.keys())
    assert not unknown, f"not kd keys: {unknown}"  # update() would add them silently
    c.kd.update(kd)
    return c


def build(config, strategy=None, distill=True, seed=0):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        tf.keras.utils.set_random_seed(seed)
        teacher = Generator(16, style_dim=8, n_mlp=2, channels=TEACHER, name="teacher") if distill else None
        g = Generator(16, style_dim=8, n_mlp=2, channels=STUDENT, name="g")
        g_ema = Generator(16, style_dim=8, n_mlp=2, channels=STUDENT, name="g_ema")
        d = Discriminator(16, channels=[8, 6, 4], stddev_chunk=config.kd.group_size, name="d")
        for model in (g, g_ema, d) + ((teacher,) if distill else ()):
            model.build()
        if teacher is not None:
            teacher.trainable = False
    return teacher, g, g_ema, d


class GradRecorder:
    """Stands in for the G optimizer: keeps the last gradient of every variable (None if it got none)."""

    def __init__(self, variables):
        self.slots = {v.path: tf.Variable(tf.zeros(v.shape)) for v in variables}
        self.got = {v.path: tf.Variable(False) for v in variables}

    def apply_gradients(self, pairs):
        for grad, var in pairs:
            self.slots[var.path].assign(grad)
            self.got[var.path].assign(True)

    def grads(self, variables):
        return [self.slots[v.path].numpy() if bool(self.got[v.path].numpy()) else None for v in variables]


def replay_inputs(step, do_pl):
    """The inputs the step's next ``_sample`` will draw, leaving its generator where it was."""
    state = step.rng.state.numpy()
    inputs = step._sample(do_pl)  # pylint: disable=protected-access
    step.rng.reset(state)
    return inputs


def teacher_and_student(step, inputs):
    """(teacher out, student out) of the G step, with the step's noise and offsets, rgb lists included."""
    z1, z2, index, noise = inputs["g"]
    t_noise, s_noise, offsets = inputs["t_noise"], noise, inputs.get("offsets")
    if offsets is not None:
        s_noise = [tf.concat([a, c], 0) for a, c in zip(noise, inputs["g_offset_noise"])]
        t_noise = [tf.concat([a, c], 0) for a, c in zip(t_noise, inputs["t_offset_noise"])]
    kwargs = dict(inject_index=index, offsets=offsets, return_rgb_list=True, return_features=True)
    return step.teacher([z1, z2], noise=t_noise, **kwargs), step.g([z1, z2], noise=s_noise, **kwargs)


def assert_grads_close(got, want, rtol=1e-4):
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.abs(b).max()) + 1e-9)


def max_rel_diff(a_list, b_list):
    return max(float(np.abs(a - b).max()) / (float(np.abs(b).max()) + 1e-12)
               for a, b in zip(a_list, b_list) if a is not None)


# ---- path length ---------------------------------------------------------------------------------

def test_path_length_penalty_gradient_includes_the_running_mean_like_torch_autograd():
    """``mean((pl - m)^2)`` with ``m = pl_mean + decay (mean(pl) - pl_mean)`` differentiated through ``m``,
    as the reference (rosinality ``g_path_regularize``, NVlabs StyleGAN2) does, against PyTorch autograd."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a, theta0 = rng.standard_normal((5, 3)), rng.standard_normal(3)
    pl_mean, decay = 0.7, 0.01

    theta_t = torch.tensor(theta0, requires_grad=True)
    pl_t = torch.sqrt(1 + (torch.tensor(a) @ theta_t) ** 2)  # path lengths as functions of a parameter
    mean_t = pl_mean + decay * (pl_t.mean() - pl_mean)
    (pl_t - mean_t).pow(2).mean().backward()

    theta = tf.Variable(theta0)
    with tf.GradientTape(persistent=True) as tape:
        pl = tf.sqrt(1 + tf.linalg.matvec(tf.constant(a), theta) ** 2)
        penalty, new_mean = path_length_penalty(pl, tf.constant(pl_mean, tf.float64), decay)
        stopped = tf.reduce_mean(tf.square(pl - tf.stop_gradient(new_mean)))  # the old step's form
    grad, grad_stopped = tape.gradient(penalty, theta).numpy(), tape.gradient(stopped, theta).numpy()
    want = theta_t.grad.numpy()
    np.testing.assert_allclose(float(new_mean), mean_t.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, want, rtol=1e-10)
    # the running-mean term: -2 mean(pl - m) * decay * d mean(pl)/d theta
    pl_np = np.sqrt(1 + (a @ theta0) ** 2)
    dpl = (a @ theta0 / pl_np)[:, None] * a
    term = -2 * np.mean(pl_np - float(new_mean)) * decay * dpl.mean(0)
    np.testing.assert_allclose(grad - grad_stopped, term, rtol=1e-8)
    assert np.abs(grad - grad_stopped).max() > 1e-4 * np.abs(want).max()


def test_step_path_length_gradient_keeps_the_running_mean_term():
    """The step's path-length gradients equal the penalty differentiated through the updated running
    mean (recomputed by hand from the replayed inputs), not the stop-gradient version."""
    config = tiny_config()
    config.train.update(dict(path_reg=2.0, path_decay=0.5))  # a large decay makes the term large
    _, g, g_ema, d = build(config, distill=False)
    step = TrainStep(tf.distribute.get_strategy(), g, g_ema, d, config)
    step.pl_mean.assign(0.3)
    step.g_opt = recorder = GradRecorder(g.trainable_variables)
    z1, z2, index, noise, image_noise = replay_inputs(step, do_pl=True)["pl"]
    with tf.GradientTape(persistent=True) as tape:
        pl = path_lengths(g, g._wplus([g.mapping(z1), g.mapping(z2)], index), image_noise, noise=noise)  # pylint: disable=protected-access
        new_mean = 0.3 + 0.5 * (tf.reduce_mean(pl) - 0.3)
        kept = 2.0 * 4 * tf.reduce_mean(tf.square(pl - new_mean))
        stopped = 2.0 * 4 * tf.reduce_mean(tf.square(pl - tf.stop_gradient(new_mean)))
    want = [None if x is None else x.numpy() for x in tape.gradient(kept, g.trainable_variables)]
    old = [None if x is None else x.numpy() for x in tape.gradient(stopped, g.trainable_variables)]

    logs = step.train_step(tf.zeros([4, 16, 16, 3]))
    got = recorder.grads(g.trainable_variables)
    assert sum(x is not None for x in got) > 10
    assert_grads_close(got, want)
    assert max_rel_diff(old, want) > 1e-2  # the stop-gradient version is far off at this decay
    np.testing.assert_allclose(float(logs["path_loss"]), float(kept), rtol=1e-5)
    np.testing.assert_allclose(float(step.pl_mean.numpy()), float(new_mean), rtol=1e-5)


# ---- intermediate mode ---------------------------------------------------------------------------

def test_intermediate_mode_sums_l1_over_every_rgb_skip_unmasked_while_lpips_stays_masked():
    config = tiny_config(mode="intermediate", weight_relation=30.0, content_mask="on", face_parsing_weights=__file__)
    teacher, g, g_ema, d = build(config)
    step = TrainStep(tf.distribute.get_strategy(), g, g_ema, d, config, teacher, lpips=toy_lpips,
                       content_mask_fn=brighter_than_mean)
    inputs = replay_inputs(step, do_pl=False)
    t_out, s_out = teacher_and_student(step, inputs)
    assert len(s_out["rgb_list"]) == 3 and [x.shape[1] for x in s_out["rgb_list"]] == [4, 8, 16]
    want_l1 = sum(np.mean(np.abs(t.numpy() - s.numpy())) for t, s in zip(t_out["rgb_list"], s_out["rgb_list"]))
    t_img, s_img = t_out["image"][:4].numpy(), s_out["image"][:4].numpy()
    mask = brighter_than_mean(t_img).numpy()
    want_lpips = np.mean(toy_lpips(s_img * mask, t_img * mask))
    logs = step.train_step(tf.zeros([4, 16, 16, 3]))
    np.testing.assert_allclose(float(logs["kd_l1"]), want_l1, rtol=1e-5)
    np.testing.assert_allclose(float(logs["kd_lpips"]), want_lpips, rtol=1e-5)
    final_only = np.mean(np.abs(t_img - s_img))
    assert abs(want_l1 - final_only) > 0.1 * final_only  # the skips count


# ---- content mask --------------------------------------------------------------------------------

def test_masked_l1_and_lpips_in_the_step_equal_the_losses_of_the_masked_images():
    """The mask is computed from the teacher's final image, multiplies both final images before
    L1 and LPIPS (first halves, with latent offsets on); the GAN term sees the unmasked student."""
    config = tiny_config(weight_relation=30.0, content_mask="on", face_parsing_weights=__file__)
    config.train.update(dict(gan=True, r1=0.0))
    teacher, g, g_ema, d = build(config)
    step = TrainStep(tf.distribute.get_strategy(), g, g_ema, d, config, teacher, lpips=toy_lpips,
                       content_mask_fn=brighter_than_mean)
    inputs = replay_inputs(step, do_pl=False)
    assert inputs["offsets"].shape == (4, 1, 8)
    t_out, s_out = teacher_and_student(step, inputs)
    t_img, s_img = t_out["image"][:4].numpy(), s_out["image"][:4].numpy()
    mask = brighter_than_mean(t_img).numpy()
    assert 0.3 < mask.mean() < 0.7
    want_l1 = np.mean(np.abs(t_img * mask - s_img * mask))
    want_lpips = np.mean(toy_lpips(s_img * mask, t_img * mask))
    real = tf.random.stateless_normal([4, 16, 16, 3], seed=[0, 1])
    logs = step.train_step(real)
    np.testing.assert_allclose(float(logs["kd_l1"]), want_l1, rtol=1e-5)
    np.testing.assert_allclose(float(logs["kd_lpips"]), want_lpips, rtol=1e-5)
    assert abs(want_l1 - np.mean(np.abs(t_img - s_img))) > 0.1 * want_l1  # the mask matters
    # D was updated before the G step; G not yet when the GAN term was computed
    want_gan = np.mean(tf.nn.softplus(-d(s_img, training=True)))
    np.testing.assert_allclose(float(logs["g_gan"]), want_gan, rtol=1e-5)


def test_the_mask_carries_no_gradient():
    """With a mask that depends differentiably on a student weight, the step's gradients are those of
    the masked losses with the mask held constant (and they differ from the mask-differentiated ones)."""
    config = tiny_config(content_mask="on", face_parsing_weights=__file__)
    teacher, g, g_ema, d = build(config)
    weight = g.trainable_variables[-1]

    def leaky_mask(t):  # a soft mask with a path to the student's weights
        return tf.sigmoid(4.0 * tf.reduce_mean(t, -1, keepdims=True) + tf.reduce_sum(weight))

    step = TrainStep(tf.distribute.get_strategy(), g, g_ema, d, config, teacher, lpips=toy_lpips,
                       content_mask_fn=leaky_mask)
    step.g_opt = recorder = GradRecorder(g.trainable_variables)
    inputs = replay_inputs(step, do_pl=False)
    t_img = teacher_and_student(step, inputs)[0]["image"]

    def loss(mask_fn):
        z1, z2, index, noise = inputs["g"]
        s_img = g([z1, z2], inject_index=index, noise=noise)
        mask = mask_fn(t_img)
        s_m, t_m = s_img * mask, t_img * mask
        return 3.0 * tf.reduce_mean(tf.abs(t_m - s_m)) + 2.0 * tf.reduce_mean(toy_lpips(s_m, t_m))

    with tf.GradientTape(persistent=True) as tape:
        constant, leaking = loss(lambda t: tf.stop_gradient(leaky_mask(t))), loss(leaky_mask)
    want = [None if x is None else x.numpy() for x in tape.gradient(constant, g.trainable_variables)]
    leak = [None if x is None else x.numpy() for x in tape.gradient(leaking, g.trainable_variables)]
    assert np.abs(leak[-1] - want[-1]).max() > 1e-2 * np.abs(want[-1]).max()
    step.train_step(tf.zeros([4, 16, 16, 3]))
    assert_grads_close(recorder.grads(g.trainable_variables), want)


def test_content_mask_needs_a_mask_function():
    config = tiny_config(content_mask="on", face_parsing_weights=__file__)
    teacher, g, g_ema, d = build(config)
    with pytest.raises(ValueError, match="content_mask_fn"):
        TrainStep(tf.distribute.get_strategy(), g, g_ema, d, config, teacher, lpips=toy_lpips)


# ---- config --------------------------------------------------------------------------------------

def checked_config(tmp_path, **kd):
    config = tiny_config(**kd)
    config.teacher = __file__
    config.data.source = f"folder:{tmp_path}"
    return config


def test_kd_mode_and_content_mask_defaults_and_checks(tmp_path):
    c = default_config()
    assert (c.kd.mode, c.kd.content_mask, c.kd.face_parsing_weights) == ("output_only", "off", "")
    check_config(checked_config(tmp_path, mode="intermediate"), num_replicas=1)
    check_config(checked_config(tmp_path, content_mask="on", face_parsing_weights=__file__), num_replicas=1)
    cases = [
        (dict(mode="Intermediate"), r"config\.kd\.mode must be one of \['output_only', 'intermediate'\]"),
        (dict(face_parsing_weights=None), r"config\.kd\.face_parsing_weights must be a path"),
        (dict(content_mask="on"), r"config\.kd\.content_mask is on but config\.kd\.face_parsing_weights is "
                                  r"empty \(give --config\.kd\.face_parsing_weights=79999_iter\.pth"),
        (dict(content_mask="on", face_parsing_weights=str(tmp_path / "79999_iter.pth")),
         r"config\.kd\.face_parsing_weights '.*79999_iter\.pth' is not a file"),
    ]
    for kd, pattern in cases:
        with pytest.raises(ConfigError, match=pattern) as info:
            check_config(checked_config(tmp_path, **kd), num_replicas=1)
        assert "\n" not in str(info.value)


# ---- 2 replicas == 1 device, mask on ---------------------------------------------------------------

def _two_steps(strategy, init=None):
    """Two full steps (D + R1, G + every KD term with the mask, path length) under ``strategy``."""
    config = tiny_config(batch=8, weight_relation=30.0, content_mask="on", face_parsing_weights=__file__)
    config.train.update(dict(gan=True, path_reg=2.0, d_reg_every=1, g_reg_every=1))  # every term, every step
    teacher, g, g_ema, d = build(config, strategy)
    models = dict(teacher=teacher, g=g, g_ema=g_ema, d=d)
    if init is not None:
        for name, model in models.items():
            for v in model.weights:
                v.assign(init[f"{name}/{v.path}"])
    start = {f"{name}/{v.path}": v.numpy() for name, model in models.items() for v in model.weights}
    step = TrainStep(strategy, g, g_ema, d, config, teacher, lpips=toy_lpips, seed=1,
                       content_mask_fn=brighter_than_mean)
    real = tf.random.stateless_uniform([2, 8, 16, 16, 3], seed=[2, 3], minval=-1, maxval=1)
    logs = []
    for i in range(2):
        dataset = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices(real[i]).batch(8))
        logs.append({k: float(v) for k, v in step.train_step(next(iter(dataset))).items()})
    result = {f"{name}/{v.path}": v.numpy() for name, model in models.items() for v in model.weights}
    result["pl_mean"] = step.pl_mean.numpy()
    return start, result, logs


def main():
    from cpu_devices import split_cpu  # pylint: disable=import-outside-toplevel

    split_cpu(2)
    tf.config.experimental.enable_op_determinism()
    start, one, one_logs = _two_steps(tf.distribute.get_strategy())
    _, two, two_logs = _two_steps(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), init=start)
    np.savez(sys.argv[1], **{f"one/{k}": v for k, v in one.items()}, **{f"two/{k}": v for k, v in two.items()},
             one_logs=np.array([[lg[k] for k in sorted(lg)] for lg in one_logs]),
             two_logs=np.array([[lg[k] for k in sorted(lg)] for lg in two_logs]),
             log_keys=np.array(sorted(one_logs[0])), two_log_keys=np.array(sorted(two_logs[0])))


@pytest.mark.slow
def test_two_replicas_equal_one_device_with_the_mask_on(tmp_path):
    out = tmp_path / "run.npz"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{repo}:{repo / 'tests'}", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    r = np.load(out)
    keys = list(r["log_keys"])
    assert keys == list(r["two_log_keys"]) and {"kd_l1", "kd_lpips", "kd_relation", "path_loss", "r1"} <= set(keys)
    np.testing.assert_allclose(r["two_logs"], r["one_logs"], rtol=1e-5, atol=1e-6)
    names = [k[len("one/"):] for k in r.files if k.startswith("one/")]
    assert names and all(f"two/{k}" in r.files for k in names)
    worst = max(float(np.abs(r[f"one/{k}"] - r[f"two/{k}"]).max()) for k in names)
    assert worst <= 1e-5, worst


if __name__ == "__main__":
    main()


def test_the_training_step_runs_the_training_form_everywhere(monkeypatch):
    """D's fakes and the teacher are computed without a tape, yet the step uses the unfused form (the
    reference's) throughout: the inference form is an inference-only speed-up, not a training choice."""
    from tf_distill.layers import modulated  # pylint: disable=import-outside-toplevel

    calls = []
    fused = modulated.ModulatedConv2D.call_inference
    monkeypatch.setattr(modulated.ModulatedConv2D, "call_inference",
                        lambda self, *a, **kw: calls.append(self.name) or fused(self, *a, **kw))
    config = tiny_config(batch=4)
    config.train.update(dict(gan=True, path_reg=2.0))
    teacher, g, g_ema, d = build(config)
    step = TrainStep(tf.distribute.get_strategy(), g, g_ema, d, config, teacher, lpips=toy_lpips)
    real = tf.random.stateless_uniform([4, 16, 16, 3], [0, 1], -1.0, 1.0)
    assert step.flags_for(0) == (True, True, True)
    step.train_step(real)
    assert not calls, f"the training step ran the inference form in {sorted(set(calls))}"
    g(np.zeros((1, 8), np.float32))  # outside the step, inference still uses it
    assert calls
