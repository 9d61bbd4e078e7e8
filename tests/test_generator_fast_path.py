"""The generator's inference form (layers/modulated.py: styles folded into weights, per-sample synthesis,
ToRGB as a matmul, polyphase skip upsampling) is the same function as the unfused training form, to
float32 round-off, and is used exactly when no gradient is recorded."""

import numpy as np
import pytest
import tensorflow as tf

from tf_distill.layers import EqualDense, forms, modulated
from tf_distill.models import Generator
from tf_distill.ops import conv3x3
from tf_distill.ops.upfirdn2d import filter2d_separable, setup_kernel, upfirdn2d_ref, upsample2d_polyphase

# 32 px, 16-channel blocks from 16 px on: 9 * 16 < 16^2, so blocks 2.. run per sample and fold.
# The 20- and 12-channel layers are widened to 24 and 16 in the inference form (CHANNEL_ALIGN 8).
CHANNELS = [32, 32, 20, 20, 16, 16, 12, 12]
SEEDS = 16
RTOL = 1e-5  # of the largest output magnitude: float32 round-off of differently ordered sums


@pytest.fixture(scope="module")
def generator():
    g = Generator(32, style_dim=32, n_mlp=2, channels=CHANNELS, impl="ref")
    g.build()
    rng = np.random.default_rng(0)
    # Biases, noise strengths and modulation biases start at 0 or 1: random values make every term count.
    g.set_weights([rng.standard_normal(w.shape).astype(np.float32) * (0.5 if w.ndim == 1 else 1.0)
                   for w in g.get_weights()])
    return g


def z_of(seeds, dim=32):
    return np.stack([np.random.default_rng(s).standard_normal(dim).astype(np.float32) for s in seeds])


def run(g, z, fold, **kw):
    with forms.inference_form(fold):
        out = g(z, return_rgb_list=True, return_features=True, **kw)
    return [out["image"].numpy()] + [t.numpy() for t in out["rgb_list"]] + [t.numpy() for t in out["features"]]


def assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=RTOL * float(np.max(np.abs(b))))


def test_blocks_from_16px_run_per_sample(generator):
    assert generator.synthesis.per_sample_from() == 2


@pytest.mark.parametrize("batch", [1, 3, SEEDS])
def test_inference_form_equals_unfused_form(generator, batch):
    z = z_of(range(SEEDS))
    for start in range(0, SEEDS, batch):
        chunk = z[start:start + batch]
        assert_same(run(generator, chunk, True, randomize_noise=False), run(generator, chunk, False,
                                                                            randomize_noise=False))


def test_inference_form_with_explicit_noise_mixing_and_offsets(generator):
    z1, z2 = z_of(range(4)), z_of(range(10, 14))
    rng = np.random.default_rng(1)
    # offsets double the batch: the noise covers all 8 rows
    noise = [rng.standard_normal((8, r, r, 1)).astype(np.float32) for r in generator.synthesis.noise_shapes()]
    noise[3] = noise[3][:1]  # a map shared by the batch
    offsets = rng.standard_normal((4, 1, 32)).astype(np.float32)
    kw = dict(inject_index=3, noise=noise, offsets=offsets, truncation=0.7)
    assert_same(run(generator, [z1, z2], True, **kw), run(generator, [z1, z2], False, **kw))


def test_traced_with_unknown_batch_as_the_serving_graph(generator):
    """The SavedModel traces with an unknown batch size: the per-sample loop then runs in the graph."""
    z = z_of(range(SEEDS))
    with forms.inference_form(True):
        fn = tf.function(lambda z: generator(z, randomize_noise=False),
                         input_signature=[tf.TensorSpec([None, 32], tf.float32)])
        images = [fn(z).numpy(), fn(z[:1]).numpy()]
    want = run(generator, z, False, randomize_noise=False)[0]
    assert_same(images, [want, want[:1]])


def test_inference_form_only_without_a_tape(generator, monkeypatch):
    calls = []
    unfused = modulated.ModulatedConv2D.call
    monkeypatch.setattr(modulated.ModulatedConv2D, "call", lambda self, *a: calls.append(1) or unfused(self, *a))
    z = z_of(range(3))
    generator(z)
    assert not calls, "inference ran the unfused convs"
    with tf.GradientTape():
        generator(z)
    assert len(calls) == len(generator.synthesis.convs) + 1 + len(generator.synthesis.to_rgbs) + 1
    calls.clear()
    with forms.inference_form(False):
        generator(z)
    assert calls, "inference_form(False) did not switch the inference form off"


