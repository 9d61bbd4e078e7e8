"""Export: the SavedModel's signatures equal the in-memory generator (in a fresh process), the
signatures are what the docs say, only stock ops, bad requests are InvalidArgument, TFLite."""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_distill.export import savedmodel, stock_ops, tflite
from tf_distill.images import to_uint8
from tf_distill.models import Generator

ROOT = Path(__file__).resolve().parents[1]
STYLE_DIM, SIZE = 8, 16
PSI = 0.7


def tiny_generator():
    keras.utils.set_random_seed(1)
    g = Generator(SIZE, style_dim=STYLE_DIM, n_mlp=2, channels=[8, 8, 8, 8, 8, 8])
    g.build()
    for conv in [g.synthesis.conv1] + g.synthesis.convs:  # noise strength starts at 0: make noise matter
        conv.noise.weight.assign([0.5])
    return g


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    g = tiny_generator()
    model_dir = tmp_path_factory.mktemp("models") / "student"
    path = savedmodel.export_saved_model(g, model_dir, w_avg_samples=256, max_batch=16)
    return g, path


def subprocess_env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return env


# The fresh process only loads the SavedModel and runs each signature on the given inputs.
_FRESH = """
import sys, numpy as np, tensorflow as tf
inp = np.load(sys.argv[2])
sig = tf.saved_model.load(sys.argv[1]).signatures
psi = tf.constant(float(inp["psi"]), tf.float32)
one = tf.constant(1.0, tf.float32)
out = {
    "default": sig["serving_default"](z=tf.constant(inp["z"]), truncation_psi=one)["images"],
    "default_psi": sig["serving_default"](z=tf.constant(inp["z"]), truncation_psi=psi)["images"],
    "seeds": sig["from_seeds"](seeds=tf.constant(inp["seeds"]), truncation_psi=one)["images"],
    "seeds_psi": sig["from_seeds"](seeds=tf.constant(inp["seeds"]), truncation_psi=psi)["images"],
    "w_plus": sig["from_w"](w=tf.constant(inp["wplus"]), truncation_psi=one)["images"],
    "w_single": sig["from_w"](w=tf.constant(inp["w"][:, None]), truncation_psi=one)["images"],
    "mix": sig["style_mix"](w1=tf.constant(inp["wplus"]), w2=tf.constant(inp["wplus2"]),
                            layer_start=tf.constant(2), layer_end=tf.constant(4), truncation_psi=one)["images"],
    "mapping": sig["mapping"](z=tf.constant(inp["z"]))["w"],
    "seed_z": __import__("tf_distill.export.savedmodel", fromlist=["x"]).z_from_seeds(inp["seeds"], inp["z"].shape[1]),
}
np.savez(sys.argv[3], **{k: np.asarray(v) for k, v in out.items()})
"""


