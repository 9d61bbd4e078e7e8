"""tf-distill-reproduce: the paper's experiments as suites of distillation runs, evaluated and reported.

    tf-distill-reproduce --suite=all --workdir=runs/reproduce --report_dir=docs/reproduction
    tf-distill-reproduce --config=configs/reproduce_ffhq256.py --suite=table1 --workdir=/data/runs/table1 \
        --config.base.teacher=256px_full_size.pt --config.base.data.source=folder:/data/ffhq/images1024x1024

Suites: ``table1`` (the supplementary's Table 1 ablation plus a no-teacher baseline), ``fig1``
(distillation without the GAN loss, with and without a suitable mapping network), ``all``. One
training run per (row, seed) under ``workdir``; running the same command again skips finished
runs and resumes interrupted ones. Writes ``runs.csv``, ``README.md`` and PNGs to ``report_dir``.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from tf_distill import cli, limits
from tf_distill.errors import UserError, first_few
from tf_distill.outputs import check_workdir

cli.quiet_logs()
cli.import_tensorflow()  # the default config below is loaded (and imports TensorFlow) as the flag is defined

_DEFAULT_CONFIG = cli.config_path("configs/reproduce_fmnist32.py")
_ADDED_ARG = cli.name_default_config("config", _DEFAULT_CONFIG)  # overrides are then checked with the flags
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Reproduction config file.")
_SUITE = flags.DEFINE_enum("suite", "all", ["table1", "fig1", "all"], "Which suite to run.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the suite's runs (created; reused to resume).")
_REPORT_DIR = flags.DEFINE_string("report_dir", None, "Where runs.csv, README.md and the PNGs go (default: "
                                  "<workdir>/report).")
_ROWS = flags.DEFINE_list("rows", None, "Only these rows (default: every row of the suite).")
_SEEDS = flags.DEFINE_integer("seeds", None, "Seeds per row (default: the config's).", lower_bound=1,
                              upper_bound=limits.MAX_SEEDS_PER_ROW)
_REPORT_ONLY = flags.DEFINE_boolean("report_only", False, "Write the report from the finished runs; train nothing.")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Use a --workdir that holds other files anyway (nothing in it "
                                  "is deleted).")


def _check_config_keys(config):
    """A UsageError naming the keys ``config`` lacks that the shipped reproduction config has (a training
    config given here, or a hand-written one), before anything reads them."""
    from tf_distill.configs import reproduce_fmnist32  # pylint: disable=import-outside-toplevel
    from tf_distill.train.config_check import missing_keys  # pylint: disable=import-outside-toplevel

    missing = missing_keys(config, reproduce_fmnist32.get_config(), free=("seeds_per_row",))
    if missing:
        shown = first_few((f"config.{k}" for k in missing), 6)
        raise app.UsageError(f"the config lacks {len(missing)} key(s) a reproduction config has: {shown} (start "
                             "from configs/reproduce_fmnist32.py or configs/reproduce_ffhq256.py; a training config "
                             "goes to tf-distill-train)")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required (e.g. --workdir=runs/reproduce).")
    if _REPORT_ONLY.value and not os.path.isdir(_WORKDIR.value):  # it wrote an empty report there, and succeeded
        raise UserError(f"--workdir={_WORKDIR.value} does not exist: --report_only reports the runs of an earlier "
                        "tf-distill-reproduce run (give its --workdir)")
    config = _CONFIG.value
    _check_config_keys(config)
    if not config.base.teacher or not config.base.data.source:
        raise app.UsageError("the config needs a teacher and a data source: set --config.base.teacher=PATH and "
                             "--config.base.data.source=folder:PATH (or tfrecord:GLOB, fashion_mnist).")
    if not os.path.exists(config.base.teacher):
        raise app.UsageError(f"teacher checkpoint {config.base.teacher} not found (check --config.base.teacher).")
    from tf_distill.reproduce import report  # pylint: disable=import-outside-toplevel
    from tf_distill.reproduce.runner import (  # pylint: disable=import-outside-toplevel
        SUITE_CONFIG, SuiteRunner, check_run_configs, check_suite_config, check_suite_config_unchanged, plan)

    check_workdir(_WORKDIR.value, ["table1", "fig1", "report", SUITE_CONFIG], overwrite=_OVERWRITE.value)
    if _REPORT_DIR.value:  # ours to rewrite (it holds an earlier runs.csv), new or empty; never a file
        check_workdir(_REPORT_DIR.value, ["runs.csv"], overwrite=_OVERWRITE.value, flag="--report_dir")

    suites = ["table1", "fig1"] if _SUITE.value == "all" else [_SUITE.value]
    check_suite_config(config)
    try:
        specs = plan(config, _WORKDIR.value, suites, _ROWS.value, _SEEDS.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    check_run_configs(config, specs)  # every bad value now, not when the run that reads it starts, hours in
    check_suite_config_unchanged(config, _WORKDIR.value)
    finished = True
    if not _REPORT_ONLY.value:
        finished = SuiteRunner(config, _WORKDIR.value, specs).run()
    report_dir = _REPORT_DIR.value or os.path.join(_WORKDIR.value, "report")
    path = report.write_report(config, _WORKDIR.value, specs, report_dir, command=_command())
    print(f"[reproduce] report: {path}" + ("" if finished else " (partial: the suite is not finished)"), flush=True)


def _command():
    import sys  # pylint: disable=import-outside-toplevel

    dropped = ("--report_only", "--report_only=true", "--report_only=True", _ADDED_ARG)
    args = [a for a in sys.argv[1:] if a not in dropped]
    return " ".join(["tf-distill-reproduce"] + args)  # the command that (re)runs the suite


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
