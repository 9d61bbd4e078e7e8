"""tf-distill-eval: FID, PPL, LPIPS and PSNR of generators or image folders, written as JSON.

    tf-distill-eval --metric=fid --checkpoint=runs/x/final --real=fashion_mnist:train --num_samples=50000
    tf-distill-eval --metric=fid --checkpoint=student.pt --real_stats=ffhq256_stats.npz
    tf-distill-eval --metric=ppl --checkpoint=student.pt --ppl_mode=cagan          # the paper's "PPL"
    tf-distill-eval --metric=lpips --checkpoint=student --checkpoint_b=teacher.pt  # same z, stored noise
    tf-distill-eval --metric=psnr --images=recon/ --reference=targets/             # both PSNR variants

Sample counts and batch sizes default per metric: FID 50,000 samples at batch 64, as the
reference's ``get_fid.py`` (spec D.1; FID is biased by the sample count, so the paper's numbers
compare only at 50,000; the batch size does not change what is measured); PPL 5,000 pairs at
batch 50, as CAGAN's ``get_ppl.py`` (spec D.2); LPIPS between generators 50,000 pairs at batch 64
(no reference counterpart). ``--num_samples``/``--batch_size`` override them.

``--strategy=mirrored`` spreads FID sampling over all local devices. Unreadable images of the
``--images``/``--reference`` folders (corrupt, truncated, not an image) are skipped with a warning
and listed in the result (``num_skipped``, ``skipped``), as are pairs whose sizes differ. An existing
``--output`` file is replaced only with ``--overwrite`` (atomically).
"""

import json
import sys
from pathlib import Path

import numpy as np
from absl import app, flags

from tf_distill import cli, limits
from tf_distill.errors import UserError

METRICS = ("fid", "ppl", "lpips", "psnr")
_METRIC = flags.DEFINE_enum("metric", None, METRICS, "What to compute.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Generator checkpoint (.pt, our directory or .keras).")
_CHECKPOINT_B = flags.DEFINE_string("checkpoint_b", None, "Second generator for --metric=lpips.")
_IMAGES = flags.DEFINE_string("images", None, "Image folder: PSNR/LPIPS pairs with --reference.")
_REFERENCE = flags.DEFINE_string("reference", None, "Reference image folder for PSNR/LPIPS pairs (same file names).")
_REAL = flags.DEFINE_string("real", None, "Real data for FID: folder:PATH, tfrecord:GLOB or fashion_mnist[:split].")
_REAL_STATS = flags.DEFINE_string("real_stats", None, "Precomputed real statistics .npz (keys mu, sigma).")
_NUM_REAL = flags.DEFINE_integer("num_real", None, "Use the first N real images (default: all).", lower_bound=2,
                                 upper_bound=limits.MAX_COUNT)
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", None, "Generated samples (FID) or pairs (PPL, LPIPS) "
                                    "(default: 50000 for fid and lpips, 5000 for ppl, the reference's).",
                                    lower_bound=1, upper_bound=limits.MAX_COUNT)
_BATCH = flags.DEFINE_integer("batch_size", None, "Batch size, also of the real images for FID "
                              "(default: 64 for fid and lpips, 50 for ppl, the reference's).", lower_bound=1,
                              upper_bound=limits.MAX_BATCH)
_FID_MODE = flags.DEFINE_enum("fid_mode", "stylekd", ["stylekd", "standard"],
                              "stylekd: raw output as the paper; standard: uint8-quantised fakes (NVlabs).")
_PPL_MODE = flags.DEFINE_enum("ppl_mode", "cagan", ["cagan", "karras"], "The paper's CAGAN PPL or Karras PPL.")
_PPL_SPACE = flags.DEFINE_enum("ppl_space", "w", ["z", "w"], "Karras PPL latent space.")
_PPL_SAMPLING = flags.DEFINE_enum("ppl_sampling", "full", ["full", "end"], "Karras PPL sampling.")
_PPL_CROP = flags.DEFINE_bool("ppl_crop", False, "Karras PPL face crop.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.", lower_bound=0, upper_bound=limits.MAX_SEED)
_STRATEGY = flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the result JSON here (also printed).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output file.")

FID_SAMPLES, FID_BATCH = 50000, 64  # get_fid.py's (spec D.1); also used for LPIPS between generators


def sample_sizes(metric, num_samples=None, batch_size=None):
    """``(num_samples, batch_size)``: the values given, else the metric's defaults (module docstring)."""
    if metric == "ppl":
        from tf_distill.metrics import ppl  # pylint: disable=import-outside-toplevel

        defaults = ppl.NUM_PAIRS, ppl.BATCH_SIZE
    else:
        defaults = FID_SAMPLES, FID_BATCH
    return (defaults[0] if num_samples is None else num_samples,
            defaults[1] if batch_size is None else batch_size)