def test_fresh_process_reproduces_every_signature(exported, tmp_path):
    g, path = exported
    w_avg = tf.saved_model.load(str(path)).w_avg.numpy()
    rng = np.random.RandomState(0)
    z = rng.randn(3, STYLE_DIM).astype(np.float32)
    seeds = np.array([0, 7, 123456789012], np.int64)
    w = g.mapping(z).numpy()
    wplus = rng.randn(3, g.n_latent, STYLE_DIM).astype(np.float32)
    wplus2 = rng.randn(3, g.n_latent, STYLE_DIM).astype(np.float32)
    np.savez(tmp_path / "in.npz", z=z, seeds=seeds, w=w, wplus=wplus, wplus2=wplus2, psi=PSI)
    subprocess.run([sys.executable, "-c", _FRESH, str(path), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                   check=True, env=subprocess_env(), timeout=300)
    out = np.load(tmp_path / "out.npz")

    def img(x, **kw):
        return to_uint8(g(x, randomize_noise=False, **kw).numpy())

    seed_z = savedmodel.z_from_seeds(seeds, STYLE_DIM).numpy()
    np.testing.assert_array_equal(out["seed_z"], seed_z)  # the same z in another process
    mix = wplus.copy()
    mix[:, 2:4] = wplus2[:, 2:4]
    expected = {
        "default": img(z), "default_psi": img(z, truncation=PSI, truncation_latent=w_avg),
        "seeds": img(seed_z), "seeds_psi": img(seed_z, truncation=PSI, truncation_latent=w_avg),
        "w_plus": img(wplus, input_is_latent=True), "w_single": img(w, input_is_latent=True),
        "mix": img(mix, input_is_latent=True)}
    for key, want in expected.items():
        got = out[key]
        assert got.dtype == np.uint8 and got.shape == (3, SIZE, SIZE, 3), key
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() <= 1, f"{key}: max abs pixel difference {diff.max()} > 1"
        assert (diff == 0).mean() > 0.99, f"{key}: only {(diff == 0).mean():.4f} of the pixels equal"
    np.testing.assert_allclose(out["mapping"], w, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(out["default"], out["default_psi"])  # truncation does something


def test_w_avg_is_stored_and_metadata_written(exported):
    g, path = exported
    loaded = tf.saved_model.load(str(path))
    np.testing.assert_allclose(loaded.w_avg.numpy(), g.mean_latent(256, 0).numpy(), rtol=1e-5, atol=1e-6)
    meta = savedmodel.read_metadata(path)
    assert meta["style_dim"] == STYLE_DIM and meta["n_latent"] == g.n_latent and meta["version"] == 1
    assert meta["randomize_noise"] is False and meta["jit_compile"] is False
    assert path.name == "1" and not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_latent_avg_of_the_checkpoint_wins():
    g = tiny_generator()
    latent_avg = np.arange(STYLE_DIM, dtype=np.float32)
    w_avg, source = savedmodel.compute_w_avg(g, latent_avg)
    np.testing.assert_array_equal(w_avg, latent_avg[None])
    assert "checkpoint" in source


def test_saved_model_cli_lists_the_documented_signatures(exported):
    _, path = exported
    cli = Path(sys.executable).with_name("saved_model_cli")
    cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    text = subprocess.run(cmd + ["show", "--all", "--dir", str(path)], check=True, capture_output=True, text=True,
                          env=subprocess_env(), timeout=300).stdout
    blocks = {}
    for block in text.split("signature_def['")[1:]:
        name, body = block.split("']", 1)
        blocks[name] = body
    expected_inputs = {
        "serving_default": {"z": ("DT_FLOAT", f"(-1, {STYLE_DIM})"), "truncation_psi": ("DT_FLOAT", "()")},
        "from_seeds": {"seeds": ("DT_INT64", "(-1)"), "truncation_psi": ("DT_FLOAT", "()")},
        "from_w": {"w": ("DT_FLOAT", f"(-1, -1, {STYLE_DIM})"), "truncation_psi": ("DT_FLOAT", "()")},
        "style_mix": {"w1": ("DT_FLOAT", f"(-1, -1, {STYLE_DIM})"), "w2": ("DT_FLOAT", f"(-1, -1, {STYLE_DIM})"),
                      "layer_start": ("DT_INT32", "()"), "layer_end": ("DT_INT32", "()"),
                      "truncation_psi": ("DT_FLOAT", "()")},
        "mapping": {"z": ("DT_FLOAT", f"(-1, {STYLE_DIM})")},
    }
    for name, inputs in expected_inputs.items():
        body = blocks[name]
        inputs_text, outputs_text = body.split("contains the following output(s):")
        for arg, (dtype, shape) in inputs.items():
            part = inputs_text.split(f"inputs['{arg}'] tensor_info:")[1]
            assert f"dtype: {dtype}" in part.split("name:")[0] and f"shape: {shape}" in part.split("name:")[0], \
                (name, arg)
        if name == "mapping":
            assert "outputs['w']" in outputs_text and f"shape: (-1, {STYLE_DIM})" in outputs_text
        else:
            assert "outputs['images']" in outputs_text and "dtype: DT_UINT8" in outputs_text
            assert f"shape: (-1, {SIZE}, {SIZE}, 3)" in outputs_text
        assert "tensorflow/serving/predict" in body
    # truncation_psi is optional for TF Serving: the SignatureDef carries its default.
    proto = stock_ops.read_saved_model_proto(path)
    defaults = proto.meta_graphs[0].signature_def["serving_default"].defaults
    assert tf.make_ndarray(defaults["truncation_psi"]) == 1.0


def test_stock_op_check_passes_on_the_export(exported):
    _, path = exported
    report = stock_ops.check_saved_model(path)
    assert {"Conv2D", "DepthwiseConv2dNative", "StatelessRandomNormalV2"} <= report["ops"]
    assert not [op for op in report["ops"] if op.startswith("TfDistill") or ">" in op]
    assert report["xla_functions"] == []


def _weights_squared_per_call(path):
    """Square nodes of the SavedModel's functions whose input is a variable read (a conv weight)."""
    found = []
    for fn in stock_ops.read_saved_model_proto(path).meta_graphs[0].graph_def.library.function:
        op_of = {node.name: node.op for node in fn.node_def}
        found += [node.name for node in fn.node_def
                  if node.op == "Square" and op_of.get(node.input[0].split(":")[0]) == "ReadVariableOp"]
    return found


def test_export_computes_the_demodulation_sums_once(exported, tmp_path, monkeypatch):
    """The export traces the sums of squared conv weights as constants (``frozen_weights``), not as ops that
    run on every request; without it the check finds them."""
    g, path = exported
    assert _weights_squared_per_call(path) == []
    monkeypatch.setattr(savedmodel, "frozen_weights", lambda enabled: contextlib.nullcontext())
    assert _weights_squared_per_call(savedmodel.export_saved_model(g, tmp_path / "m", w_avg_samples=16))


def _with_op_renamed(src, dst, old_op, new_op):
    proto = stock_ops.read_saved_model_proto(src)
    renamed = 0
    for fn in proto.meta_graphs[0].graph_def.library.function:
        for node in fn.node_def:
            if node.op == old_op and not renamed:
                node.op = new_op
                renamed += 1
    assert renamed
    dst.mkdir()
    (dst / "saved_model.pb").write_bytes(proto.SerializeToString())
    return dst


@pytest.mark.parametrize("custom_op", ["TfDistill>Upfirdn2d", "Upfirdn2dCustom"])
def test_stock_op_check_fails_on_a_custom_op(exported, tmp_path, custom_op):
    _, path = exported
    bad = _with_op_renamed(path, tmp_path / "bad", "DepthwiseConv2dNative", custom_op)
    with pytest.raises(stock_ops.NonStockOpError, match=custom_op):
        stock_ops.check_saved_model(bad)


def test_a_failed_export_leaves_no_folder_and_keeps_the_version_it_would_replace(exported, tmp_path, monkeypatch):
    """Through outputs.staged_directory: a failure (here the stock-op check; a full disk alike) removes the staging
    folder and the model folder it created (a full disk left the empty model folder), and an --overwrite export
    that fails keeps the version it would replace."""
    g, path = exported

    def rejected(_):
        raise stock_ops.NonStockOpError("TfDistill>Upfirdn2d is not a stock op")

    monkeypatch.setattr(stock_ops, "check_saved_model", rejected)
    with pytest.raises(stock_ops.NonStockOpError):
        savedmodel.export_saved_model(g, tmp_path / "new" / "student", w_avg_samples=16)
    assert not list(tmp_path.iterdir())
    model_dir = tmp_path / "served" / "student"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "saved_model.pb").write_bytes(b"the version being served")
    with pytest.raises(stock_ops.NonStockOpError):
        savedmodel.export_saved_model(g, model_dir, version=1, w_avg_samples=16, overwrite=True)
    assert [p.name for p in model_dir.iterdir()] == ["1"]
    assert (model_dir / "1" / "saved_model.pb").read_bytes() == b"the version being served"


def test_stock_op_check_walks_function_graphs():
    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def f(x):
        return tf.nn.leaky_relu(x) * 2.0

    graph_def = f.get_concrete_function().graph.as_graph_def()
    assert stock_ops.find_non_stock_ops(graph_def)[0] == []
    node = graph_def.node.add()
    node.name, node.op = "fused", "TfDistill>FusedBiasAct"
    fn = graph_def.library.function.add()
    fn.signature.name = "inner_fn"
    inner = fn.node_def.add()
    inner.name, inner.op = "u", "Upfirdn2dNotRegistered"
    bad = {op for op, _ in stock_ops.find_non_stock_ops(graph_def)[0]}
    assert bad == {"TfDistill>FusedBiasAct", "Upfirdn2dNotRegistered"}


def _error(fn, **inputs):
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        fn(**{k: tf.constant(v) for k, v in inputs.items()})
    return info.value.message


def test_bad_requests_are_invalid_argument_with_a_message(exported):
    g, path = exported
    sig = tf.saved_model.load(str(path)).signatures
    one = np.float32(1)
    z = np.zeros((2, STYLE_DIM), np.float32)
    d, nl = STYLE_DIM, g.n_latent
    # Python's signature call does not check shapes, so these reach the in-graph checks as over gRPC.
    assert f"z must be float32 [N, {d}]" in _error(sig["serving_default"], z=np.zeros((2, 5), np.float32),
                                                    truncation_psi=one)
    assert "got shape] [2 5]" in _error(sig["serving_default"], z=np.zeros((2, 5), np.float32), truncation_psi=one)
    assert f"z must be float32 [N, {d}]" in _error(sig["serving_default"], z=np.zeros((2,), np.float32),
                                                    truncation_psi=one)
    assert f"z must be float32 [N, {d}]" in _error(sig["serving_default"], z=np.zeros((2, d, 1), np.float32),
                                                    truncation_psi=one)
    assert "batch must hold 1 to 16" in _error(sig["serving_default"], z=np.zeros((0, d), np.float32),
                                               truncation_psi=one)
    assert "batch must hold 1 to 16" in _error(sig["from_seeds"], seeds=np.arange(17, dtype=np.int64),
                                               truncation_psi=one)
    assert "z must be finite" in _error(sig["serving_default"], z=np.full((1, d), np.nan, np.float32),
                                        truncation_psi=one)
    for psi in (1.5, -0.1):
        assert "truncation_psi must be in [0, 1]" in _error(sig["serving_default"], z=z, truncation_psi=np.float32(psi))
    assert "truncation_psi must be a float32 scalar" in _error(sig["serving_default"], z=z,
                                                               truncation_psi=np.ones(2, np.float32))
    assert "seeds must be int64 [N]" in _error(sig["from_seeds"], seeds=np.zeros((2, 2), np.int64), truncation_psi=one)
    assert f"w must be float32 [N, {nl} (W+) or 1 (W), {d}]" in _error(
        sig["from_w"], w=np.zeros((2, 3, d), np.float32), truncation_psi=one)
    wplus = np.zeros((2, nl, d), np.float32)
    assert f"need 0 <= layer_start <= layer_end <= n_latent = {nl}" in _error(
        sig["style_mix"], w1=wplus, w2=wplus, layer_start=np.int32(3), layer_end=np.int32(2), truncation_psi=one)
    assert f"need 0 <= layer_start <= layer_end <= n_latent = {nl}" in _error(
        sig["style_mix"], w1=wplus, w2=wplus, layer_start=np.int32(0), layer_end=np.int32(nl + 1),
        truncation_psi=one)
    assert "w1 and w2 must hold the same number" in _error(
        sig["style_mix"], w1=wplus, w2=wplus[:1], layer_start=np.int32(0), layer_end=np.int32(1), truncation_psi=one)
    # Wrong dtypes never reach the graph: the signature refuses them.
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        sig["serving_default"](z=tf.constant(np.zeros((2, d), np.int32)), truncation_psi=tf.constant(one))
    # A good request still works after all that.
    assert sig["serving_default"](z=tf.constant(z), truncation_psi=tf.constant(one))["images"].shape == (2, SIZE, SIZE, 3)


def test_export_refuses_to_overwrite_and_numbers_versions(exported, tmp_path):
    g, path = exported
    assert savedmodel.next_version(path.parent) == 2
    with pytest.raises(FileExistsError):
        savedmodel.export_saved_model(g, path.parent, version=1)
    with pytest.raises(ValueError, match="positive"):
        savedmodel.export_saved_model(g, tmp_path / "m", version=0)


@pytest.mark.parametrize("quantize,bound", [(None, 1), ("float16", 4)])
def test_tflite_runs_and_matches_the_saved_model(exported, tmp_path, quantize, bound):
    g, path = exported
    w_avg = tf.saved_model.load(str(path)).w_avg.numpy()
    out, size = tflite.convert(g, w_avg, tmp_path / "student.tflite", quantize=quantize, batch=1)
    assert out.stat().st_size == size > 0
    z = savedmodel.z_from_seeds(np.arange(3, dtype=np.int64), STYLE_DIM).numpy()
    for psi in (1.0, PSI):
        reference = tflite.saved_model_images(path, z, psi)
        report = tflite.compare(out, reference, z, psi)
        assert report["max_abs_pixel_error"] <= bound, report


def test_export_binary(tmp_path):
    g = tiny_generator()
    g.save(tmp_path / "g_ema.keras")
    cmd = [sys.executable, "-m", "tf_distill.bin.export", f"--checkpoint={tmp_path / 'g_ema.keras'}",
           f"--export_dir={tmp_path / 'models' / 'student'}", "--w_avg_samples=64"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no custom ops" in proc.stdout and "serving_default, from_seeds" in proc.stdout
    assert (tmp_path / "models" / "student" / "1" / "saved_model.pb").exists()
    meta = json.loads((tmp_path / "models" / "student" / "1" / "assets.extra" / savedmodel.METADATA_FILE).read_text())
    assert meta["w_avg_source"].startswith("mean of w over 64")


def test_jit_compile_and_random_noise_export(tmp_path):
    g = tiny_generator()
    path = savedmodel.export_saved_model(g, tmp_path / "student", w_avg_samples=64, jit_compile=True,
                                         randomize_noise=True)
    report = stock_ops.check_saved_model(path)
    assert report["xla_functions"], "jit_compile=True must mark the synthesis function for XLA"
    with pytest.raises(stock_ops.NonStockOpError, match="xla_cpu_compilation_enabled"):
        stock_ops.check_saved_model(path, allow_xla=False)
    sig = tf.saved_model.load(str(path)).signatures["from_seeds"]
    seeds, one = tf.constant([1, 2], tf.int64), tf.constant(1.0)
    a, b = (sig(seeds=seeds, truncation_psi=one)["images"].numpy() for _ in range(2))
    assert a.shape == (2, SIZE, SIZE, 3) and not np.array_equal(a, b)  # fresh noise per request
    assert savedmodel.read_metadata(path)["randomize_noise"] is True


def test_export_tflite_report(exported):
    g, path = exported
    report = tflite.export_tflite(g, None, path.parent, quantize="float16", batch=2, compare_samples=4)
    assert report["compared_with"] == str(path) and report["n"] == 4
    assert Path(report["tflite"]).name == "student_float16.tflite" and report["bytes"] > 0
    assert report["max_abs_pixel_error"] <= 4
