"""Gradient sums in a fixed order (train/determinism.py): no AddN of three or more gradients, whose
kernel associates its inputs in a timing-dependent order, is left in a training step's graph."""

import subprocess
import sys

import numpy as np
import tensorflow as tf

from test_kd_step_extras import build, tiny_config, toy_lpips
from tf_distill.train.determinism import deterministic_gradient_sums
from tf_distill.train.step import TrainStep

PROBE = """
import tensorflow as tf
from tf_distill.train.determinism import deterministic_gradient_sums

def widest_addn():
    x = tf.Variable([1.0, 2.0])
    @tf.function
    def grad():
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(tf.sin(x) * 2.0 + tf.sin(x) ** 2 + tf.sin(x) * x)  # sin(x) feeds three ops
        return tape.gradient(y, x)
    graph = grad.get_concrete_function().graph
    return max([len(op.inputs) for op in graph.get_operations() if op.type == "AddN"] or [0]), grad().numpy()

before, g_before = widest_addn()
assert deterministic_gradient_sums()
after, g_after = widest_addn()
print(before, after, abs(g_before - g_after).max())
"""


def _addn_widths(graph_def):
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return [sum(1 for i in n.input if not i.startswith("^")) for n in nodes if n.op == "AddN"]


def test_the_tape_sums_three_gradients_without_addn():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after, diff = out.stdout.split()
    assert int(before) >= 3, "the probe no longer makes an AddN of three gradients: it tests nothing"
    assert int(after) == 0
    assert float(diff) < 1e-6


def test_the_stacked_sum_is_the_sum():
    assert deterministic_gradient_sums()
    x = tf.constant(np.linspace(-2, 2, 7, dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        s = tf.sin(x)
        y = tf.reduce_sum(3.0 * s + s * s + x * s + tf.exp(s))
    c, sn = np.cos(x.numpy()), np.sin(x.numpy())
    want = (3.0 + 2 * sn + x.numpy() + np.exp(sn)) * c + sn
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), want, rtol=1e-6)


def test_a_distillation_step_has_no_addn_of_three_or_more():
    config = tiny_config(batch=4)
    config.train.update(dict(gan=True, path_reg=2.0))
    config.kd.weight_relation = 1.0
    teacher, g, g_ema, d = build(config)
    step = TrainStep(tf.distribute.get_strategy(), g, g_ema, d, config, teacher, lpips=toy_lpips)
    real = tf.random.stateless_uniform([4, 16, 16, 3], [0, 1], -1.0, 1.0)
    flags = step.flags_for(0)
    assert flags == (True, True, True)
    graph_def = step._compiled_step(flags).get_concrete_function(real).graph.as_graph_def()  # pylint: disable=protected-access
    widths = _addn_widths(graph_def)
    assert max(widths or [0]) <= 2, f"AddN with {max(widths)} inputs in the step"
