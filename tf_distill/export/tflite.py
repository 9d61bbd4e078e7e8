"""TFLite builds of the generator for devices: z [batch, style_dim] float32 -> images uint8 [batch, H, W, 3].

The TFLite model is the SavedModel's ``serving_default`` computation (reference ops, stored
constant noise, ``truncation_psi`` input, the same uint8 rounding) without the in-graph request
checks (an app feeds its own z); the reference upfirdn2d uses 4-D ops only, so it needs no Flex. The batch is fixed at conversion (``batch``, default 1).
Quantization: ``None`` (float32), ``"float16"`` (weights stored as float16) or
``"dynamic_int8"`` (dynamic-range: int8 weights, float activations).
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

from tf_distill import ops
from tf_distill.export import savedmodel
from tf_distill.outputs import write_file_atomic

QUANTIZE = (None, "float16", "dynamic_int8")


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
    with ops.implementation("ref"):
        serving = savedmodel.GeneratorServing(generator, w_avg)
        module = _TFLiteModule(serving, int(batch))
        concrete = module.generate.get_concrete_function()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + (
            [tf.lite.OpsSet.SELECT_TF_OPS] if allow_flex else [])
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantize == "float16":
                converter.target_spec.supported_types = [tf.float16]
        flatbuffer = converter.convert()
    return write_file_atomic(path, flatbuffer), len(flatbuffer)


def run_tflite(path, z, truncation_psi=1.0):
    """Images uint8 [N, H, W, 3] from the TFLite model, one interpreter call per model batch."""
    interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    batch = next(d["shape"][0] for d in interpreter.get_input_details() if len(d["shape"]) == 2)
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
