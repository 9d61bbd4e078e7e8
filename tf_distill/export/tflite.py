"""TFLite builds of the generator for devices: z [batch, style_dim] float32 -> images uint8 [batch, H, W, 3].

The TFLite model is the SavedModel's ``serving_default`` computation (reference ops, stored
constant noise, ``truncation_psi`` input, the same uint8 rounding) without the in-graph request
checks (an app feeds its own z); the reference upfirdn2d uses 4-D ops only, so it needs no Flex.
The batch is fixed at conversion (``batch``, default 1).
Quantization: ``None`` (float32), ``"float16"`` (weights stored as float16) or
``"dynamic_int8"`` (dynamic-range: int8 weights, float activations).

Built for LiteRT's XNNPACK delegate (applied by default to float models), which runs the ops it
supports with constant weights as one fast partition; any other op splits the graph and runs in
slower builtin kernels between partitions. So the graph is traced in the inference form of
layers/modulated.py (every leaky ReLU one LEAKY_RELU, not the training form's select, which
XNNPACK does not run; the demodulation and gain share one multiply, the bias is one add, the skip
upsampling is polyphase) with four changes:
- constant conv weights (``weight_folding(False)``): per-sample weights would leave every conv to
  the builtin kernel, about 2x slower;
- no channel widening (``channel_widening(False)``): XNNPACK runs the pruned widths as fast, so the
  zero channels would only add work (93 vs 90 ms a batch-1 image here);
- each upsampling conv as one CONV_2D per output phase (2x2, 2x1, 1x2 and 1x1 kernels: the 3x3
  kernel's 9 taps), a CONCATENATION and a DEPTH_TO_SPACE (``phase_upsampling(True)``): TFLite's
  TRANSPOSE_CONV runs at about 21 GMAC/s on an AVX2 machine against its CONV_2D's 88 (float16
  student 74 vs 61 ms a batch-1 image on an AVX-512 one), and one CONV_2D to the four phases, which
  pads the kernels to 2x2 (16 taps), was 1.08-1.09x slower than the four (66 vs 61 ms); each phase conv
  reads a PAD of its own, which XNNPACK folds into the conv, where strided slices of one shared pad copied
  the input four times (float16 student 67.5-71.1 vs 71.5-75.3 ms a batch-1 image);
- each blur as two 1-D depthwise passes (``upfirdn2d.one_pass_blur(False)``), also where the exporting
  TensorFlow runs its convs with oneDNN, whose SavedModel graph takes one 4x4 pass: XNNPACK runs the
  two passes faster (float16 student 82.7 vs 87.0 ms a batch-1 image on the AVX-512 machine).
That leaves 3 XNNPACK partitions (the truncation select and the uint8 cast stay outside, on tiny
tensors). float16 stores weights as float16; XNNPACK unpacks them to float32 at load on CPUs
without native float16 arithmetic (x86 without AVX512-FP16), so it runs at float32 speed there.

Models run with LiteRT (``ai-edge-litert``, ``interpreter``); ``tf.lite.Interpreter`` is deprecated.
"""

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from tf_distill import ops
from tf_distill.errors import UserError
from tf_distill.export import savedmodel
from tf_distill.layers.modulated import channel_widening, phase_upsampling, weight_folding
from tf_distill.ops.upfirdn2d import one_pass_blur
from tf_distill.outputs import write_file_atomic

QUANTIZE = (None, "float16", "dynamic_int8")


