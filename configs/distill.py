"""Distill any rosinality/CAGAN StyleGAN2 checkpoint (or one of ours) without writing a config.

    tf-distill-train --config=configs/distill.py --workdir=runs/my_student \
        --config.teacher=my.pt --config.student.prune_ratio=0.7 --config.data.source=folder:/data/images

The student is derived from the teacher when the run starts (tf_distill.train.student): its resolution,
style_dim, mapping (depth, widths, lr multiplier) and kernel size are the teacher's, its channels
``c - int(r c)`` per teacher layer for ``student.prune_ratio`` r (CAGAN's rule; 0 keeps the teacher's) or
the explicit ``--config.student.channels=[...]`` (one entry per layer). The relation loss reads the three
highest resolutions (or ``kd.mimic_layers``); the discriminator is the standard one for the resolution.
Everything else is the paper's stage 2 (tf_distill.train.defaults); ``final/config.json`` holds the result.
"""

import ml_collections
from ml_collections import config_dict

from tf_distill.train.defaults import default_config
from tf_distill.train.student import FROM_TEACHER


def get_config():
    c = default_config()
    c.teacher = config_dict.placeholder(str)  # required
    c.student = ml_collections.ConfigDict({
        "prune_ratio": 0.7,  # the paper's students (CAGAN's 0.7-pruned channels)
        "channels": ml_collections.FieldReference(None, field_type=tuple)})  # replaces the ratio when given
    for key in FROM_TEACHER:  # set from the teacher when the run starts
        c.generator[key] = ml_collections.FieldReference(None, field_type=type(c.generator[key] or ()))
    c.kd.mimic_layers = ml_collections.FieldReference(None, field_type=tuple)  # None: the 3 highest resolutions
    return c