def _conv_filters_depend_on_z(graph):
    """Names of the conv ops whose filter input depends on the graph's z placeholder."""
    found = []
    for op in graph.get_operations():
        if op.type not in ("Conv2D", "Conv2DBackpropInput", "BatchMatMulV2", "BatchMatMulV3"):
            continue
        filt = op.inputs[1]
        seen, stack = set(), [filt.op]
        while stack:
            node = stack.pop()
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.type == "Placeholder" and node.outputs[0].dtype == tf.float32 and node.outputs[0].shape.rank == 2:
                found.append(op.name)
                break
            stack.extend(t.op for t in node.inputs)
    return found


def _conv_widths(fn, batch):
    graph = fn.get_concrete_function(tf.TensorSpec([batch, 32], tf.float32)).graph
    return sorted({op.outputs[0].shape[-1] for op in graph.get_operations()
                   if op.type in ("Conv2D", "Conv2DBackpropInput", "TfDistill>Conv3x3")
                   and "to_rgb" not in op.name})  # not the skips


@pytest.mark.parametrize("folding, batch", [(True, 1), (False, 3)])
def test_inference_form_widens_pruned_layers_for_tensorflows_own_convs(generator, folding, batch, monkeypatch):
    """Where TensorFlow runs its CPU convs without oneDNN (Eigen) every conv of the inference form writes a
    multiple of CHANNEL_ALIGN channels (20 -> 24, 12 -> 16: the widths those convs run fastest at); the
    training form keeps the model's own widths."""
    monkeypatch.setattr(conv3x3._loader, "onednn_convs", lambda: False)
    assert modulated.CHANNEL_ALIGN == 8 and [modulated.aligned(c) for c in (12, 16, 20)] == [16, 16, 24]
    with modulated.weight_folding(folding):
        widths = _conv_widths(tf.function(lambda z: generator(z, randomize_noise=False)), batch)
    assert widths == [16, 24, 32]
    with forms.inference_form(False):
        assert _conv_widths(tf.function(lambda z: generator(z, randomize_noise=False)), batch) == [12, 16, 20, 32]


@pytest.mark.parametrize("folding, batch", [(True, 1), (False, 3)])
def test_inference_form_keeps_pruned_widths_for_onednn_convs(generator, folding, batch, monkeypatch):
    """oneDNN's convs run the pruned widths as fast, so where TensorFlow uses them (and no compiled direct conv
    runs) the inference form keeps the model's widths, the same function."""
    monkeypatch.setattr(conv3x3._loader, "onednn_convs", lambda: True)
    monkeypatch.setattr(conv3x3._loader, "vector_cpu_only", lambda: True)
    z = z_of(range(batch))
    with modulated.weight_folding(folding):
        fn = tf.function(lambda z: generator(z, randomize_noise=False))
        assert _conv_widths(fn, batch) == [12, 16, 20, 32]
        got = fn(z).numpy()
    assert_same([got], run(generator, z, False, randomize_noise=False)[:1])


