"""tf-distill-eval: FID, PPL, LPIPS and PSNR of generators or image folders, written as JSON.

    tf-distill-eval --metric=fid --checkpoint=runs/x/final --real=fashion_mnist:train --num_samples=50000
    tf-distill-eval --metric=fid --checkpoint=student.pt --real_stats=ffhq256_stats.npz
    tf-distill-eval --metric=ppl --checkpoint=student.pt --ppl_mode=cagan          # the paper's "PPL"
    tf-distill-eval --metric=lpips --checkpoint=student --checkpoint_b=teacher.pt  # same z, stored noise
    tf-distill-eval --metric=psnr --images=recon/ --reference=targets/             # both PSNR variants

``--strategy=mirrored`` spreads FID sampling over all local devices.
"""

import json
import sys
from pathlib import Path

import numpy as np
from absl import app, flags

METRICS = ("fid", "ppl", "lpips", "psnr")
_METRIC = flags.DEFINE_enum("metric", None, METRICS, "What to compute.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Generator checkpoint (.pt, our directory or .keras).")
_CHECKPOINT_B = flags.DEFINE_string("checkpoint_b", None, "Second generator for --metric=lpips.")
_IMAGES = flags.DEFINE_string("images", None, "Image folder (FID of a folder; PSNR/LPIPS pairs with --reference).")
_REFERENCE = flags.DEFINE_string("reference", None, "Reference image folder for PSNR/LPIPS pairs (same file names).")
_REAL = flags.DEFINE_string("real", None, "Real data for FID: folder:PATH, tfrecord:GLOB or fashion_mnist[:split].")
_REAL_STATS = flags.DEFINE_string("real_stats", None, "Precomputed real statistics .npz (keys mu, sigma).")
_NUM_REAL = flags.DEFINE_integer("num_real", None, "Use the first N real images (default: all).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 50000, "Generated samples (FID) or pairs (PPL, LPIPS).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_FID_MODE = flags.DEFINE_enum("fid_mode", "stylekd", ["stylekd", "standard"],
                              "stylekd: raw output as the paper; standard: uint8-quantised fakes (NVlabs).")
_PPL_MODE = flags.DEFINE_enum("ppl_mode", "cagan", ["cagan", "karras"], "The paper's CAGAN PPL or Karras PPL.")
_PPL_SPACE = flags.DEFINE_enum("ppl_space", "w", ["z", "w"], "Karras PPL latent space.")
_PPL_SAMPLING = flags.DEFINE_enum("ppl_sampling", "full", ["full", "end"], "Karras PPL sampling.")
_PPL_CROP = flags.DEFINE_bool("ppl_crop", False, "Karras PPL face crop.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the result JSON here (also printed).")


def _load_folder(folder):
    from PIL import Image  # pylint: disable=import-outside-toplevel
    from tf_distill.data import list_image_files  # pylint: disable=import-outside-toplevel

    files = list_image_files(folder)
    return {Path(f).name: np.asarray(Image.open(f).convert("RGB")) for f in files}


def _pairs(images, reference):
    a, b = _load_folder(images), _load_folder(reference)
    names = sorted(set(a) & set(b))
    if not names:
        raise app.UsageError(f"No file names in common between {images} and {reference}.")
    return names, [a[n] for n in names], [b[n] for n in names]


def evaluate():
    from tf_distill import model_io  # pylint: disable=import-outside-toplevel
    from tf_distill.progress import Progress  # pylint: disable=import-outside-toplevel
    from tf_distill.train.strategy import make_strategy  # pylint: disable=import-outside-toplevel

    metric, result = _METRIC.value, {"metric": _METRIC.value}
    strategy = make_strategy(_STRATEGY.value)
    if metric == "psnr":
        from tf_distill.metrics.psnr import psnr, psnr_wraparound  # pylint: disable=import-outside-toplevel

        names, out, ref = _pairs(_IMAGES.value, _REFERENCE.value)
        result.update(num_pairs=len(names),
                      psnr=float(np.mean([psnr(o[None], r[None])[0] for o, r in zip(out, ref)])),
                      psnr_paper_wraparound=float(np.mean([psnr_wraparound(o[None], r[None])[0]
                                                           for o, r in zip(out, ref)])))
        return result
    from tf_distill.metrics.lpips import LPIPS  # pylint: disable=import-outside-toplevel

    if metric == "lpips":
        lpips = LPIPS()
        if _IMAGES.value:
            names, out, ref = _pairs(_IMAGES.value, _REFERENCE.value)
            to_float = lambda x: np.asarray(x, np.float32)[None] / 127.5 - 1
            d = [float(lpips(to_float(o), to_float(r))[0]) for o, r in zip(out, ref)]
            result.update(num_pairs=len(names), lpips=float(np.mean(d)))
            return result
        from tf_distill.metrics.generator_eval import lpips_between  # pylint: disable=import-outside-toplevel

        g_a, g_b = model_io.load_generator(_CHECKPOINT.value), model_io.load_generator(_CHECKPOINT_B.value)
        result.update(num_samples=_NUM_SAMPLES.value,
                      lpips=lpips_between(g_a, g_b, lpips, _NUM_SAMPLES.value, _BATCH.value, _SEED.value))
        return result
    generator = model_io.load_generator(_CHECKPOINT.value)
    if metric == "ppl":
        from tf_distill.metrics.ppl import perceptual_path_length  # pylint: disable=import-outside-toplevel

        value = perceptual_path_length(generator, LPIPS(), _NUM_SAMPLES.value, _BATCH.value, _PPL_MODE.value,
                                       _PPL_SPACE.value, _PPL_SAMPLING.value, crop=_PPL_CROP.value, seed=_SEED.value,
                                       progress=Progress(_NUM_SAMPLES.value, "PPL"))
        result.update(ppl=value, mode=_PPL_MODE.value, num_samples=_NUM_SAMPLES.value)
        return result
    from tf_distill.metrics import generator_eval  # pylint: disable=import-outside-toplevel
    from tf_distill.metrics.fid import load_statistics  # pylint: disable=import-outside-toplevel

    if _REAL_STATS.value:
        stats = load_statistics(_REAL_STATS.value)
    elif _REAL.value:
        stats = generator_eval.dataset_statistics(_REAL.value, generator.size, _NUM_REAL.value, _BATCH.value,
                                                  _FID_MODE.value, progress=Progress(_NUM_REAL.value or 0, "real"))
    else:
        raise app.UsageError("--metric=fid needs --real=SOURCE or --real_stats=FILE.npz.")
    fid, count = generator_eval.generator_fid(generator, stats, _NUM_SAMPLES.value, _BATCH.value, _FID_MODE.value,
                                              seed=_SEED.value, strategy=strategy,
                                              progress=Progress(_NUM_SAMPLES.value, "FID"))
    result.update(fid=fid, num_samples=count, fid_mode=_FID_MODE.value)
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _METRIC.value is None:
        raise app.UsageError(f"--metric is required ({'|'.join(METRICS)}).")
    needs_generator = _METRIC.value in ("fid", "ppl") or (_METRIC.value == "lpips" and not _IMAGES.value)
    if needs_generator and not _CHECKPOINT.value:
        raise app.UsageError(f"--metric={_METRIC.value} needs --checkpoint.")
    if _METRIC.value == "psnr" and not (_IMAGES.value and _REFERENCE.value):
        raise app.UsageError("--metric=psnr needs --images and --reference folders.")
    result = evaluate()
    text = json.dumps(result, indent=2)
    print(text)
    if _OUTPUT.value:
        Path(_OUTPUT.value).parent.mkdir(parents=True, exist_ok=True)
        Path(_OUTPUT.value).write_text(text + "\n")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    sys.exit(run())
