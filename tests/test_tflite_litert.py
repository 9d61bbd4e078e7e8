"""TFLite student run with LiteRT: agrees with the SavedModel and the Keras generator on 16 seeds,
keeps its signature, runs only XNNPACK-friendly ops (no select-form leaky ReLU, constant conv
weights, no transposed conv), and a missing LiteRT is one error line."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema

from test_bench_flags import run_bench
from test_cli import assert_one_line_error
from test_export import PSI, ROOT, SIZE, STYLE_DIM, subprocess_env, tiny_generator
from tf_distill.errors import UserError
from tf_distill.export import savedmodel, tflite
from tf_distill.images import to_uint8
from tf_distill.models import Generator
from tf_distill.ops import _loader

SEEDS = np.arange(16, dtype=np.int64)
# Max / mean abs pixel error (0-255) against the SavedModel. float32: round-off flips a rounding
# now and then. float16 weights: measured max 1, mean 0.026 on these seeds (bound with margin).
BOUNDS = {None: (1, 0.01), "float16": (2, 0.1)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    g = tiny_generator()
    path = savedmodel.export_saved_model(g, tmp_path_factory.mktemp("models") / "student", w_avg_samples=256,
                                         max_batch=16)
    return g, path, tf.saved_model.load(str(path)).w_avg.numpy()


@pytest.fixture(scope="module")
def converted(exported, tmp_path_factory):
    g, _, w_avg = exported
    out = tmp_path_factory.mktemp("tflite")
    return {q: tflite.convert(g, w_avg, out / f"{q or 'float32'}.tflite", quantize=q)[0] for q in (None, "float16")}


def _parsed(path):
    """(model, first subgraph, its ops in order, op -> builtin name, tensor -> the op producing it)."""
    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    graph = model.Subgraphs(0)
    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]

    def name(op):
        code = model.OperatorCodes(op.OpcodeIndex())
        return names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]

    producer = {op.Outputs(j): op for op in ops for j in range(op.OutputsLength())}
    return model, graph, ops, name, producer


def conv_input_producers(path):
    """[name of the op producing input 0 of each CONV_2D, or None for a graph input or constant]."""
    _, _, ops, name, producer = _parsed(path)
    return [name(producer[op.Inputs(0)]) if op.Inputs(0) in producer else None
            for op in ops if name(op) == "CONV_2D"]


def graph_ops(path):
    """[(op name, whether its input 1 is a constant, last dim of its output 0)] of the model's first subgraph,
    in order.

    Input 1 is the filter of CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and FULLY_CONNECTED; a
    float16 model's constant filters pass through a DEQUANTIZE of a constant.
    """
    model, graph, ops, name, producer = _parsed(path)

    def constant(t):
        if t in producer:
            op = producer[t]
            return name(op) == "DEQUANTIZE" and constant(op.Inputs(0))
        return model.Buffers(graph.Tensors(t).Buffer()).DataLength() > 0

    def width(op):
        shape = graph.Tensors(op.Outputs(0)).ShapeAsNumpy() if op.OutputsLength() else 0
        return int(shape[-1]) if getattr(shape, "size", 0) else None

    return [(name(op), op.InputsLength() > 1 and constant(op.Inputs(1)), width(op)) for op in ops]


@pytest.mark.parametrize("quantize", [None, "float16"])
def test_litert_matches_saved_model_and_generator(exported, converted, quantize):
    g, path, w_avg = exported
    z = savedmodel.z_from_seeds(SEEDS, STYLE_DIM).numpy()
    max_bound, mean_bound = BOUNDS[quantize]
    for psi in (1.0, PSI):
        report = tflite.compare(converted[quantize], tflite.saved_model_images(path, z, psi), z, psi)
        assert report["n"] == 16 and report["max_abs_pixel_error"] <= max_bound, report
        assert report["mean_abs_pixel_error"] <= mean_bound, report
    w = g.mapping(z)
    w = w_avg + PSI * (w - w_avg)
    keras_images = to_uint8(g(tf.tile(w[:, None], [1, g.n_latent, 1]), input_is_latent=True,
                              randomize_noise=False).numpy())
    diff = np.abs(tflite.run_tflite(converted[quantize], z, PSI).astype(int) - keras_images.astype(int))
    assert diff.max() <= max_bound and diff.mean() <= mean_bound, (diff.max(), diff.mean())


def test_signature_is_unchanged(exported, converted, tmp_path):
    g, _, w_avg = exported
    batch2, _ = tflite.convert(g, w_avg, tmp_path / "b2.tflite", batch=2)
    for path, batch in ((converted[None], 1), (converted["float16"], 1), (batch2, 2)):
        it = tflite.interpreter(path)
        assert it.get_signature_list() == {"serving_default": {"inputs": ["truncation_psi", "z"],
                                                               "outputs": ["images"]}}
        runner = it.get_signature_runner()
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        assert list(inputs["z"]["shape"]) == [batch, STYLE_DIM] and inputs["z"]["dtype"] == np.float32
        assert list(inputs["truncation_psi"]["shape"]) == [] and inputs["truncation_psi"]["dtype"] == np.float32
        assert list(outputs["images"]["shape"]) == [batch, SIZE, SIZE, 3] and outputs["images"]["dtype"] == np.uint8


def test_graph_runs_in_xnnpack(exported, converted):
    """XNNPACK runs neither GREATER nor SELECT (the select-form leaky ReLU: each split the graph) nor
    convs whose weights are computed per call (the folded form): every leaky ReLU is one LEAKY_RELU
    and every conv / dense filter a constant. No TRANSPOSE_CONV (slow there): each upsampling conv is
    a CONV_2D to its four phases and a DEPTH_TO_SPACE."""
    g = exported[0]
    n_lrelu = g.n_mlp + 1 + len(g.synthesis.convs)  # mapping layers, conv1, the other StyledConvs
    for path in converted.values():
        ops = graph_ops(path)
        names = [name for name, _, _ in ops]
        assert "GREATER" not in names and "SELECT" not in names, sorted(set(names))
        assert "TRANSPOSE_CONV" not in names, sorted(set(names))
        n_up = sum(conv.upsample for conv in g.synthesis.convs)
        assert names.count("DEPTH_TO_SPACE") == 2 * n_up, sorted(set(names))  # each upsampling conv and skip
        assert names.count("LEAKY_RELU") == n_lrelu, sorted(set(names))
        filters = [const for name, const, _ in ops
                   if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED")]
        assert len(filters) > 2 * len(g.synthesis.convs) and all(filters), ops


def test_phase_convs_read_their_own_pads(exported, converted):
    """Each upsampling conv's phase convs read a PAD of their own (which XNNPACK folds into the conv), never
    a STRIDED_SLICE of one shared pad: a slice is a copy of the whole input, four per upsampling conv."""
    n_up = sum(conv.upsample for conv in exported[0].synthesis.convs)
    for path in converted.values():
        producers = conv_input_producers(path)
        assert "STRIDED_SLICE" not in producers, producers
        assert producers.count("PAD") >= 4 * n_up, producers


def test_pruned_widths_are_not_widened(tmp_path):
    """The TFLite graph keeps a pruned model's own conv widths (6 and 5 here, not the multiples of 8 the
    TensorFlow inference form widens to: XNNPACK would only do more work) and matches the generator."""
    g = Generator(SIZE, style_dim=STYLE_DIM, n_mlp=2, channels=[8, 8, 6, 6, 5, 5])
    g.build()
    path, _ = tflite.convert(g, np.zeros([STYLE_DIM], np.float32), tmp_path / "pruned.tflite")
    widths = {width for name, _, width in graph_ops(path) if name == "CONV_2D"}
    # 3, 12: ToRGB and the skip's four phases; 4 * c: an upsampling conv's four phases
    assert {6, 5} <= widths and widths <= {3, 12} | {m * c for c in (8, 6, 5) for m in (1, 4)}, widths
    z = savedmodel.z_from_seeds(SEEDS, STYLE_DIM).numpy()
    want = to_uint8(g(tf.tile(g.mapping(z)[:, None], [1, g.n_latent, 1]), input_is_latent=True,
                      randomize_noise=False).numpy())
    assert np.abs(tflite.run_tflite(path, z, 1.0).astype(int) - want.astype(int)).max() <= 1


def test_blurs_are_two_passes_whatever_the_exporting_convs(tmp_path, monkeypatch):
    """The TFLite graph's blurs are two 1-D depthwise passes (what XNNPACK runs faster), also where the exporting
    TensorFlow's convs are oneDNN's and its own graphs take one 2-D pass: the same graph either way."""
    g = Generator(SIZE, style_dim=STYLE_DIM, n_mlp=2, channels=[8, 8, 6, 6, 5, 5])
    g.build()
    counts = []
    for onednn in (False, True):
        monkeypatch.setattr(_loader, "onednn_convs", lambda onednn=onednn: onednn)
        path, _ = tflite.convert(g, np.zeros([STYLE_DIM], np.float32), tmp_path / f"onednn_{onednn}.tflite")
        counts.append(sum(name == "DEPTHWISE_CONV_2D" for name, _, _ in graph_ops(path)))
    assert counts[0] == counts[1] > 0, counts  # one pass per blur would halve the count with oneDNN


def test_missing_litert_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(UserError, match=r"pip install ai-edge-litert") as err:
        tflite.interpreter(tmp_path / "m.tflite")
    assert "\n" not in str(err.value)


@pytest.fixture
def no_litert(tmp_path):
    """PYTHONPATH under which ``import ai_edge_litert`` fails, as where it is not installed."""
    block = tmp_path / "block" / "ai_edge_litert"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text('raise ImportError("No module named \'ai_edge_litert\'")\n')
    return {"PYTHONPATH": f"{block.parent}{os.pathsep}{ROOT}"}


def test_export_binary_without_litert_fails_before_writing(tmp_path, no_litert):
    tiny_generator().save(tmp_path / "g_ema.keras")
    out = tmp_path / "models" / "student"
    proc = subprocess.run([sys.executable, "-m", "tf_distill.bin.export", f"--checkpoint={tmp_path / 'g_ema.keras'}",
                           f"--export_dir={out}", "--format=tflite", "--w_avg_samples=64"],
                          capture_output=True, text=True, env={**subprocess_env(), **no_litert}, timeout=300, cwd=ROOT)
    assert_one_line_error(proc, "needs LiteRT", "pip install ai-edge-litert")
    assert proc.returncode == 1
    assert not out.exists() or not any(out.iterdir())


def test_serving_bench_without_litert_fails_before_timing(tmp_path, no_litert):
    work = tmp_path / "work"
    proc = run_bench("serving", f"--workdir={work}", cwd=tmp_path, env=no_litert)
    assert_one_line_error(proc, "needs LiteRT", "pip install ai-edge-litert")
    assert proc.returncode == 1
    assert not work.exists() or not any(work.iterdir())
