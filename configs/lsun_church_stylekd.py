"""StyleKD on LSUN Church 256 (the reference's church runs used other code, spec E.6/D.1; no face mask here either).

    tf-distill-train --config=configs/lsun_church_stylekd.py --workdir=runs/church \
        --config.teacher=church_256px.pt --config.data.source=tfrecord:/data/church/*.tfrecord
"""

from configs.ffhq256_stylekd import VARIANTS, apply_overrides, base_config


def get_config(variant="paper"):
    c = base_config("ffhq256_student")
    c.data.flip = True
    c.kd.content_mask = "off"  # a face mask means nothing for churches
    return apply_overrides(c, VARIANTS[variant])
