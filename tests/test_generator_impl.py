"""The generator and discriminator give the same outputs and gradients with the custom ops and the reference ops,
and the implementation given to a model (or a scope) reaches every op it runs."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import load_npz, state_dict_of
from tf_distill.convert import rosinality
from tf_distill.losses.gan import path_lengths, r1_penalty
from tf_distill import ops
from tf_distill.models import Discriminator, Generator
from tf_distill.ops import _loader


@pytest.fixture(autouse=True)
def _needs_library():
    if _loader.custom_ops_library() is None:
        pytest.fail(f"custom ops library not available ({_loader.unavailable_reason()}); build it with "
                    "custom_ops/build.sh (the README's test command does)")


def _with_impl(impl, fn):
    with ops.implementation(impl):
        return fn()


def test_generator_same_images_features_and_path_lengths():
    data = load_npz("g_teacher32.npz")
    g = rosinality.generator_from_state_dict(state_dict_of(data))
    noise = [tf.constant(np.moveaxis(data[f"inputs/noise_{j}"], 1, -1)) for j in range(g.num_layers)]

    def run():
        out = g([data["inputs/z1"], data["inputs/z2"]], inject_index=5, offsets=data["case_d/offsets"],
                noise=noise, return_features=True)
        pl = path_lengths(g, data["case_pl/wplus"], np.moveaxis(data["case_pl/image_noise"], 1, -1),
                          noise=[n[:4] for n in noise])
        return out["image"].numpy(), [f.numpy() for f in out["features"]], pl.numpy()

    ref, custom = _with_impl("ref", run), _with_impl("custom", run)
    # float32 round-off of differently ordered sums, relative to the largest magnitude (images reach about 4)
    for a, b in zip([custom[0]] + custom[1], [ref[0]] + ref[1]):
        np.testing.assert_allclose(a, b, atol=1e-5 * max(1.0, float(np.max(np.abs(b)))))
    np.testing.assert_allclose(custom[2], ref[2], rtol=1e-5)


def test_discriminator_same_logits_and_r1_gradients():
    data = load_npz("d32.npz")
    d = rosinality.discriminator_from_state_dict(state_dict_of(data))
    images = np.moveaxis(data["inputs/images"], 1, -1)

    def run():
        with tf.GradientTape() as tape:
            r1 = r1_penalty(d, images)  # second order through upfirdn2d and bias-act
        grads = tape.gradient(r1, d.trainable_variables)
        # A disconnected gradient (None) and an all-zero one are the same: R1 is piecewise constant in the biases.
        return d(images).numpy(), r1.numpy(), [np.zeros(v.shape) if g is None else g.numpy()
                                               for g, v in zip(grads, d.trainable_variables)]

    ref, custom = _with_impl("ref", run), _with_impl("custom", run)
    np.testing.assert_allclose(custom[0], ref[0], atol=1e-5)
    np.testing.assert_allclose(custom[1], ref[1], rtol=1e-4)
    for a, b in zip(custom[2], ref[2]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


def _op_types(model, spec, grad=False):
    """Op types of the graph of ``model(x)`` (and of its gradient w.r.t. x), traced now."""
    @tf.function
    def fn(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = model(x)
        return tape.gradient(y, x) if grad else y

    graph = fn.get_concrete_function(spec).graph
    types = {op.type for op in graph.get_operations()}
    for f in graph._functions.values():  # pylint: disable=protected-access
        types |= {node.op for node in f.definition.node_def}
    return types


CUSTOM_OPS = {"TfDistill>UpFirDn2d", "TfDistill>FusedBiasAct"}
REF_OPS = {"DepthwiseConv2dNative", "SelectV2"}  # reference upfirdn2d and leaky ReLU (a select)


def _tiny_models(impl):
    g = Generator(8, style_dim=8, n_mlp=2, channels=[4, 4, 4, 4], impl=impl)
    d = Discriminator(8, channels=[4, 4], impl=impl)
    g.build()
    d.build()
    return (g, tf.TensorSpec([2, 8])), (d, tf.TensorSpec([4, 8, 8, 3]))


@pytest.mark.parametrize("impl,scope", [("ref", "custom"), ("custom", "ref")])
def test_model_impl_reaches_every_op_and_beats_the_scope(impl, scope):
    for model, spec in _tiny_models(impl):
        with ops.implementation(scope):
            types = _op_types(model, spec, grad=isinstance(model, Discriminator))
        present, absent = (REF_OPS, CUSTOM_OPS) if impl == "ref" else (CUSTOM_OPS, REF_OPS)
        assert present <= types and not absent & types, (type(model).__name__, impl, sorted(types))


def test_model_without_impl_follows_the_scope_and_does_not_save_it():
    (g, g_spec), (d, d_spec) = _tiny_models(None)
    for model, spec in ((g, g_spec), (d, d_spec)):
        for scope, present, absent in (("ref", REF_OPS, CUSTOM_OPS), ("custom", CUSTOM_OPS, REF_OPS)):
            with ops.implementation(scope):
                types = _op_types(model, spec)
            assert present <= types and not absent & types, (type(model).__name__, scope, sorted(types))
    saved = Generator(8, style_dim=8, n_mlp=2, channels=[4, 4, 4, 4], impl="custom")
    assert "impl" not in saved.get_config()  # a saved model must not pin this machine's choice
    assert Generator.from_config(saved.get_config()).impl is None
    with pytest.raises(ValueError, match="impl='fast' is not one of auto, ref, custom"):
        Generator(8, style_dim=8, channels=[4, 4, 4, 4], impl="fast")
