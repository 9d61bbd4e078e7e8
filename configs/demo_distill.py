"""The demo distillation: the committed Fashion-MNIST teacher (demo/) into a ~4x smaller student.

    tf-distill-demo --workdir=out/demo            # what the README's main command runs
    # equivalently, the training part alone:
    tf-distill-train --config=configs/demo_distill.py --workdir=out/demo/run

Stage 2 of the paper with every loss on (GAN, RGB L1 x3, LPIPS x3, LD relation KL x30 on the
16 and 32 px blocks with split teacher directions), the teacher's mapping copied (load_style);
sized to end within 15 minutes on 2 CPU cores: a KD-only warm-up (kd.warmup_steps) and a higher lr.
"""

from pathlib import Path

from tf_distill.configs.demo_teacher import TEACHER
from tf_distill.train.defaults import default_config

STUDENT = dict(TEACHER, channels=[64, 64, 64, 64, 32, 32, 16, 16])
# demo/ lies beside configs/: in the repository (and an editable install) and in an installed wheel
# (pyproject maps both into tf_distill/), so the teacher is found from any working directory.
TEACHER_FILE = str(Path(__file__).resolve().parent.parent / "demo" / "teacher_fmnist32.keras")


def get_config():
    c = default_config()
    c.teacher = TEACHER_FILE
    c.generator.update(STUDENT)
    c.discriminator.channels = [32, 64, 128, 128]
    c.data.source = "fashion_mnist:train"
    c.train.steps = 1000
    c.train.batch_size = 8
    c.train.lr = 0.01  # the paper's 0.002 needs far more than a demo's few hundred steps
    c.kd.warmup_steps = 400  # KD-only warm-up (the reference's --g_step): no D step, no GAN term, no path length
    c.train.ema_decay = 0.99  # the paper's 0.9978 per step averages over ~450 steps: longer than this run
    c.kd.mimic_layers = [2, 3]  # the 16 and 32 px blocks (the paper: the three highest resolutions)
    c.log.every = 25
    c.log.checkpoint_every = 100
    c.log.sample_every = 100
    return c
