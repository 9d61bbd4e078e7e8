"""StyleKD on FFHQ 1024 (the paper's 1024 rows): 0.7-pruned student, LPIPS at 256 px (images resized).

    tf-distill-train --config=configs/ffhq1024_stylekd.py --workdir=runs/ffhq1024 \
        --config.teacher=1024px_full_size.pt --config.data.source=folder:/data/ffhq/images1024x1024

Mimic layers: the three highest resolutions (256/512/1024 px = blocks 6, 7, 8).
"""

from tf_distill.configs.ffhq256_stylekd import base_config, with_variant


def get_config(variant="paper"):
    c = base_config("ffhq1024_student")
    c.kd.mimic_layers = [6, 7, 8]
    return with_variant(c, variant)
