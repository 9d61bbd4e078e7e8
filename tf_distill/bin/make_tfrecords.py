"""tf-distill-make-tfrecords: an image folder (PNG/JPEG, recursive) -> TFRecord shards.

    tf-distill-make-tfrecords --input=/data/ffhq/images1024x1024 --output=/data/ffhq-tfr/ffhq --num_shards=64

writes ``/data/ffhq-tfr/ffhq-00000-of-00064.tfrecord`` ... (schema in ``tf_distill/data/tfrecord.py``:
the original encoded bytes under ``image``, plus ``height``, ``width`` and ``path``). Read them with
``make_dataset("tfrecord:/data/ffhq-tfr", ...)``. Files that cannot be decoded are skipped and listed.
Existing shards with the same prefix are refused unless ``--overwrite`` is given.
"""

import glob
from pathlib import Path

from absl import app, flags

from tf_distill import cli
from tf_distill.errors import UserError
from tf_distill.outputs import check_parents, check_writable

_INPUT = flags.DEFINE_string("input", None, "Image folder (searched recursively for .png/.jpg/.jpeg).")
_OUTPUT = flags.DEFINE_string("output", None, "Output prefix: shards are <prefix>-NNNNN-of-NNNNN.tfrecord.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 16, "Number of shards (use at least the number of input "
                                   "pipelines / workers, ideally a multiple).")
_VERIFY = flags.DEFINE_bool("verify", True, "Decode every image with TensorFlow and skip those that fail.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing shards with the same prefix.")


def check_paths(input_dir, output_prefix, overwrite=False):
    """Refuses an output prefix inside a file or an unwritable folder, or one whose shards exist (without
    ``overwrite``); returns those."""
    check_parents(output_prefix)
    check_writable(output_prefix)  # before the check pass decodes every image
    existing = sorted(glob.glob(glob.escape(str(output_prefix)) + "-*-of-*.tfrecord"))
    if existing and not overwrite:
        raise UserError(f"--output={output_prefix}: {len(existing)} shard(s) exist already, e.g. {existing[0]} "
                        "(choose another prefix, or pass --overwrite to replace them)")
    if Path(output_prefix).resolve() == Path(input_dir).resolve():
        raise UserError(f"--output={output_prefix} is the input folder (give a prefix such as DIR/name)")
    return existing


def convert(input_dir, output_prefix, num_shards=16, verify=True):
    from tf_distill.data import write_tfrecords  # pylint: disable=import-outside-toplevel
    from tf_distill.progress import Progress  # pylint: disable=import-outside-toplevel
    result = write_tfrecords(input_dir, output_prefix, num_shards=num_shards, verify=verify, progress=Progress)
    print(f"{result.num_images} image(s) -> {len(result.files)} shard(s) {output_prefix}-*.tfrecord "
          f"({len(result.skipped)} skipped)")
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not _INPUT.value or not _OUTPUT.value:
        raise app.UsageError("Give --input=IMAGE_FOLDER and --output=PREFIX.")
    if _NUM_SHARDS.value < 1:
        raise app.UsageError(f"--num_shards must be at least 1, got {_NUM_SHARDS.value}.")
    replaced = check_paths(_INPUT.value, _OUTPUT.value, _OVERWRITE.value)
    result = convert(_INPUT.value, _OUTPUT.value, _NUM_SHARDS.value, _VERIFY.value)
    for stale in set(replaced) - set(result.files):  # an old run's shards (another shard count) would mix in
        Path(stale).unlink()


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
