"""tf-distill-train: StyleKD distillation (or plain StyleGAN2 teacher training), resumable.

    tf-distill-train --config=configs/ffhq256_stylekd.py --workdir=runs/ffhq256 \
        --config.data.source=folder:/data/ffhq --config.teacher=256px_full_size.pt

Running the same command again resumes from ``workdir``; while one run uses it, a second is refused.
SIGINT/SIGTERM write a checkpoint and exit.
A ``workdir`` holding files of something else is refused unless ``--overwrite`` (which deletes nothing).
"""

from absl import app, flags
from ml_collections import config_flags

from tf_distill import cli
from tf_distill.outputs import RUN_FOLDERS, WORKDIR_LOCK, check_workdir

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and samples.")
_MAX_STEPS = flags.DEFINE_integer("max_steps", None, "Stop after this many more iterations (the run stays resumable).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Use a --workdir that holds other files anyway (nothing in it is "
                               "deleted).")

# What a tf-distill workdir holds (tf_distill.train.loop); any of them means "resume here".
WORKDIR_MARKERS = (*RUN_FOLDERS, WORKDIR_LOCK)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError("--config and --workdir are required.")
    from tf_distill.train.config_check import check_max_steps  # pylint: disable=import-outside-toplevel

    check_max_steps(_MAX_STEPS.value)
    check_workdir(_WORKDIR.value, WORKDIR_MARKERS, overwrite=_OVERWRITE.value)
    from tf_distill.train.loop import Run  # pylint: disable=import-outside-toplevel

    Run(_CONFIG.value, _WORKDIR.value).run(_MAX_STEPS.value)  # checks the config before it builds anything


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
