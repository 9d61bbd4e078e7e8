"""StyleKD on LSUN Church 256 (the reference's church runs used other code, spec E.6/D.1): the FFHQ 256 run
without the face mask, which means nothing for churches. Variants as configs/ffhq256_stylekd.py.

    tf-distill-train --config=configs/lsun_church_stylekd.py --workdir=runs/church \
        --config.teacher=church_256px.pt --config.data.source=tfrecord:/data/church/*.tfrecord
"""

from tf_distill.configs.ffhq256_stylekd import get_config as ffhq256_config


def get_config(variant="paper"):
    c = ffhq256_config(variant)
    c.kd.content_mask = "off"
    return c
