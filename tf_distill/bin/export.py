"""tf-distill-export: the EMA generator of a checkpoint as a TF Serving SavedModel or a TFLite model.

    tf-distill-export --checkpoint=out/run/final --export_dir=models/student [--version=3]
    tf-distill-export --checkpoint=student.pt --export_dir=models/student --format=tflite --quantize=float16

SavedModel: writes ``<export_dir>/<version>/`` (default version: one past the newest) through the
reference ops, checks that it holds only stock TF ops, and prints the signatures. TFLite: writes
``<export_dir>/<name>[_float16|_dynamic_int8].tflite`` and prints its size and the max abs pixel
error against the newest SavedModel version in ``export_dir`` (exported first when there is none).
See export/README.md.
"""

import json
from pathlib import Path

from absl import app, flags

from tf_distill import cli, limits
from tf_distill.errors import UserError
from tf_distill.outputs import check_output, check_parents

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Generator checkpoint: rosinality .pt, our checkpoint "
                                  "directory, or a .keras file (the EMA generator is exported).")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Model directory DIR/<model_name>; versions go below it.")
_VERSION = flags.DEFINE_integer("version", None, "SavedModel version (default: one past the newest).",
                                lower_bound=1, upper_bound=limits.MAX_VERSION)
_FORMAT = flags.DEFINE_enum("format", "saved_model", ["saved_model", "tflite"], "What to write.")
_QUANTIZE = flags.DEFINE_enum("quantize", None, ["float16", "dynamic_int8"], "TFLite quantization (default none).")
_RANDOM_NOISE = flags.DEFINE_bool("random_noise", False, "Fresh noise per request instead of the stored maps.")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 64, "Largest batch a request may ask for.", lower_bound=1,
                                  upper_bound=limits.MAX_BATCH)
_JIT = flags.DEFINE_bool("jit_compile", False, "Mark the synthesis function for XLA (stock tensorflow/serving "
                         "then needs --xla_cpu_compilation_enabled=true on CPU; see export/README.md).")
_W_AVG_SAMPLES = flags.DEFINE_integer("w_avg_samples", 4096, "z samples for w_avg when the checkpoint has none.",
                                      lower_bound=1, upper_bound=limits.MAX_COUNT)
_W_AVG_SEED = flags.DEFINE_integer("w_avg_seed", 0, "Stateless seed of those samples.", lower_bound=0,
                                   upper_bound=limits.MAX_SEED)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing version directory or .tflite file.")
_TFLITE_BATCH = flags.DEFINE_integer("tflite_batch", 1, "Fixed batch of the TFLite model.", lower_bound=1,
                                     upper_bound=limits.MAX_BATCH)
_COMPARE_N = flags.DEFINE_integer("compare_samples", 8, "Seeds for the TFLite-vs-SavedModel pixel error.",
                                  lower_bound=1, upper_bound=limits.MAX_GRID_IMAGES)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not _CHECKPOINT.value or not _EXPORT_DIR.value:
        raise app.UsageError("Give --checkpoint=PATH and --export_dir=DIR/<model_name>.")
    if _QUANTIZE.value and _FORMAT.value != "tflite":
        raise app.UsageError("--quantize applies to --format=tflite.")
    from tf_distill.io import checkpoints  # pylint: disable=import-outside-toplevel
    from tf_distill.export import savedmodel, tflite  # pylint: disable=import-outside-toplevel
    from tf_distill.models import Generator  # pylint: disable=import-outside-toplevel

    check_paths(savedmodel, tflite)
    models = checkpoints.load_any(_CHECKPOINT.value)
    generator = next((models[k] for k in ("g_ema", "g") if isinstance(models.get(k), Generator)), None)
    if generator is None:
        raise UserError(f"{_CHECKPOINT.value} holds no generator (found {sorted(models)}; give a generator "
                        "checkpoint)")
    latent_avg = models.get("latent_avg")
    kw = dict(randomize_noise=_RANDOM_NOISE.value, max_batch=_MAX_BATCH.value, jit_compile=_JIT.value,
              w_avg_samples=_W_AVG_SAMPLES.value, w_avg_seed=_W_AVG_SEED.value)
    if _FORMAT.value == "tflite":
        report = tflite.export_tflite(generator, latent_avg, _EXPORT_DIR.value, _QUANTIZE.value, _TFLITE_BATCH.value,
                               _COMPARE_N.value, **kw)
        print(json.dumps(report, indent=2))
        return
    path = savedmodel.export_saved_model(generator, _EXPORT_DIR.value, version=_VERSION.value,
                                         latent_avg=latent_avg, overwrite=_OVERWRITE.value, **kw)
    meta = savedmodel.read_metadata(path)
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    print(f"SavedModel {path} ({size / 1e6:.2f} MB): {meta['size']} px, style_dim {meta['style_dim']}, "
          f"n_latent {meta['n_latent']}, max_batch {meta['max_batch']}, w_avg from {meta['w_avg_source']}, "
          f"{'random' if meta['randomize_noise'] else 'stored constant'} noise, jit_compile {meta['jit_compile']}; "
          f"{len(meta.get('ops', []))} stock op types, no custom ops.")
    print(f"Signatures: {', '.join(meta['signatures'])} (saved_model_cli show --all --dir {path})")


def check_paths(savedmodel, tflite):
    """Refuses, before the checkpoint is read, an export that would replace something without --overwrite."""
    checkpoint, export_dir = Path(_CHECKPOINT.value), Path(_EXPORT_DIR.value)
    if not checkpoint.exists():
        raise UserError(f"--checkpoint={checkpoint} does not exist (give a .pt, .keras or converted checkpoint "
                        "folder)")
    if export_dir.exists() and not export_dir.is_dir():
        raise UserError(f"--export_dir={export_dir} is a file (give a folder DIR/<model_name>)")
    check_parents(export_dir, flag="--export_dir")
    if _FORMAT.value == "tflite":
        check_output(tflite.tflite_path(export_dir, _QUANTIZE.value), overwrite=_OVERWRITE.value,
                     inputs=[checkpoint], flag="--export_dir", kind="file")
    else:
        version = savedmodel.next_version(export_dir) if _VERSION.value is None else _VERSION.value
        if version < 1:
            raise app.UsageError(f"--version must be at least 1 (TF Serving serves numbered folders), got {version}.")
        check_output(export_dir / str(version), overwrite=_OVERWRITE.value, inputs=[checkpoint],
                     flag="--export_dir (version folder)", replaces=savedmodel.SAVED_MODEL_ENTRIES)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