def require_litert():
    """LiteRT's Interpreter class; a UserError saying how to install it when it is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise UserError(f"running a TFLite model needs LiteRT, which is not installed ({e}; "
                        "pip install ai-edge-litert)") from None
    return Interpreter


def interpreter(path, num_threads=None):
    """A LiteRT interpreter for ``path`` with the XNNPACK delegate (LiteRT's default for float ops).

    ``num_threads`` defaults to the CPUs this process may use.
    """
    threads = num_threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    return require_litert()(model_path=str(path), num_threads=int(threads or 1))


class _TFLiteModule(tf.Module):
    def __init__(self, serving, batch):
        super().__init__()
        self.serving = serving
        d = serving.style_dim

        @tf.function(input_signature=[tf.TensorSpec([batch, d], tf.float32, name="z"),
                                      tf.TensorSpec([], tf.float32, name="truncation_psi")])
        def generate(z, truncation_psi):
            g = serving.generator
            w = g.mapping(z)
            w = tf.where(tf.equal(truncation_psi, 1.0), w, serving.w_avg + truncation_psi * (w - serving.w_avg))
            wplus = tf.tile(w[:, None, :], [1, serving.n_latent, 1])
            image = g(wplus, input_is_latent=True, randomize_noise=False)
            return {"images": savedmodel.images_to_uint8(image)}

        self.generate = generate


def convert(generator, w_avg, path, quantize=None, batch=1, allow_flex=False):
    """Writes the TFLite flatbuffer to ``path``; returns (path, size in bytes).

    Only TFLite builtin ops by default (traced through the reference ops); ``allow_flex`` lets the
    converter fall back to Flex (Select TF) ops, which apps must link the Flex delegate for.
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}.")
    if int(batch) < 1:
        raise ValueError(f"batch must be >= 1, got {batch}.")
    with (ops.implementation("ref"), weight_folding(False), channel_widening(False), phase_upsampling(True),
          one_pass_blur(False)):
        serving = savedmodel.GeneratorServing(generator, w_avg)
        module = _TFLiteModule(serving, int(batch))
        # With a trackable object the converter goes through a SavedModel, which keeps the output names.
        converter = tf.lite.TFLiteConverter.from_concrete_functions([module.generate.get_concrete_function()], module)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + (
            [tf.lite.OpsSet.SELECT_TF_OPS] if allow_flex else [])
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantize == "float16":
                converter.target_spec.supported_types = [tf.float16]
        flatbuffer = converter.convert()
    return write_file_atomic(path, flatbuffer), len(flatbuffer)


def run_tflite(path, z, truncation_psi=1.0, num_threads=None):
    """Images uint8 [N, H, W, 3] from the TFLite model (LiteRT), one interpreter call per model batch."""
    runner = interpreter(path, num_threads).get_signature_runner()
    batch = runner.get_input_details()["z"]["shape"][0]
    z = np.asarray(z, np.float32)
    if len(z) % batch:
        raise ValueError(f"{len(z)} latents do not split into the model's fixed batch of {batch}.")
    out = [runner(z=z[i:i + batch], truncation_psi=np.float32(truncation_psi))["images"]
           for i in range(0, len(z), batch)]
    return np.concatenate(out, 0)


def saved_model_images(saved_model_dir, z, truncation_psi=1.0):
    """Images from the SavedModel's ``serving_default`` for the same z."""
    loaded = tf.saved_model.load(str(saved_model_dir))
    fn = loaded.signatures["serving_default"]
    return fn(z=tf.constant(z, tf.float32), truncation_psi=tf.constant(truncation_psi, tf.float32))["images"].numpy()


def compare(tflite_path, reference_images, z, truncation_psi=1.0):
    """{'max_abs_pixel_error', 'mean_abs_pixel_error', 'n'} of the TFLite images against ``reference_images``."""
    images = run_tflite(tflite_path, z, truncation_psi)
    diff = np.abs(images.astype(np.int16) - np.asarray(reference_images).astype(np.int16))
    return {"max_abs_pixel_error": int(diff.max()), "mean_abs_pixel_error": float(diff.mean()), "n": len(z)}


def tflite_path(export_dir, quantize=None):
    """``<export_dir>/<name>[_<quantize>].tflite``, where the TFLite export writes."""
    export_dir = Path(export_dir)
    return export_dir / (export_dir.name + (f"_{quantize}" if quantize else "") + ".tflite")


def export_tflite(generator, latent_avg, export_dir, quantize=None, batch=1, compare_samples=8, **saved_model_kw):
    """tf-distill-export --format=tflite: writes ``<export_dir>/<name>[_<quantize>].tflite``; returns a report.

    The report holds the path, size and the max / mean abs pixel error against the newest
    SavedModel version in ``export_dir`` (exported first when there is none) on seeds 0..n-1.
    """
    require_litert()  # the report runs the model: fail before any work when LiteRT is missing
    export_dir = Path(export_dir)
    newest = savedmodel.next_version(export_dir) - 1
    if newest < 1:
        savedmodel.export_saved_model(generator, export_dir, latent_avg=latent_avg, **saved_model_kw)
        newest = savedmodel.next_version(export_dir) - 1
    saved = export_dir / str(newest)
    w_avg = tf.saved_model.load(str(saved)).w_avg.numpy()  # the very w_avg the SavedModel serves with
    path, size = convert(generator, w_avg, tflite_path(export_dir, quantize), quantize=quantize, batch=batch)
    n = max(batch, (compare_samples // batch) * batch)
    z = savedmodel.z_from_seeds(np.arange(n, dtype=np.int64), generator.style_dim).numpy()
    reference = saved_model_images(saved, z)
    report = {"tflite": str(path), "bytes": size, "quantize": quantize or "none", "compared_with": str(saved),
              **compare(path, reference, z)}
    return report