@pytest.mark.skipif(not conv3x3._loader.vector_cpu_only(), reason="the compiled direct conv runs on vector CPUs only")
def test_inference_form_widens_the_layers_the_direct_conv_runs(generator, monkeypatch):
    """With oneDNN's convs, exactly the layers whose conv is the compiled direct conv (here those with inputs
    from 16 px on) write aligned widths, a folded direct conv reads only the real channels of a widened input,
    the other layers' epilogues are compiled passes, folded, the last conv stores only its ToRGB's 3 channels
    (``ToRGB.after_conv``: the image is all the call returns), and the result is the same."""
    monkeypatch.setattr(conv3x3._loader, "onednn_convs", lambda: True)
    monkeypatch.setattr(conv3x3, "DIRECT_MIN_WIDTH", 16)
    g = Generator(32, style_dim=32, n_mlp=2, channels=CHANNELS, impl="custom")
    g.build()
    g.set_weights(generator.get_weights())
    z = z_of(range(2))
    for folding, batch in ((True, 1), (True, 2), (False, 2)):  # one sample, or the whole batch at once
        with modulated.weight_folding(folding):
            fn = tf.function(lambda z: g(z, randomize_noise=False))
            ops = fn.get_concrete_function(tf.TensorSpec([batch, 32], tf.float32)).graph.get_operations()
            got = fn(z[:batch]).numpy()
        direct = sorted({op.outputs[0].shape[-1] for op in ops if op.type == "TfDistill>Conv3x3"})
        reads = sorted({(op.inputs[0].shape[-1], op.inputs[1].shape[-2]) for op in ops
                        if op.type == "TfDistill>Conv3x3"})
        tf_convs = sorted({op.outputs[0].shape[-1] for op in ops
                           if op.type in ("Conv2D", "Conv2DBackpropInput") and "to_rgb" not in op.name})
        # The 12-channel convs from 16 px on run the direct conv, widened to 16 (folded, the last one projected to
        # RGB); the 20-channel ones at 8 px stay TensorFlow's (oneDNN), unwidened.
        assert direct == ([3, 16] if folding else [16]) and tf_convs == [16, 20, 32]
        projected = [op for op in ops if op.type == "TfDistill>Conv3x3" and op.inputs[2].shape.num_elements()]
        assert [op.inputs[2].shape.as_list() for op in projected] == ([[batch, 16, 3]] if folding else [])
        # Folded, the 32 px conv's weight takes the 12 real channels of its widened input; scaled activations
        # (no folding) keep the zero weights.
        assert reads == ([(16, 12), (16, 16)] if folding else [(16, 16)])
        # The layers that scale their activations (TensorFlow's convs here) end in one compiled epilogue pass.
        assert "TfDistill>Epilogue" in {op.type for op in ops}
        assert_same([got], run(generator, z[:batch], False, randomize_noise=False)[:1])


def test_channel_widening_off_keeps_the_model_widths(generator):
    """channel_widening(False) (TFLite: XNNPACK runs any width as fast) keeps the inference form at the
    model's own widths, the same function."""
    z = z_of(range(3))
    with modulated.weight_folding(False), modulated.channel_widening(False):
        fn = tf.function(lambda z: generator(z, randomize_noise=False))
        assert _conv_widths(fn, 3) == [12, 16, 20, 32]
        got = fn(z).numpy()
    assert_same([got], run(generator, z, False, randomize_noise=False)[:1])


@pytest.mark.parametrize("batch", [1, 3])
def test_weight_folding_off_keeps_constant_conv_weights(generator, batch):
    """weight_folding(False) (TFLite's XNNPACK wants constant weights): no conv or matmul weight depends
    on z, the rest of the inference form stays, and the result is the same function."""
    z = z_of(range(batch))
    with modulated.weight_folding(False):
        fn = tf.function(lambda z: generator(z, randomize_noise=False))
        graph = fn.get_concrete_function(tf.TensorSpec([batch, 32], tf.float32)).graph
        got = fn(z).numpy()
    assert not _conv_filters_depend_on_z(graph)
    assert "LeakyRelu" in {op.type for op in graph.get_operations()}, "the inference form was switched off"
    with modulated.weight_folding(True):
        folded_graph = tf.function(lambda z: generator(z, randomize_noise=False)).get_concrete_function(
            tf.TensorSpec([batch, 32], tf.float32)).graph
    assert _conv_filters_depend_on_z(folded_graph), "the check cannot see folded weights"
    assert_same([got], run(generator, z, False, randomize_noise=False)[:1])


def test_gradients_flow_through_the_inference_form(generator):
    """A function traced without a tape and differentiated later still has the right gradients."""
    w = tf.constant(np.random.default_rng(2).standard_normal((2, 32)).astype(np.float32))
    with forms.inference_form(True):
        fast = tf.function(lambda w: generator(w, input_is_latent=True, randomize_noise=False))
        fast(w)  # traced outside any tape: the inference form

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch(w)
            loss = tf.reduce_sum(fn(w) ** 2)
        return tape.gradient(loss, w).numpy()

    slow = grads(lambda w: generator(w, input_is_latent=True, randomize_noise=False))
    np.testing.assert_allclose(grads(fast), slow, atol=1e-4 * np.max(np.abs(slow)))


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_inference_form_is_one_leaky_relu(use_bias):
    """A mapping layer's inference form is the reference's fused bias + leaky ReLU * sqrt(2), as one
    LeakyRelu op (no Greater / Select, which TFLite's XNNPACK would not run)."""
    layer = EqualDense(24, lr_mul=0.01, bias_init=0.3, activation="lrelu", use_bias=use_bias, impl="ref")
    x = np.random.default_rng(6).standard_normal((5, 16)).astype(np.float32)
    layer.build(x.shape)
    traced = tf.function(layer).get_concrete_function(tf.TensorSpec(x.shape, tf.float32))
    kinds = [op.type for op in traced.graph.get_operations()]
    assert kinds.count("LeakyRelu") == 1 and "Select" not in kinds and "SelectV2" not in kinds, kinds
    with forms.inference_form(False):
        want = layer(x).numpy()
    np.testing.assert_allclose(traced(tf.constant(x)).numpy(), want, atol=1e-6 * np.max(np.abs(want)))


