"""tf-distill-train: StyleKD distillation (or plain StyleGAN2 teacher training), resumable.

    tf-distill-train --config=configs/ffhq256_stylekd.py --workdir=runs/ffhq256 \
        --config.data.source=folder:/data/ffhq --config.teacher=256px_full_size.pt

Running the same command again resumes from ``workdir``. SIGINT/SIGTERM write a checkpoint and exit.
"""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and samples.")
_MAX_STEPS = flags.DEFINE_integer("max_steps", None, "Stop after this many more iterations (the run stays resumable).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError("--config and --workdir are required.")
    if not _CONFIG.value.data.source:
        raise app.UsageError("config.data.source is empty: set --config.data.source=folder:PATH, tfrecord:GLOB "
                             "or fashion_mnist.")
    from tf_distill.train.loop import Run  # pylint: disable=import-outside-toplevel

    Run(_CONFIG.value, _WORKDIR.value).run(_MAX_STEPS.value)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