def _load_folder(folder, stats):
    """{file name: uint8 [H, W, 3]} of the readable images under ``folder``; the others go to ``stats``."""
    from tf_distill.data import list_image_files  # pylint: disable=import-outside-toplevel
    from tf_distill.images import read_images  # pylint: disable=import-outside-toplevel

    files = list_image_files(folder)
    images = {Path(f).name: image for f, image in read_images(files, stats)}
    if not images:
        raise UserError(f"none of the {len(files)} image file(s) in {folder} can be read "
                        f"({'; '.join(stats.skipped[:3])}) (give 8-bit PNG or JPEG images)")
    return images


def _pairs(images, reference, stats):
    """(names, images, references) of the readable same-name, same-size pairs; the others go to ``stats``."""
    a, b = _load_folder(images, stats), _load_folder(reference, stats)
    names = []
    for n in sorted(set(a) & set(b)):
        if a[n].shape == b[n].shape:
            names.append(n)
        else:
            stats.record(f"{Path(images) / n} (size {a[n].shape[1]}x{a[n].shape[0]} differs from "
                         f"{Path(reference) / n}'s {b[n].shape[1]}x{b[n].shape[0]})")
    if not names:
        raise UserError(f"no readable image pairs: no file name in common between {images} and {reference} with "
                        "the same size (name each image like its reference)")
    return names, [a[n] for n in names], [b[n] for n in names]


def _skipped(stats):
    stats.log_summary()
    return {"num_skipped": stats.num_skipped, "skipped": stats.skipped}


def evaluate():
    from tf_distill.io import checkpoints  # pylint: disable=import-outside-toplevel
    from tf_distill.data import DecodeStats  # pylint: disable=import-outside-toplevel
    from tf_distill.progress import Progress  # pylint: disable=import-outside-toplevel
    from tf_distill.train.strategy import make_strategy  # pylint: disable=import-outside-toplevel

    metric, result = _METRIC.value, {"metric": _METRIC.value}
    num_samples, batch_size = sample_sizes(metric, _NUM_SAMPLES.value, _BATCH.value)
    strategy = make_strategy(_STRATEGY.value)
    skipped = DecodeStats()
    if metric == "psnr":
        from tf_distill.metrics.psnr import psnr, psnr_wraparound  # pylint: disable=import-outside-toplevel

        names, out, ref = _pairs(_IMAGES.value, _REFERENCE.value, skipped)
        result.update(num_pairs=len(names),
                      psnr=float(np.mean([psnr(o[None], r[None])[0] for o, r in zip(out, ref)])),
                      psnr_paper_wraparound=float(np.mean([psnr_wraparound(o[None], r[None])[0]
                                                           for o, r in zip(out, ref)])), **_skipped(skipped))
        return result
    from tf_distill.metrics.lpips import LPIPS  # pylint: disable=import-outside-toplevel

    if metric == "lpips":
        if _IMAGES.value:
            names, out, ref = _pairs(_IMAGES.value, _REFERENCE.value, skipped)
            lpips = LPIPS()
            to_float = lambda x: np.asarray(x, np.float32)[None] / 127.5 - 1
            d = [float(lpips(to_float(o), to_float(r))[0]) for o, r in zip(out, ref)]
            result.update(num_pairs=len(names), lpips=float(np.mean(d)), **_skipped(skipped))
            return result
        lpips = LPIPS()
        from tf_distill.metrics.generator_eval import lpips_between  # pylint: disable=import-outside-toplevel

        g_a, g_b = checkpoints.load_generator(_CHECKPOINT.value), checkpoints.load_generator(_CHECKPOINT_B.value)
        if (g_a.style_dim, g_a.size) != (g_b.style_dim, g_b.size):  # the same z goes to both, images compared
            raise UserError(f"--checkpoint={_CHECKPOINT.value} (z of {g_a.style_dim}, {g_a.size} px) and "
                            f"--checkpoint_b={_CHECKPOINT_B.value} (z of {g_b.style_dim}, {g_b.size} px) do not "
                            "match: LPIPS between generators compares their images for the same z (give two "
                            "generators with the same style_dim and resolution, e.g. a teacher and its student)")
        result.update(num_samples=num_samples, batch_size=batch_size,
                      lpips=lpips_between(g_a, g_b, lpips, num_samples, batch_size, _SEED.value))
        return result
    generator = checkpoints.load_generator(_CHECKPOINT.value)
    if metric == "ppl":
        from tf_distill.metrics.ppl import perceptual_path_length  # pylint: disable=import-outside-toplevel

        value = perceptual_path_length(generator, LPIPS(), num_samples, batch_size, _PPL_MODE.value,
                                       _PPL_SPACE.value, _PPL_SAMPLING.value, crop=_PPL_CROP.value, seed=_SEED.value,
                                       progress=Progress(num_samples, "PPL"))
        result.update(ppl=value, mode=_PPL_MODE.value, num_samples=num_samples, batch_size=batch_size)
        return result
    from tf_distill.metrics import generator_eval  # pylint: disable=import-outside-toplevel
    from tf_distill.metrics.fid import load_statistics  # pylint: disable=import-outside-toplevel

    if _REAL_STATS.value:
        stats = load_statistics(_REAL_STATS.value)
    else:
        stats = generator_eval.dataset_statistics(_REAL.value, generator.size, _NUM_REAL.value, batch_size,
                                                  _FID_MODE.value, progress=Progress(_NUM_REAL.value, "real"))
    fid, count = generator_eval.generator_fid(generator, stats, num_samples, batch_size, _FID_MODE.value,
                                              seed=_SEED.value, strategy=strategy,
                                              progress=Progress(num_samples, "FID"))
    result.update(fid=fid, num_samples=count, batch_size=batch_size, fid_mode=_FID_MODE.value)
    return result