def transposed_conv_numpy(x, w):
    """VALID stride-2 transposed conv by scattering: out[2m + i, 2n + j] += x[m, n] @ w[i, j] (the reference's)."""
    b, h, _, _ = x.shape
    k = w.shape[0]
    out = np.zeros((b, 2 * h + k - 2, 2 * h + k - 2, w.shape[3]))
    for i in range(k):
        for j in range(k):
            out[:, i:i + 2 * h:2, j:j + 2 * h:2] += np.einsum("bhwc,cd->bhwd", x.astype(np.float64), w[i, j])
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_phase_convs_are_the_transposed_conv(k):
    """A stride-1 conv per output phase + concat + depth_to_space = the transposed conv (then zero rows)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    w = rng.standard_normal((k, k, 3, 4)).astype(np.float32)
    got = modulated.transposed_conv_as_phases(tf.constant(x), tf.constant(w)).numpy()
    want = transposed_conv_numpy(x, w)
    n = want.shape[1]
    assert modulated.phase_extra_rows(k) == k % 2
    assert got.shape[1:3] == (n + k % 2, n + k % 2) and not got[:, n:].any() and not got[:, :, n:].any()
    np.testing.assert_allclose(got[:, :n, :n], want, atol=1e-5 * np.max(np.abs(want)))


@pytest.mark.parametrize("form", ["inference", "unfused"])
def test_phase_upsampling_is_the_same_generator(generator, form):
    """With ``phase_upsampling`` (TFLite's form) the generator is the same function, and it has the same
    gradients, in the inference form (batch 1 and 3) and the training form."""
    z = z_of(range(4))
    for chunk in (z[:1], z[1:]):
        want = run(generator, chunk, form == "inference", randomize_noise=False)
        with modulated.phase_upsampling(True):
            assert_same(run(generator, chunk, form == "inference", randomize_noise=False), want)
    if form == "unfused":
        w = tf.constant(z[:2])

        def grads():
            with tf.GradientTape() as tape:
                tape.watch(w)
                loss = tf.reduce_sum(generator(w, input_is_latent=True, randomize_noise=False) ** 2)
            return tape.gradient(loss, w).numpy()

        want = grads()
        with modulated.phase_upsampling(True):
            np.testing.assert_allclose(grads(), want, atol=1e-4 * np.max(np.abs(want)))


@pytest.mark.parametrize("kshape, pad, size", [("fir", (2, 1), 8), ((4, 4), (2, 1), 5), ((3, 3), (1, 1), 6),
                                               ((2, 2), (0, 1), 4), ((5, 5), (3, 3), 7), ((6, 6), (1, 0), 5)])
def test_polyphase_upsample_equals_upfirdn2d(kshape, pad, size):
    rng = np.random.default_rng(3)
    kernel = setup_kernel([1, 3, 3, 1], gain=4.0) if kshape == "fir" else rng.standard_normal(kshape).astype(
        np.float32)
    x = rng.standard_normal((2, size, size, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    want = upfirdn2d_ref(x, kernel, up=2, pad=pad).numpy()
    got = upsample2d_polyphase(x, kernel, pad).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-6 * np.max(np.abs(want)) * 10)
    got = upsample2d_polyphase(x, kernel, pad, bias=bias).numpy()  # the bias on the phases' conv
    np.testing.assert_allclose(got, want + bias, atol=1e-6 * np.max(np.abs(want + bias)) * 10)


def test_polyphase_upsample_rejects_what_it_does_not_cover():
    x = np.zeros((1, 6, 6, 3), np.float32)
    with pytest.raises(ValueError, match="even output"):
        upsample2d_polyphase(x, np.ones((4, 4), np.float32), (0, 0))
    with pytest.raises(ValueError, match="square kernel"):
        upsample2d_polyphase(x, np.ones((4, 3), np.float32), (2, 1))


@pytest.mark.parametrize("impl, onednn", [("ref", False), ("ref", True), ("auto", False)])
@pytest.mark.parametrize("taps, gain, pad", [((1, 3, 3, 1), 4.0, (1, 1)), ((1, 2, 5), 1.0, (2, 0)),
                                             ((1, 3, 3, 1), 1.0, (-1, 2))])
def test_separable_filter_equals_upfirdn2d(impl, onednn, taps, gain, pad, monkeypatch):
    """Each form of the reference (two 1-D passes; one 2-D pass where the convs are oneDNN's) and the compiled
    kernel."""
    monkeypatch.setattr(conv3x3._loader, "onednn_convs", lambda: onednn)
    x = np.random.default_rng(4).standard_normal((2, 9, 9, 5)).astype(np.float32)
    want = upfirdn2d_ref(x, setup_kernel(taps, gain), pad=pad).numpy()
    got = filter2d_separable(x, taps, gain=gain, pad=pad, impl=impl).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-6 * np.max(np.abs(want)))


def test_inference_form_with_the_compiled_ops(generator, monkeypatch):
    """impl="auto" (the custom kernels where built): the inference form still equals the unfused reference,
    with the compiled direct conv on every layer (its minimum width lowered to this 32 px model's)."""
    monkeypatch.setattr(conv3x3, "DIRECT_MIN_WIDTH", 4)
    g = Generator(32, style_dim=32, n_mlp=2, channels=CHANNELS, impl="auto")
    g.build()
    g.set_weights(generator.get_weights())
    for batch in (1, 3):  # folded weights (batch 1; batch 3: per-sample weights where the direct conv runs)
        z = z_of(range(batch))
        assert_same(run(g, z, True, randomize_noise=False), run(generator, z, False, randomize_noise=False))
    if conv3x3.direct_conv_wins(4, 16):  # where the compiled 3x3 conv is the faster one, the form runs it
        with forms.inference_form(True):
            graph = tf.function(lambda z: g(z, randomize_noise=False)).get_concrete_function(
                tf.TensorSpec([1, 32], tf.float32)).graph
        op_types = {op.type for op in graph.get_operations()}
        for fn in graph._functions.values():  # pylint: disable=protected-access
            op_types |= {node.op for node in fn.definition.node_def}
        assert "TfDistill>Conv3x3" in op_types, sorted(op_types)
    if conv3x3.takes_per_sample_weights("auto"):  # a batch runs at once, the direct conv with a weight per sample
        with forms.inference_form(True):
            ops = tf.function(lambda z: g(z, randomize_noise=False)).get_concrete_function(
                tf.TensorSpec([3, 32], tf.float32)).graph.get_operations()
        assert not [op.type for op in ops if "While" in op.type]
        assert [op for op in ops if op.type == "TfDistill>Conv3x3" and op.inputs[1].shape.rank == 5]


def _weight_squares(graph):
    """The Square ops of a traced graph that square a variable (a conv weight)."""
    return [op for op in graph.get_operations() if op.type == "Square" and op.inputs[0].op.type == "ReadVariableOp"]


@pytest.mark.parametrize("batch", [1, 3])
def test_frozen_weights_trace_the_demodulation_sums_as_constants(generator, batch):
    """Under frozen_weights (the SavedModel export) the sums of squared weights are traced as constants: no
    conv weight is squared per call, and the function is the same."""
    spec = tf.TensorSpec([batch, 32], tf.float32)
    assert _weight_squares(tf.function(lambda z: generator(z, randomize_noise=False)).get_concrete_function(
        spec).graph), "the check cannot see the squared weights"
    z = z_of(range(batch))
    with modulated.frozen_weights(True):
        fn = tf.function(lambda z: generator(z, randomize_noise=False))
        graph = fn.get_concrete_function(spec).graph
        got = fn(z).numpy()
    assert not _weight_squares(graph)
    assert_same([got], run(generator, z, False, randomize_noise=False)[:1])
