"""Seconds per projection step (L-BFGS and Adam) of the 256 px teacher vs the 0.7-pruned student, one run.

    python bench/projection.py [--models=ffhq256_teacher,ffhq256_student] [--steps=3] [--optimizer=lbfgs,adam] \
        [--impl=auto|ref|custom]

Random weights (configs/paper_models.py MODELS), a random target image, LPIPS-VGG from the cache.
Reports seconds per closure (loss + gradient of W+ and all noise maps) and per optimizer step
(an L-BFGS step is 1 closure plus any line-search trials), after one warm-up step.
"""

import json
import os
import time

from absl import app, flags

import common
from tf_distill import cli
from tf_distill.errors import UserError

_MODELS = flags.DEFINE_list("models", ["ffhq256_teacher", "ffhq256_student"], "MODELS entries of "
                            "configs/paper_models.py.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per model and optimizer.", lower_bound=1)
_OPTIMIZER = common.define_choice_list("optimizer", ["lbfgs"], ["lbfgs", "adam"], "Optimizers to time.")
_IMPL = common.define_impl()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tf_distill.configs.paper_models import MODELS  # pylint: disable=import-outside-toplevel

    unknown = [name for name in _MODELS.value if name not in MODELS]
    if unknown or not _MODELS.value:
        raise UserError(f"--models={','.join(_MODELS.value)}: {unknown[0] if unknown else 'no model'} is not a model "
                        f"of configs/paper_models.py (choose from {', '.join(MODELS)})")
    common.check_impl(_IMPL.value)
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tf_distill.metrics.lpips import LPIPS  # pylint: disable=import-outside-toplevel
    from tf_distill.models import Generator  # pylint: disable=import-outside-toplevel
    from tf_distill.projection import Projector  # pylint: disable=import-outside-toplevel

    lpips = LPIPS()
    results = {}
    for name in _MODELS.value:
        tf.keras.utils.set_random_seed(0)
        g = Generator(**MODELS[name]().to_dict(), impl=_IMPL.value)
        g.build()
        target = np.random.default_rng(0).integers(0, 256, [1, g.size, g.size, 3], dtype=np.uint8)
        for opt in _OPTIMIZER.value:
            projector = Projector(g, lpips, optimizer=opt, w_avg_samples=1000)
            projector.project(target, steps=1)  # warm-up: tracing
            t = time.perf_counter()
            res = projector.project(target, steps=_STEPS.value)
            elapsed = time.perf_counter() - t
            closures = res.closure_evals
            results[f"{name}/{opt}"] = {"s_per_step": elapsed / _STEPS.value, "s_per_closure": elapsed / closures,
                                        "closures": closures, "steps": _STEPS.value}
            print(name, opt, json.dumps(results[f"{name}/{opt}"]), flush=True)
    print(json.dumps({"threads": os.cpu_count(), "results": results}, indent=2))


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
