"""Seconds per projection step (L-BFGS and Adam) of the 256 px teacher vs the 0.7-pruned student, one run.

    python bench/projection.py [--models=ffhq256_teacher,ffhq256_student] [--steps=3] [--optimizer=lbfgs,adam]

Random weights (configs/paper_models.py MODELS), a random target image, LPIPS-VGG from the cache.
Reports seconds per closure (loss + gradient of W+ and all noise maps) and per optimizer step
(an L-BFGS step is 1 closure plus any line-search trials), after one warm-up step.
"""

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["ffhq256_teacher", "ffhq256_student"], "MODELS entries of configs/paper_models.py")
flags.DEFINE_integer("steps", 3, "timed steps per model and optimizer")
flags.DEFINE_list("optimizer", ["lbfgs"], "lbfgs and/or adam")


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from configs.paper_models import MODELS
    from tf_distill.metrics.lpips import LPIPS
    from tf_distill.models import Generator
    from tf_distill.projection import Projector

    lpips = LPIPS()
    results = {}
    for name in FLAGS.models:
        tf.keras.utils.set_random_seed(0)
        g = Generator(**MODELS[name]().to_dict())
        g.build()
        target = np.random.default_rng(0).integers(0, 256, [1, g.size, g.size, 3], dtype=np.uint8)
        for opt in FLAGS.optimizer:
            projector = Projector(g, lpips, optimizer=opt, w_avg_samples=1000)
            projector.project(target, steps=1)  # warm-up: tracing
            t = time.perf_counter()
            res = projector.project(target, steps=FLAGS.steps)
            elapsed = time.perf_counter() - t
            closures = res.closure_evals
            results[f"{name}/{opt}"] = {"s_per_step": elapsed / FLAGS.steps, "s_per_closure": elapsed / closures,
                                        "closures": closures, "steps": FLAGS.steps}
            print(name, opt, json.dumps(results[f"{name}/{opt}"]), flush=True)
    print(json.dumps({"threads": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    app.run(main)
