"""Runs a tiny training in a fresh process (logical CPUs, strategies and signals need their own process).

    python tests/train_helper.py OUT.npz WORKDIR DATA_DIR STRATEGY STEPS [MAX_STEPS] [key=value ...]
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_distill.train.defaults import default_config  # noqa: E402
from cpu_devices import split_cpu  # noqa: E402


def write_random_images(folder, count, size, seed=0):
    """``count`` random RGB PNGs ``NN.png`` of ``size`` px in ``folder`` (created): a tiny training folder."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def save_tiny_teacher(path, style_dim=8):
    """A seeded random 16 px teacher saved as ``.keras`` (the teacher of the small training tests)."""
    from tf_distill.models import Generator  # pylint: disable=import-outside-toplevel

    tf.keras.utils.set_random_seed(5)
    g = Generator(16, style_dim=style_dim, n_mlp=2, channels=[8, 8, 8, 6, 6, 6])
    g.build()
    g.save(path)
    return path


def tiny_config(data_dir, strategy, steps, teacher=""):
    c = default_config()
    c.seed = 3
    c.strategy = strategy
    c.teacher = teacher
    c.generator.update(dict(size=16, style_dim=8, n_mlp=2, channels=[8, 6, 6, 5, 5, 4]))
    c.discriminator.channels = [8, 6, 4]
    c.data.source = f"folder:{data_dir}"
    c.train.update(dict(steps=steps, batch_size=8))
    c.kd.update(dict(mimic_layers=[1, 2], weight_lpips=0.0))
    c.log.update(dict(every=1, checkpoint_every=2, sample_every=1000, n_samples=4))
    return c


def main():
    out, workdir, data_dir, strategy, steps = sys.argv[1:6]
    max_steps = int(sys.argv[6]) if len(sys.argv) > 6 and sys.argv[6] != "-" else None
    overrides = dict(a.split("=", 1) for a in sys.argv[7:])
    if strategy == "mirrored":
        split_cpu(2)
    tf.config.experimental.enable_op_determinism()
    from tf_distill.train.loop import Run  # pylint: disable=import-outside-toplevel

    config = tiny_config(data_dir, strategy, int(steps), teacher=overrides.pop("teacher", ""))
    for key, value in overrides.items():
        section, name = key.split(".")
        config[section][name] = type(config[section][name])(value)
    run = Run(config, workdir)
    step = run.run(max_steps)
    np.savez(out, step=step, **{f"{m}/{v.path}": v.numpy() for m, model in (("g", run.g), ("d", run.d),
                                                                           ("g_ema", run.g_ema))
                                for v in model.weights})


if __name__ == "__main__":
    main()