def check_flags():
    """Every mistake that needs no model or image, found before anything is loaded."""
    from tf_distill.data import DataSource  # pylint: disable=import-outside-toplevel
    from tf_distill.outputs import check_output  # pylint: disable=import-outside-toplevel

    if _METRIC.value is None:
        raise app.UsageError(f"--metric is required ({'|'.join(METRICS)}).")
    metric, pairs = _METRIC.value, _METRIC.value == "psnr" or (_METRIC.value == "lpips" and _IMAGES.value)
    if pairs and not (_IMAGES.value and _REFERENCE.value):
        raise app.UsageError(f"--metric={metric} on images needs --images and --reference folders.")
    if not pairs and not _CHECKPOINT.value:
        raise app.UsageError(f"--metric={metric} needs --checkpoint.")
    if metric == "lpips" and not pairs and not _CHECKPOINT_B.value:
        raise app.UsageError("--metric=lpips needs --checkpoint_b (or --images and --reference folders).")
    if metric == "fid" and not (_REAL.value or _REAL_STATS.value):
        raise app.UsageError("--metric=fid needs --real=SOURCE or --real_stats=FILE.npz.")
    source = None
    if _REAL.value:
        try:
            source = DataSource.parse(_REAL.value)
        except ValueError as err:
            raise UserError(f"--real: {err}") from None
    paths = (("--checkpoint", _CHECKPOINT.value, "a .pt, .keras or converted checkpoint folder"),
             ("--checkpoint_b", _CHECKPOINT_B.value, "a .pt, .keras or converted checkpoint folder"),
             ("--real_stats", _REAL_STATS.value, "a .npz with mu and sigma, or a .pkl"))
    folders = (("--images", _IMAGES.value), ("--reference", _REFERENCE.value)) if pairs else ()
    for flag, value, what in paths:
        if value and not Path(value).exists():
            raise UserError(f"{flag} {value} does not exist (give {what})")
    for flag, value in folders:
        if not Path(value).is_dir():
            raise UserError(f"{flag} {value} {'is not a folder' if Path(value).exists() else 'does not exist'} "
                            "(give a folder of PNG/JPEG images)")
    if _OUTPUT.value:
        inputs = [value for _, value, _ in paths if value] + [value for _, value in folders]
        inputs += _source_files(source) if source is not None else []
        check_output(_OUTPUT.value, overwrite=_OVERWRITE.value, inputs=inputs, kind="file")


def _source_files(source):
    """The paths a data source reads: its TFRecord files (those of a folder or a glob too), or its folder."""
    from tf_distill.data import DatasetNotFoundError, EmptyDatasetError  # pylint: disable=import-outside-toplevel
    from tf_distill.data.tfrecord import list_tfrecord_files  # pylint: disable=import-outside-toplevel

    if source.kind != "tfrecord":
        return [source.path] if source.path else []
    try:
        return list_tfrecord_files(source.path)
    except (DatasetNotFoundError, EmptyDatasetError):  # said when the data is read, with the other data errors
        return []


def _data_errors_as_user_errors(fn):
    """Runs ``fn``; a missing, empty or unreadable dataset (a user's path) becomes a one-line :class:`UserError`.

    tf.data reports an error raised inside the pipeline (all images of --real undecodable) as an
    ``InvalidArgumentError`` that quotes it; the quoted line is kept.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    # pylint: disable-next=import-outside-toplevel
    from tf_distill.data import DatasetNotFoundError, EmptyDatasetError, IdxError

    hint = "(check --images, --reference or --real)"
    try:
        return fn()
    except (DatasetNotFoundError, EmptyDatasetError, IdxError) as err:
        raise UserError(f"{str(err).rstrip('.')} {hint}") from None
    except tf.errors.InvalidArgumentError as err:
        quoted = cli.quoted_user_error(err)
        if quoted is None:
            raise
        raise UserError(f"{quoted.rstrip('.')} {hint}") from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    check_flags()
    result = _data_errors_as_user_errors(evaluate)
    text = json.dumps(result, indent=2)
    print(text)
    if _OUTPUT.value:
        from tf_distill.outputs import write_file_atomic  # pylint: disable=import-outside-toplevel

        write_file_atomic(_OUTPUT.value, text + "\n")
    return 0


def run():
    cli.run(main)


if __name__ == "__main__":
    sys.exit(run())
