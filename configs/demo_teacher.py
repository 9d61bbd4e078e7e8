"""The demo teacher: a small 32 px StyleGAN2 trained on Debian's Fashion-MNIST with our own trainer.

    tf-distill-train --config=configs/demo_teacher.py --workdir=runs/demo_teacher
    # then: cp runs/demo_teacher/final/g_ema.keras demo/teacher_fmnist32.keras

The committed weights under demo/ were made by exactly this command (see demo/README.md).
"""

from tf_distill.train.defaults import default_config

TEACHER = dict(size=32, style_dim=128, n_mlp=4, channels=[128, 128, 128, 128, 64, 64, 32, 32])


def get_config():
    c = default_config()
    c.generator.update(TEACHER)
    c.discriminator.channels = [32, 64, 128, 128]
    c.data.source = "fashion_mnist:train"
    c.train.steps = 4000
    c.log.checkpoint_every = 500
    c.log.sample_every = 500
    return c
