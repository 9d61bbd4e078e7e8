"""The heterogeneous student ("-heter", 3.4M params / 2.7B FLOPs in the paper): its own smaller mapping.

    tf-distill-train --config=configs/ffhq256_heter.py --workdir=runs/heter \
        --config.teacher=256px_full_size.pt --config.data.source=folder:/data/ffhq/images1024x1024

Stage 1 trains the mapping to mimic the teacher's (L1, Adam lr 0.05, batch 4096, 50k steps), then
stage 2 as the paper's run. The release has no exact channel/mapping config; this one is the
spec's inference (about 76% pruned synthesis and a 3 x 512 mapping without PixelNorm, lr_mul 1),
which counts 3.20M params / 2.72B FLOPs with tf-distill-stats. Both stages run under
``--config.strategy`` (``mirrored``, ``multi_worker``): stage 1 splits its z batch across replicas.
"""

from tf_distill.configs.ffhq256_stylekd import base_config, with_variant


def get_config(variant="paper"):
    if variant == "cagan_init":
        raise ValueError("the heterogeneous student has a mapping of its own, which a CAGAN-pruned checkpoint "
                         "does not hold; use configs/ffhq256_stylekd.py:cagan_init")
    c = base_config("ffhq256_student")
    c.generator.channels = [122] * 10 + [64] * 2 + [32] * 2
    c.generator.mapping_widths = [512, 512, 512]
    c.kd.load_style = False
    c.stage1.steps = 50000
    return with_variant(c, variant)
