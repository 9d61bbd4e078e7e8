"""tf-distill-stats: parameters and FLOPs of generators, as the paper's table counts them.

    tf-distill-stats --config=configs/paper_models.py
    tf-distill-stats --checkpoint=teacher.pt --json
"""

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from tf_distill import cli
from tf_distill.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file with a `generators` dict of generator configs.")
_CHECKPOINT = flags.DEFINE_multi_string("checkpoint", [], "Generator checkpoint(s): rosinality .pt, or our "
                                        "converted directory / .keras file (repeatable).")
_JSON = flags.DEFINE_bool("json", False, "Print JSON instead of a table.")


def collect_rows(config=None, checkpoints=()):
    """[(name, stats dict)] for every generator of a config and every checkpoint."""
    from tf_distill.io.checkpoints import load_generator  # pylint: disable=import-outside-toplevel
    from tf_distill.model_stats import generator_stats  # pylint: disable=import-outside-toplevel
    from tf_distill.models import Generator  # pylint: disable=import-outside-toplevel

    rows = []
    if config is not None:
        if "generators" not in config:
            raise app.UsageError("The config has no `generators` entry (see configs/paper_models.py).")
        for name, gen_config in config.generators.items():
            try:  # the constructor checks the architecture before any weight exists
                generator = Generator(**gen_config.to_dict())
            except (TypeError, ValueError) as err:
                raise UserError(f"config.generators.{name}: {err} (fix that entry; see configs/paper_models.py "
                                "for valid ones)") from None
            rows.append((name, generator_stats(generator)))
    for path in checkpoints:
        rows.append((path, generator_stats(load_generator(path))))
    return rows


def format_table(rows):
    header = f"{'model':<28} {'size':>5} {'params':>14} {'mapping':>12} {'FLOPs':>18}"
    lines = [header, "-" * len(header)]
    for name, s in rows:
        lines.append(f"{name:<28} {s['size']:>5} {s['params']:>14,} {s['mapping_params']:>12,} {s['flops']:>18,}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None and not _CHECKPOINT.value:
        raise app.UsageError("Give --config=configs/paper_models.py and/or --checkpoint=PATH.")
    rows = collect_rows(_CONFIG.value, _CHECKPOINT.value)
    if _JSON.value:
        json.dump({name: s for name, s in rows}, sys.stdout, indent=2)
        print()
    else:
        print(format_table(rows))


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
